"""ISO layouts pxeprov knows, how to recognize them, and the kernel arguments each needs.

Clonezilla and GParted live are Debian-live systems: live-boot's `fetch=` downloads the squashfs
from the server at boot. The URL uses the server's address, never a host name: proxyDHCP clients
get no DNS server, and the initramfs could not resolve one anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pxeprov.errors import ImageError

KINDS = ("clonezilla", "gparted", "debian-live", "custom")
DEFAULT_LOCALE = "en_US.UTF-8"
DEFAULT_KEYBOARD = "us"
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(_[A-Za-z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
_KEYBOARD_RE = re.compile(r"[a-z]{2,8}(,[a-z]{2,8})*")


@dataclass(frozen=True)
class Layout:
    """What to copy out of an ISO: paths inside the ISO (lower case, absolute)."""

    kind: str
    kernel: str
    initrd: str
    rootfs: str | None
    version: str | None = None


def check_locale(value: str) -> str:
    if not _LOCALE_RE.fullmatch(value):
        raise ImageError(f"locale {value!r} is not like en_US.UTF-8")
    return value


def check_keyboard(value: str) -> str:
    if not _KEYBOARD_RE.fullmatch(value):
        raise ImageError(f"keyboard layout {value!r} is not like us or de,fr")
    return value


def _pick(files: Mapping[str, int], exact: str, prefix: str) -> str | None:
    """`live/vmlinuz`, or the one versioned `live/vmlinuz-6.1.0-13-amd64` (newest if several)."""
    if exact in files:
        return exact
    versioned = sorted(p for p in files if p.startswith(prefix))
    return versioned[-1] if versioned else None


def is_version_file(path: str) -> bool:
    """`/Clonezilla-Live-Version`; plain ISO 9660 names spell it `/CLONEZILLA_LIVE_VERSION`."""
    return path.replace("_", "-").endswith("-live-version")


def detect(files: Mapping[str, int], read_text: Mapping[str, str], volume_id: str) -> Layout:
    """Recognize the layout from the ISO's file list {lower-case path: size}.

    `read_text` holds the content of the small version files that exist.
    """
    kernel = _pick(files, "/live/vmlinuz", "/live/vmlinuz-")
    initrd = _pick(files, "/live/initrd.img", "/live/initrd.img-")
    rootfs = "/live/filesystem.squashfs" if "/live/filesystem.squashfs" in files else None
    if kernel and initrd and rootfs:
        for kind, marker in (
            ("clonezilla", "/clonezilla-live-version"),
            ("gparted", "/gparted-live-version"),
        ):
            plain = marker.replace("-", "_")
            if marker in files or plain in files or volume_id.lower().startswith(kind):
                text = read_text.get(marker) or read_text.get(plain) or ""
                version = text.strip().splitlines()
                return Layout(kind, kernel, initrd, rootfs, version[0] if version else None)
        return Layout("debian-live", kernel, initrd, rootfs)
    shown = ", ".join(sorted(files)[:12]) + (" ..." if len(files) > 12 else "")
    raise ImageError(
        "the ISO's layout is not one pxeprov knows (clonezilla, gparted, debian-live: "
        f"live/vmlinuz, live/initrd.img, live/filesystem.squashfs); it holds {shown or 'no files'}",
        "for another layout use --kind custom --kernel PATH --initrd PATH [--rootfs PATH]",
    )


def kernel_args(kind: str, fetch_url: str | None, locale: str, keyboard: str) -> str:
    """The arguments a kind needs besides the kernel and initrd (before the user's --append)."""
    fetch = f"fetch={fetch_url}" if fetch_url else ""
    lang = f"locales={locale} keyboard-layouts={keyboard}"
    if kind == "clonezilla":
        args = (
            "boot=live union=overlay username=user config components noswap edd=on nomodeset "
            f'noprompt {lang} ocs_live_run="ocs-live-general" ocs_live_extra_param="" '
            f"ocs_live_batch=no net.ifnames=0 nosplash {fetch}"
        )
    elif kind == "gparted":
        args = (
            "boot=live union=overlay username=user config components noswap noprompt "
            f"{lang} {fetch}"
        )
    elif kind == "debian-live":
        args = f"boot=live components {lang} {fetch}"
    else:  # custom: only what the admin gives with --append
        args = ""
    return " ".join(args.split())
