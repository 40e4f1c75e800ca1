"""Wake-on-LAN: magic packets to machines of the serving network, on its interface only.

A magic packet is six 0xff bytes and the machine's MAC sixteen times (AMD's Magic Packet
Technology white paper); network cards look for it in any frame, so it goes as a UDP broadcast
to the serving subnet's broadcast address, port 9 (discard) by default, from a socket bound to
the serving interface (SO_BINDTODEVICE): never out of another interface, whatever the routes.
Each packet is sent `count` times (a switch that has not learnt a sleeping port floods, but a
packet can still be lost).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pxeprov.errors import CommandError

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
WOL_PORT = 9
COUNT = 3
GAP = 0.1  # seconds between the rounds of packets


def magic_packet(mac: str) -> bytes:
    """The magic packet of a MAC (52:54:00:12:34:56, as state.normal_mac writes it)."""
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return b"\xff" * 6 + raw * 16


@dataclass(frozen=True)
class Sent:
    macs: tuple[str, ...]
    target: str  # address:port
    interface: str
    count: int


def wake(
    macs: Sequence[str],
    interface: str,
    subnet: ipaddress.IPv4Network,
    source: ipaddress.IPv4Address,
    port: int = WOL_PORT,
    count: int = COUNT,
) -> Sent:
    """Send each MAC's magic packet `count` times to the subnet's broadcast address, out of
    `interface` only, from `source` (the server's address there)."""
    target = str(subnet.broadcast_address)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
            s.bind((str(source), 0))
            for round_ in range(count):
                if round_:
                    time.sleep(GAP)
                for mac in macs:
                    s.sendto(magic_packet(mac), (target, port))
    except OSError as exc:
        raise CommandError(
            f"could not send magic packets on {interface} to {target}:{port}: "
            f"{exc.strerror or exc}",
            "wake needs root (SO_BINDTODEVICE) and the interface up with its address",
        ) from None
    return Sent(tuple(macs), f"{target}:{port}", interface, count)
