"""What one client asked the server for, as seen on its own wire: TFTP read requests (with
their options) and HTTP GETs, in the order it sent them (run inside a lab's namespace, on a
real client's tap).

`python -m tests.wire TAP OUT` records from TAP until it is sent SIGTERM, then writes the
requests to OUT as JSON: [["tftp", "snponly.efi", "blksize=1468 tsize windowsize=4"], ["http",
"images/d-i/linux", ""], ...]. A retransmitted request (same source port and name, or same TCP
sequence number) is counted once. The simulated clients (tests/loadgen.py) keep the same list
of what they asked for, their read requests put in words by `rrq` here, so that
tests/e2e/test_load.py can compare the two.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
from pathlib import Path
from types import FrameType

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sent towards the client: not its request
Request = tuple[str, str, str]  # (tftp | http, path, a read request's options)


def rrq(data: bytes) -> tuple[str, str] | None:
    """A TFTP read request's file name and its options in words, sorted ("blksize=1432 tsize":
    tsize's value, 0 in a request, left out)."""
    if data[:2] != b"\x00\x01":
        return None
    fields = data[2:].split(b"\0")
    name, pairs = fields[0].decode(errors="replace"), fields[2:-1]
    options = sorted(
        key if key == "tsize" else f"{key}={value}"
        for key, value in zip(
            (k.decode(errors="replace").lower() for k in pairs[::2]),
            (v.decode(errors="replace") for v in pairs[1::2]),
            strict=False,
        )
    )
    return name, " ".join(options)


def parse(frame: bytes) -> tuple[tuple[object, ...], Request] | None:
    """A TFTP read request or an HTTP GET in an Ethernet frame: (its identity, the request)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    proto, payload = ip[9], ip[header:]
    if proto == 17 and len(payload) >= 10:  # UDP
        sport, dport = struct.unpack_from("!HH", payload)
        data = payload[8:]
        if dport == 69 and (request := rrq(data)) is not None:
            return ("udp", sport, request[0]), ("tftp", *request)
    if proto == 6 and len(payload) >= 20:  # TCP
        sport, dport, seq = struct.unpack_from("!HHI", payload)
        data = payload[(payload[12] >> 4) * 4 :]
        if dport == 80 and data.startswith(b"GET "):
            path = data[4:].split(b" ", 1)[0].decode(errors="replace")
            return ("tcp", sport, seq), ("http", path.lstrip("/"), "")
    return None


def record(device: str, out: Path) -> None:
    stop = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((device, 0))
    sock.settimeout(0.5)
    out.write_text("")  # listening: the lab starts the client now
    seen: set[tuple[object, ...]] = set()
    requests: list[Request] = []
    while not stop:
        try:
            frame, address = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if address[2] == PACKET_OUTGOING:
            continue
        found = parse(frame)
        if found is not None and found[0] not in seen:
            seen.add(found[0])
            requests.append(found[1])
    sock.close()
    out.write_text(json.dumps(requests))


if __name__ == "__main__":
    record(sys.argv[1], Path(sys.argv[2]))
