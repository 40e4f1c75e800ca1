"""Which boot-loader files each firmware needs, where Debian/Ubuntu put them, and their packages.

Boot chains (verified in the lab, see DESIGN.md):
  BIOS:        pxelinux.0 -> ldlinux.c32 -> pxelinux.cfg/default -> menu.c32 (+ libutil.c32)
  UEFI x86-64: snponly.efi (iPXE) -> boot.ipxe
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# Packages `pxeprov init` installs when they are missing (dnsmasq brings the service and
# /etc/dnsmasq.d; dnsmasq-base alone has only the binary).
PACKAGES: tuple[str, ...] = ("dnsmasq", "pxelinux", "syslinux-common", "ipxe")


@dataclass(frozen=True)
class LoaderFile:
    name: str  # path under the TFTP root
    source: PurePosixPath  # where the package installs it
    package: str


_BIOS_MODULES = PurePosixPath("/usr/lib/syslinux/modules/bios")

LOADER_FILES: tuple[LoaderFile, ...] = (
    LoaderFile("pxelinux.0", PurePosixPath("/usr/lib/PXELINUX/pxelinux.0"), "pxelinux"),
    # ldlinux.c32 must come from the same syslinux build as pxelinux.0: both are copied each run.
    LoaderFile("ldlinux.c32", _BIOS_MODULES / "ldlinux.c32", "syslinux-common"),
    LoaderFile("menu.c32", _BIOS_MODULES / "menu.c32", "syslinux-common"),
    LoaderFile("libutil.c32", _BIOS_MODULES / "libutil.c32", "syslinux-common"),
    LoaderFile("libmenu.c32", _BIOS_MODULES / "libmenu.c32", "syslinux-common"),
    LoaderFile("snponly.efi", PurePosixPath("/usr/lib/ipxe/snponly.efi"), "ipxe"),
)

# What each firmware is offered, for init's output and the dnsmasq template.
BIOS_BOOTFILE = "pxelinux.0"
UEFI_BOOTFILE = "snponly.efi"
IPXE_SCRIPT = "boot.ipxe"
PXELINUX_MENU = "pxelinux.cfg/default"
