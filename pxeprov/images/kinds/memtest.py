"""memtest86+: the memtest86+ package's files (/boot/memtest86+x64.bin for BIOS, .efi for UEFI),
or its ISO (boot/floppy.img, EFI/BOOT/bootx64.efi). Both are Linux-protocol images with no
initrd; copied without an extension, so pxelinux boots the BIOS one as a kernel (it takes a .bin
for a boot sector). memtest86+ prints to a serial console given `console=ttyS0,115200`. Not
signed: Secure Boot clients refuse it."""

from __future__ import annotations

import re
import struct

from pxeprov.images.kinds.registry import (
    BootSpec,
    ImageKind,
    IsoView,
    Layout,
    Served,
    folder,
    register,
)
from pxeprov.state import Image
from pxeprov.syntax import label_from_iso

EFI = "memtest.efi"
_VERSION = re.compile(r"v([0-9]+\.[0-9]+)")


def kernel_version(head: bytes) -> str:
    """The version string a Linux-protocol image names in its setup header ("Memtest86+ v6.10"):
    a pointer at 0x20e, relative to 0x200."""
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return ""
    (pointer,) = struct.unpack_from("<H", head, 0x20E)
    at = pointer + 0x200
    end = head.find(b"\0", at, at + 64)
    return head[at:end].decode("ascii", "replace") if at < len(head) and end > 0 else ""


class Memtest(ImageKind):
    name = "memtest"
    label = "Memtest86+"
    recognized_by = (
        "`memtest86+x64.bin` and `memtest86+x64.efi` (the memtest86+ package's /boot), or the "
        "memtest86+ ISO (volume id MT86PLUS)"
    )
    arguments = "none (add `console=ttyS0,115200` for a serial console)"
    transport = "TFTP or HTTP"
    firmware = "BIOS, UEFI (unsigned: no Secure Boot)"
    detect_order = 12

    def detect(self, iso: IsoView) -> Layout | None:
        top = iso.listdir("/")
        if "memtest86+x64.bin" in top and "memtest86+x64.efi" in top:
            bios, uefi = "/memtest86+x64.bin", "/memtest86+x64.efi"
        elif (
            iso.volume_id.upper().startswith("MT86PLUS")
            and "floppy.img" in iso.listdir("/boot")
            and "bootx64.efi" in iso.listdir("/efi/boot")
        ):
            bios, uefi = "/boot/floppy.img", "/efi/boot/bootx64.efi"
        else:
            return None
        return Layout(
            self.name,
            bios,
            None,
            None,
            extra=((EFI, uefi),),
            uefi_kernel=uefi,
            label=version_label(iso.head(bios, 0x4000)),
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        return ""

    def boots(self, image: Image, served: Served) -> dict[str, BootSpec]:
        bios = BootSpec(image.kernel)
        uefi = BootSpec(f"{folder(image)}/{EFI}")
        return {"pxelinux": bios, "ipxe-bios": bios, "ipxe-uefi": uefi, "grub": uefi}


def version_label(head: bytes) -> str:
    found = _VERSION.search(kernel_version(head))
    return label_from_iso(f"Memtest86+ v{found.group(1)}") if found else ""


register(Memtest())
