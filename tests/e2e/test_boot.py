"""End to end: pxeprov renders a server, real QEMU clients PXE-boot from it through proxyDHCP.

The lab (conftest.py, netlab.py) provides an ordinary DHCP server in namespace A and an empty
"pxeprov box" in namespace B. Here `pxeprov init` runs inside B against a temporary root, then
`pxeprov add-image` adds a Clonezilla-shaped ISO (built by the test; its kernel and initrd are
Debian's installer, which boots under TCG in seconds) as the menu default. dnsmasq runs B's
rendered config verbatim except for the TFTP root's location on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ..isos import clonezilla_files, make_iso
from .conftest import MakeDir
from .netlab import (
    A_ADDR,
    B_ADDR,
    LEASE_RANGE,
    VETH_B,
    BootEvidence,
    Dnsmasq,
    NetLab,
    missing_files,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
BIOS_MODULES = Path("/usr/lib/syslinux/modules/bios")

# Boot loaders pxeprov copies from their system paths, which under --root R are R/<path>.
LOADERS = (
    Path("/usr/lib/PXELINUX/pxelinux.0"),
    *(BIOS_MODULES / f"{m}.c32" for m in ("ldlinux", "menu", "libutil", "libmenu")),
    Path("/usr/lib/ipxe/snponly.efi"),
)
TFTP_ROOT = "/var/lib/tftpboot"  # as on a real server; rewritten for the test only
IMAGE_DIR = "images/d-i"
APPEND = "console=ttyS0,115200n8 priority=critical"
STATE = f"""\
[[images]]
name = "d-i"
label = "Debian 12 installer"
kind = "custom"
kernel = "{IMAGE_DIR}/linux"
initrd = "{IMAGE_DIR}/initrd.gz"
append = "{APPEND}"
"""
ISO_NAME = "cz"  # the Clonezilla-shaped image, the menu default
CONSOLE = "console=ttyS0,115200n8"
SQUASHFS = os.urandom(3 << 20)
FETCH_URL = f"tftp://{B_ADDR}/images/{ISO_NAME}/filesystem.squashfs"
RENDERED = (
    "pxelinux.0",
    "ldlinux.c32",
    "menu.c32",
    "libutil.c32",
    "libmenu.c32",
    "snponly.efi",
    "pxelinux.cfg/default",
    "boot.ipxe",
)
INIT_TIMEOUT = 120.0

# One MAC per firmware, so each boot's lines can be told apart in the shared logs.
BIOS_MAC = "52:54:00:77:01:01"
UEFI_MAC = "52:54:00:77:02:04"


@dataclass(frozen=True)
class Server:
    """pxeprov's rendered server, running in namespace B."""

    root: Path
    tftp_root: Path  # where the TFTP root really is (inside root)
    conf: Path  # the dnsmasq config exactly as pxeprov rendered it
    proxy: Dnsmasq


