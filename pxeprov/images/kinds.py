"""ISO layouts pxeprov knows, how to recognize them, and the kernel arguments each needs.

Clonezilla and GParted live are Debian-live systems: live-boot's `fetch=` downloads the squashfs
from the server at boot. The URL uses the server's address, never a host name: proxyDHCP clients
get no DNS server, and the initramfs could not resolve one anyway.

Detection looks only at the paths it needs (`IsoView` reads one directory at a time). What an ISO
holds is never written anywhere as it is: files are copied under fixed names (`FIXED_NAMES`), and
versions and labels are derived from its text through the allow-lists of `syntax`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pxeprov.errors import ImageError, InputError
from pxeprov.images.isofs import Entry
from pxeprov.syntax import version_from_iso

VERSION_LIMIT = 48  # characters of a version kept: the label stays within syntax.MAX_TEXT

KINDS = ("clonezilla", "gparted", "debian-live", "custom")
LABELS = {"clonezilla": "Clonezilla live", "gparted": "GParted live", "debian-live": "Debian live"}
# What each file an image serves is called under images/<name>/, whatever the ISO calls it.
FIXED_NAMES = {"kernel": "vmlinuz", "initrd": "initrd.img", "rootfs": "filesystem.squashfs"}


class IsoView(Protocol):
    """What detection reads of an ISO (iso.Iso): lookups, one directory, small files."""

    @property
    def volume_id(self) -> str: ...

    def listdir(self, path: str) -> dict[str, Entry]: ...

    def read_small(self, path: str, limit: int = ...) -> str | None: ...


@dataclass(frozen=True)
class Layout:
    """What to copy out of an ISO: paths inside the ISO (lower case, absolute)."""

    kind: str
    kernel: str
    initrd: str
    rootfs: str | None
    version: str = ""  # derived through the allow-list: safe to show and store


def _pick(listing: dict[str, Entry], exact: str, prefix: str) -> str | None:
    """`vmlinuz`, or the one versioned `vmlinuz-6.1.0-13-amd64` (newest if several)."""
    if exact in listing and not listing[exact].is_dir:
        return exact
    versioned = sorted(n for n, e in listing.items() if n.startswith(prefix) and not e.is_dir)
    return versioned[-1] if versioned else None


def _marker(root: dict[str, Entry], kind: str) -> str | None:
    """`/Clonezilla-Live-Version`; plain ISO 9660 names spell it `/CLONEZILLA_LIVE_VERSION`."""
    for name in (f"{kind}-live-version", f"{kind}_live_version"):
        if name in root and not root[name].is_dir:
            return name
    return None


def detect(iso: IsoView) -> Layout:
    """Recognize the layout, reading the root directory and `/live` only."""
    root = iso.listdir("/")
    live = iso.listdir("/live")
    kernel = _pick(live, "vmlinuz", "vmlinuz-")
    initrd = _pick(live, "initrd.img", "initrd.img-")
    rootfs = "filesystem.squashfs" if "filesystem.squashfs" in live else None
    if kernel and initrd and rootfs:
        paths = (f"/live/{kernel}", f"/live/{initrd}", f"/live/{rootfs}")
        for kind in ("clonezilla", "gparted"):
            marker = _marker(root, kind)
            if marker is not None or iso.volume_id.lower().startswith(kind):
                text = iso.read_small(f"/{marker}") if marker is not None else None
                return Layout(kind, *paths, version_from_iso(text or "", VERSION_LIMIT))
        return Layout("debian-live", *paths)
    names = sorted(f"/{n}{'/' if e.is_dir else ''}" for n, e in root.items())
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    raise ImageError(
        "the ISO's layout is not one pxeprov knows (clonezilla, gparted, debian-live: "
        "live/vmlinuz, live/initrd.img, live/filesystem.squashfs); its top directory holds "
        f"{shown or 'nothing'}",
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
    elif kind == "custom":  # only what the admin gives with --append
        args = ""
    else:
        raise InputError(f"kind {kind!r} is not one pxeprov knows ({', '.join(KINDS)})")
    return " ".join(args.split())
