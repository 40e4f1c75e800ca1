"""The Debian (or Ubuntu legacy) installer's netboot tree: debian-installer/<arch>/linux and
initrd.gz, as netboot.tar.gz holds them and the debian-installer-<n>-netboot-<arch> package
installs them (/usr/lib/debian-installer/images/<n>/amd64/text). Arguments are the admin's own
(--append): `auto=true priority=critical url=…` for a preseeded install. Debian-signed kernels
boot with Secure Boot."""

from __future__ import annotations

import re

from pxeprov.images.kinds.registry import ImageKind, IsoView, Layout, Served, register
from pxeprov.state import Image
from pxeprov.syntax import label_from_iso, version_from_iso

_VERSION = re.compile(r"Debian version:\s*(.+)")


class DebianInstaller(ImageKind):
    name = "debian-installer"
    label = "Debian installer"
    recognized_by = (
        "`debian-installer/amd64/linux` and `initrd.gz` (netboot.tar.gz, its tree, or the "
        "installed debian-installer-*-netboot-amd64 package's directory)"
    )
    arguments = "only `--append` (`auto=true priority=critical url=…` to preseed)"
    detect_order = 15

    def detect(self, iso: IsoView) -> Layout | None:
        found = iso.listdir("/debian-installer/amd64")
        if "linux" not in found or "initrd.gz" not in found:
            return None
        info = iso.read_small("/version.info") or ""
        match = _VERSION.search(info)
        version = match.group(1) if match else ""
        return Layout(
            self.name,
            "/debian-installer/amd64/linux",
            "/debian-installer/amd64/initrd.gz",
            None,
            version_from_iso(version),
            label=label_from_iso(f"Debian installer ({version})") if version else "",
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        return ""


register(DebianInstaller())
