"""Which boot-loader files each firmware needs, where Debian/Ubuntu put them, and their packages.

Boot chains (verified in the lab, see DESIGN.md):
  BIOS:                 pxelinux.0 -> ldlinux.c32 -> pxelinux.cfg/default -> menu.c32 (+ libutil)
  BIOS, HTTP payloads:  undionly.kpxe (iPXE) -> boot.ipxe
  UEFI x86-64, ipxe:    snponly.efi (iPXE, unsigned) -> boot.ipxe
  UEFI x86-64, grub:    shimx64.efi (signed by Microsoft) -> grubx64.efi (Debian's signed netboot
                        GRUB, >= 2.12 for proxyDHCP) -> grub/grub.cfg: boots under Secure Boot
"""

from __future__ import annotations

import lzma
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

UefiChain = Literal["ipxe", "grub"]
UEFI_LOADERS = ("auto", "grub", "ipxe")  # what --uefi-loader accepts

# Packages `pxeprov init` installs when they are missing (dnsmasq brings the service and
# /etc/dnsmasq.d; dnsmasq-base alone has only the binary).
PACKAGES: tuple[str, ...] = ("dnsmasq", "pxelinux", "syslinux-common", "ipxe")
HTTP_PACKAGES: tuple[str, ...] = ("nginx",)
# grub-common brings grub-script-check, which validates grub.cfg before it goes live.
GRUB_PACKAGES: tuple[str, ...] = ("shim-signed", "grub-efi-amd64-signed", "grub-common")


@dataclass(frozen=True)
class LoaderFile:
    name: str  # path under the TFTP root
    sources: tuple[PurePosixPath, ...]  # where packages install it; the first that exists wins
    package: str


_BIOS_MODULES = PurePosixPath("/usr/lib/syslinux/modules/bios")
SIGNED_GRUB = PurePosixPath("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")


def _one(name: str, source: str | PurePosixPath, package: str) -> LoaderFile:
    return LoaderFile(name, (PurePosixPath(source),), package)


BIOS_FILES: tuple[LoaderFile, ...] = (
    _one("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    # ldlinux.c32 must come from the same syslinux build as pxelinux.0: both are copied each run.
    _one("ldlinux.c32", _BIOS_MODULES / "ldlinux.c32", "syslinux-common"),
    _one("menu.c32", _BIOS_MODULES / "menu.c32", "syslinux-common"),
    _one("libutil.c32", _BIOS_MODULES / "libutil.c32", "syslinux-common"),
    _one("libmenu.c32", _BIOS_MODULES / "libmenu.c32", "syslinux-common"),
)
# HTTP payloads: BIOS clients load iPXE (undionly.kpxe, over the PXE ROM's own driver) and get
# the same boot.ipxe menu as UEFI clients. lpxelinux.0 can fetch over HTTP too, but its
# HTTP/1.0 client measured 6.7 MB/s against iPXE's 50 (bench/boot_bench.py): too slow to matter.
BIOS_IPXE_FILES: tuple[LoaderFile, ...] = (
    _one("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe", "ipxe"),
)
IPXE_FILES: tuple[LoaderFile, ...] = (_one("snponly.efi", "/usr/lib/ipxe/snponly.efi", "ipxe"),)
GRUB_FILES: tuple[LoaderFile, ...] = (
    # Debian names it shimx64.efi.signed; Ubuntu ships .latest (and a .previous fallback).
    LoaderFile(
        "shimx64.efi",
        (
            PurePosixPath("/usr/lib/shim/shimx64.efi.signed"),
            PurePosixPath("/usr/lib/shim/shimx64.efi.signed.latest"),
        ),
        "shim-signed",
    ),
    # shim loads "grubx64.efi" from its own directory; GRUB's built-in prefix is /grub.
    LoaderFile("grubx64.efi", (SIGNED_GRUB,), "grub-efi-amd64-signed"),
)


def files_for(chain: UefiChain, http: bool = False) -> tuple[LoaderFile, ...]:
    bios = BIOS_IPXE_FILES if http else BIOS_FILES
    return bios + (GRUB_FILES if chain == "grub" else IPXE_FILES)


# GRUB learned to take its server from the proxy's offer in 2.12 ("efinet: Add DHCP proxy
# support"); these strings of that code are in the signed image. GRUB 2.06 asks the ordinary
# DHCP server for its files instead and cannot boot through a proxy at all.
_PROXY_SUPPORT = b"setting values from proxy offer"


def grub_supports_proxy(path: Path) -> bool | None:
    """True/False for the signed GRUB at `path`; None when there is none."""
    try:
        with path.open("rb") as f:
            data = f.read()
    except OSError:
        return None
    return _PROXY_SUPPORT in data


# iPXE's URI openers are a table of scheme names; a build with HTTPS has the NUL-terminated
# string "https" among them. Debian 12's ipxe (1.0.0+git-20190125) has none: no TLS at all;
# Debian 13's has. PXE images (.kpxe, .pxe) hold iPXE LZMA-compressed (iPXE's util/zbin.c:
# raw LZMA1, lc=2 lp=0 pb=0, behind a 32-bit length), so those are unpacked to look.
_HTTPS_SCHEME = b"\0https\0"
_IPXE_LZMA = [{"id": lzma.FILTER_LZMA1, "lc": 2, "lp": 0, "pb": 0, "dict_size": 1 << 23}]
_MAX_LOADER = 16 << 20


def ipxe_supports_https(path: Path) -> bool | None:
    """Whether the iPXE binary at `path` can fetch https:// URLs; None when there is none."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_LOADER)
    except OSError:
        return None
    if _HTTPS_SCHEME in data:
        return True
    return any(_HTTPS_SCHEME in payload for payload in _ipxe_payloads(data))


def _ipxe_payloads(data: bytes) -> list[bytes]:
    """The LZMA-packed parts of an iPXE PXE image: a little-endian length, then that many bytes
    of compressed data that end the file (up to some padding)."""
    found = []
    end = len(data)
    for offset in range(0, max(0, end - 4)):
        (length,) = struct.unpack_from("<I", data, offset)
        if length < 1024 or not end - 64 <= offset + 4 + length <= end:
            continue
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_IPXE_LZMA)
        try:
            found.append(decoder.decompress(data[offset + 4 : offset + 4 + length], 1 << 23))
        except lzma.LZMAError:
            continue
    return found


# What each firmware is offered, for init's output and the dnsmasq template.
BIOS_BOOTFILE = "pxelinux.0"
BIOS_IPXE_BOOTFILE = "undionly.kpxe"
IPXE_BOOTFILE = "snponly.efi"
SHIM_BOOTFILE = "shimx64.efi"
IPXE_SCRIPT = "boot.ipxe"
PXELINUX_MENU = "pxelinux.cfg/default"
GRUB_MENU = "grub/grub.cfg"
