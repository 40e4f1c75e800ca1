"""ARM64 UEFI clients, with the architecture as a type (pxeprov.arch): which loader arm64
clients get (shim + Debian's signed GRUB, its unsigned netboot GRUB, or none), the dnsmasq
line that answers DHCP architecture 11, images that carry their architecture (from their
kernel's own bytes), and menus that offer each client only what its CPU can boot.
(tests/e2e/test_arm64.py boots a real AAVMF client.)"""

from __future__ import annotations

import ast
import gzip
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pxeprov import arch
from pxeprov.paths import Root
from pxeprov.pipeline import load_state

from .conftest import GRUB_HTTP, NET, Cli, add_signed_uefi_loaders

TFTP = "var/lib/tftpboot"
DROP_IN = "etc/dnsmasq.d/pxeprov.conf"
DI = Path("/usr/lib/debian-installer/images/12")
DI_AMD64 = DI / "amd64/text"
DI_ARM64 = DI / "arm64/text"
PROXY = b"setting values from proxy offer"


def add_arm64_loaders(root: Path, signed: bool = True, unsigned: bool = False,
                      proxy: bool = True, unpacked: bool = False) -> None:  # fmt: skip
    """Stand-ins for trixie's shimaa64 + signed grubnetaa64, and bookworm/trixie's unsigned
    monolithic grubnetaa64 (grub-efi-arm64-bin): what pxeprov reads of them."""
    marker = PROXY if proxy else b"GRUB 2.06"
    files = []
    if signed:
        files += [
            (arch.ARM64.shim[0], b"MZ stand-in for shimaa64.efi.signed"),
            (arch.ARM64.signed_grub, b"MZ signed grubnetaa64 " + marker + GRUB_HTTP),
        ]
    if unsigned:
        files.append((arch.ARM64.unsigned_grub, b"MZ grubnetaa64 " + marker + GRUB_HTTP))
    for path, data in files:
        if unpacked:  # where an x86-64 server's admin unpacked the arm64 packages
            path = arch.UNPACKED / "arm64" / path.relative_to("/")
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def pxe_services(root: Path) -> list[str]:
    return [line for line in (root / DROP_IN).read_text().splitlines()
            if line.startswith("pxe-service=")]  # fmt: skip


# ---------------------------------------------------------------- the type


def head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(arch.KERNEL_HEAD)


def test_a_kernel_says_its_architecture() -> None:
    x86, arm = (
        head(DI_AMD64 / "debian-installer/amd64/linux"),
        head(DI_ARM64 / "debian-installer/arm64/linux"),
    )
    assert arch.kernel_arch(x86) is arch.X86_64
    assert arch.kernel_arch(arm) is arch.ARM64
    # Debian's arm64 vmlinuz: the Image, gzip-compressed
    whole = (DI_ARM64 / "debian-installer/arm64/linux").read_bytes()
    assert arch.kernel_arch(gzip.compress(whole)[: arch.KERNEL_HEAD]) is arch.ARM64
    # an EFI zboot image: a PE image of that machine, whatever follows
    pe = bytearray(256)
    pe[:2], pe[4:8] = b"MZ", b"zimg"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", pe, 0x84, 0xAA64)
    assert arch.kernel_arch(bytes(pe)) is arch.ARM64
    struct.pack_into("<H", pe, 0x84, 0x8664)
    assert arch.kernel_arch(bytes(pe)) is arch.X86_64
    struct.pack_into("<H", pe, 0x84, 0x5064)  # riscv64: not served
    assert arch.kernel_arch(bytes(pe)) is None
    for junk in (b"", b"MZ", b"\x1f\x8b" + bytes(100), bytes(4096), b"<script>" * 600):
        assert arch.kernel_arch(junk) is None


