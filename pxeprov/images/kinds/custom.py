"""Any ISO, with the kernel, initrd (and squashfs) named by --kernel/--initrd/--rootfs: only
the admin's --append goes on the kernel's command line."""

from __future__ import annotations

from pxeprov.images.kinds.registry import ImageKind, IsoView, Layout, Served, register
from pxeprov.state import Image


class Custom(ImageKind):
    name = "custom"
    label = ""
    recognized_by = (
        "`--kind custom --kernel PATH --initrd PATH [--rootfs PATH]` (paths inside the ISO)"
    )
    arguments = "only `--append`"
    detect_order = 1000
    detected = False

    def detect(self, iso: IsoView) -> Layout | None:
        return None

    def kernel_args(self, image: Image, served: Served) -> str:
        return ""


register(Custom())
