"""Fedora Workstation live (and Rocky, Alma, CentOS Stream live images): dracut's dmsquash-live
and livenet download LiveOS/squashfs.img at boot (`root=live:http://…`). Kernels are signed by
Fedora or Red Hat, which Debian's shim (the GRUB chain) does not trust."""

from __future__ import annotations

from pxeprov.arch import ARCHITECTURES
from pxeprov.images.kinds.registry import (
    VERSION_LIMIT,
    ImageKind,
    IsoView,
    Layout,
    Served,
    register,
)
from pxeprov.state import Image
from pxeprov.syntax import version_from_iso

# Where live media put kernel and initrd: livemedia-creator (Fedora <= 41, Alma 9), Kiwi
# (Fedora 42+), livecd-tools (Rocky 8).
KERNELS = (
    ("images/pxeboot", "vmlinuz", "initrd.img"),
    *((f"boot/{a.machine}/loader", "linux", "initrd") for a in ARCHITECTURES),
    ("isolinux", "vmlinuz", "initrd.img"),
    ("isolinux", "vmlinuz0", "initrd0.img"),
)


def find_kernel(iso: IsoView) -> tuple[str, str] | None:
    for folder, kernel, initrd in KERNELS:
        listing = iso.listdir(f"/{folder}")
        if kernel in listing and initrd in listing:
            return f"/{folder}/{kernel}", f"/{folder}/{initrd}"
    return None


class Fedora(ImageKind):
    name = "fedora"
    label = "Fedora live"
    recognized_by = (
        "`LiveOS/squashfs.img` with `images/pxeboot/vmlinuz` + `initrd.img` (or Kiwi's "
        "`boot/x86_64/loader/` or `boot/aarch64/loader/`, or `isolinux/`), no `.treeinfo`"
    )
    arguments = (
        "`root=live:http://<server>/images/<name>/filesystem.squashfs rd.live.image ip=dhcp "
        "rd.neednet=1`"
    )
    transport = "HTTP"
    firmware = "BIOS, UEFI (signed by Fedora/Red Hat: no Secure Boot through Debian's shim)"
    needs_http = True
    foreign_signature = "Fedora or Red Hat"
    detect_order = 30

    def detect(self, iso: IsoView) -> Layout | None:
        if ".treeinfo" in iso.listdir("/") or "squashfs.img" not in iso.listdir("/liveos"):
            return None
        kernel = find_kernel(iso)
        if kernel is None:
            return None
        return Layout(
            self.name,
            *kernel,
            "/liveos/squashfs.img",
            version_from_iso(iso.volume_id, VERSION_LIMIT),
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        return f"root=live:{served.url(image.rootfs)} rd.live.image ip=dhcp rd.neednet=1"


register(Fedora())
