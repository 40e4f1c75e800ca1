"""End to end: a room of 50 machines powers on at once (tests/loadlab.py): 50 simulated PXE
clients (BIOS and UEFI, each with its own MAC and address) against pxeprov's rendered dnsmasq
and nginx in a private network. Every one must reach its kernel. bench/load_bench.py measures
50, 100 and 200, and both layouts. (A real QEMU client among the simulated ones does not get its
address from the lab's ordinary DHCP server yet, alone it does: not part of this test until
that is understood; see issue 22's note.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pxeprov import vlab

from .. import loadlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("http", [True, False], ids=["http", "tftp"])
def test_a_room_of_50_boots_at_once(http: bool) -> None:
    problems = vlab.missing()
    if problems or not (loadlab.DI / "linux").is_file():
        pytest.fail(f"e2e preconditions not met: {problems}", pytrace=False)
    work = vlab.traversable_tempdir("pxeprov-load-")
    try:
        with loadlab.server(work, http) as srv:
            result = loadlab.run(srv, 50)
        lost = [c for c in result.clients if "kernel" not in c["times"]]
        assert not lost, f"{result.summary()}\nfirst lost: {lost[:3]}"
        assert result.server_cpu["dnsmasq"] > 0  # the measurement saw the server work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        assert not Path(work).exists()
