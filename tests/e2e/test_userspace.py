"""End to end, to userspace: the systems pxeprov boots reach their own userspace, not only
their kernel.

- a Debian live system (the suite's live image, liveimage.py, added as a Debian live ISO):
  live-boot fetches its squashfs from nginx (fetch=http://...) and systemd reaches
  multi-user.target, on BIOS and UEFI clients;
- the same squashfs through a dracut livenet initramfs (Debian's dracut, dracut-live), added as a
  Fedora live ISO: root=live:http://... is the mechanism Fedora's live images use;
- the Debian installer (the packaged netboot kernel and initrd) reaches its first dialog on the
  serial console.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..isos import make_iso
from .conftest import MakeDir
from .liveimage import LiveImage
from .netlab import BootEvidence, Dnsmasq, NetLab, Nginx, missing_files
from .pxeserver import (
    DI,
    LOADERS,
    TFTP_ROOT,
    UNDIONLY,
    build_root,
    conf_for_test,
    console,
    leases,
    make_default,
    pxeprov,
    site_for_test,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HTTP_PORT = 8080
CONSOLE = "console=ttyS0,115200n8"
USERSPACE = "LIVE-USERSPACE-OK"
USERSPACE_LIMIT = 480.0  # ~130 s under TCG for the live system; margin for a loaded machine
MEMORY = 2048  # the squashfs is fetched into RAM
MACS = {"bios": "52:54:00:77:0c:01", "uefi": "52:54:00:77:0c:02"}
DI_FIRST_DIALOG = r"Select a language|Choose language"


@dataclass
class Server:
    root: Path
    tftp_root: Path
    proxy: Dnsmasq
    nginx: Nginx


@pytest.fixture(scope="module")
def server(lab: NetLab, make_dir: MakeDir, live_image: LiveImage) -> Iterator[Server]:
    problems = missing_files((*LOADERS, UNDIONLY, DI / "linux"))
    if problems or shutil.which("nginx") is None:
        pytest.fail(f"e2e preconditions not met: {problems or 'nginx'}", pytrace=False)
    root = make_dir("pxeprov-e2e-userspace-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1",
            "--http", "--http-port", str(HTTP_PORT))  # fmt: skip
    work = make_dir("pxeprov-e2e-userspace-src-")
    fedora = make_iso(work / "livenet.iso", {
        "images/pxeboot/vmlinuz": live_image.vmlinuz,
        "images/pxeboot/initrd.img": live_image.livenet_initrd,
        "LiveOS/squashfs.img": live_image.squashfs,
    }, volume_id="Debian-livenet")  # fmt: skip
    # Debian 12's dracut (059) sets up the overlay only when asked to by name if the squashfs
    # is the root filesystem itself (fixed in later dracut; Fedora's images carry their own).
    for name, source, extra in (("live", live_image.debian_iso, ""),
                                ("livenet", fedora, " rd.live.overlay.overlayfs=1"),
                                ("di", DI.parent.parent, "")):  # fmt: skip
        pxeprov(lab, root, "add-image", str(source), "--name", name, "--append", CONSOLE + extra)
    tftp_root = root / TFTP_ROOT.lstrip("/")
    conf = conf_for_test(root / "etc/dnsmasq.d/pxeprov.conf", tftp_root,
                         lab.workdir / "userspace.conf")  # fmt: skip
    site = site_for_test(root / "etc/nginx/conf.d/pxeprov.conf", tftp_root,
                         lab.workdir / "userspace-site.conf")  # fmt: skip
    with ExitStack() as stack:
        proxy = lab.start_dnsmasq("userspace", lab.ns_b, conf)
        stack.callback(lab.stop_dnsmasq, proxy)
        nginx = lab.start_nginx("userspace", lab.ns_b, site)
        stack.callback(lab.stop_nginx, nginx)
        yield Server(root, tftp_root, proxy, nginx)


def fetched_over_http(server: Server, ev: BootEvidence, path: str) -> bool:
    """nginx answered the whole file to this boot's client, and TFTP was never asked for it."""
    size = (server.tftp_root / path).stat().st_size
    client = leases(ev)[-1] if leases(ev) else ""
    got = any(
        (r.client, r.path, r.status, r.size) == (client, f"/{path}", 200, size)
        for r in server.nginx.requests()
    )
    return got and f"/{path}" not in ev.proxy_log


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_live_system_reaches_userspace_over_http(
    lab: NetLab, server: Server, firmware: str
) -> None:
    make_default(lab, server.root, "live")
    ev = lab.boot(firmware, MACS[firmware], server.proxy, limit=USERSPACE_LIMIT,  # type: ignore[arg-type]
                  stop_on=USERSPACE, stop_grace=1.0, memory_mb=MEMORY)  # fmt: skip
    marker = re.search(rf"{USERSPACE} (.*)", console(ev.serial))
    assert marker is not None, ev.summary()
    assert "Found ordering cycle" not in ev.serial, ev.summary()  # systemd dropped a job
    assert "squashfs=[/dev/loop" in marker.group(1), marker.group(0)  # live-boot's own mount
    assert fetched_over_http(server, ev, "images/live/filesystem.squashfs"), ev.summary()
    print(f"\n{firmware}: kernel at {ev.kernel_after:.0f} s, userspace at {ev.stop_after:.0f} s")  # noqa: T201


def test_dracut_livenet_boots_the_squashfs_from_root_live_http(lab: NetLab, server: Server) -> None:
    """Fedora's mechanism with Debian's dracut: root=live:http://.../filesystem.squashfs."""
    make_default(lab, server.root, "livenet")
    ev = lab.boot("bios", MACS["bios"], server.proxy, limit=USERSPACE_LIMIT, stop_on=USERSPACE,
                  stop_grace=1.0, memory_mb=MEMORY)  # fmt: skip
    text = console(ev.serial)
    assert re.search(r"Command line: .*root=live:http://\S+/images/livenet/filesystem.squashfs",
                     text), ev.summary()  # fmt: skip
    marker = re.search(rf"{USERSPACE} (.*)", text)
    assert marker is not None, ev.summary()
    assert "Found ordering cycle" not in text, ev.summary()
    assert "root=[LiveOS_rootfs overlay]" in marker.group(1), marker.group(0)  # dmsquash-live's
    assert fetched_over_http(server, ev, "images/livenet/filesystem.squashfs"), ev.summary()


def test_debian_installer_reaches_its_first_dialog(lab: NetLab, server: Server) -> None:
    make_default(lab, server.root, "di")
    # 1 GiB: with less the installer opens with its "Low memory mode" notice instead
    ev = lab.boot("bios", MACS["bios"], server.proxy, limit=300.0, stop_on=DI_FIRST_DIALOG,
                  stop_grace=1.0, memory_mb=1024)  # fmt: skip
    assert ev.stop_after is not None, ev.summary()
