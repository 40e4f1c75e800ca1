"""Debian live (and anything else with live-boot's layout but no version file of its own)."""

from __future__ import annotations

from pxeprov.images.kinds._liveboot import LiveBootKind, lang
from pxeprov.images.kinds.registry import register
from pxeprov.state import Image


class DebianLive(LiveBootKind):
    name = "debian-live"
    label = "Debian live"
    recognized_by = "`live/vmlinuz*`, `live/initrd.img*`, `live/filesystem.squashfs`"
    arguments = "`boot=live components locales=… keyboard-layouts=… fetch=…`"
    detect_order = 50  # after the kinds with a version file, which share its layout
    generic = True

    def boot_args(self, image: Image) -> str:
        return f"boot=live components {lang(image)}"


register(DebianLive())
