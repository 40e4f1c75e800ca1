"""End to end: `pxeprov verify` proves a good server and catches a broken one, naming the stage.

The server is rendered by `pxeprov init` (inside the lab's namespace B, so that it detects an
interface and address as on a real server: vpxe1, 10.77.0.2/24), with the Debian installer as
the menus' default. `verify` then runs from the host as an admin would run it: it builds its own
private network (namespaces of its own, an interface named vpxe1 with 10.77.0.2 on the server's
side), runs the rendered config and site as they are, and boots QEMU clients in it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import NetLab, missing_files
from .pxeserver import DI, LOADERS, REPO, UNDIONLY, build_root, make_default, pxeprov

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KERNEL = "var/lib/tftpboot/images/d-i/linux"
SNPONLY = "var/lib/tftpboot/snponly.efi"


@pytest.fixture(scope="module")
def root(lab: NetLab, make_dir: MakeDir) -> Path:
    problems = missing_files((*LOADERS, UNDIONLY, DI / "linux"))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-verify-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages")  # the image's append has console=ttyS0
    make_default(lab, root, "d-i")
    return root


def verify(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxeprov", "--root", str(root), "verify", *args],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def test_verify_passes_on_a_good_server(root: Path) -> None:
    r = verify(root, "--firmware", "bios,uefi", "--timeout", "240")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Verified: every client reached image d-i." in out, out
    for name in ("BIOS: pass", "UEFI: pass"):
        assert name in out, out
    assert out.count("images/d-i/linux (http)") == 2, out  # kernel over HTTP, both clients
    assert out.count("images/d-i/initrd.gz (http)") == 2, out
    assert "snponly.efi (tftp)" in out  # UEFI's boot loader
    assert out.count("kernel started") == 2, out  # the installer's console says "Linux version"


def test_verify_names_the_stage_that_fails(root: Path) -> None:
    kernel, snponly = root / KERNEL, root / SNPONLY
    kernel.rename(kernel.with_suffix(".aside"))
    snponly.rename(snponly.with_suffix(".aside"))
    try:
        r = verify(root, "--firmware", "bios,uefi", "--timeout", "120")
    finally:
        kernel.with_suffix(".aside").rename(kernel)
        snponly.with_suffix(".aside").rename(snponly)
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout
    assert "BIOS: FAIL" in out and "UEFI: FAIL" in out, out
    assert "images/d-i/linux is not on the server (asked for over HTTP, answer 404)" in out, out
    assert "snponly.efi is not on the server (asked for over TFTP)" in out, out
    assert "Not verified: BIOS, UEFI did not reach image d-i." in out
    # nothing of the private network is left
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "pxeprov-verify-" not in namespaces
