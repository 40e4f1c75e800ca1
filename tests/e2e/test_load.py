"""End to end: a room of 50 machines powers on at once (tests/loadlab.py): 50 simulated PXE
clients (BIOS and UEFI, each with its own MAC and address) and two real QEMU clients (SeaBIOS
with its iPXE ROM, OVMF) against pxeprov's rendered dnsmasq and nginx in a private network.
Every one must reach its kernel, and the real ones must have fetched from the server what the
simulated ones of their firmware fetched, in the same order: the simulator behaves as firmware
does. bench/load_bench.py measures 50, 100 and 200, and both layouts.
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
            result = loadlab.run(srv, 50, real=2)
        lost = [c for c in result.clients if "kernel" not in c["times"]]
        assert not lost, f"{result.summary()}\nfirst lost: {lost[:3]}"
        assert result.server_cpu["dnsmasq"] > 0  # the measurement saw the server work
        assert [r["firmware"] for r in result.real] == ["bios", "uefi"]
        payloads = [("http" if http else "tftp", path) for path in (loadlab.KERNEL, loadlab.INITRD)]
        for real in result.real:
            assert real["kernel_after"] is not None, f"real client {real}"
            simulated = result.simulated[real["firmware"]]
            fetched = real["fetches"]
            assert fetched[-2:] == payloads, real
            if real["firmware"] == "uefi":  # OVMF: the size query, the loader, iPXE's script
                assert fetched == simulated, real
            else:  # QEMU's BIOS ROM is iPXE: no PXE ROM's loader fetch; the rest the same
                assert len(fetched) >= 3 and simulated[-len(fetched) :] == fetched, real
    finally:
        shutil.rmtree(work, ignore_errors=True)
        assert not Path(work).exists()
