"""The Debian (or Ubuntu legacy) installer's netboot tree: debian-installer/<arch>/linux and
initrd.gz, as netboot.tar.gz holds them and the debian-installer-<n>-netboot-<arch> package
installs them (/usr/lib/debian-installer/images/<n>/<arch>/text), for amd64 or arm64 (the
kernel's own bytes then say which; pxeprov.arch). Arguments are the admin's own
(--append): `auto=true priority=critical url=…` for a preseeded install. Debian-signed kernels
boot with Secure Boot."""

from __future__ import annotations

import re

from pxeprov.arch import ARCHITECTURES
from pxeprov.images.kinds.registry import ImageKind, IsoView, Layout, Served, register
from pxeprov.state import Image
from pxeprov.syntax import label_from_iso, version_from_iso

_VERSION = re.compile(r"Debian version:\s*(.+)")


class DebianInstaller(ImageKind):
    name = "debian-installer"
    label = "Debian installer"
    recognized_by = (
        "`debian-installer/amd64/linux` (or `arm64/`) and `initrd.gz` (netboot.tar.gz, its tree, "
        "or the installed debian-installer-*-netboot-amd64 or -arm64 package's directory)"
    )
    arguments = "only `--append` (`auto=true priority=critical url=…` to preseed)"
    detect_order = 15

    def detect(self, iso: IsoView) -> Layout | None:
        for a in ARCHITECTURES:
            where = f"/debian-installer/{a.debian}"
            found = iso.listdir(where)
            if "linux" in found and "initrd.gz" in found:
                return self._layout(iso, where)
        return None

    def _layout(self, iso: IsoView, where: str) -> Layout:
        info = iso.read_small("/version.info") or ""
        match = _VERSION.search(info)
        version = match.group(1) if match else ""
        return Layout(
            self.name,
            f"{where}/linux",
            f"{where}/initrd.gz",
            None,
            version_from_iso(version),
            label=label_from_iso(f"Debian installer ({version})") if version else "",
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        return ""


register(DebianInstaller())
