"""End to end: an ARM64 UEFI client (QEMU `virt`, AAVMF, TCG) boots through pxeprov's proxy.

AAVMF with Microsoft's keys enrolled and Secure Boot on (AAVMF_VARS.ms.fd) sends DHCP
architecture 11; pxeprov's proxy offers trixie's signed shimaa64.efi, which loads Debian's
signed GRUB 2.12 (grubaa64.efi), which reads grub/grub.cfg from the proxy and boots the arm64
Debian installer (debian-installer-12-netboot-arm64) to its first dialog. The ordinary DHCP
server is ISC dhcpd as Windows DHCP answers: no boot file name, no next server; the boot file
comes from the proxy's offer alone (trixie's GRUB copies only the first byte of the offer's file
and server names: it still finds its server, as this test shows). An x86-64 BIOS client boots
from the same server in the same run. The arm64 packages are downloaded, never installed
(sbfiles.arm64_files).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxeprov.arch import ARM64, UNPACKED
from pxeprov.vlab import AAVMF_CODE, AAVMF_SB_VARS

from .conftest import MakeDir
from .netlab import NetLab, missing_files
from .pxeserver import LOADERS, REPO, OneAtATime, Served, build_root, pxeprov
from .sbfiles import Arm64Files, PackageError, SecureBootFiles, arm64_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DI_ARM64 = Path("/usr/lib/debian-installer/images/12/arm64/text")
ARM_MAC = "52:54:00:77:21:01"
X86_MAC = "52:54:00:77:21:02"
DIALOG = r"Select a language|Choose the language to be used"
# to the installer's first dialog: about 105 s here under TCG, 330 s on a box busy with
# three other VMs
DIALOG_LIMIT = 480.0
KERNEL_LIMIT = 90.0


@dataclass(frozen=True)
class ArmServer:
    root: Path
    files: Arm64Files


@pytest.fixture(scope="module")
def arm_server(lab: NetLab, make_dir: MakeDir) -> ArmServer:
    """A server rendered by `pxeprov init` with trixie's arm64 shim and signed GRUB where an
    x86-64 server's admin unpacks them, the arm64 installer and the x86-64 one (its state's
    d-i), and a plan for each test machine."""
    needed = (AAVMF_CODE, AAVMF_SB_VARS, DI_ARM64 / "debian-installer/arm64/linux", *LOADERS)
    problems = missing_files(needed)
    if problems or shutil.which(ARM64.qemu) is None:
        pytest.fail("e2e preconditions not met (tests/run-all.sh installs qemu-system-arm, "
                    f"qemu-efi-aarch64, debian-installer-12-netboot-arm64): {problems}",
                    pytrace=False)  # fmt: skip
    try:
        arm = arm64_files()
    except PackageError as exc:
        pytest.fail(f"trixie's arm64 shim and GRUB could not be had:\n{exc}", pytrace=False)
    root = make_dir("pxeprov-e2e-arm64-")
    unpacked = Path(str(UNPACKED)) / "arm64"
    build_root(root, {unpacked / str(ARM64.shim[0]).lstrip("/"): arm.shim,
                      unpacked / str(ARM64.signed_grub).lstrip("/"): arm.grub})  # fmt: skip
    out = pxeprov(lab, root, "init", "--no-install-packages", "--no-http", "--menu-timeout", "30")
    assert "UEFI arm64 -> shimaa64.efi -> grubaa64.efi (signed" in out.stdout, out.stdout
    added = pxeprov(lab, root, "add-image", str(DI_ARM64), "--name", "di-arm64",
                    "--append", "console=ttyAMA0")  # fmt: skip
    assert "arm64" in added.stdout, added.stdout
    pxeprov(lab, root, "assign", ARM_MAC, "--entry", "di-arm64")
    pxeprov(lab, root, "assign", X86_MAC, "--entry", "d-i")
    return ArmServer(root, arm)


def test_an_arm64_client_boots_the_installer_with_secure_boot(
    lab: NetLab,
    arm_server: ArmServer,
    sb_files: SecureBootFiles,
    record_property: Callable[[str, object], None],
) -> None:
    root, arm = arm_server.root, arm_server.files
    tftp = root / "var/lib/tftpboot"
    # copied byte for byte: any change would break the signatures
    assert (tftp / "shimaa64.efi").read_bytes() == arm.shim.read_bytes()
    assert (tftp / "grubaa64.efi").read_bytes() == arm.grub.read_bytes()
    conf = (root / "etc/dnsmasq.d/pxeprov.conf").read_text()
    assert re.search(r"^pxe-service=ARM64_EFI,.*,shimaa64\.efi$", conf, re.MULTILINE), conf
    one = OneAtATime(lab)
    try:
        served = one.serve(Served.of("arm64", root))
        # the ordinary server as Windows DHCP answers: no file name, siaddr 0.0.0.0
        lab.use_ordinary("W", sb_files.dhcpd)
        ev = lab.boot("arm64-sb", ARM_MAC, served.running, limit=DIALOG_LIMIT, stop_on=DIALOG)
        assert ev.stop_after is not None, ev.summary()
        assert "Secure boot enabled" in ev.serial, ev.summary()
        for name in ("shimaa64.efi", "grubaa64.efi", "grub/grub.cfg", "images/di-arm64/vmlinuz",
                     "images/di-arm64/initrd.img"):  # fmt: skip
            assert re.search(rf"sent \S+/{re.escape(name)} to 10\.77\.0\.", ev.proxy_log), (
                name, ev.summary())  # fmt: skip
        assert "PXEClient:Arch:00011" in ev.proxy_log, ev.summary()
        record_property("arm64_kernel_s", ev.kernel_after)  # for the junit report
        record_property("arm64_dialog_s", ev.stop_after)
        # an x86-64 client of the same server boots as before
        x86 = lab.boot("bios", X86_MAC, served.running, limit=KERNEL_LIMIT)
        assert x86.kernel_after is not None, x86.summary()
        assert "images/di-arm64" not in x86.proxy_log, x86.summary()
    finally:
        lab.use_ordinary("dnsmasq")
        one.stop()


def test_verify_boots_an_arm64_client(arm_server: ArmServer) -> None:
    """`pxeprov verify` boots an AAVMF client (Secure Boot on) on its own private network."""
    r = subprocess.run(
        [sys.executable, "-m", "pxeprov", "--root", str(arm_server.root), "verify",
         "--firmware", "arm64-sb", "--image", "di-arm64", "--timeout", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "UEFI arm64 Secure Boot: pass" in out, out
    assert "Verified: every client reached image di-arm64." in out, out
    assert "shimaa64.efi (tftp)" in out and "images/di-arm64/initrd.img (tftp)" in out, out
    assert "kernel started" in out, out  # console=ttyAMA0: the kernel says so