def test_one_place_knows_the_architectures() -> None:
    assert arch.of_dhcp(11) is arch.ARM64 and arch.of_dhcp(7) is arch.of_dhcp(9) is arch.X86_64
    assert arch.of_dhcp(0) is arch.X86_64 and arch.of_dhcp(6) is None
    assert [arch.client_name(v) for v in (0, 7, 9, 11)] == [
        "BIOS", "UEFI x86-64", "UEFI x86-64", "UEFI arm64"]  # fmt: skip
    assert arch.firmware_name(11) == "UEFI arm64" and arch.firmware_name(7) == "UEFI"
    assert str(arch.ARM64.signed_grub) == "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"
    assert str(arch.X86_64.signed_grub) == "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    assert str(arch.ARM64.unsigned_grub) == "/usr/lib/grub/arm64-efi/monolithic/grubnetaa64.efi"
    # x86-64's names are in the code of arch.py only (not counting docstrings and comments,
    # nor the kinds, which read an ISO's own paths)
    package = Path(arch.__file__).parent
    offenders = []
    names = re.compile(r"grubx64|shimx64|x86_64-efi|grub-efi-amd64|X86-64_EFI")
    for path in package.rglob("*.py"):
        if path.name == "arch.py" or "kinds" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and names.search(node.value)
            ):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}: {node.value}")
    assert offenders == [], "\n".join(offenders)


# ---------------------------------------------------------------- which loader


def test_arm64_clients_get_shim_and_signed_grub(loader_root: Path, cli: Cli) -> None:
    add_arm64_loaders(loader_root)
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.output
    assert "UEFI arm64 -> shimaa64.efi -> grubaa64.efi (signed" in r.stdout, r.stdout
    services = pxe_services(loader_root)
    assert any(s.startswith("pxe-service=ARM64_EFI,") and s.endswith(",shimaa64.efi")
               for s in services), services  # fmt: skip
    tftp = loader_root / TFTP
    assert (tftp / "shimaa64.efi").read_bytes().startswith(b"MZ stand-in for shimaa64")
    assert PROXY in (tftp / "grubaa64.efi").read_bytes()
    assert (tftp / "grub/grub.cfg").is_file()  # arm64's GRUB reads the same menu
    r = cli(loader_root, "list", "--json")
    chains = {c["client"]: c for c in json.loads(r.stdout)["chains"]}
    assert chains["UEFI arm64"]["signed"] and chains["UEFI arm64"]["arch"] == "arm64"


def test_arm64_packages_unpacked_on_an_x86_server_are_served(loader_root: Path, cli: Cli) -> None:
    add_arm64_loaders(loader_root, unpacked=True)
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.output
    assert "UEFI arm64 -> shimaa64.efi -> grubaa64.efi (signed" in r.stdout, r.stdout
    tftp = loader_root / TFTP
    assert (tftp / "shimaa64.efi").read_bytes().startswith(b"MZ stand-in for shimaa64")
    assert PROXY in (tftp / "grubaa64.efi").read_bytes()


def test_without_a_signed_grub_the_unsigned_one(loader_root: Path, cli: Cli) -> None:
    add_arm64_loaders(loader_root, signed=False, unsigned=True)
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.output
    assert "UEFI arm64 -> grubaa64.efi (GRUB, not signed" in r.stdout, r.stdout
    assert any(s.startswith("pxe-service=ARM64_EFI,") and s.endswith(",grubaa64.efi")
               for s in pxe_services(loader_root))  # fmt: skip
    assert not (loader_root / TFTP / "shimaa64.efi").exists()


def test_without_any_arm64_loader_arm64_clients_are_not_answered(
    loader_root: Path, cli: Cli
) -> None:
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.output
    assert "UEFI arm64 -> not answered" in r.stdout, r.stdout
    assert not any("ARM64_EFI" in s for s in pxe_services(loader_root))
    # one that cannot read the proxy's offer is not served, and init says why
    add_arm64_loaders(loader_root, signed=False, unsigned=True, proxy=False)
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0 and "older than 2.12" in r.stderr, r.output
    assert not any("ARM64_EFI" in s for s in pxe_services(loader_root))


def test_x86_chains_stay_as_they_were(loader_root: Path, cli: Cli) -> None:
    add_signed_uefi_loaders(loader_root)
    add_arm64_loaders(loader_root)
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    services = pxe_services(loader_root)
    assert any(s.startswith("pxe-service=x86PC,") for s in services)
    assert any(s.startswith("pxe-service=X86-64_EFI,") and s.endswith(",shimx64.efi")
               for s in services)  # fmt: skip
    assert any(s.startswith("pxe-service=ARM64_EFI,") and s.endswith(",shimaa64.efi")
               for s in services)  # fmt: skip


