"""Multicast restore sessions (issue 18, parts 1, 2 and 4), with the real sender.

A private network of namespaces made here: the server's, whose bridge mc0 is the state's
interface, and one namespace per receiver on that bridge, each with a plan's MAC. pxeprov runs
in the server's namespace: `assign … --multicast` starts the session's sender (Clonezilla's
feeder from drbl's ocs-functions, udp-sender), as a process with a pid file (no systemd here).
Each receiver does what Clonezilla's client does for `multicast_restoredisk` (ocs-functions'
do_multicast_udpcast_restore): `udp-receiver --nokbd --mcast-all-addr 224.0.0.1 --portbase P`
for each partition, P two higher each time, a pause between. The image is a Clonezilla image
directory (`disk`, `parts`, partclone files of random bytes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov import multicast
from pxeprov.commands import plans as plans_module
from pxeprov.paths import Root
from pxeprov.pipeline import Machine, load_state

from .conftest import Cli, snapshot
from .isos import clonezilla_files, make_iso
from .mcastlab import Room

REPO = Path(__file__).resolve().parent.parent
IFACE = "mc0"
SUBNET = "10.89.0.0/24"
ADDRESS = "10.89.0.2"
MACS = ("52:54:00:18:10:01", "52:54:00:18:10:02", "52:54:00:18:10:03")
PARTS = {"vda1.ext4-ptcl-img.gz": 3_000_000, "vda2.vfat-ptcl-img.gz": 1_500_000}
IMAGE_BYTES = sum(PARTS.values())
WAIT = 120.0


class Lab(Room):
    """The room of these tests: three clients with the plans' MACs; what each receives goes
    to work/r<index>.<partition>."""

    def __init__(self, work: Path) -> None:
        super().__init__(f"mc{os.getpid() % 100000}", IFACE, "10.89.0", len(MACS), MACS)
        self.work = work

    def take(self, index: int, port: int, parts: int) -> subprocess.Popen[bytes]:
        return self.receive(index, port, parts, str(self.work / f"r{index}"), WAIT)


def pxeprov(ns: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "pxeprov", "--root",
                           str(root), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("this test builds namespaces: run it as root")
    missing = [t for t in ("udp-sender", "udp-receiver") if not _have(t)]
    if missing or not multicast.FUNCTIONS.is_file():
        pytest.fail(f"missing: {missing or multicast.FUNCTIONS} (tests/run-all.sh installs them)")
    lab = Lab(tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _have(tool: str) -> bool:
    return subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode == 0


@pytest.fixture
def root(room: Lab, loader_root: Path, cli: Cli, tmp_path: Path) -> Path:
    """Set up in the server's namespace, a Clonezilla live image, the repository with img1."""
    r = pxeprov(room.server, loader_root, "init", "--interface", IFACE, "--address", ADDRESS,
                "--subnet", SUBNET, "--no-http", "--no-install-packages")  # fmt: skip
    assert r.returncode == 0, r.stderr
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(loader_root, "add-image", str(iso), "--name", "cz").exit_code == 0
    assert cli(loader_root, "repo", "init").exit_code == 0
    image = loader_root / "srv/pxeprov/images/img1"
    image.mkdir()
    (image / "disk").write_text("vda\n")
    (image / "parts").write_text("vda1 vda2\n")
    for name, size in PARTS.items():
        (image / name).write_bytes(os.urandom(size))
    return loader_root


