"""GParted live: a Debian live-boot system with its own version file."""

from __future__ import annotations

from pxeprov.images.kinds._liveboot import LiveBootKind, lang
from pxeprov.images.kinds.registry import register
from pxeprov.state import Image


class GParted(LiveBootKind):
    name = "gparted"
    label = "GParted live"
    product = "gparted"
    recognized_by = "`GParted-Live-Version` (or the volume id), same files"
    arguments = (
        "`boot=live union=overlay username=user config components noswap noprompt "
        "locales=… keyboard-layouts=… fetch=…`"
    )
    detect_order = 10

    def boot_args(self, image: Image) -> str:
        return (
            f"boot=live union=overlay username=user config components noswap noprompt {lang(image)}"
        )


register(GParted())
