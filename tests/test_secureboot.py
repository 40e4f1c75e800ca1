"""The UEFI chain choice: shim + signed GRUB (Secure Boot) or iPXE, and the GRUB menu."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from pxeprov import boot, render
from pxeprov.errors import MissingFileError
from pxeprov.images import pe
from pxeprov.state import Image, Network, State
from pxeprov.system import Packages

from .conftest import NET, Cli, add_signed_uefi_loaders
from .isos import clonezilla_files, make_iso

TFTP = "var/lib/tftpboot"
DROP_IN = "etc/dnsmasq.d/pxeprov.conf"


def test_grub_chain(loader_root: Path, cli: Cli) -> None:
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", *NET, "--no-http", "--uefi-loader", "grub")
    assert r.exit_code == 0, r.stderr
    for name in ("shimx64.efi", "grubx64.efi", "grub/grub.cfg", "pxelinux.0"):
        assert (loader_root / TFTP / name).is_file(), name
    assert not (loader_root / TFTP / "snponly.efi").exists()
    assert not (loader_root / TFTP / "boot.ipxe").exists()
    conf = (loader_root / DROP_IN).read_text()
    for csa in ("X86-64_EFI", "BC_EFI"):
        assert f'pxe-service={csa},"pxeprov network boot (UEFI)",shimx64.efi' in conf
    assert "ipxe" not in conf.lower().replace("# ", "")
    assert "shimx64.efi -> grubx64.efi (signed: Secure Boot works" in r.stdout
    assert "BOOTP" in r.stdout and "option 67 unset" in r.stdout
    done = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={loader_root / DROP_IN}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_switching_chains_removes_the_other_chain(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http", "--uefi-loader", "ipxe").exit_code == 0
    assert (loader_root / TFTP / "boot.ipxe").is_file()
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", "--uefi-loader", "grub")
    assert r.exit_code == 0, r.stderr
    assert "removed    /var/lib/tftpboot/snponly.efi" in r.stdout
    assert not (loader_root / TFTP / "boot.ipxe").exists()
    r = cli(loader_root, "init", "--uefi-loader", "ipxe")
    assert r.exit_code == 0, r.stderr
    assert not (loader_root / TFTP / "grub/grub.cfg").exists()
    assert (loader_root / TFTP / "boot.ipxe").is_file()


@pytest.mark.parametrize(
    ("grub", "chain", "warning"),
    [
        ("2.12", "grub", None),
        ("2.06", "ipxe", "is older than 2.12"),
        (None, "ipxe", "is not installed"),
    ],
)
def test_auto_picks_grub_only_when_it_can_work(
    loader_root: Path, cli: Cli, grub: str | None, chain: str, warning: str | None
) -> None:
    if grub is not None:
        add_signed_uefi_loaders(loader_root, proxy_support=grub == "2.12")
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    served = "shimx64.efi" if chain == "grub" else "snponly.efi"
    assert (loader_root / TFTP / served).is_file()
    if warning is None:
        assert "warning" not in r.stderr
    else:
        (line,) = [w for w in r.stderr.splitlines() if w.startswith("warning:")]
        assert "Secure Boot on will refuse it" in line and warning in line
        assert "--uefi-loader grub" in line


def test_grub_asked_for_but_too_old(loader_root: Path, cli: Cli) -> None:
    add_signed_uefi_loaders(loader_root, proxy_support=False)
    r = cli(loader_root, "init", *NET, "--uefi-loader", "grub")
    assert r.exit_code == 4
    assert "has no proxyDHCP support" in r.stderr and "grub-efi-amd64-signed >= 2.12" in r.stderr
    assert not (loader_root / "etc").exists()


NET_B = Network("eth0", ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Network("10.0.0.0/24"))


def grub_cfg(state: State) -> str:
    for f in render.render(state, decision=boot.Decision("grub")):
        if str(f.path).endswith("grub/grub.cfg"):
            assert f.content is not None
            return f.content.decode()
    raise AssertionError("no grub.cfg rendered")


def test_grub_menu_matches_the_other_menus() -> None:
    image = Image(
        "cz", "Bob's Clonezilla", "clonezilla", "images/cz/vmlinuz", "images/cz/initrd.img",
        rootfs="images/cz/filesystem.squashfs", default=True, unsigned_kernel=True,
    )  # fmt: skip
    cfg = grub_cfg(State(network=NET_B, menu_timeout=7, images=(image,)))
    assert "set timeout=7\n" in cfg and 'set default="img-cz"\n' in cfg
    assert "menuentry 'Bob'\\''s Clonezilla [not signed: no Secure Boot]' --id img-cz {" in cfg
    assert "  linux /images/cz/vmlinuz boot=live " in cfg
    # GRUB drops unescaped double quotes: Clonezilla's own grub.cfg escapes them too
    assert 'ocs_live_run=\\"ocs-live-general\\" ocs_live_extra_param=\\"\\"' in cfg
    assert "fetch=tftp://10.0.0.2/images/cz/filesystem.squashfs" in cfg
    assert "  initrd /images/cz/initrd.img\n" in cfg
    assert "menuentry 'Boot from local disk' --id local {\n  exit\n}" in cfg
    assert "set timeout=-1\n" in grub_cfg(State(network=NET_B, menu_timeout=0))
    assert 'set default="local"' in grub_cfg(State(network=NET_B))


DI_KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")


def test_add_image_marks_unsigned_kernels(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    add_signed_uefi_loaders(loader_root)
    assert cli(loader_root, "init", *NET, "--uefi-loader", "grub").exit_code == 0
    unsigned = make_iso(tmp_path / "unsigned.iso", clonezilla_files())  # random bytes kernel
    signed = make_iso(tmp_path / "signed.iso", clonezilla_files(kernel=DI_KERNEL.read_bytes()))
    r = cli(loader_root, "add-image", str(unsigned))
    assert r.exit_code == 0, r.stderr
    assert "warning: the kernel /live/vmlinuz has no Secure Boot signature" in r.stdout
    r = cli(loader_root, "add-image", str(signed))
    assert r.exit_code == 0, r.stderr
    assert "Secure Boot signature" not in r.stdout
    cfg = (loader_root / TFTP / "grub/grub.cfg").read_text()
    assert "[not signed: no Secure Boot]' --id img-unsigned" in cfg
    assert "Clonezilla live (clonezilla-live-3.1.2-22-amd64)' --id img-signed" in cfg


def test_pe_signature_detection() -> None:
    assert pe.has_signature(DI_KERNEL)  # Debian signs its kernels
    assert not pe.has_signature(Path("/usr/lib/ipxe/snponly.efi"))  # a PE image, not signed
    assert not pe.has_signature(Path("/usr/lib/PXELINUX/pxelinux.0"))  # not a PE image
    assert not pe.is_signed(b"MZ" + bytes(100))


def test_secure_boot_chain_with_http(loader_root: Path, cli: Cli) -> None:
    """UEFI: shim + GRUB; BIOS: iPXE for its HTTP client; both menus from one state."""
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", *NET, "--uefi-loader", "grub", "--http")
    assert r.exit_code == 0, r.stderr
    served = {p.name for p in (loader_root / TFTP).rglob("*") if p.is_file()}
    assert {"undionly.kpxe", "boot.ipxe", "shimx64.efi", "grubx64.efi", "grub.cfg"} <= served
    assert not served & {"snponly.efi", "pxelinux.0"}
    conf = (loader_root / DROP_IN).read_text()
    assert "pxe-service=tag:!ipxe,x86PC," in conf and "undionly.kpxe" in conf
    assert 'pxe-service=X86-64_EFI,"pxeprov network boot (UEFI)",shimx64.efi' in conf
    assert "snponly.efi" not in conf


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        ("1+2.06+13+deb12u2", True),  # Debian 12's
        ("1.187.6+2.06-2ubuntu14.4", True),  # Ubuntu 22.04's
        ("2.04-1", True),
        ("1+2.12+7", False),  # Debian 13's
        ("1.202+2.12-1ubuntu7", False),  # Ubuntu 24.04's
        ("1:2.14-2", False),
        (None, False),  # apt cannot say: the run checks the binary once installed
    ],
)
def test_a_grub_older_than_2_12_is_refused_before_it_is_installed(
    version: str | None, refused: bool
) -> None:
    """`--uefi-loader grub` on Debian 12: the dry run showed a clean plan, and the run installed
    shim and GRUB 2.06 before it refused them. The version apt would install decides first."""
    if refused:
        assert version is not None
        with pytest.raises(MissingFileError, match=r"older than 2\.12") as caught:
            boot.check_grub_candidate(version)
        assert version in caught.value.message and "--uefi-loader ipxe" in str(caught.value.hint)
    else:
        boot.check_grub_candidate(version)


def test_the_version_apt_would_install() -> None:
    packages = Packages()
    candidate = packages.candidate("dnsmasq-base")  # installed by the suite's own set-up
    assert candidate is not None and candidate[0].isdigit(), candidate
    assert packages.candidate("no-such-package-pxeprov") is None
