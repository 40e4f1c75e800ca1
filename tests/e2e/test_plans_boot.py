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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov.paths import Root
from pxeprov.pipeline import load_state

from .conftest import MakeDir
from .netlab import NetLab, missing_files, stop_process
from .pxeserver import (
    DI,
    LOADERS,
    REPO,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    leases,
    pxeprov,
)
from .sbfiles import SecureBootFiles
from .test_secureboot import GRUB, SHIM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLANNED = {"bios": "52:54:00:77:11:01", "uefi": "52:54:00:77:11:02"}
OTHER = {"bios": "52:54:00:77:11:11", "uefi": "52:54:00:77:11:12"}
ONCE = "52:54:00:77:11:21"
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
    argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "pxeprov", "--root", str(root),
            "watch", "--fire", "--dnsmasq-log", str(served.running.log), "--nginx-log",
            str(served.nginx.access_log)]  # fmt: skip
    with out.open("wb") as f:
        watcher = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Watching " not in out.read_text():
            assert watcher.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        ev = lab.boot("bios", ONCE, served.running, limit=KERNEL_LIMIT)
        assert ev.kernel_after is not None and ev.kernel_after < MENU_WAIT, ev.summary()
        deadline = time.monotonic() + 20
        while "plan fired" not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.3)
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            watcher.wait(timeout=15)
        finally:
            stop_process(watcher)
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
