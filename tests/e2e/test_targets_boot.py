"""End to end: every kind of image boots from pxeprov to its kernel, on BIOS and UEFI clients,
with the exact kernel command line pxeprov rendered; the URLs the kernels are given answer with
the right bytes from the clients' side.

Two servers in namespace B. One with HTTP (nginx on 8080): BIOS and UEFI clients both get the
iPXE menu; every kind is added (each from its real layout, with Debian's installer kernel and
initrd inside, which boot under TCG in seconds: what matters is the command line the kernel
prints), then made the default in turn. One without HTTP (pxelinux for BIOS): the kinds that boot
over TFTP (the Debian installer, memtest86+, an ISO through memdisk). The ISO booted as it is is
a real bootable ISO (grub-mkrescue: GRUB for BIOS and UEFI, which boots the same kernel with a
marker on its command line).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxeprov import menucheck

from ..isos import Files, make_iso
from ..test_targets import TREEINFO
from .conftest import MakeDir
from .netlab import B_ADDR, Dnsmasq, NetLab, missing_files
from .pxeserver import (
    DI,
    LOADERS,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    console,
    pxeprov,
)
from .pxeserver import make_default as make_root_default

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HTTP_PORT = 8080
BASE = f"http://{B_ADDR}:{HTTP_PORT}"
CONSOLE = "console=ttyS0,115200n8"
MEMDISK = Path("/usr/lib/syslinux/memdisk")
MEMTEST = (Path("/boot/memtest86+x64.bin"), Path("/boot/memtest86+x64.efi"))
ISO_MARK = "pxeprov.iso-kind=booted"
MEMTEST_MARK = r"Status: Testing"  # memtest86+ running its tests (not its menu label)
BOOT_LIMIT = 150.0
MACS = {"bios": "52:54:00:77:0a:01", "uefi": "52:54:00:77:0a:02"}


def kernel() -> bytes:
    return (DI / "linux").read_bytes()


def initrd() -> bytes:
    return (DI / "initrd.gz").read_bytes()


def layouts() -> dict[str, tuple[Files, str]]:
    """name -> (files of the ISO in its kind's real layout, volume id)."""
    k, i = kernel(), initrd()
    return {
        "ubuntu": ({".disk/info": b'Ubuntu 24.04.1 LTS "Noble Numbat" - Release amd64 (20240827)',
                    "casper/vmlinuz": k, "casper/initrd": i, "casper/minimal.squashfs": 1 << 20},
                   "Ubuntu 24.04.1 LTS amd64"),
        "fedora": ({"images/pxeboot/vmlinuz": k, "images/pxeboot/initrd.img": i,
                    "LiveOS/squashfs.img": 2 << 20}, "Fedora-WS-Live-40-1-14"),
        "rocky": ({".treeinfo": TREEINFO, "images/pxeboot/vmlinuz": k,
                   "images/pxeboot/initrd.img": i, "images/install.img": 2 << 20},
                  "Rocky-9-4-x86_64-dvd"),
        "arch": ({"arch/boot/x86_64/vmlinuz-linux": k, "arch/boot/x86_64/initramfs-linux.img": i,
                  "arch/x86_64/airootfs.sfs": 2 << 20, "arch/version": b"2024.11.01\n"},
                 "ARCH_202411"),
    }  # fmt: skip


def rescue_iso(directory: Path) -> Path:
    """A bootable ISO (BIOS and UEFI) whose GRUB boots the installer's kernel with ISO_MARK."""
    src = directory / "rescue"
    (src / "boot/grub").mkdir(parents=True)
    (src / "vmlinuz").write_bytes(kernel())
    (src / "initrd.gz").write_bytes(initrd())
    (src / "boot/grub/grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_output serial console\nset timeout=0\n"
        f"menuentry 'iso' {{\n  linux /vmlinuz {CONSOLE} {ISO_MARK}\n  initrd /initrd.gz\n}}\n"
    )
    out = directory / "rescue.iso"
    subprocess.run(["grub-mkrescue", "-o", str(out), str(src)], check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    return out


def _render(lab: NetLab, make_dir: MakeDir, http: bool) -> Served:
    name = "http" if http else "tftp"
    root = make_dir(f"pxeprov-e2e-targets-{name}-")
    build_root(root, {UNDIONLY: UNDIONLY, MEMDISK: MEMDISK})
    options = ["--http", "--http-port", str(HTTP_PORT)] if http else ["--no-http"]
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1", *options)
    work = make_dir(f"pxeprov-e2e-targets-src-{name}-")
    sources: dict[str, tuple[Path, list[str]]] = {
        "di": (DI.parent.parent, []),  # the installed package's directory
        "mt": (_memtest_dir(work), []),
        "iso": (rescue_iso(work), ["--kind", "iso"]),
    }
    if http:
        for kind, (files, volume) in layouts().items():
            sources[kind] = (make_iso(work / f"{kind}.iso", files, volume_id=volume), [])
    for image, (path, extra) in sources.items():
        append = CONSOLE if image != "mt" else "console=ttyS0,115200"
        pxeprov(lab, root, "add-image", str(path), "--name", image, "--append", append, *extra)
    return Served.of(f"targets-{name}", root)


def _memtest_dir(work: Path) -> Path:
    folder = work / "memtest-boot"
    folder.mkdir()
    for path in MEMTEST:
        shutil.copyfile(path, folder / path.name)
    return folder


@dataclass
class Servers:
    one: OneAtATime
    http: Served
    tftp: Served


@pytest.fixture(scope="module")
def servers(lab: NetLab, make_dir: MakeDir) -> Iterator[Servers]:
    problems = missing_files((*LOADERS, UNDIONLY, MEMDISK, *MEMTEST, DI / "linux"))
    if shutil.which("grub-mkrescue") is None:
        problems.append("program not found on PATH: grub-mkrescue")
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    both = Servers(OneAtATime(lab), _render(lab, make_dir, True), _render(lab, make_dir, False))
    try:
        yield both
    finally:
        both.one.stop()


@pytest.fixture
def http_server(servers: Servers) -> Served:
    return servers.one.serve(servers.http)


@pytest.fixture
def tftp_server(servers: Servers) -> Served:
    return servers.one.serve(servers.tftp)


def running(server: Served) -> Dnsmasq:
    return server.running


def make_default(lab: NetLab, server: Served, name: str) -> None:
    make_root_default(lab, server.root, name)


def command_line(serial: str) -> str:
    found = re.search(r"Command line: (.*)", console(serial))
    return found.group(1).strip() if found else ""


def ipxe_args(server: Served, name: str, firmware: str) -> str:
    menu = menucheck.parse_ipxe((server.tftp_root / "boot.ipxe").read_text())
    entry = menu.entries.get(f"img-{name}") or menu.entries[f"img-{name}-{firmware}"]
    return " ".join([*(f"initrd={n}" for n in entry.initrd_names), *entry.args])


def kernel_sees(server: Served, name: str, firmware: str) -> str:
    """The command line the kernel prints: iPXE's arguments; on UEFI, iPXE puts the image's
    name first (an EFI image's load options start with its own name)."""
    args = ipxe_args(server, name, firmware)
    return args if firmware == "bios" else f"vmlinuz {args}"


# ---------------------------------------------------------------- the URLs kernels are given


def curl(lab: NetLab, url: str, out: Path) -> bytes:
    subprocess.run(["ip", "netns", "exec", lab.ns_a, "curl", "-sSf", "--max-time", "60", "-o",
                    str(out), url], check=True, timeout=90)  # fmt: skip
    return out.read_bytes()


def test_kernel_urls_answer_with_the_right_bytes(
    lab: NetLab, http_server: Served, make_dir: MakeDir
) -> None:
    """From the clients' side: casper's url= (the ISO), dracut's root=live:, archiso's base
    URL + its path, Anaconda's tree (.treeinfo and the runtime)."""
    out = make_dir("pxeprov-e2e-urls-") / "got"
    args = {k: ipxe_args(http_server, k, "bios") for k in ("ubuntu", "fedora", "rocky", "arch")}
    folder = http_server.tftp_root / "images"
    ubuntu = re.search(r"\burl=(\S+)", args["ubuntu"])
    assert ubuntu and curl(lab, ubuntu.group(1), out) == (folder / "ubuntu/image.iso").read_bytes()
    fedora = re.search(r"root=live:(\S+)", args["fedora"])
    expected = (folder / "fedora/filesystem.squashfs").read_bytes()
    assert fedora and curl(lab, fedora.group(1), out) == expected
    arch = re.search(r"archiso_http_srv=(\S+)", args["arch"])
    base = re.search(r"archisobasedir=(\S+)", args["arch"])
    assert arch and base and arch.group(1).endswith("/")
    url = f"{arch.group(1)}{base.group(1)}/x86_64/airootfs.sfs"  # as the archiso hook joins it
    assert curl(lab, url, out) == (folder / "arch/arch/x86_64/airootfs.sfs").read_bytes()
    stage2 = re.search(r"inst.stage2=(\S+)", args["rocky"])
    assert stage2 and curl(lab, f"{stage2.group(1)}.treeinfo", out) == TREEINFO
    runtime = (folder / "rocky/images/install.img").read_bytes()
    assert curl(lab, f"{stage2.group(1)}images/install.img", out) == runtime


# ---------------------------------------------------------------- boots


LINUX_KINDS = ["ubuntu", "fedora", "rocky", "arch", "di"]


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
@pytest.mark.parametrize("name", LINUX_KINDS)
def test_linux_kinds_boot_to_their_kernel(
    lab: NetLab, http_server: Served, name: str, firmware: str
) -> None:
    make_default(lab, http_server, name)
    ev = lab.boot(firmware, MACS[firmware], running(http_server), limit=BOOT_LIMIT)
    assert ev.kernel_after is not None, ev.summary()
    assert command_line(ev.serial) == kernel_sees(http_server, name, firmware), ev.summary()


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_iso_boots_as_a_disk_through_sanboot(
    lab: NetLab, http_server: Served, firmware: str
) -> None:
    make_default(lab, http_server, "iso")
    ev = lab.boot(firmware, MACS[firmware], running(http_server), limit=BOOT_LIMIT)
    assert ISO_MARK in command_line(ev.serial), ev.summary()
    assert http_server.nginx is not None
    requests = http_server.nginx.requests()
    assert any(r.path == "/images/iso/image.iso" and r.status == 206 for r in requests)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_memtest_runs(lab: NetLab, http_server: Served, firmware: str) -> None:
    """The packaged binaries: BIOS gets the .bin, UEFI the .efi (iPXE switches on its
    platform); memtest86+ shows its screen on the serial console."""
    make_default(lab, http_server, "mt")
    ev = lab.boot(firmware, MACS[firmware], running(http_server), limit=BOOT_LIMIT,
                  stop_on=MEMTEST_MARK, stop_grace=1.0)  # fmt: skip
    assert ev.stop_after is not None, ev.summary()
    binary = "vmlinuz" if firmware == "bios" else "memtest.efi"
    assert http_server.nginx is not None
    assert any(r.path == f"/images/mt/{binary}" for r in http_server.nginx.requests())


@pytest.mark.parametrize("name", ["di", "mt", "iso"])
def test_tftp_kinds_boot_through_pxelinux(lab: NetLab, tftp_server: Served, name: str) -> None:
    """BIOS without HTTP: pxelinux boots the installer, memtest86+ (its binary without the .bin
    extension), and the ISO through memdisk."""
    make_default(lab, tftp_server, name)
    stop = {"mt": MEMTEST_MARK, "iso": re.escape(ISO_MARK)}.get(name)
    ev = lab.boot("bios", MACS["bios"], running(tftp_server), limit=BOOT_LIMIT, stop_on=stop,
                  stop_grace=2.0)  # fmt: skip
    if name == "di":
        pxe = menucheck.parse_pxelinux((tftp_server.tftp_root / "pxelinux.cfg/default").read_text())
        label = next(x for x in pxe.labels if x.name == "di")
        # pxelinux names the kernel first and puts its INITRD line last
        expected = f"BOOT_IMAGE={label.kernel} {label.append} initrd={label.initrd}"
        assert command_line(ev.serial) == expected, ev.summary()
    else:
        assert ev.stop_after is not None, ev.summary()
    sent = f"sent {tftp_server.tftp_root}/" + ("memdisk" if name == "iso" else f"images/{name}")
    assert sent in ev.proxy_log, ev.summary()
