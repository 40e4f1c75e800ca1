"""The lab's VMs (pxeprov/vlab.py, used by `pxeprov verify` and the e2e tests) as QEMU sees them."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from pxeprov.vlab import Firmware, qemu_argv


def _uuid(argv: list[str]) -> str:
    return argv[argv.index("-uuid") + 1]


def test_each_machine_has_a_system_uuid_of_its_own(tmp_path: Path) -> None:
    """QEMU's default SMBIOS UUID is all zeros for every VM, where every real machine has one of
    its own (OVMF's PXE client sends it to the DHCP servers, option 97). Each MAC gets its own,
    the same on every boot."""
    for firmware in get_args(Firmware):
        argvs = [
            qemu_argv(firmware, mac, tmp_path / "serial", tmp_path / "vars", 512)
            for mac in ("52:54:00:77:19:01", "52:54:00:77:19:02", "52:54:00:77:19:01")
        ]
        uuids = [_uuid(a) for a in argvs]
        assert uuids[0] != uuids[1], firmware
        assert uuids[0] == uuids[2], firmware
        assert "00000000-0000-0000-0000-000000000000" not in uuids
