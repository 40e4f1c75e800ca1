"""The boot targets of issue 10, each from its real layout: recognized, copied under fixed names,
labelled from its own metadata, and rendered with the arguments its kind needs for where the
files are served (TFTP, nginx, or another web server).

ISOs are built with xorriso in the layouts of Ubuntu (desktop 24.04, live-server 22.04), Fedora
live (livemedia-creator and Kiwi), Anaconda netinst and DVD trees (Rocky), Arch and SystemRescue;
the Debian installer comes from the installed debian-installer-12-netboot-amd64 package (its
directory, and a netboot.tar.gz made from it), memtest86+ from the installed memtest86+ package
(its /boot files, and its ISO).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pxeprov import menucheck

from .conftest import NET, Cli, add_signed_uefi_loaders, snapshot
from .grubwords import words
from .isos import Files, make_iso, signed_pe

TFTP = "var/lib/tftpboot"
DI_DIR = Path("/usr/lib/debian-installer/images/12/amd64/text")
MEMTEST_BOOT = Path("/boot")
MEMTEST_ISO = Path("/usr/lib/memtest86+/memtest86+x64.iso")
HTTP = ["--http", "--http-port", "8080"]
BASE = "http://127.0.0.1:8080"
GRUB_BASE = "(http,127.0.0.1:8080)"  # the same web server, as GRUB names it

TREEINFO = b"""[general]
arch = x86_64
family = Rocky Linux
name = Rocky Linux 9.4
version = 9.4
[header]
type = productmd.treeinfo
version = 1.2
[images-x86_64]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz
[release]
name = Rocky Linux
short = Rocky
version = 9.4
[stage2]
mainimage = images/install.img
[tree]
arch = x86_64
variants = BaseOS,AppStream
"""


def ubuntu_desktop() -> Files:
    return {
        ".disk/info": b'Ubuntu 24.04.1 LTS "Noble Numbat" - Release amd64 (20240827.1)',
        "casper/vmlinuz": signed_pe(), "casper/initrd": 5000,
        "casper/minimal.squashfs": 7000, "casper/minimal.standard.squashfs": 700,
        "boot/grub/grub.cfg": b"menuentry 'Try or Install Ubuntu' {}\n",
        "dists/noble/Release": b"Suite: noble\n",
    }  # fmt: skip


def ubuntu_server() -> Files:
    return {
        ".disk/info": b'Ubuntu-Server 22.04.4 LTS "Jammy Jellyfish" - Release amd64 (20240220)',
        "casper/vmlinuz": signed_pe(), "casper/initrd": 5000,
        "casper/ubuntu-server-minimal.squashfs": 7000,
        "casper/ubuntu-server-minimal.ubuntu-server.installer.squashfs": 900,
    }  # fmt: skip


def fedora_live(kiwi: bool = False) -> Files:
    kernel = ("boot/x86_64/loader/linux", "boot/x86_64/loader/initrd") if kiwi else (
        "images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")  # fmt: skip
    return {kernel[0]: 3000, kernel[1]: 5000, "LiveOS/squashfs.img": 7000,
            "EFI/BOOT/grub.cfg": b"linux root=live:CDLABEL=x\n"}  # fmt: skip


def anaconda(dvd: bool) -> Files:
    files: Files = {
        ".treeinfo": TREEINFO, ".discinfo": b"1717000000.0\nRocky Linux 9.4\nx86_64\n",
        "images/pxeboot/vmlinuz": 3000, "images/pxeboot/initrd.img": 5000,
        "images/install.img": 9000, "images/efiboot.img": 100,
    }  # fmt: skip
    if dvd:
        files |= {
            "BaseOS/Packages/k/kernel-5.14.0-427.el9.x86_64.rpm": 400,
            "BaseOS/repodata/repomd.xml": b"<repomd/>\n",
            "AppStream/Packages/g/gcc-c++-11.4.1-3.el9.x86_64.rpm": 300,
            "AppStream/repodata/repomd.xml": b"<repomd/>\n",
        }
    return files


def arch() -> Files:
    return {
        "arch/boot/x86_64/vmlinuz-linux": 3000, "arch/boot/x86_64/initramfs-linux.img": 5000,
        "arch/boot/intel-ucode.img": 100, "arch/x86_64/airootfs.sfs": 7000,
        "arch/x86_64/airootfs.sha512": b"abc  airootfs.sfs\n", "arch/version": b"2024.11.01\n",
        "boot/syslinux/archiso_pxe-linux.cfg": b"x\n",
    }  # fmt: skip


def sysrescue() -> Files:
    return {
        "sysresccd/boot/x86_64/vmlinuz": 3000, "sysresccd/boot/x86_64/sysresccd.img": 5000,
        "sysresccd/boot/intel_ucode.img": 100, "sysresccd/x86_64/airootfs.sfs": 7000,
        "autorun/README": b"x\n",
    }  # fmt: skip


@pytest.fixture
def http_server(loader_root: Path, cli: Cli) -> Path:
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", *NET, *HTTP, "--uefi-loader", "grub")
    assert r.exit_code == 0, r.stderr
    return loader_root


@pytest.fixture
def tftp_server(loader_root: Path, cli: Cli) -> Path:
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", *NET, "--no-http", "--uefi-loader", "grub")
    assert r.exit_code == 0, r.stderr
    return loader_root


def entry(root: Path, cli: Cli, name: str) -> dict[str, object]:
    entries = json.loads(cli(root, "list", "--json").stdout)["entries"]
    found: dict[str, object] = next(e for e in entries if e["name"] == name)
    return found


def files_of(root: Path, name: str) -> list[str]:
    folder = root / TFTP / "images" / name
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def ipxe_entries(root: Path) -> menucheck.IpxeMenu:
    return menucheck.parse_ipxe((root / TFTP / "boot.ipxe").read_text())


def grub_lines(root: Path) -> list[list[str]]:
    return [
        [w.text for w in words(line)]
        for line in (root / TFTP / "grub/grub.cfg").read_text().splitlines()
        if line.strip().startswith(("menuentry", "linux", "initrd"))
    ]


@pytest.mark.parametrize(
    ("files", "variant", "label", "extra_arg"),
    [
        (ubuntu_desktop(), "desktop", "Ubuntu 24.04.1 LTS Noble Numbat", ""),
        (ubuntu_server(), "server", "Ubuntu-Server 22.04.4 LTS Jammy Jellyfish",
         " cloud-config-url=/dev/null"),
    ],
    ids=["desktop", "live-server"],
)  # fmt: skip
def test_ubuntu(
    http_server: Path, cli: Cli, tmp_path: Path, files: Files, variant: str, label: str,
    extra_arg: str,
) -> None:  # fmt: skip
    iso = make_iso(tmp_path / "ubuntu.iso", files, volume_id="Ubuntu 24.04.1 LTS amd64")
    r = cli(http_server, "add-image", str(iso), "--name", "u")
    assert r.exit_code == 0, r.stderr
    assert "signed by Canonical" in r.stdout  # Debian's shim refuses its kernel
    e = entry(http_server, cli, "u")
    assert (e["kind"], e["label"], e["version"]) == ("ubuntu", label, "24.04.1" if variant
                                                      == "desktop" else "22.04.4")  # fmt: skip
    args = f"boot=casper netboot=url url={BASE}/images/u/image.iso ip=dhcp{extra_arg}"
    assert e["args"] == args
    assert files_of(http_server, "u") == ["image.iso", "initrd.img", "vmlinuz"]
    assert (http_server / TFTP / "images/u/image.iso").read_bytes() == iso.read_bytes()
    assert ipxe_entries(http_server).entries["img-u"].args == args.split()
    # GRUB (Debian's signed one has http) loads it from nginx too
    assert ["linux", GRUB_BASE + "/images/u/vmlinuz", *args.split()] in grub_lines(http_server)


def test_kinds_that_need_http_say_so(tftp_server: Path, cli: Cli, tmp_path: Path) -> None:
    before = snapshot(tftp_server)
    for name, files in (("u", ubuntu_desktop()), ("f", fedora_live()), ("a", arch()),
                        ("r", anaconda(dvd=False))):  # fmt: skip
        r = cli(tftp_server, "add-image", str(make_iso(tmp_path / f"{name}.iso", files)),
                "--name", name)  # fmt: skip
        assert r.exit_code == 2, (name, r.stderr)
        assert "over HTTP, which this server does not serve" in r.stderr
        assert "pxeprov init --http" in r.stderr
    assert snapshot(tftp_server) == before


@pytest.mark.parametrize("kiwi", [False, True], ids=["livemedia-creator", "kiwi"])
def test_fedora_live(http_server: Path, cli: Cli, tmp_path: Path, kiwi: bool) -> None:
    iso = make_iso(tmp_path / "f.iso", fedora_live(kiwi), volume_id="Fedora-WS-Live-40-1-14")
    r = cli(http_server, "add-image", str(iso), "--name", "f")
    assert r.exit_code == 0, r.stderr
    e = entry(http_server, cli, "f")
    assert (e["kind"], e["label"]) == ("fedora", "Fedora live (Fedora-WS-Live-40-1-14)")
    assert e["args"] == (
        f"root=live:{BASE}/images/f/filesystem.squashfs rd.live.image ip=dhcp rd.neednet=1"
    )
    assert files_of(http_server, "f") == ["filesystem.squashfs", "initrd.img", "vmlinuz"]
    src = tmp_path / "f.src/LiveOS/squashfs.img"
    assert (http_server / TFTP / "images/f/filesystem.squashfs").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("dvd", [False, True], ids=["netinst", "dvd"])
def test_fedora_installer(http_server: Path, cli: Cli, tmp_path: Path, dvd: bool) -> None:
    iso = make_iso(tmp_path / "r.iso", anaconda(dvd), volume_id="Rocky-9-4-x86_64-dvd")
    r = cli(http_server, "add-image", str(iso), "--name", "rocky")
    assert r.exit_code == 0, r.stderr
    e = entry(http_server, cli, "rocky")
    assert (e["kind"], e["label"], e["version"]) == (
        "fedora-installer", "Rocky Linux 9.4 installer", "9.4")  # fmt: skip
    option = "inst.repo" if dvd else "inst.stage2"
    assert e["args"] == f"{option}={BASE}/images/rocky/ ip=dhcp"
    expected = [".discinfo", ".treeinfo", "images/install.img", "initrd.img", "vmlinuz"]
    if dvd:  # the repository, with the ISO's own case: repodata names files by their paths
        expected += [
            "AppStream/Packages/g/gcc-c++-11.4.1-3.el9.x86_64.rpm", "AppStream/repodata/repomd.xml",
            "BaseOS/Packages/k/kernel-5.14.0-427.el9.x86_64.rpm", "BaseOS/repodata/repomd.xml",
        ]  # fmt: skip
    assert files_of(http_server, "rocky") == sorted(expected)
    state = (http_server / "etc/pxeprov/pxeprov.toml").read_text()
    assert '"images/rocky/.treeinfo"' in state
    # nginx serves the tree's .treeinfo (and still refuses other dot paths)
    site = (http_server / "etc/nginx/conf.d/pxeprov.conf").read_text()
    assert "location ~ /\\.(?!treeinfo$|discinfo$)" in site


@pytest.mark.parametrize(
    ("files", "volume", "base", "label", "extra"),
    [
        (arch(), "ARCH_202411", "arch", "Arch Linux (2024.11.01)", ""),
        (sysrescue(), "RESCUE1102", "sysresccd", "SystemRescue (RESCUE1102)", " copytoram"),
    ],
    ids=["arch", "systemrescue"],
)
def test_archiso(
    http_server: Path, cli: Cli, tmp_path: Path, files: Files, volume: str, base: str,
    label: str, extra: str,
) -> None:  # fmt: skip
    iso = make_iso(tmp_path / "a.iso", files, volume_id=volume)
    r = cli(http_server, "add-image", str(iso), "--name", "a")
    assert r.exit_code == 0, r.stderr
    e = entry(http_server, cli, "a")
    assert (e["kind"], e["label"]) == ("archiso", label)
    assert e["args"] == f"archisobasedir={base} archiso_http_srv={BASE}/images/a/ ip=dhcp{extra}"
    copied = files_of(http_server, "a")
    assert f"{base}/x86_64/airootfs.sfs" in copied and "vmlinuz" in copied
    assert "initrd.img" in copied and not any("ucode" in f for f in copied)


def test_http_base_url_moves_every_kinds_urls(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    r = cli(loader_root, "init", *NET, "--http-base-url", "http://cdn.example.org/pxe")
    assert r.exit_code == 0, r.stderr
    for name, files in (("u", ubuntu_desktop()), ("f", fedora_live()), ("a", arch())):
        iso = make_iso(tmp_path / f"{name}.iso", files)
        assert cli(loader_root, "add-image", str(iso), "--name", name).exit_code == 0
    args = {e["name"]: e["args"] for e in json.loads(cli(loader_root, "list", "--json").stdout)[
        "entries"][1:]}  # fmt: skip
    assert "url=http://cdn.example.org/pxe/images/u/image.iso" in args["u"]
    assert "root=live:http://cdn.example.org/pxe/images/f/filesystem.squashfs" in args["f"]
    assert "archiso_http_srv=http://cdn.example.org/pxe/images/a/" in args["a"]


def _tarball(tmp_path: Path) -> Path:
    tarball = tmp_path / "netboot.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(DI_DIR), "."], check=True)
    return tarball


@pytest.mark.parametrize("source", ["package", "tarball"])
def test_debian_installer(tftp_server: Path, cli: Cli, tmp_path: Path, source: str) -> None:
    if not (DI_DIR / "debian-installer/amd64/linux").is_file():
        pytest.fail(f"{DI_DIR} is missing (tests/run-all.sh installs the package)")
    path = DI_DIR if source == "package" else _tarball(tmp_path)
    r = cli(tftp_server, "add-image", str(path), "--name", "di", "--append", "priority=critical")
    assert r.exit_code == 0, r.stderr
    assert "Secure Boot" not in r.stdout  # a Debian-signed kernel
    e = entry(tftp_server, cli, "di")
    assert (e["kind"], e["label"], e["version"]) == (
        "debian-installer", "Debian installer (12 (bookworm))", "12")  # fmt: skip
    assert e["args"] == "priority=critical"
    assert files_of(tftp_server, "di") == ["initrd.img", "vmlinuz"]
    kernel = (tftp_server / TFTP / "images/di/vmlinuz").read_bytes()
    assert kernel == (DI_DIR / "debian-installer/amd64/linux").read_bytes()


@pytest.mark.parametrize("source", ["package", "iso"])
def test_memtest(http_server: Path, cli: Cli, tmp_path: Path, source: str) -> None:
    if source == "package":
        path = tmp_path / "boot"
        path.mkdir()
        for suffix in ("bin", "efi"):
            name = f"memtest86+x64.{suffix}"
            if not (MEMTEST_BOOT / name).is_file():
                pytest.fail(f"{MEMTEST_BOOT / name} is missing (tests/run-all.sh installs it)")
            (path / name).write_bytes((MEMTEST_BOOT / name).read_bytes())
    else:
        path = MEMTEST_ISO
    r = cli(http_server, "add-image", str(path), "--name", "mt", "--append", "console=ttyS0,115200")
    assert r.exit_code == 0, r.stderr
    assert "no Secure Boot signature" in r.stdout
    e = entry(http_server, cli, "mt")
    assert (e["kind"], e["label"]) == ("memtest", "Memtest86+ v6.10")
    assert files_of(http_server, "mt") == ["memtest.efi", "vmlinuz"]
    ipxe = ipxe_entries(http_server)
    # the BIOS and the UEFI binaries differ: the entry switches on iPXE's platform
    assert ipxe.entries["img-mt-bios"].kernel == f"{BASE}/images/mt/vmlinuz"
    assert ipxe.entries["img-mt-uefi"].kernel == f"{BASE}/images/mt/memtest.efi"
    assert ipxe.entries["img-mt-uefi"].initrds == [] and ipxe.entries["img-mt-uefi"].args == [
        "console=ttyS0,115200"]  # fmt: skip
    assert [
        "menuentry", "Memtest86+ v6.10 [not signed: no Secure Boot]", "--id", "img-mt", "{"
    ] in grub_lines(http_server)  # fmt: skip
    expected = ["linux", GRUB_BASE + "/images/mt/memtest.efi", "console=ttyS0,115200"]
    assert expected in grub_lines(http_server)


def test_memtest_through_pxelinux(tftp_server: Path, cli: Cli) -> None:
    r = cli(tftp_server, "add-image", str(MEMTEST_ISO), "--name", "mt")
    assert r.exit_code == 0, r.stderr
    pxe = menucheck.parse_pxelinux((tftp_server / TFTP / "pxelinux.cfg/default").read_text())
    label = next(x for x in pxe.labels if x.name == "mt")
    # no .bin extension: pxelinux would take a .bin for a boot sector
    assert (label.kernel, label.initrd) == ("images/mt/vmlinuz", "")


def test_iso_as_it_is(tftp_server: Path, cli: Cli, tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "fdos.iso", {"FREEDOS/BIN/COMMAND.COM": 500})
    r = cli(tftp_server, "add-image", str(iso), "--name", "fdos", "--kind", "iso",
            "--label", "FreeDOS")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "booted as a disk image" in r.stdout
    assert files_of(tftp_server, "fdos") == ["image.iso"]
    assert (tftp_server / TFTP / "memdisk").read_bytes() == Path(
        "/usr/lib/syslinux/memdisk").read_bytes()  # fmt: skip
    pxe = menucheck.parse_pxelinux((tftp_server / TFTP / "pxelinux.cfg/default").read_text())
    label = next(x for x in pxe.labels if x.name == "fdos")
    assert (label.kernel, label.initrd, label.append) == ("memdisk", "images/fdos/image.iso",
                                                          "iso raw")  # fmt: skip
    # GRUB cannot boot an ISO as a disk: no entry in the Secure Boot menu
    assert not any("FreeDOS" in " ".join(line) for line in grub_lines(tftp_server))


def test_iso_over_http_is_sanbooted(http_server: Path, cli: Cli, tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "fdos.iso", {"FREEDOS/BIN/COMMAND.COM": 500})
    r = cli(http_server, "add-image", str(iso), "--name", "fdos", "--kind", "iso")
    assert r.exit_code == 0, r.stderr
    ipxe = ipxe_entries(http_server)
    assert ipxe.entries["img-fdos"].sanboot == f"{BASE}/images/fdos/image.iso"
    assert ("img-fdos", "fdos") in ipxe.items


def test_iso_too_large_is_refused(tftp_server: Path, cli: Cli, tmp_path: Path) -> None:
    big = tmp_path / "big.iso"
    make_iso(big, {"a": 1000})
    with big.open("ab") as f:
        f.truncate((1 << 30) + 4096)  # sparse: declared small, file larger (appended data)
    before = snapshot(tftp_server)
    r = cli(tftp_server, "add-image", str(big), "--name", "big", "--kind", "iso")
    assert r.exit_code == 10 and "more than the 1073741824" in r.stderr
    assert snapshot(tftp_server) == before