# ---------------------------------------------------------------- images and menus


@pytest.fixture
def both(loader_root: Path, cli: Cli) -> Path:
    """A server with the x86-64 and the arm64 Debian installer, both signed chains."""
    add_signed_uefi_loaders(loader_root)
    add_arm64_loaders(loader_root)
    assert cli(loader_root, "init", *NET, "--http", "--http-port", "8080").exit_code == 0
    for name, tree in (("di-amd64", DI_AMD64), ("di-arm64", DI_ARM64)):
        r = cli(loader_root, "add-image", str(tree), "--name", name)
        assert r.exit_code == 0, r.output
    return loader_root


def test_images_carry_their_architecture(both: Path, cli: Cli) -> None:
    images = {i.name: i for i in load_state(Root.of(both)).images}
    assert images["di-amd64"].arch == "x86-64" and images["di-arm64"].arch == "arm64"
    text = (both / "etc/pxeprov/pxeprov.toml").read_text()
    assert text.count('arch = "arm64"') == 1 and 'arch = "x86-64"' not in text
    r = cli(both, "list")
    assert re.search(r"di-arm64\s+debian-installer\s+arm64\s", r.stdout), r.stdout
    assert re.search(r"di-amd64\s+debian-installer\s+x86-64\s", r.stdout), r.stdout
    listed = {e["name"]: e for e in json.loads(cli(both, "list", "--json").stdout)["entries"]}
    assert listed["di-arm64"]["arch"] == "arm64"


