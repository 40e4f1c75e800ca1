"""Image kinds: the registry (registry.py) and the built-in kinds, one module each.

Adding a kind is one module that calls `register()`, imported here (or, from another package,
named by an entry point of the group `pxeprov.kinds`).
"""

from pxeprov.images.kinds import (
    archiso,
    clonezilla,
    custom,
    debian_installer,
    debian_live,
    fedora,
    fedora_installer,
    gparted,
    iso,
    memtest,
    ubuntu,
)
from pxeprov.images.kinds.registry import (
    ENTRY_POINTS,
    IMAGES_DIR,
    INITRD,
    KERNEL,
    LOADERS,
    ROOTFS,
    VERSION_LIMIT,
    BootSpec,
    ImageKind,
    IsoView,
    Layout,
    Served,
    all_kinds,
    detect,
    folder,
    get,
    markdown_table,
    names,
    register,
    unregister,
)

BUILT_IN = (
    archiso, clonezilla, custom, debian_installer, debian_live, fedora, fedora_installer,
    gparted, iso, memtest, ubuntu,
)  # fmt: skip

__all__ = [
    "BUILT_IN",
    "ENTRY_POINTS",
    "IMAGES_DIR",
    "INITRD",
    "KERNEL",
    "LOADERS",
    "ROOTFS",
    "VERSION_LIMIT",
    "BootSpec",
    "ImageKind",
    "IsoView",
    "Layout",
    "Served",
    "all_kinds",
    "detect",
    "folder",
    "get",
    "markdown_table",
    "names",
    "register",
    "unregister",
]
