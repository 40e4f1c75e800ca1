"""End to end: per-machine plans with real clients. Two machines (two MACs) on one server:
the one with a plan boots it at once, with no key press and no timeout wait (the menus wait 60
s); the other gets the menu. On BIOS through pxelinux (pxelinux.cfg/01-<mac>), on UEFI through
the GRUB chain (its $net_default_mac switch), on BIOS through iPXE (its ${mac} switch). The
plans are --once: each loader fetches the plan's own marker (pxelinux's INCLUDE, GRUB's source,
iPXE's imgfetch) before the kernel; `pxeprov watch --fire` fires the plan when it sees that fetch,
and the machine gets the menu from then on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pxeprov.paths import Root
from pxeprov.pipeline import load_state

from .conftest import MakeDir
from .netlab import NetLab, missing_files, stop_process
from .pxeserver import (
    B_ADDR,
    DI,
    LOADERS,
    REPO,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    leases,
    pxeprov,
    watching,
)
from .sbfiles import SecureBootFiles
from .test_secureboot import GRUB, SHIM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLANNED = {"bios": "52:54:00:77:11:01", "uefi": "52:54:00:77:11:02"}
OTHER = {"bios": "52:54:00:77:11:11", "uefi": "52:54:00:77:11:12"}
ONCE = "52:54:00:77:11:21"
SHARED = ("52:54:00:77:11:31", "52:54:00:77:11:32")  # two UEFI machines, one address
SHARED_ADDRESS = "10.77.0.90"  # outside the lease range: no earlier boot holds it
FORGER = "10.77.0.60"
MENU_WAIT = 60  # the menus' timeout: a plan that waited for it would take this long
KERNEL_LIMIT = 45.0  # a planned boot reaches its kernel well before the menu would time out
MENU_LIMIT = 35.0  # a machine without a plan is watched this long: the menu, no kernel
KERNEL = "images/d-i/linux"


@pytest.fixture(scope="module")
def one(lab: NetLab) -> Iterator[OneAtATime]:
    serving = OneAtATime(lab)
    try:
        yield serving
    finally:
        serving.stop()


@pytest.fixture(scope="module")
def tftp_root(lab: NetLab, make_dir: MakeDir, sb_files: SecureBootFiles) -> Path:
    """TFTP only: pxelinux for BIOS, shim + GRUB for UEFI."""
    if missing_files((*LOADERS, DI / "linux")):
        pytest.fail("e2e preconditions not met", pytrace=False)
    root = make_dir("pxeprov-e2e-plans-tftp-")
    build_root(root, {SHIM: sb_files.shim, GRUB: sb_files.grub})
    pxeprov(lab, root, "init", "--no-install-packages", "--no-http", "--uefi-loader", "grub",
            "--menu-timeout", str(MENU_WAIT))  # fmt: skip
    for mac in PLANNED.values():  # no watcher here: the one-shot plans stay armed
        pxeprov(lab, root, "assign", mac, "--entry", "d-i", "--once")
    return root


def marker_sent(ev_log: str, mac: str) -> bool:
    dashes = mac.replace(":", "-")
    return bool(re.search(rf"sent \S+/plans/{dashes}-[0-9a-f]{{16}} to ", ev_log))


def kernel_sent(ev_log: str) -> bool:
    return bool(re.search(rf"sent \S+/{re.escape(KERNEL)} to ", ev_log))


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_planned_machine_boots_its_plan_the_other_the_menu(
    lab: NetLab, one: OneAtATime, tftp_root: Path, firmware: str
) -> None:
    served = one.serve(Served.of("plans-tftp", tftp_root))
    ev = lab.boot(firmware, PLANNED[firmware], served.running, limit=KERNEL_LIMIT)  # type: ignore[arg-type]
    assert ev.kernel_after is not None and ev.kernel_after < MENU_WAIT, ev.summary()
    assert kernel_sent(ev.proxy_log), ev.summary()
    # the plan's marker, before the kernel: what tells pxeprov-watch that this plan was taken
    assert marker_sent(ev.proxy_log, PLANNED[firmware]), ev.summary()
    if firmware == "bios":  # its own file, not the menu
        dashes = PLANNED["bios"].replace(":", "-")
        assert f"pxelinux.cfg/01-{dashes} to " in ev.proxy_log, ev.summary()
        assert "menu.c32" not in ev.proxy_log, ev.summary()
    other = lab.boot(firmware, OTHER[firmware], served.running, limit=MENU_LIMIT)  # type: ignore[arg-type]
    assert other.kernel_after is None, other.summary()
    assert not kernel_sent(other.proxy_log), other.summary()
    assert "/plans/" not in other.proxy_log, other.summary()
    menu = "pxelinux.cfg/default" if firmware == "bios" else "grub/grub.cfg"
    assert re.search(rf"sent \S+/{re.escape(menu)} to ", other.proxy_log), other.summary()
    if firmware == "uefi":  # GRUB shows its menu, counting down from the menus' timeout
        assert re.search(r"automatically in [3-6]\ds", other.serial), other.summary()


def test_ipxe_plan_and_a_one_shot_that_fires(
    lab: NetLab, one: OneAtATime, make_dir: MakeDir
) -> None:
    """HTTP: BIOS clients get iPXE; the plan is --once, and fires when its marker is fetched."""
    root = make_dir("pxeprov-e2e-plans-http-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", str(MENU_WAIT))
    pxeprov(lab, root, "assign", ONCE, "--entry", "d-i", "--once")
    served = one.serve(Served.of("plans-http", root))
    assert served.nginx is not None
    out = lab.workdir / "plans-watch.out"
    with watching(lab, root, served, out):
        ev = lab.boot("bios", ONCE, served.running, limit=KERNEL_LIMIT)
        assert ev.kernel_after is not None and ev.kernel_after < MENU_WAIT, ev.summary()
        deadline = time.monotonic() + 20
        while "plan fired" not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.3)
    client = leases(ev)[-1]
    requests = served.nginx.requests()
    assert any(r.client == client and r.path == f"/{KERNEL}" and r.status == 200 for r in requests)
    assert f"{ONCE}  plan fired (Boot d-i): from now on it boots the menu" in out.read_text()
    assert marker_sent(ev.proxy_log, ONCE), ev.summary()
    plan = load_state(Root.of(root)).plans[0]
    assert plan.fired and plan.now == "menu"
    assert "iseq ${mac}" not in (root / "var/lib/tftpboot/boot.ipxe").read_text()
    # and the machine gets the menu now
    again = lab.boot("bios", ONCE, served.running, limit=MENU_LIMIT)
    assert again.kernel_after is None, again.summary()


@dataclass
class Watcher:
    """`pxeprov watch --fire` in namespace B, as pxeprov-watch runs it: started, killed (as a
    crash would), started again; its output in one file."""

    lab: NetLab
    root: Path
    served: Served
    out: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> None:
        assert self.served.nginx is not None
        argv = ["ip", "netns", "exec", self.lab.ns_b, sys.executable, "-m", "pxeprov", "--root",
                str(self.root), "watch", "--fire", "--dnsmasq-log", str(self.served.running.log),
                "--nginx-log", str(self.served.nginx.access_log)]  # fmt: skip
        before = self.text().count("Watching ")
        with self.out.open("ab") as f:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        self.starts += 1
        self.wait_for(lambda t: t.count("Watching ") > before, 30)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL: no goodbye, as a crash or an OOM kill
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        finally:
            stop_process(self.proc)

    def text(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def wait_for(self, seen: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not seen(self.text()):  # type: ignore[operator]
            assert self.proc is None or self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.3)


def forge(ns: str, mac: str, http_base: str) -> list[str]:
    """From a third host on the LAN: a PXE request to the proxy's port 4011 that names another
    machine's MAC (UEFI x86-64), the kernel of that machine's plan over HTTP and TFTP, and a
    plan marker with a guessed token. What answered, in words."""
    script = f"""
