"""A plan fires on evidence that names the machine and the plan, and pxeprov-watch survives.

pxeprov-watch (`watch --fire`) runs here in a thread against a --root server and log files the
tests write as dnsmasq would; the imaging jobs' reports reach its listener on loopback through
Clonezilla's own `ocs-socket` (Debian's clonezilla package), as a Clonezilla live client sends
them. (tests/e2e/test_restore.py has a real Clonezilla job report over the lab's network.)
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pxeprov import fsutil, jobreport
from pxeprov.commands import watch as watch_command
from pxeprov.paths import LOCK_FILE, Root
from pxeprov.pipeline import Machine, load_state
from pxeprov.state import Plan

from .conftest import Cli, clonezilla_http_root

TFTP = "var/lib/tftpboot"
STATE = "etc/pxeprov/pxeprov.toml"
A = "52:54:00:12:34:56"
B = "52:54:00:12:34:57"
REPO = "smb://10.1.1.1/images/lab"
OCS_SOCKET = shutil.which("ocs-socket") or "/usr/bin/ocs-socket"


@pytest.fixture
def server(loader_root: Path, cli: Cli, tmp_path: Path) -> Path:
    return clonezilla_http_root(loader_root, cli, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Watch:
    """pxeprov-watch in a thread, with its own logs, listener port and place file."""

    root: Path
    work: Path
    port: int = field(default_factory=free_port)
    said: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock_timeout: float = 1.0

    @property
    def dnsmasq_log(self) -> Path:
        return self.work / "dnsmasq.log"

    def start(self) -> None:
        self.dnsmasq_log.touch()
        machine = Machine(root=Root.of(self.root), lock_timeout=self.lock_timeout)
        options = watch_command.WatchOptions(
            dnsmasq_log=self.dnsmasq_log,
            nginx_log=self.work / "access.log",
            fire=True,
            reports_log=self.work / "reports.log",
            report_port=self.port,
            watch_state=self.work / "watch.json",
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=watch_command.watch,
            args=(machine, options, self.said.append, lambda: not self.stop.is_set()),
        )
        self.thread.start()
        self.wait_for("Watching ")

    def end(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
            assert not self.thread.is_alive()

    def wait_for(self, words: str, limit: float = 20) -> str:
        deadline = time.monotonic() + limit
        while True:
            found = [line for line in self.said if words in line]
            if found:
                return found[-1]
            assert self.thread is not None and self.thread.is_alive(), self.said
            assert time.monotonic() < deadline, (words, self.said)
            time.sleep(0.05)

    def fetched(self, path: str, ip: str = "10.0.0.9") -> None:
        """dnsmasq's line for a TFTP transfer of `path` to `ip`, now."""
        stamp = time.strftime("%b %e %H:%M:%S")
        with self.dnsmasq_log.open("a") as f:
            f.write(f"{stamp} dnsmasq-tftp[7]: sent /var/lib/tftpboot/{path} to {ip}\n")

    def offer(self, mac: str) -> None:
        stamp = time.strftime("%b %e %H:%M:%S")
        with self.dnsmasq_log.open("a") as f:
            f.write(f"{stamp} dnsmasq-dhcp[7]: 1 vendor class: PXEClient:Arch:00007:UNDI:003000\n"
                    f"{stamp} dnsmasq-dhcp[7]: 1 PXE(lo) {mac} proxy\n")  # fmt: skip

    def send(self, message: str) -> None:
        """A job's report, as Clonezilla live sends it."""
        subprocess.run([OCS_SOCKET, "-h", "127.0.0.1", "-p", str(self.port), "-m", message],
                       check=True, timeout=20, capture_output=True)  # fmt: skip


@pytest.fixture
def watcher(server: Path, tmp_path: Path) -> Iterator[Watch]:
    if not Path(OCS_SOCKET).exists():
        pytest.fail("Clonezilla's ocs-socket is missing (Debian's clonezilla package)")
    w = Watch(server, tmp_path)
    try:
        yield w
    finally:
        w.end()


