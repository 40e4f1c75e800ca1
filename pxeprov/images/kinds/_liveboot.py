"""The layout Debian live-boot systems share (Clonezilla, GParted, Debian live): live/vmlinuz,
live/initrd.img (or versioned names, the newest taken) and live/filesystem.squashfs, which
live-boot's `fetch=` downloads from the server at boot. The URL uses the server's address, never
a host name: proxyDHCP clients get no DNS server, and the initramfs could not resolve one."""

from __future__ import annotations

from typing import ClassVar

from pxeprov.images.isofs import Entry
from pxeprov.images.kinds.registry import ROOTFS, VERSION_LIMIT, ImageKind, IsoView, Layout, Served
from pxeprov.state import Image
from pxeprov.syntax import version_from_iso


def _pick(listing: dict[str, Entry], exact: str, prefix: str) -> str | None:
    """`vmlinuz`, or the one versioned `vmlinuz-6.1.0-13-amd64` (newest if several)."""
    if exact in listing and not listing[exact].is_dir:
        return exact
    versioned = sorted(n for n, e in listing.items() if n.startswith(prefix) and not e.is_dir)
    return versioned[-1] if versioned else None


def live_layout(iso: IsoView, kind: str, version: str = "") -> Layout | None:
    live = iso.listdir("/live")
    kernel = _pick(live, "vmlinuz", "vmlinuz-")
    initrd = _pick(live, "initrd.img", "initrd.img-")
    if kernel is None or initrd is None or ROOTFS not in live:
        return None
    return Layout(kind, f"/live/{kernel}", f"/live/{initrd}", f"/live/{ROOTFS}", version)


def marked(iso: IsoView, product: str) -> tuple[bool, str]:
    """Whether the ISO says it is `product` (`/<Product>-Live-Version`, which plain ISO 9660
    names spell `/<PRODUCT>_LIVE_VERSION`, or a volume id starting with the name), and the
    version that file gives."""
    root = iso.listdir("/")
    for name in (f"{product}-live-version", f"{product}_live_version"):
        if name in root and not root[name].is_dir:
            return True, version_from_iso(iso.read_small(f"/{name}") or "", VERSION_LIMIT)
    return iso.volume_id.lower().startswith(product), ""


def lang(image: Image) -> str:
    return f"locales={image.locale} keyboard-layouts={image.keyboard}"


def fetch(image: Image, url: str) -> str:
    return f"fetch={url}" if image.rootfs else ""


class LiveBootKind(ImageKind):
    """A kind with live-boot's layout: `product` names its version file (None: none)."""

    product: ClassVar[str | None] = None
    family = "live-boot"

    def detect(self, iso: IsoView) -> Layout | None:
        if self.product is None:
            return live_layout(iso, self.name)
        found, version = marked(iso, self.product)
        return live_layout(iso, self.name, version) if found else None

    def boot_args(self, image: Image) -> str:
        """The kind's own arguments, before live-boot's fetch=."""
        raise NotImplementedError

    def kernel_args(self, image: Image, served: Served) -> str:
        return f"{self.boot_args(image)} {fetch(image, served.url(image.rootfs))}".strip()