def test_each_client_is_offered_what_its_cpu_boots(both: Path, cli: Cli) -> None:
    tftp = both / TFTP
    ipxe = (tftp / "boot.ipxe").read_text()
    assert "di-amd64" in ipxe and "di-arm64" not in ipxe  # iPXE: x86-64 clients only
    grub = (tftp / "grub/grub.cfg").read_text()
    blocks = re.findall(r'if \[ "\$grub_cpu" = \'(\w+)\' \]; then\nmenuentry .*--id img-([\w-]+)',
                        grub)  # fmt: skip
    assert sorted(blocks) == [("arm64", "di-arm64"), ("x86_64", "di-amd64")], grub
    check = subprocess.run(["grub-script-check", str(tftp / "grub/grub.cfg")],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stderr + grub
    # a plan for a machine: its image's CPU only; any other machine at that MAC gets the menu
    r = cli(both, "assign", "52:54:00:12:34:99", "--entry", "di-arm64")
    assert r.exit_code == 0, r.output
    grub = (tftp / "grub/grub.cfg").read_text()
    plan = grub[grub.index("52:54:00:12:34:99") :]
    assert plan.index("if [ \"$grub_cpu\" = 'arm64' ]") < plan.index("menuentry")
    assert "images/di-arm64/" not in (tftp / "boot.ipxe").read_text()  # never its kernel


def test_arch_must_match_the_kernel(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "add-image", str(DI_ARM64), "--name", "di", "--arch", "x86-64")
    assert r.exit_code != 0 and "the kernel /debian-installer/arm64/linux is for arm64" in (
        r.stderr
    ), r.output
    assert "Traceback" not in r.output and not (loader_root / TFTP / "images/di").exists()
    r = cli(loader_root, "add-image", str(DI_ARM64), "--name", "di", "--arch", "sparc")
    assert r.exit_code == 2 and "--arch 'sparc' must be one of x86-64, arm64" in r.stderr


def test_a_kernel_that_does_not_say_is_taken_as_given(
    loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(DI_ARM64, tree)
    (tree / "debian-installer/arm64/linux").write_bytes(b"\0" * 8192)  # says nothing
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "add-image", str(tree), "--name", "plain")
    assert r.exit_code == 0 and "does not say which CPU" in r.output, r.output
    assert load_state(Root.of(loader_root)).images[0].arch == "x86-64"
    r = cli(loader_root, "add-image", str(tree), "--name", "plain", "--replace", "--arch", "arm64")
    assert r.exit_code == 0, r.output
    assert load_state(Root.of(loader_root)).images[0].arch == "arm64"


# ---------------------------------------------------------------- kinds' arm64 layouts

ARM_KERNEL = (DI_ARM64 / "debian-installer/arm64/linux").read_bytes()[:16384]
TREEINFO_ARM = b"""[general]
arch = aarch64
family = Fedora
name = Fedora 41
version = 41
[images-aarch64]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz
[release]
name = Fedora
version = 41
[stage2]
mainimage = images/install.img
"""
ARM_TREES: dict[str, tuple[str, dict[str, bytes | int]]] = {
    "fedora-installer": ("fedora-installer", {
        ".treeinfo": TREEINFO_ARM, "images/pxeboot/vmlinuz": ARM_KERNEL,
        "images/pxeboot/initrd.img": 5000, "images/install.img": 9000}),
    "fedora-kiwi": ("fedora", {
        "boot/aarch64/loader/linux": ARM_KERNEL, "boot/aarch64/loader/initrd": 5000,
        "LiveOS/squashfs.img": 7000}),
    "archiso": ("archiso", {
        "arch/boot/aarch64/vmlinuz-linux": ARM_KERNEL,
        "arch/boot/aarch64/initramfs-linux.img": 5000, "arch/aarch64/airootfs.sfs": 7000,
        "arch/version": b"2024.11.01\n"}),
    "ubuntu-server": ("ubuntu", {
        ".disk/info": b'Ubuntu-Server 24.04.1 LTS "Noble Numbat" - Release arm64 (20240827)',
        "casper/vmlinuz": gzip.compress(ARM_KERNEL), "casper/initrd": 5000,
        "casper/ubuntu-server-minimal.squashfs": 7000,
        "casper/ubuntu-server-minimal.ubuntu-server.installer.squashfs": 900}),
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(ARM_TREES))
def test_arm64_isos_are_recognized_as_arm64(
    loader_root: Path, cli: Cli, tmp_path: Path, layout: str
) -> None:
    from .isos import make_iso

    kind, files = ARM_TREES[layout]
    add_arm64_loaders(loader_root)
    assert cli(loader_root, "init", *NET, "--http", "--http-port", "8080").exit_code == 0
    iso = make_iso(tmp_path / f"{layout}.iso", files)
    r = cli(loader_root, "add-image", str(iso), "--name", "img")
    assert r.exit_code == 0, r.output
    image = load_state(Root.of(loader_root)).images[0]
    assert (image.kind, image.arch) == (kind, "arm64"), r.output
    assert "images/img/" not in (loader_root / TFTP / "boot.ipxe").read_text()
    assert "images/img/" in (loader_root / TFTP / "grub/grub.cfg").read_text()


def test_what_arm64_loaders_may_not_find_is_no_problem() -> None:
    """shim 16 asks beside itself for more certificates and revocation lists, arm64's GRUB for
    grub/arm64-efi/*.lst: files a server need not have (the lab's boots ask for them)."""
    from pxeprov import bootlog

    tracker = bootlog.Tracker({"shimaa64.efi": "loader", "grub/grub.cfg": "menu"})
    mac, ip = "52:54:00:77:21:01", "10.0.0.9"
    tracker.feed(bootlog.Event(1.0, "pair", ip, mac, arch=11))
    tracker.feed(bootlog.Event(2.0, "sent", ip, path="shimaa64.efi"))
    for path in ("revocations_sbat.efi", "revocations_sku.efi", "shim_certificate_0.efi",
                 "grub/arm64-efi/command.lst", "grub/x86_64-efi/fs.lst"):  # fmt: skip
        tracker.feed(bootlog.Event(3.0, "missing", ip, path=path))
    client = tracker.clients[mac]
    assert client.problem == "" and client.firmware == "UEFI arm64"
    tracker.feed(bootlog.Event(4.0, "missing", ip, path="grubaa64.efi"))
    assert client.problem == "grubaa64.efi is not on the server (asked for over TFTP)"