def plan_of(root: Path, mac: str) -> Plan:
    return next(p for p in load_state(Root.of(root)).plans if p.mac == mac)


def restore(cli: Cli, root: Path, *macs: str) -> None:
    r = cli(root, "assign", *macs, "--restore", "img1", "--repo", REPO, "--yes")
    assert r.exit_code == 0, r.stderr


def postrun(root: Path) -> str:
    """The plan's ocs_postrun, as the kernel command line of its job holds it."""
    m = re.search(r'ocs_postrun="[^"]*"', (root / TFTP / "boot.ipxe").read_text())
    assert m is not None
    return m.group(0)


def test_the_restore_is_done_when_its_job_says_so(server: Path, cli: Cli, watcher: Watch) -> None:
    restore(cli, server, A)
    plan = plan_of(server, A)
    line = postrun(server)
    assert f"-p 6461 -m pxeprov:{plan.token}:done||ocs-socket" in line
    assert "ocs_server" not in (server / TFTP / "boot.ipxe").read_text()
    watcher.start()
    watcher.offer(A)
    watcher.fetched("images/cz/vmlinuz")
    watcher.fetched(plan.marker)
    watcher.wait_for(f"{A}  plan fired (Restore img1 to sda (then boot from disk))")
    taken = plan_of(server, A)
    assert taken.fired and taken.status == "started" and taken.now == "local"
    assert not (server / TFTP / plan.marker).exists()  # the machine is not sent to it again
    assert "its job runs: no report yet" in cli(server, "plans").stdout
    watcher.send(f"pxeprov:{plan.token}:done")
    assert "logged no failed partition" in watcher.wait_for(f"{A}  job done")
    watcher.send(f"pxeprov:{plan.token}:failed")  # a second word changes nothing
    time.sleep(1)
    done = plan_of(server, A)
    assert (done.status, done.result) == ("done", "done") and done.reported
    assert "; done 20" in cli(server, "plans").stdout
    logged = (watcher.work / "reports.log").read_text().splitlines()
    assert len(logged) == 2 and logged[0].split(" ", 2)[1] == "127.0.0.1"


