"""End to end: restores on the Secure Boot chain (shim -> GRUB 2.12), unicast and multicast.

The server as in test_restore.py, but with `--uefi-loader grub` and Debian 13's signed shim and
GRUB 2.12 (sbfiles.py): UEFI machines with Secure Boot enforced boot shim, GRUB reads its
per-machine plan from grub.cfg ($net_default_mac) and boots Clonezilla live (Debian's signed
kernel) with the job's parameters written in GRUB's quoting. Two such machines at once, blank
disks: one restores the image from a multicast session, the other by itself from the share
(sessions of several machines: test_multicast_restore.py, on the iPXE chains).
Every disk is then byte for byte the source, each plan done by its own job's report.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pxeprov.paths import Root
from pxeprov.pipeline import load_state
from pxeprov.repository import REPO_ACCOUNT
from pxeprov.system import system_account
from pxeprov.vlab import Firmware

from .conftest import MakeDir
from .disks import TOOLS, partition_hashes, partition_table, room_image
from .liveimage import LiveImage
from .netlab import NetLab, missing_files
from .pxeserver import (
    LOADERS,
    UNDIONLY,
    build_root,
    pxeprov,
    restore_at_once,
    stopping_senders,
)
from .sbfiles import SecureBootFiles
from .test_restore import CONSOLE, FAILED, samba, smbd  # noqa: F401  (fixtures, on our root)
from .test_secureboot import GRUB, SB_ENABLED, SHIM

# the VMs' limit below the test's: a boot that hangs ends with its serial console in the failure
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

MULTICAST = ("52:54:00:77:19:01",)
UNICAST = "52:54:00:77:19:02"
LIMIT = 1000.0  # two TCG VMs on two cores: ~250 s each here; margin for a slower CI machine


@pytest.fixture(scope="module")
def root(lab: NetLab, make_dir: MakeDir, live_image: LiveImage, sb_files: SecureBootFiles) -> Path:
    problems = missing_files((*LOADERS, UNDIONLY))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-sb-restore-root-")
    build_root(root, {UNDIONLY: UNDIONLY, SHIM: sb_files.shim, GRUB: sb_files.grub})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "60",
            "--uefi-loader", "grub")  # fmt: skip
    pxeprov(lab, root, "add-image", str(live_image.clonezilla_iso), "--name", "cz",
            "--append", CONSOLE)  # fmt: skip
    pxeprov(lab, root, "repo", "init")
    return root


def test_restores_on_the_secure_boot_chain(
    lab: NetLab,
    make_dir: MakeDir,
    root: Path,
    samba: Path,  # noqa: F811
) -> None:
    missing = [t for t in (*TOOLS, "udp-sender") if subprocess.run(
        ["sh", "-c", f"command -v {t}"], capture_output=True).returncode]  # fmt: skip
    if missing:
        pytest.fail(f"e2e preconditions not met: programs missing: {missing}", pytrace=False)
    work = make_dir("pxeprov-e2e-sb-restore-")
    macs = (*MULTICAST, UNICAST)
    room = room_image(samba, work, len(macs), system_account(REPO_ACCOUNT))
    machines: list[tuple[Firmware, str, Path]] = [
        ("uefi-sb", mac, target) for mac, target in zip(macs, room.targets, strict=True)
    ]
    with stopping_senders(root):
        pxeprov(lab, root, "assign", *MULTICAST, "--restore", "img1", "--disk", "vda", "--then",
                "poweroff", "--multicast", "--group", "sb", "--max-wait", "600", "--part-pause",
                "60", "--max-bitrate", "20m", "--yes")  # fmt: skip
        pxeprov(lab, root, "assign", UNICAST, "--restore", "img1", "--disk", "vda", "--then",
                "poweroff", "--yes")  # fmt: skip
        cfg = (root / "var/lib/tftpboot/grub/grub.cfg").read_text()
        assert "multicast_restoredisk img1 vda" in cfg and "restoredisk img1 vda" in cfg, cfg
        evidence, text = restore_at_once(lab, root, "sb-restore", machines, LIMIT, FAILED)
    for ev in evidence:
        print(f"\nuefi-sb {ev.mac}: QEMU ran {ev.seconds:.0f} s")  # noqa: T201
        assert ev.ended_by == "qemu exited (rc=0)", ev.summary()
        assert SB_ENABLED in ev.serial, ev.summary()  # shim verified GRUB, GRUB the kernel
        assert "shimx64.efi" in ev.proxy_log, ev.summary()
        assert "PXEPROV-OCS-RESULT rc=0" in ev.serial, ev.summary()
        multicast = "multicast_restoredisk img1 vda" in ev.serial
        assert multicast == (ev.mac != UNICAST), ev.summary()
    for target in room.targets:
        assert partition_hashes(target) == room.expected
        assert partition_table(target) == room.table
    state = load_state(Root.of(root))
    session = state.session("sb")
    assert session is not None and session.outcome == "sent", (session, text)
    for plan in state.plans:
        assert (plan.status, plan.result) == ("done", "done"), (plan, text)
