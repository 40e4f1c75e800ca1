"""Wake-on-LAN (issue 18, part 3): `pxeprov wake MAC… / --group NAME` and `assign --wake`.

In a private network of two namespaces (pxeprov.vlab.PrivateLan): pxeprov runs in the server's,
with the state's interface there; a listener on the LAN side (the clients' bridge) takes every
UDP datagram to port 9. Each machine's magic packet (six 0xff, its MAC sixteen times) arrives
three times, sent to the subnet's broadcast address from the server's address; a group's
machines are taken from their plans. Nothing is sent where the interface is missing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov.vlab import PrivateLan, missing
from pxeprov.wol import magic_packet

from .conftest import Cli

REPO = Path(__file__).resolve().parent.parent
ADDRESS = ipaddress.IPv4Address("10.88.0.2")
SUBNET = ipaddress.IPv4Network("10.88.0.0/24")
IFACE = "wol0"
MACS = ("52:54:00:18:03:01", "52:54:00:18:03:02", "52:54:00:18:03:03")

LISTENER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9))
s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        data, (host, port) = s.recvfrom(2048)
    except socket.timeout:
        continue
    print(json.dumps([data.hex(), host]), flush=True)
"""


@pytest.fixture
def lan() -> Iterator[PrivateLan]:
    if os.geteuid() != 0 or missing():
        pytest.fail(f"this test builds namespaces: run as root with {missing()} installed")
    work = Path(tempfile.mkdtemp(prefix="pxeprov-wol-"))
    lab = PrivateLan(work, IFACE, ADDRESS, SUBNET, tag=f"wol{os.getpid()}")
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        subprocess.run(["rm", "-rf", str(work)], check=False, timeout=60)


def _pxeprov(ns: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "pxeprov", "--root",
                           str(root), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def _received(lab: PrivateLan, action: object, seconds: float = 4.0) -> list[tuple[bytes, str]]:
    """What the LAN side took on UDP 9 while `action` ran (and a moment after)."""
    proc = subprocess.Popen(["ip", "netns", "exec", lab.clients, sys.executable, "-c", LISTENER,
                             str(seconds)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        action()  # type: ignore[operator]
        out, _ = proc.communicate(timeout=seconds + 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return [(bytes.fromhex(d), host) for d, host in map(json.loads, out.splitlines())]


def test_the_magic_packet() -> None:
    packet = magic_packet("52:54:00:18:03:01")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400180301") * 16


def test_wake_machines_and_a_group_on_the_serving_interface(
    lan: PrivateLan, loader_root: Path, cli: Cli
) -> None:
    r = _pxeprov(lan.server, loader_root, "init", "--interface", IFACE, "--address", str(ADDRESS),
                 "--subnet", str(SUBNET), "--no-http", "--no-install-packages")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli(loader_root, "assign", MACS[1], MACS[2], "--local", "--group", "room12")
    assert r.exit_code == 0, r.stderr
    results: list[subprocess.CompletedProcess[str]] = []

    def wake() -> None:
        results.append(_pxeprov(lan.server, loader_root, "wake", MACS[0], "--group", "room12"))

    got = _received(lan, wake)
    (done,) = results
    assert done.returncode == 0, done.stderr
    assert (
        f"Woke {', '.join(MACS)}: 3 magic packets each to 10.88.0.255:9 on {IFACE}." in done.stdout
    )
    assert {host for _, host in got} == {str(ADDRESS)}
    packets = [data for data, _ in got]
    for mac in MACS:
        assert packets.count(magic_packet(mac)) == 3, (mac, len(packets))
    assert len(packets) == 9

    # assign --wake: the plans first, then the packets
    def assign() -> None:
        results.append(_pxeprov(lan.server, loader_root, "assign", MACS[0], "--local", "--wake"))

    got = _received(lan, assign)
    assert results[1].returncode == 0, results[1].stderr
    assert [data for data, _ in got] == [magic_packet(MACS[0])] * 3
    plans = _pxeprov(lan.server, loader_root, "plans", "--json")
    assert MACS[0] in plans.stdout


def test_wake_refuses_what_it_cannot_do(lan: PrivateLan, loader_root: Path, cli: Cli) -> None:
    r = _pxeprov(lan.server, loader_root, "wake", MACS[0])
    assert r.returncode == 2 and "not set up" in r.stderr, r.stderr
    r = _pxeprov(lan.server, loader_root, "init", "--interface", IFACE, "--address", str(ADDRESS),
                 "--subnet", str(SUBNET), "--no-http", "--no-install-packages")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for args, code, words in (
        (["--group", "nobody"], 2, "no plan has the group 'nobody'"),
        ([], 2, "give MAC addresses, or --group NAME"),
        (["01:00:5e:00:00:01"], 2, "multicast"),
        ([MACS[0], "--port", "0"], 2, "--port"),
    ):
        r = _pxeprov(lan.server, loader_root, "wake", *args)
        assert r.returncode == code and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
    # where the serving interface is not (the clients' namespace has no wol0): nothing sent
    r = _pxeprov(lan.clients, loader_root, "wake", MACS[0])
    assert r.returncode == 5 and f"could not send magic packets on {IFACE}" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