def run_postrun(line: str, port: int, ended: bool, failed_partition: bool) -> None:
    """The plan's ocs_postrun, run by Clonezilla's own ocs-run-boot-param (parse_cmdline_option,
    eval) as Clonezilla live runs it after the job, in a private mount namespace whose
    /var/lib/clonezilla and /var/log say whether ocs-sr reached its end and what it logged."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "cmdline").write_text("boot=live " + line.replace("-p 6461", f"-p {port}") + "\n")
        lib, log = work / "lib", work / "log"
        lib.mkdir()
        log.mkdir()
        if ended:
            (lib / "ocs-vars").write_text("ocs_sr_type=restoredisk\n")
        text = "Starting /usr/sbin/ocs-sr\n"
        if failed_partition:
            text += (
                "Failed to restore partition image file /home/partimag/img1/vda1* to /dev/vda1!\n"
            )
        (log / "clonezilla.log").write_text(text)
        script = (
            f"mount --bind {lib} /var/lib/clonezilla && mount --bind {log} /var/log && "
            f"exec ocs-run-boot-param -b -f -c {work / 'cmdline'} ocs_postrun"
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert "ocs-socket" in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("ended", "failed_partition", "word"),
    [(True, False, "job done"), (True, True, "job failed"), (False, False, "job failed")],
)
def test_clonezilla_runs_the_report_command_as_written(
    server: Path, cli: Cli, watcher: Watch, ended: bool, failed_partition: bool, word: str
) -> None:
    if shutil.which("ocs-run-boot-param") is None:
        pytest.fail("Clonezilla's ocs-run-boot-param is missing (Debian's clonezilla package)")
    restore(cli, server, A)
    plan, line = plan_of(server, A), postrun(server)  # as rendered while the plan is armed
    watcher.start()
    watcher.fetched(plan.marker)
    watcher.wait_for(f"{A}  plan fired")
    run_postrun(line, watcher.port, ended, failed_partition)
    watcher.wait_for(f"{A}  {word}")
    assert plan_of(server, A).result == ("done" if word == "job done" else "failed")


def test_a_failed_job_says_failed_and_does_not_loop(server: Path, cli: Cli, watcher: Watch) -> None:
    restore(cli, server, A, B)
    a, b = plan_of(server, A), plan_of(server, B)
    watcher.start()
    watcher.fetched(a.marker)
    watcher.fetched(b.marker, ip="10.0.0.10")
    watcher.wait_for(f"{B}  plan fired")
    watcher.send(f"pxeprov:{a.token}:failed")
    assert "see /var/log/clonezilla.log" in watcher.wait_for(f"{A}  job failed")
    p = plan_of(server, A)
    assert p.status == "failed" and p.now == "local"
    assert plan_of(server, B).status == "started"
    text = (server / TFTP / "boot.ipxe").read_text()
    assert "restoredisk" not in text  # no machine is sent to the job again
    assert "FAILED 20" in cli(server, "plans").stdout


def test_what_does_not_name_the_plan_changes_nothing(
    server: Path, cli: Cli, watcher: Watch
) -> None:
    """A report for a plan not taken yet, an unknown token; a kernel fetch; a marker with the
    token but another MAC; garbage: none of it fires or finishes a plan."""
    restore(cli, server, A)
    plan = plan_of(server, A)
    watcher.start()
    watcher.send(f"pxeprov:{plan.token}:done")  # before the machine took its plan
    watcher.send(f"pxeprov:{'0' * 16}:done")
    watcher.fetched("images/cz/vmlinuz")
    watcher.fetched(f"plans/{A.replace(':', '-')}-{'0' * 16}")  # an unknown token
    watcher.fetched(f"plans/{B.replace(':', '-')}-{plan.token}")  # the token, another MAC
    with socket.create_connection(("127.0.0.1", watcher.port), timeout=5) as s:
        s.sendall(b"\x00\x1b[2J" + b"A" * 5000)
    time.sleep(2)
    assert plan_of(server, A) == plan
    watcher.fetched(plan.marker)
    watcher.wait_for(f"{A}  plan fired")
    watcher.send(f"pxeprov:{'0' * 16}:done")  # still another token
    time.sleep(1.5)
    assert plan_of(server, A).status == "started"
    logged = (watcher.work / "reports.log").read_text()
    assert "\x1b" not in logged and "\x00" not in logged


def test_two_machines_at_one_address(server: Path, cli: Cli, watcher: Watch) -> None:
    """B gets the address A had (a short lease): what B fetches is never credited to A."""
    assert cli(server, "assign", A, "--entry", "cz", "--once").exit_code == 0
    assert cli(server, "assign", B, "--entry", "cz", "--once").exit_code == 0
    a, b = plan_of(server, A), plan_of(server, B)
    watcher.start()
    watcher.offer(A)
    watcher.fetched("snponly.efi")
    watcher.fetched("boot.ipxe")
    watcher.offer(B)  # UEFI: no line pairs B with the address
    watcher.fetched("boot.ipxe")
    watcher.fetched(b.marker)
    watcher.fetched("images/cz/vmlinuz")
    watcher.wait_for(f"{B}  plan fired")
    time.sleep(1)
    assert not plan_of(server, A).fired and plan_of(server, A).token == a.token
    assert (server / TFTP / a.marker).is_file()


def test_a_restarted_watcher_takes_up_what_happened_meanwhile(
    server: Path, cli: Cli, watcher: Watch
) -> None:
    restore(cli, server, A)
    plan = plan_of(server, A)
    watcher.start()
    watcher.offer(A)
    time.sleep(1)
    watcher.end()  # killed in the middle of a boot
    watcher.fetched(plan.marker)  # while it is down
    saved = json.loads((watcher.work / "watch.json").read_text())
    assert str(watcher.dnsmasq_log) in saved["logs"]
    watcher.said.clear()
    watcher.start()
    assert "Taken up where it stopped" in watcher.said[0]
    watcher.wait_for(f"{A}  plan fired")


def test_a_busy_lock_or_a_bad_state_is_waited_out(server: Path, cli: Cli, watcher: Watch) -> None:
    restore(cli, server, A)
    plan = plan_of(server, A)
    watcher.start()
    state = server / STATE
    with fsutil.locked(server / str(LOCK_FILE).lstrip("/"), 5):  # another command runs
        watcher.fetched(plan.marker)
        watcher.wait_for("waiting to change the plans")
        assert watcher.thread is not None and watcher.thread.is_alive()
    watcher.wait_for(f"{A}  plan fired")
    good = state.read_bytes()
    # the state caught mid-edit: the watcher says so and goes on
    state.write_text("[network\n")
    watcher.send(f"pxeprov:{plan.token}:done")
    watcher.wait_for("waiting to change the plans")
    time.sleep(1)
    assert watcher.thread is not None and watcher.thread.is_alive()
    state.write_bytes(good)
    watcher.wait_for(f"{A}  job done")


def test_the_listener_reads_a_slow_or_silent_sender_without_stalling(tmp_path: Path) -> None:
    port = free_port()
    listener = jobreport.Listener("127.0.0.1", port, tmp_path / "r.log")
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        t0 = time.monotonic()
        assert listener.poll() == 0
        assert time.monotonic() - t0 < jobreport.READ_TIMEOUT + 1
        silent.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"pxeprov:0123456789abcdef:done\n")
        assert listener.poll() == 1
    finally:
        listener.close()
    (report,) = jobreport.parse_log((tmp_path / "r.log").read_text().splitlines())
    assert (report.ok, report.token, report.peer) == (True, "0123456789abcdef", "127.0.0.1")


def test_doctor_says_when_nothing_takes_the_reports_and_which_jobs_failed(tmp_path: Path) -> None:
    from pxeprov.commands.doctor.imaging import plans as _plans
    from pxeprov.images.kinds.clonezilla import REPORT_PORT
    from pxeprov.state import Image, State, loads

    base = loads('[network]\ninterface = "lo"\naddress = "127.0.0.1"\nsubnet = "127.0.0.0/8"\n')
    image = Image("cz", "cz", "clonezilla", "images/cz/vmlinuz", "images/cz/initrd.img")
    long_ago = "2026-01-01T00:00:00Z"
    plans = (
        Plan(A, "restore", entry="cz", image="img1", repo=REPO, token="1" * 16),
        Plan(B, "restore", entry="cz", image="img1", repo=REPO, token="2" * 16, fired=long_ago),
        Plan("52:54:00:12:34:58", "save", entry="cz", image="img2", repo=REPO, token="3" * 16,
             fired=long_ago, result="failed", reported=long_ago, reason="it broke"),
    )  # fmt: skip
    state = State(network=base.network, images=(image,), plans=plans)
    checks = {c.name: c for c in _plans(state, root_is_system=False)}
    assert "plans.watch" not in checks  # --root: not this box's sockets
    said = [c.message for c in _plans(state, root_is_system=False)]
    assert any(f"the job of {B} was taken at {long_ago} and never reported" in m for m in said)
    assert any("failed at 2026-01-01T00:00:00Z: it broke" in m for m in said)
    listener = jobreport.Listener("127.0.0.1", REPORT_PORT, tmp_path / "r.log")
    try:
        assert "plans.watch" not in {c.name for c in _plans(state, root_is_system=True)}
    finally:
        listener.close()
    (watch,) = [c for c in _plans(state, root_is_system=True) if c.name == "plans.watch"]
    assert watch.status == "fail" and "pxeprov-watch is not running" in watch.message