import socket, struct
from pxeprov.dhcpprobe import build_discover, parse_options
mac = bytes.fromhex({mac.replace(":", "")!r})
packet = bytearray(build_discover(mac, 0x17171717, 7, bytes(16)))
packet[12:16] = socket.inet_aton({FORGER!r})  # ciaddr: the forger's own address
packet = bytes(packet).replace(b"\\x35\\x01\\x01", b"\\x35\\x01\\x03", 1)  # DHCPREQUEST
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({FORGER!r}, 68))
s.settimeout(5)
s.sendto(packet, ({B_ADDR!r}, 4011))
try:
    data, _ = s.recvfrom(2048)
    chaddr = data[28:34].hex(":")
    file = data[108:236].rstrip(b"\\0").decode(errors="replace")
    print(f"proxy answered {{chaddr}} file={{file}}")
except socket.timeout:
    print("proxy: no answer")
"""
    said = []
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    said.append(done.stdout.strip())
    guessed = f"plans/{mac.replace(':', '-')}-0123456789abcdef"
    for url in (f"{http_base}/{KERNEL}", f"tftp://{B_ADDR}/{KERNEL}", f"tftp://{B_ADDR}/{guessed}"):
        got = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null",
                              "--max-time", "20", "-w", "%{http_code}", url],
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        said.append(f"{url}: exit {got.returncode} code {got.stdout}")
    return said


def test_only_the_plan_s_own_fetch_fires_it(
    lab: NetLab, one: OneAtATime, make_dir: MakeDir
) -> None:
    """Issue 17's attacks, with real clients: a forged PXE request from a third namespace that
    names a machine's MAC, and its kernel fetched, fire nothing; two UEFI machines given one
    address one after the other each fire their own plan and nothing else; the watcher killed
    in the middle of a boot and started again fires what happened while it was down."""
    root = make_dir("pxeprov-e2e-plans-evidence-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", str(MENU_WAIT))
    for mac in SHARED:
        pxeprov(lab, root, "assign", mac, "--entry", "d-i", "--once")
    served = one.serve(Served.of("plans-evidence", root))
    lab.use_ordinary("dnsmasq", options=[f"dhcp-host={SHARED[0]},{SHARED[1]},{SHARED_ADDRESS}"])
    watcher = Watcher(lab, root, served, lab.workdir / "evidence-watch.out")
    forger = lab.add_host("forger", FORGER)
    try:
        watcher.start()
        port = load_state(Root.of(root)).http_port
        said = forge(forger, SHARED[0], f"http://{B_ADDR}:{port}")
        # the proxy believed the forger (PXE has no client authentication) and served the
        # kernel; the guessed marker does not exist
        assert said[0].startswith(f"proxy answered {SHARED[0]}"), said
        assert said[1].endswith("code 200") and said[2].startswith(
            f"tftp://{B_ADDR}/{KERNEL}: exit 0"
        ), said
        assert "exit 0" not in said[3], said
        time.sleep(3)  # the watcher reads the logs every second or so
        assert "plan fired" not in watcher.text(), watcher.text()
        assert all(not p.fired for p in load_state(Root.of(root)).plans)

        first = lab.boot("uefi", SHARED[0], served.running, limit=KERNEL_LIMIT)
        assert first.kernel_after is not None, first.summary()
        assert leases(first)[-1] == SHARED_ADDRESS, first.summary()
        watcher.wait_for(lambda t: f"{SHARED[0]}  plan fired" in t, 20)
        state = load_state(Root.of(root))
        assert [bool(p.fired) for p in state.plans] == [True, False]

        # the second machine, at the same address; the watcher dies 3 s into its boot
        killer = threading.Timer(3, watcher.kill)
        killer.start()
        try:
            second = lab.boot("uefi", SHARED[1], served.running, limit=KERNEL_LIMIT)
        finally:
            killer.cancel()
        assert watcher.proc is not None and watcher.proc.poll() is not None  # it was down
        assert second.kernel_after is not None, second.summary()
        assert leases(second)[-1] == SHARED_ADDRESS, second.summary()
        assert marker_sent(second.proxy_log, SHARED[1]), second.summary()
        assert not load_state(Root.of(root)).plans[1].fired  # nobody watched
        watcher.start()
        watcher.wait_for(lambda t: f"{SHARED[1]}  plan fired" in t, 30)
        assert "Taken up where it stopped" in watcher.text(), watcher.text()
        plans = load_state(Root.of(root)).plans
        assert [p.mac for p in plans] == list(SHARED) and all(p.fired for p in plans)
        # each fired once, by its own marker: no kernel fetch from the shared address counted
        assert watcher.text().count("plan fired") == 2, watcher.text()
    finally:
        watcher.stop()
        lab.remove_host(forger)
        lab.use_ordinary("dnsmasq")
