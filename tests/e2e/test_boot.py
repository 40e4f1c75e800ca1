"""End to end: pxeprov renders a server, real QEMU clients PXE-boot from it through proxyDHCP.

The lab (conftest.py, netlab.py) provides an ordinary DHCP server in namespace A and an empty
"pxeprov box" in namespace B. Here `pxeprov init` runs inside B against a temporary root, then
`pxeprov add-image` adds a Clonezilla-shaped ISO (built by the test; its kernel and initrd are
Debian's installer, which boots under TCG in seconds) as the menu default. dnsmasq runs B's
rendered config verbatim except for the TFTP root's location on disk.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import A_ADDR, VETH_B, BootEvidence, Dnsmasq, NetLab, missing_files
from .pxeserver import (
    CONSOLE,
    DI,
    FETCH_URL,
    ISO_NAME,
    LOADERS,
    SQUASHFS,
    TFTP_ROOT,
    build_root,
    clonezilla_iso,
    conf_for_test,
    pxeprov,
)
from .pxeserver import check_boot as check_served

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def server(lab: NetLab, make_dir: MakeDir) -> Iterator[Server]:
    problems = missing_files((*LOADERS, DI / "linux", DI / "initrd.gz"))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-root-")
    build_root(root)
    # --no-http: everything over TFTP (a new server's default is HTTP: test_http_default.py)
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1", "--no-http")
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
    """Every piece of evidence a good proxyDHCP boot leaves (pxeserver.check_boot)."""
    check_served(ev, server.tftp_root, served)


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