def build_root(root: Path) -> None:
    """What a real server has before `pxeprov init`: packaged loaders, an image, the state."""
    for src in LOADERS:
        dst = root / src.relative_to("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    image = root / TFTP_ROOT.lstrip("/") / IMAGE_DIR
    image.mkdir(parents=True)
    for name in ("linux", "initrd.gz"):
        shutil.copyfile(DI / name, image / name)
    state = root / "etc/pxeprov/pxeprov.toml"
    state.parent.mkdir(parents=True)
    state.write_text(STATE)
    # copyfile/mkdir follow the umask; dnsmasq serves files as user dnsmasq.
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def pxeprov(lab: NetLab, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Inside B, so pxeprov's network detection sees vpxe1 / 10.77.0.2 / 10.77.0.0/24 behind the
    # default route, exactly as on a real server. cwd = repo root: the package is not installed.
    argv = [
        "ip", "netns", "exec", lab.ns_b,
        sys.executable, "-m", "pxeprov", "--root", str(root), *args,
    ]  # fmt: skip
    res = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=INIT_TIMEOUT, check=False
    )
    if res.returncode != 0:
        pytest.fail(
            f"pxeprov {' '.join(args)} exited {res.returncode}\n--- stdout\n{res.stdout}"
            f"--- stderr\n{res.stderr}",
            pytrace=False,
        )
    return res


def clonezilla_iso(directory: Path) -> Path:
    """Laid out as Clonezilla's ISO (xorriso, El Torito, Rock Ridge + Joliet)."""
    files = clonezilla_files(
        kernel=(DI / "linux").read_bytes(),
        initrd=(DI / "initrd.gz").read_bytes(),
        squashfs=SQUASHFS,
    )
    return make_iso(directory / "clonezilla-live-test.iso", files, volume_id="Clonezilla live")


def conf_for_test(conf: Path, tftp_root: Path, dest: Path) -> Path:
    """The rendered config with only its tftp-root line pointed at the test's root."""
    text = conf.read_text()
    line = f"tftp-root={TFTP_ROOT}"
    count = text.splitlines().count(line)
    assert count == 1, f"expected exactly one line {line!r} in {conf}, found {count}:\n{text}"
    dest.write_text(
        "\n".join(f"tftp-root={tftp_root}" if s == line else s for s in text.splitlines()) + "\n"
    )
    dest.chmod(0o644)
    return dest


@pytest.fixture(scope="module")
def server(lab: NetLab, make_dir: MakeDir) -> Iterator[Server]:
    problems = missing_files((*LOADERS, DI / "linux", DI / "initrd.gz"))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-root-")
    build_root(root)
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1")
    iso = clonezilla_iso(make_dir("pxeprov-e2e-iso-"))
    pxeprov(lab, root, "add-image", str(iso), "--name", ISO_NAME, "--default", "--append", CONSOLE)
    conf = root / "etc/dnsmasq.d/pxeprov.conf"
    tftp_root = root / TFTP_ROOT.lstrip("/")
    test_conf = conf_for_test(conf, tftp_root, lab.workdir / "pxeprov-test.conf")
    proxy = lab.start_dnsmasq("proxy", lab.ns_b, test_conf)
    try:
        yield Server(root=root, tftp_root=tftp_root, conf=conf, proxy=proxy)
    finally:
        lab.stop_dnsmasq(proxy)


def check_boot(ev: BootEvidence, server: Server, served: tuple[str, ...]) -> None:
    """Every piece of evidence a good proxyDHCP boot leaves; all failures reported at once."""
    problems: list[str] = []
    # The ordinary server (A) leased the address ...
    acks = re.findall(rf"DHCPACK\(br0\) (10\.77\.0\.\d+) {re.escape(ev.mac)}", ev.dhcp_log)
    first, last = (IPv4Address(a) for a in LEASE_RANGE)
    if not acks:
        problems.append(f"ordinary DHCP server ({A_ADDR}) never sent DHCPACK to {ev.mac}")
    elif not all(first <= IPv4Address(a) <= last for a in acks):
        problems.append(f"leased address(es) {acks} outside {LEASE_RANGE}")
    # Without a lease, still check the files went to some lab address.
    client, shown = (re.escape(acks[-1]), acks[-1]) if acks else (r"10\.77\.0\.\d+", "the client")
    # ... the proxy only answered as a proxy, and never leased.
    if not re.search(rf"PXE\({VETH_B}\) {re.escape(ev.mac)} proxy\b", ev.proxy_log):
        problems.append(f"proxy log: no 'PXE({VETH_B}) {ev.mac} proxy'")
    if "DHCPACK" in ev.proxy_log:
        problems.append("proxy log has DHCPACK: the proxy leased an address")
    # Every file came from pxeprov's TFTP root to the leased client.
    for name in served:
        path = re.escape(f"{server.tftp_root}/{name}")
        if not re.search(rf"sent {path} to {client}\b", ev.proxy_log):
            problems.append(f"proxy log: no 'sent {server.tftp_root}/{name} to {shown}'")
    if "Linux version" not in ev.serial:
        problems.append("serial: no 'Linux version' (kernel never started)")
    for arg in ("boot=live", "locales=en_US.UTF-8", f"fetch={FETCH_URL}", CONSOLE):
        if not re.search(rf"Command line:.*{re.escape(arg)}", ev.serial):
            problems.append(f"serial: kernel command line lacks {arg!r}")
    assert not problems, "\n".join(["boot failed:", *problems, "", ev.summary()])


def test_init_rendered_files(server: Server) -> None:
    missing = [n for n in RENDERED if not (server.tftp_root / n).is_file()]
    assert not missing, f"pxeprov init did not write {missing} under {server.tftp_root}"
    conf = server.conf.read_text().splitlines()
    # Detected from B's default route: the interface and its subnet, in proxy mode.
    assert f"interface={VETH_B}" in conf, "\n".join(conf)
    assert any(s.startswith("dhcp-range=10.77.0.0,proxy") for s in conf), "\n".join(conf)


def test_bios_boot(lab: NetLab, server: Server) -> None:
    ev = lab.boot("bios", BIOS_MAC, server.proxy)
    check_boot(
        ev,
        server,
        (
            "pxelinux.0",
            "ldlinux.c32",
            "pxelinux.cfg/default",
            "menu.c32",
            f"images/{ISO_NAME}/vmlinuz",
            f"images/{ISO_NAME}/initrd.img",
        ),
    )


def test_uefi_boot(lab: NetLab, server: Server) -> None:
    ev = lab.boot("uefi", UEFI_MAC, server.proxy)
    check_boot(
        ev,
        server,
        ("snponly.efi", "boot.ipxe", f"images/{ISO_NAME}/vmlinuz", f"images/{ISO_NAME}/initrd.img"),
    )


def test_fetch_url_serves_the_squashfs(lab: NetLab, server: Server, make_dir: MakeDir) -> None:
    """live-boot's fetch= URL, as both menus give it, fetched from the clients' side (ns A)."""
    for menu in ("pxelinux.cfg/default", "boot.ipxe"):
        urls = re.findall(r"fetch=(\S+)", (server.tftp_root / menu).read_text())
        assert urls and urls[-1] == FETCH_URL, (menu, urls)
    out = make_dir("pxeprov-e2e-fetch-") / "filesystem.squashfs"
    subprocess.run(
        ["ip", "netns", "exec", lab.ns_a, "curl", "-sS", "--max-time", "60", "-o", str(out),
         FETCH_URL],
        check=True, timeout=90,
    )  # fmt: skip
    assert out.read_bytes() == SQUASHFS
    sent = f"sent {server.tftp_root}/images/{ISO_NAME}/filesystem.squashfs to {A_ADDR}"
    assert sent in server.proxy.log.read_text()
