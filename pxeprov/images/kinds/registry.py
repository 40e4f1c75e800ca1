"""The kinds registry: what pxeprov knows of an ISO's layout, one module per kind, registered.

A kind says how to recognize its ISOs (by signature files, as Cobbler's distro signatures do),
which files to copy and under which fixed names, the kernel arguments its entry needs for where
the files are served, its label, and whether it needs HTTP. Adding a kind is one module that
calls `register()` (plus its tests); kinds from other packages come in through the entry-point
group `pxeprov.kinds` (each entry point names a module that registers its kinds on import).

Detection looks only at the paths it needs (`IsoView` reads one directory at a time). What an ISO
holds is never written anywhere as it is: files are copied under fixed names, and versions and
labels are derived from its text through the allow-lists of `syntax`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import ClassVar, Protocol

from pxeprov.boot.chains import LoaderFile
from pxeprov.errors import ImageError, InputError
from pxeprov.images.isofs import Entry
from pxeprov.state import Image, Plan, Session

VERSION_LIMIT = 48  # characters of a version kept: the label stays within syntax.MAX_TEXT
# What the files every kind serves are called under images/<name>/, whatever the ISO calls them.
KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOTFS = "filesystem.squashfs"
ENTRY_POINTS = "pxeprov.kinds"
IMAGES_DIR = "images"  # under the TFTP root: one directory per image


def folder(image: Image) -> str:
    """The image's directory, relative to the TFTP root."""
    return f"{IMAGES_DIR}/{image.name}"


class IsoView(Protocol):
    """What detection reads of an ISO (iso.Iso): one directory at a time, small files."""

    @property
    def volume_id(self) -> str: ...

    def listdir(self, path: str) -> dict[str, Entry]: ...

    def read_small(self, path: str, limit: int = ...) -> str | None: ...

    def head(self, path: str, size: int) -> bytes: ...


@dataclass(frozen=True)
class Layout:
    """What to copy out of an ISO (paths inside it: lower case, absolute) and what it is."""

    kind: str
    kernel: str  # copied as KERNEL
    initrd: str | None  # copied as INITRD (None: the kind boots without one)
    rootfs: str | None = None  # copied as ROOTFS
    version: str = ""  # derived through the allow-list: safe to show and store
    # More files and directory trees: (name under images/<name>/, path in the ISO); a tree's
    # name ends in "/" and its files keep their own names, which must pass the path allow-list.
    extra: tuple[tuple[str, str], ...] = ()
    whole: str | None = None  # a copy of the whole ISO under this name (casper's url=, sanboot)
    label: str = ""  # derived from the ISO's own metadata (allow-list); "" = the kind's default
    uefi_kernel: str | None = None  # the file UEFI clients boot, when not the kernel (its PE
    #                                 signature says whether Secure Boot clients take it)
    variant: str = ""  # what the kind remembers of this image (Image.variant)


# Where a menu entry can be booted: pxelinux (BIOS), iPXE on either firmware, GRUB (UEFI).
LOADERS = ("pxelinux", "ipxe-bios", "ipxe-uefi", "grub")


@dataclass(frozen=True)
class BootSpec:
    """How one loader boots an entry: a kernel (a path relative to the TFTP root) with its
    initrds and arguments (the user's --append comes after them), or, for iPXE, a disk image
    (an ISO) to boot from a URL (`sanboot`)."""

    kernel: str = ""
    initrds: tuple[str, ...] = ()
    args: str = ""
    sanboot: str = ""


@dataclass(frozen=True)
class Served:
    """Where a client finds an image's files: URLs of paths relative to the TFTP root."""

    tftp: str  # tftp://<server>
    http: str | None  # http://<server>[:port], or the HTTP base URL; None: no HTTP

    def url(self, path: str) -> str:
        """Where a large file is fetched from: over HTTP when there is HTTP."""
        return f"{self.http or self.tftp}/{path}"


