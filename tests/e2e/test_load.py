"""End to end: a room of 50 machines powers on at once (tests/loadlab.py): 50 simulated PXE
clients (BIOS and UEFI, each with its own MAC and address) and two real QEMU clients (SeaBIOS
with its iPXE ROM, OVMF) against pxeprov's rendered dnsmasq and nginx in a private network.
Every one must reach its kernel, and the real ones must have asked the server, on their own
wire (tests/wire.py: TFTP read requests with their options, HTTP GETs), for what the simulated
ones of their firmware asked for, in the same order: the simulator behaves as firmware does.
bench/load_bench.py measures 50, 100 and 200, and both layouts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pxeprov import vlab

from .. import loadlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("http", [True, False], ids=["http", "tftp"])
def test_a_room_of_50_boots_at_once_with_real_clients_among_them(http: bool) -> None:
    problems = vlab.missing()
    if problems or not (loadlab.DI / "linux").is_file():
        pytest.fail(f"e2e preconditions not met: {problems}", pytrace=False)
    work = vlab.traversable_tempdir("pxeprov-load-")
    try:
        with loadlab.server(work, http) as srv:
            result = loadlab.run(srv, 50, real=("bios", "uefi"))
        lost = [c for c in result.clients if "kernel" not in c["times"]]
        assert not lost, f"{result.summary()}\nfirst lost: {lost[:3]}"
        assert result.server_cpu["dnsmasq"] > 0  # the measurement saw the server work
        assert [r["firmware"] for r in result.real] == ["bios", "uefi"]
        payloads = [
            ("http" if http else "tftp", path, "" if http else "blksize=1432 tsize")
            for path in (loadlab.KERNEL, loadlab.INITRD)
        ]
        for real in result.real:
            assert real["kernel_after"] is not None, f"real client {real}"
            assert real["overlap"] > 0, real  # it booted while the room did
            simulated = result.simulated[real["firmware"]]
            fetched = real["fetches"]
            if real["firmware"] == "uefi":
                # OVMF: its size query, the loader (blksize 1468), iPXE's script and payloads
                assert fetched == simulated, real
                assert fetched[:2] == [("tftp", "snponly.efi", "blksize=1468 tsize"),
                                       ("tftp", "snponly.efi", "blksize=1468")], real  # fmt: skip
            else:  # QEMU's BIOS ROM is iPXE: no PXE ROM's loader fetch; from the menu on the same
                assert loadlab.from_menu(fetched) == loadlab.from_menu(simulated), real
            if http or real["firmware"] == "uefi":  # iPXE fetches the payloads
                assert fetched[-2:] == payloads, real
            else:  # pxelinux, with its own block size
                assert [f[:2] for f in fetched[-2:]] == [p[:2] for p in payloads], real
                assert all(f[2] == "blksize=1408 tsize" for f in fetched[-2:]), real
    finally:
        shutil.rmtree(work, ignore_errors=True)
        assert not Path(work).exists()
