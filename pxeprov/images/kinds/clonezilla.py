"""Clonezilla live: a Debian live-boot system with its own version file."""

from __future__ import annotations

from pxeprov.images.kinds._liveboot import LiveBootKind, lang
from pxeprov.images.kinds.registry import register
from pxeprov.state import Image


class Clonezilla(LiveBootKind):
    name = "clonezilla"
    label = "Clonezilla live"
    product = "clonezilla"
    recognized_by = (
        "`Clonezilla-Live-Version` (or the volume id), `live/vmlinuz`, `live/initrd.img`, "
        "`live/filesystem.squashfs`"
    )
    arguments = (
        "`boot=live union=overlay username=user config components noswap edd=on nomodeset "
        'noprompt locales=… keyboard-layouts=… ocs_live_run="ocs-live-general" '
        'ocs_live_extra_param="" ocs_live_batch=no net.ifnames=0 nosplash '
        "fetch=<tftp or http>://<server>/images/<name>/filesystem.squashfs`"
    )
    detect_order = 10

    def boot_args(self, image: Image) -> str:
        return (
            "boot=live union=overlay username=user config components noswap edd=on nomodeset "
            f'noprompt {lang(image)} ocs_live_run="ocs-live-general" ocs_live_extra_param="" '
            "ocs_live_batch=no net.ifnames=0 nosplash"
        )


register(Clonezilla())
