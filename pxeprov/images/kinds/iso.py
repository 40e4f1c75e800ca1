"""Any small bootable ISO, booted as it is (--kind iso): firmware updaters, rescue floppies,
FreeDOS. The ISO is served whole. BIOS clients through pxelinux load it into memory with
syslinux's memdisk (`iso raw`); iPXE clients (with HTTP) boot it from its URL with `sanboot`, on
BIOS and UEFI. GRUB (the Secure Boot chain) cannot boot an ISO as a disk: no entry there. The
booted system only sees the disk while it uses the firmware (DOS, a firmware tool); an operating
system that looks for its CD once started will not find it."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import ClassVar

from pxeprov.boot.chains import LoaderFile
from pxeprov.errors import ImageError
from pxeprov.images.kinds.registry import (
    BootSpec,
    ImageKind,
    IsoView,
    Layout,
    Served,
    register,
)
from pxeprov.state import Image

WHOLE = "image.iso"
MEMDISK = LoaderFile("memdisk", (PurePosixPath("/usr/lib/syslinux/memdisk"),), "syslinux-common")
MAX_SIZE = 1 << 30  # memdisk holds the ISO in memory below 4 GiB: 1 GiB at the most


class WholeIso(ImageKind):
    name = "iso"
    label = ""
    recognized_by = "`--kind iso` (any ISO up to 1 GiB)"
    arguments = "BIOS: memdisk `iso raw`; iPXE: `sanboot` of the ISO's URL"
    transport = "TFTP (memdisk) or HTTP (sanboot)"
    firmware = (
        "BIOS (pxelinux: memdisk; iPXE: sanboot), UEFI with HTTP (iPXE sanboot); not GRUB: no "
        "Secure Boot"
    )
    detected = False
    detect_order = 1000
    loader_files: ClassVar[tuple[LoaderFile, ...]] = (MEMDISK,)

    def detect(self, iso: IsoView) -> Layout | None:
        return Layout(self.name, "", None, None, whole=WHOLE)

    def paths(self, layout: Layout, folder: str) -> tuple[str, str, str, tuple[str, ...]]:
        return MEMDISK.name, f"{folder}/{WHOLE}", "", ()

    def kernel_args(self, image: Image, served: Served) -> str:
        return "iso raw"

    def boots(self, image: Image, served: Served) -> dict[str, BootSpec]:
        out = {"pxelinux": BootSpec(MEMDISK.name, (image.initrd,), "iso raw")}
        if served.http:
            sanboot = BootSpec(sanboot=served.url(image.initrd))
            out |= {"ipxe-bios": sanboot, "ipxe-uefi": sanboot}
        return out

    def review(self, layout: Layout, size: int) -> list[str]:
        if size > MAX_SIZE:
            raise ImageError(
                f"the ISO has {size} bytes: more than the {MAX_SIZE} a client can hold in memory "
                "to boot it as a disk",
                "for a live system, add it with its own kind",
            )
        return [
            "note: the ISO is booted as a disk image: BIOS clients through pxelinux load it whole "
            "into memory (memdisk); iPXE clients boot it from its URL (sanboot, with --http). "
            "The system on it must not need its CD once started; GRUB (Secure Boot) cannot "
            "boot it."
        ]


register(WholeIso())
