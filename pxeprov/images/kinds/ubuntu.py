"""Ubuntu desktop live and live-server (casper), 20.04 to 24.04 and later.

casper downloads the whole ISO over HTTP at boot (`netboot=url url=…iso`), loop-mounts it and
carries on as from a CD: the ISO itself is served, under a fixed name ending in .iso (casper takes
only such URLs). cloud-init on live-server would read url= as a cloud-config and download the ISO
a second time: `cloud-config-url=/dev/null` stops it. Kernels are signed by Canonical, which
Debian's shim (the GRUB chain) does not trust.
"""

from __future__ import annotations

import re

from pxeprov.images.kinds.registry import (
    ImageKind,
    IsoView,
    Layout,
    Served,
    folder,
    register,
)
from pxeprov.state import Image
from pxeprov.syntax import label_from_iso, version_from_iso

WHOLE = "image.iso"
_VERSION = re.compile(r"\b([0-9]+\.[0-9]+(?:\.[0-9]+)?)\b")


class Ubuntu(ImageKind):
    name = "ubuntu"
    label = "Ubuntu"
    recognized_by = "`casper/vmlinuz`, `casper/initrd*`, `.disk/info`"
    arguments = (
        "`boot=casper netboot=url url=http://<server>/images/<name>/image.iso ip=dhcp` "
        "(+ `cloud-config-url=/dev/null` for live-server)"
    )
    transport = "HTTP (the whole ISO)"
    firmware = "BIOS, UEFI (signed by Canonical: no Secure Boot through Debian's shim)"
    needs_http = True
    foreign_signature = "Canonical"
    detect_order = 20

    def detect(self, iso: IsoView) -> Layout | None:
        casper = iso.listdir("/casper")
        kernel = "vmlinuz" if "vmlinuz" in casper else None
        initrd = next((n for n in ("initrd", "initrd.lz", "initrd.gz") if n in casper), None)
        info = iso.read_small("/.disk/info")
        if kernel is None or initrd is None or not info:
            return None
        installer = any("installer" in n and n.endswith(".squashfs") for n in casper)
        server = info.lstrip().lower().startswith("ubuntu-server") or installer
        found = _VERSION.search(info)
        return Layout(
            self.name,
            f"/casper/{kernel}",
            f"/casper/{initrd}",
            None,
            version_from_iso(found.group(1)) if found else "",
            whole=WHOLE,
            label=label_from_iso(info.split(" - ", 1)[0]),  # no " - Release amd64 (date)"
            variant="server" if server else "desktop",
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        iso = served.url(f"{folder(image)}/{WHOLE}")
        server = " cloud-config-url=/dev/null" if image.variant == "server" else ""
        return f"boot=casper netboot=url url={iso} ip=dhcp{server}"


register(Ubuntu())
