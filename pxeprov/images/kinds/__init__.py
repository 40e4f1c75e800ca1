"""Image kinds: the registry (registry.py) and the built-in kinds, one module each.

Adding a kind is one module that calls `register()`, imported here (or, from another package,
named by an entry point of the group `pxeprov.kinds`).
"""

from pxeprov.images.kinds import clonezilla, custom, debian_live, gparted
from pxeprov.images.kinds.registry import (
    ENTRY_POINTS,
    INITRD,
    KERNEL,
    ROOTFS,
    VERSION_LIMIT,
    ImageKind,
    IsoView,
    Layout,
    Served,
    all_kinds,
    detect,
    get,
    markdown_table,
    names,
    register,
    unregister,
)

BUILT_IN = (clonezilla, custom, debian_live, gparted)

__all__ = [
    "BUILT_IN",
    "ENTRY_POINTS",
    "INITRD",
    "KERNEL",
    "ROOTFS",
    "VERSION_LIMIT",
    "ImageKind",
    "IsoView",
    "Layout",
    "Served",
    "all_kinds",
    "detect",
    "get",
    "markdown_table",
    "names",
    "register",
    "unregister",
]
