"""Is a kernel signed for UEFI Secure Boot? (An Authenticode signature in its PE image.)"""

from __future__ import annotations

import struct
from pathlib import Path

_SECURITY_DIRECTORY = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY: the certificate table


HEAD = 4096  # bytes of a file that hold its PE headers


def has_signature(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return is_signed(f.read(HEAD))
    except OSError:
        return False


def is_signed(head: bytes) -> bool:
    """True when `head` (a file's first bytes) is a PE image (an EFI-stub kernel, shim, GRUB)
    whose certificate table is not empty. What is not a PE image shim cannot verify: False."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    (pe,) = struct.unpack_from("<I", head, 0x3C)
    optional = pe + 24  # "PE\0\0" + the 20-byte COFF header
    if optional + 2 > len(head) or head[pe : pe + 4] != b"PE\0\0":
        return False
    (magic,) = struct.unpack_from("<H", head, optional)
    if magic == 0x20B:  # PE32+
        count_at, directories = optional + 108, optional + 112
    elif magic == 0x10B:  # PE32
        count_at, directories = optional + 92, optional + 96
    else:
        return False
    entry = directories + 8 * _SECURITY_DIRECTORY
    if entry + 8 > len(head):
        return False
    count: int = struct.unpack_from("<I", head, count_at)[0]
    size: int = struct.unpack_from("<II", head, entry)[1]
    return count > _SECURITY_DIRECTORY and size > 0
