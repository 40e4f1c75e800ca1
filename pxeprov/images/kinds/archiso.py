"""archiso systems: Arch Linux and SystemRescue (its base directory is `arch`, `sysresccd`, ...).

The initramfs's archiso_pxe_http hook downloads `<archiso_http_srv><base>/x86_64/airootfs.sfs`
(only when `ip=` is given too), so the base directory's x86_64/ tree is served under the image
directory with its own path, and `archiso_http_srv` ends in "/" (the hook joins the strings as
they are). Kernels are unsigned: no Secure Boot.
"""

from __future__ import annotations

import re

from pxeprov.arch import ARCHITECTURES
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

_BASE = re.compile(r"[a-z0-9_-]{1,32}")
NAMES = {"arch": "Arch Linux", "sysresccd": "SystemRescue"}


class Archiso(ImageKind):
    name = "archiso"
    label = "archiso"
    recognized_by = (
        "`<base>/boot/x86_64/vmlinuz*` and `<base>/x86_64/airootfs.sfs` (base `arch`, "
        "`sysresccd`, ...)"
    )
    arguments = (
        "`archisobasedir=<base> archiso_http_srv=http://<server>/images/<name>/ ip=dhcp` "
        "(SystemRescue: + `copytoram`)"
    )
    transport = "HTTP (the base directory's x86_64/ tree)"
    firmware = "BIOS, UEFI (unsigned: no Secure Boot)"
    needs_http = True
    detect_order = 40

    def detect(self, iso: IsoView) -> Layout | None:
        for name, entry in sorted(iso.listdir("/").items()):
            if not entry.is_dir or not _BASE.fullmatch(entry.spelled):
                continue
            for a in ARCHITECTURES:  # x86_64, or aarch64 where such an ISO exists
                found = self._layout(iso, name, entry.spelled, a.machine)
                if found is not None:
                    return found
        return None

    def _layout(self, iso: IsoView, name: str, base: str, machine: str) -> Layout | None:
        boot = iso.listdir(f"/{name}/boot/{machine}")
        system = iso.listdir(f"/{name}/{machine}")
        if not ({"airootfs.sfs", "airootfs.erofs"} & set(system)):
            return None
        kernels = sorted(n for n in boot if n.startswith("vmlinuz"))
        initrds = sorted(n for n in boot if n.endswith(".img") and "ucode" not in n)
        if not kernels or not initrds:
            return None
        version = version_from_iso(iso.read_small(f"/{name}/version") or iso.volume_id)
        product = NAMES.get(name, label_from_iso(base))
        return Layout(
            self.name,
            f"/{name}/boot/{machine}/{kernels[0]}",
            f"/{name}/boot/{machine}/{initrds[0]}",
            None,
            version,
            extra=((f"{base}/{machine}/", f"/{name}/{machine}"),),
            label=label_from_iso(f"{product} ({version})" if version else product),
            variant=name,
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        base = image.variant
        extra = " copytoram" if base == "sysresccd" else ""
        return f"archisobasedir={base} archiso_http_srv={served.url(folder(image))}/ ip=dhcp{extra}"


register(Archiso())
