"""ISOs built by the tests with xorriso, the tool Clonezilla's and GParted's ISOs are built with."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

# path in the ISO -> content, a size for random content, or a file to copy in
Files = dict[str, bytes | int | Path]


def make_iso(
    path: Path,
    files: Files,
    *,
    volume_id: str = "LIVE",
    rock_ridge: bool = True,
    joliet: bool = True,
    eltorito: bool = True,
    iso_level: int = 3,
    link: dict[str, str] | None = None,
) -> Path:
    """Build `path` from `files`, laid out as a live ISO: El Torito boot image, Rock Ridge and
    Joliet names (each can be left out for the odd cases). `link`: symbolic links to add,
    path -> target (Rock Ridge records them as links)."""
    src = path.with_suffix(".src")
    for name, target in (link or {}).items():
        where = src / name.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(target)
    for name, content in files.items():
        target = src / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, int):
            with target.open("wb") as f:
                left = content
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    f.write(chunk)
                    left -= len(chunk)
        else:
            target.write_bytes(content)
    argv = ["xorriso", "-as", "mkisofs", "-quiet", "-V", volume_id, "-iso-level", str(iso_level)]
    argv += ["-R"] if rock_ridge else ["--norock"]
    if joliet:
        argv += ["-J", "-joliet-long"]
    if eltorito:
        boot = src / "boot/isolinux/isolinux.bin"
        boot.parent.mkdir(parents=True, exist_ok=True)
        boot.write_bytes(b"\xfa" + bytes(2047))  # a stand-in boot image: the layout is what counts
        argv += ["-b", "boot/isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4"]
    argv += ["-o", str(path), str(src)]
    subprocess.run(argv, check=True, capture_output=True)
    return path


def clonezilla_files(kernel: bytes | int = 3000, initrd: bytes | int = 5000,
                     squashfs: bytes | int = 7000) -> Files:  # fmt: skip
    return {
        "Clonezilla-Live-Version": b"clonezilla-live-3.1.2-22-amd64\n",
        "live/vmlinuz": kernel,
        "live/initrd.img": initrd,
        "live/filesystem.squashfs": squashfs,
        "EFI/boot/bootx64.efi": 1000,
        "syslinux/isolinux.cfg": b"default live\n",
    }


def gparted_files() -> Files:
    files = clonezilla_files()
    del files["Clonezilla-Live-Version"]
    files["GParted-Live-Version"] = b"1.6.0-3-amd64\n"
    return files


def debian_live_files() -> Files:
    return {
        "live/vmlinuz-6.1.0-13-amd64": 3000,
        "live/initrd.img-6.1.0-13-amd64": 5000,
        "live/filesystem.squashfs": 7000,
        "isolinux/isolinux.cfg": b"x\n",
    }


def signed_pe(size: int = 4096) -> bytes:
    """A stand-in for a Secure Boot signed kernel: a PE32+ header whose certificate table (the
    data directory entry pxeprov's pe.is_signed looks at) is not empty."""
    head = bytearray(size)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    optional = 0x80 + 24
    struct.pack_into("<H", head, optional, 0x20B)  # PE32+
    struct.pack_into("<I", head, optional + 108, 16)  # NumberOfRvaAndSizes
    struct.pack_into("<II", head, optional + 112 + 8 * 4, 0x1000, 0x200)  # certificate table
    return bytes(head)