class ImageKind(ABC):
    """One kind of image. Subclasses set the class attributes and the two methods."""

    name: ClassVar[str]
    label: ClassVar[str]  # the default label is "<label> (<version or image name>)"
    recognized_by: ClassVar[str]  # for the README's table
    arguments: ClassVar[str]  # the kernel arguments, in words, for the README's table
    needs_http: ClassVar[bool] = False
    detect_order: ClassVar[int] = 100  # lower first: the more particular kinds come first
    detected: ClassVar[bool] = True  # False: only ever chosen with --kind
    # Kinds of one family share a layout: --kind may turn the family's generic member into a
    # particular one or back (a Debian live ISO booted with Clonezilla's arguments).
    family: ClassVar[str] = ""
    generic: ClassVar[bool] = False
    # Whose Secure Boot signature its kernels carry, when known: Debian's shim (the GRUB chain)
    # trusts only Debian's. None: pxeprov reads the kernel's own PE signature.
    foreign_signature: ClassVar[str | None] = None
    transport: ClassVar[str] = "TFTP or HTTP"  # for the README's table
    # Boot loaders its entries need besides the chains' (served from the TFTP root)
    loader_files: ClassVar[tuple[LoaderFile, ...]] = ()
    firmware: ClassVar[str] = "BIOS, UEFI"  # for the README's table

    @abstractmethod
    def detect(self, iso: IsoView) -> Layout | None:
        """The layout when `iso` is of this kind, else None."""

    @abstractmethod
    def kernel_args(self, image: Image, served: Served) -> str:
        """The arguments the kind needs besides kernel and initrd (before the user's --append)."""

    def paths(self, layout: Layout, folder: str) -> tuple[str, str, str, tuple[str, ...]]:
        """The image's kernel, initrd, rootfs and other files as the state records them
        (relative to the TFTP root; `folder` is images/<name>): the layout's fixed names."""
        kernel = f"{folder}/{KERNEL}"
        initrd = f"{folder}/{INITRD}" if layout.initrd else ""
        rootfs = f"{folder}/{ROOTFS}" if layout.rootfs else ""
        extra = [n for n, _ in layout.extra] + ([layout.whole] if layout.whole else [])
        return kernel, initrd, rootfs, tuple(f"{folder}/{e}" for e in extra)

    def review(self, layout: Layout, size: int) -> list[str]:
        """Refuse an image of this kind (ImageError), or say what add-image tells the user about
        it (notes, warnings)."""
        return []

    def job_args(
        self, image: Image, served: Served, plan: Plan, repo: str, session: Session | None = None
    ) -> str | None:
        """The kernel arguments that run `plan` (a restore or save job) unattended, or None
        when this kind cannot run jobs; a restore of a multicast `session` takes the
        partitions from the session's sender."""
        return None

    def boots(self, image: Image, served: Served) -> dict[str, BootSpec]:
        """How each loader (LOADERS) boots the image; a loader left out cannot. By default
        every loader boots the kernel with the initrd and the kind's arguments."""
        initrds = (image.initrd,) if image.initrd else ()
        spec = BootSpec(image.kernel, initrds, self.kernel_args(image, served))
        return dict.fromkeys(LOADERS, spec)


_REGISTRY: dict[str, ImageKind] = {}
_plugins_loaded = False


def register(kind: ImageKind) -> ImageKind:
    if kind.name in _REGISTRY and type(_REGISTRY[kind.name]) is not type(kind):
        raise ValueError(f"a kind named {kind.name!r} is registered already")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Take a kind out again (a plugin's tests)."""
    _REGISTRY.pop(name, None)


def _load() -> None:
    """The kinds of installed plugins (entry points), once; the built-in ones register when
    the package is imported (kinds/__init__.py)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINTS):
        importlib.import_module(point.value)


def all_kinds() -> list[ImageKind]:
    _load()
    return sorted(_REGISTRY.values(), key=lambda k: (k.detect_order, k.name))


def names() -> tuple[str, ...]:
    return tuple(k.name for k in all_kinds())


def get(name: str) -> ImageKind:
    _load()
    kind = _REGISTRY.get(name)
    if kind is None:
        raise InputError(f"kind {name!r} is not one pxeprov knows ({', '.join(names())})")
    return kind


def detect(iso: IsoView) -> Layout:
    """The first kind (in detect order) that recognizes the ISO."""
    for kind in all_kinds():
        if kind.detected:
            layout = kind.detect(iso)
            if layout is not None:
                return layout
    root = iso.listdir("/")
    shown_names = sorted(f"/{n}{'/' if e.is_dir else ''}" for n, e in root.items())
    shown = ", ".join(shown_names[:12]) + (" ..." if len(shown_names) > 12 else "")
    known = ", ".join(k.name for k in all_kinds() if k.detected)
    raise ImageError(
        f"the image's layout is not one pxeprov knows ({known}); its top directory holds "
        f"{shown or 'nothing'}",
        "for another layout use --kind custom --kernel PATH --initrd PATH [--rootfs PATH]",
    )


def markdown_table() -> str:
    """The README's table of kinds (tests/test_kinds.py keeps the README current)."""
    lines = [
        "| kind | recognized by | kernel arguments (before your `--append`) | served over | "
        "firmware |",
        "|---|---|---|---|---|",
    ]
    for k in all_kinds():
        lines.append(
            f"| `{k.name}` | {k.recognized_by} | {k.arguments} | {k.transport} | {k.firmware} |"
        )
    return "\n".join(lines) + "\n"