def _assign(room: Lab, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return pxeprov(room.server, root, "assign", *MACS, "--restore", "img1", "--disk", "vda",
                   "--multicast", "--group", "lab", "--yes", *extra)  # fmt: skip


def _wait_ended(root: Path, name: str = "lab", limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        session = load_state(Root.of(root)).session(name)
        if session is not None and session.ended:
            return
        time.sleep(0.5)
    pytest.fail(f"the session did not end in {limit:.0f} s")


def _same(room: Lab, index: int, files: list[bytes]) -> bool:
    """What receiver `index` took, partition by partition, is the image's files."""
    return all(
        (room.work / f"r{index}.{i}").is_file()
        and (room.work / f"r{index}.{i}").read_bytes() == data
        for i, data in enumerate(files, start=1)
    )


@pytest.mark.slow
def test_one_stream_restores_every_machine(room: Lab, root: Path) -> None:
    image = root / "srv/pxeprov/images/img1"
    files = [(image / name).read_bytes() for name in PARTS]
    before = room.tx_bytes()
    r = _assign(room, root, "--part-pause", "12", "--max-wait", "30")
    assert r.returncode == 0, r.stderr
    assert "the sender of the session 'lab' waits for its machines: pid " in r.stdout, r.stdout
    state = load_state(Root.of(root))
    session = state.session("lab")
    assert session is not None and (session.port, session.clients) == (2232, 3)
    assert {p.session for p in state.plans} == {"lab"}
    # the boot line runs Clonezilla's multicast client on the session's port
    menu = (root / f"var/lib/tftpboot/pxelinux.cfg/01-{MACS[0].replace(':', '-')}").read_text()
    assert "--mcast-port 2232 --max-time-to-wait 30 multicast_restoredisk img1 vda" in menu
    waiting = pxeprov(room.server, root, "plans")
    assert "now: waiting for machines (0 joined)" in waiting.stdout, waiting.stdout
    procs = [room.take(i, 2232, 2) for i in range(3)]
    _wait_ended(root)
    for proc in procs:
        assert proc.wait(timeout=30) == 0
    for i in range(3):
        assert _same(room, i, files), i
    sent = room.tx_bytes() - before
    print(f"\nmulticast: {sent} bytes out of {IFACE} for 3 machines, image {IMAGE_BYTES}")  # noqa: T201
    assert sent <= 1.2 * IMAGE_BYTES, sent  # each partition once (unicast: 3x)
    session = load_state(Root.of(root)).session("lab")
    assert session is not None and session.outcome == "sent", session
    shown = pxeprov(room.server, root, "plans")
    assert "ended " in shown.stdout and ": sent: 2 partitions" in shown.stdout, shown.stdout
    for i, mac in enumerate(MACS):
        assert f"{mac} (10.89.0.{11 + i})" in shown.stdout, shown.stdout
    assert multicast.sender_pid(Root.of(root), "lab") is None  # the sender ended with it
    # unassign ends the session: gone from the state
    r = pxeprov(room.server, root, "unassign", "--group", "lab")
    assert r.returncode == 0, r.stderr
    assert load_state(Root.of(root)).sessions == ()


@pytest.mark.slow
def test_an_absent_machine_and_a_dead_one_do_not_hold_the_others(room: Lab, root: Path) -> None:
    """Three planned, two power on (the wait ends after --max-wait), one of them dies in the
    first partition: the sender drops it, the other gets the whole image; the dead one's plan
    says failed, the absent one's that it missed the session."""
    image = root / "srv/pxeprov/images/img1"
    files = [(image / name).read_bytes() for name in PARTS]
    r = _assign(room, root, "--max-wait", "4", "--part-pause", "10", "--max-bitrate", "8m")
    assert r.returncode == 0, r.stderr
    machine = Machine(Root.of(root))
    state = load_state(Root.of(root))
    for plan in state.plans[:2]:  # the two that boot took their plans (their marker's fetch)
        assert plans_module.fire(machine, plan.mac, plan.token)
    good, _dead = room.take(0, 2232, 2), room.take(1, 2232, 2)
    deadline = time.monotonic() + 60
    while True:
        progress = multicast.read_progress(Root.of(root), "lab")
        if progress is not None and progress.phase == "sending" and progress.bytes_sent > 0:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    started = time.monotonic()
    room.kill(1)  # the machine dies: every process of its namespace
    _wait_ended(root)
    took = time.monotonic() - started
    print(f"\nended {took:.0f} s after the kill")  # noqa: T201
    assert took < 90, took  # the drop (30 retries, ~20 s), the rest, a 10 s partition pause
    assert good.wait(timeout=30) == 0
    assert _same(room, 0, files)
    state = load_state(Root.of(root))
    by_mac = {p.mac: p for p in state.plans}
    assert by_mac[MACS[1]].status == "failed", by_mac[MACS[1]]
    assert "dropped it in partition 1" in by_mac[MACS[1]].reason
    assert by_mac[MACS[0]].status == "started"  # its own job reports done (none here)
    shown = pxeprov(room.server, root, "plans")
    assert f"dropped: {MACS[1]} (10.89.0.12) in partition 1: it stopped answering" in shown.stdout
    assert f"{MACS[2]} [lab]" in shown.stdout and "MISSED its multicast session lab" in shown.stdout
    assert not (root / f"var/lib/tftpboot/pxelinux.cfg/01-{MACS[2].replace(':', '-')}").exists()


@pytest.mark.slow
def test_a_killed_sender_is_resumed_or_failed_and_a_leftover_one_stopped(
    room: Lab, root: Path
) -> None:
    state_file = root / "etc/pxeprov/pxeprov.toml"
    without = state_file.read_text()
    r = _assign(room, root, "--max-wait", "5", "--part-pause", "10", "--max-bitrate", "4m")
    assert r.returncode == 0, r.stderr
    rootp = Root.of(root)
    pid = multicast.sender_pid(rootp, "lab")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash (or a reboot) while it waited
    time.sleep(0.5)
    r = pxeprov(room.server, root, "plans")
    assert "was not running (a reboot or a crash before it sent anything): started it again" \
        in r.stdout, r.stdout  # fmt: skip
    pid2 = multicast.sender_pid(rootp, "lab")
    assert pid2 is not None and pid2 != pid
    # a shutdown (SIGTERM) while it waits: the session is not ended, the next command resumes it
    assert multicast.stop(rootp, "lab") == pid2
    session = load_state(rootp).session("lab")
    assert session is not None and not session.ended
    r = pxeprov(room.server, root, "plans")
    assert "started it again" in r.stdout, r.stdout
    pid2 = multicast.sender_pid(rootp, "lab")
    assert pid2 is not None
    procs = [room.take(i, 2232, 2) for i in range(2)]
    deadline = time.monotonic() + 60
    while (p := multicast.read_progress(rootp, "lab")) is None or p.bytes_sent == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(pid2, signal.SIGKILL)  # the supervisor and its feeder: mid-partition
    time.sleep(0.5)
    r = pxeprov(room.server, root, "status", "--since", "1m")
    assert "the session 'lab' failed: the sender stopped in partition 1 of 2" in r.stdout, r.stdout
    session = load_state(rootp).session("lab")
    assert session is not None and session.outcome == "failed"
    for proc in procs:
        proc.kill()
    # a sender whose session is no longer in the state (the state put back by hand)
    assert pxeprov(room.server, root, "unassign", "--group", "lab").returncode == 0
    r = _assign(room, root, "--max-wait", "5")
    assert r.returncode == 0, r.stderr
    pid3 = multicast.sender_pid(rootp, "lab")
    assert pid3 is not None
    state_file.write_text(without)
    doctor = pxeprov(room.server, root, "doctor")
    assert "a sender of the session 'lab' runs (pid" in doctor.stdout, doctor.stdout
    r = pxeprov(room.server, root, "plans")
    assert f"stopped a leftover sender of the session 'lab' (pid {pid3})" in r.stdout, r.stdout
    assert multicast.sender_pid(rootp, "lab") is None


def test_bad_sessions_are_refused_and_change_nothing(room: Lab, root: Path) -> None:
    r = _assign(room, root, "--max-wait", "600")
    assert r.returncode == 0, r.stderr
    before = snapshot(root)
    other = "52:54:00:18:10:09"
    for args, words in (
        ([other, "--restore", "nope", "--multicast", "--group", "b", "--yes"],
         "is not a Clonezilla disk image"),
        ([MACS[0], "--restore", "img1", "--multicast", "--group", "b", "--yes"],
         f"{MACS[0]} is in the multicast session 'lab'"),
        ([other, "--save", "img1"], "the multicast session 'lab' is sending img1"),
        ([other, "--restore", "img1", "--multicast", "--group", "b", "--yes", "--mcast-interface",
          "lo"], "the interface lo cannot multicast"),
        ([other, "--restore", "img1", "--multicast", "--group", "b", "--yes", "--mcast-port",
          "2240"], "share ports"),
        ([other, "--restore", "img1", "--multicast", "--group", "lab", "--yes"],
         "the session 'lab' exists"),
        ([other, "--restore", "img1", "--multicast", "--group", "b", "--yes", "--clients", "2"],
         "--clients 2: from 1 to the 1 machines given"),
        ([other, "--restore", "img1", "--multicast", "--group", "b", "--yes", "--disk", "sda"],
         "img1 was saved from vda, and Clonezilla's multicast restore writes only a disk of "
         "that name (not sda)"),
        ([other, "--entry", "cz", "--multicast"], "--multicast is for --restore"),
        ([other, "--restore", "img1", "--clients", "2", "--yes"], "are for --multicast"),
    ):  # fmt: skip
        if "--restore" in args and "--disk" not in args:
            args += ["--disk", "vda"]  # the image's disk
        r = pxeprov(room.server, root, "assign", *args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr, r.stderr
    after = snapshot(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith("var/lib/pxeprov/sessions")}, changed
    assert pxeprov(room.server, root, "unassign", "--group", "lab").returncode == 0
    assert multicast.sender_pid(Root.of(root), "lab") is None
