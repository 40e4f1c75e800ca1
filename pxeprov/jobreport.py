"""What imaging jobs report to the server, and the listener that takes it.

A Clonezilla job planned by pxeprov ends with `ocs_postrun`, which runs after the job whether it
failed or not, and sends one line to port 6461 of this server with Clonezilla's `ocs-socket`:
`pxeprov:<token>:done` when ocs-sr reached its end and logged no partition it failed to restore
or save, `pxeprov:<token>:failed` otherwise (kinds/clonezilla.py writes that command).

`Listener` (run by pxeprov-watch) accepts those lines on the server's address, bounded in size
and time, and appends each to the reports log with the time and the sender's address; the
watcher reads that log like dnsmasq's and nginx's, so a report is never lost to a busy state
file, and a restarted watcher takes up what it had not done. Everything here is read as
hostile: the sender is any host of the LAN.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 1024  # bytes of one report (Clonezilla's are a few hundred)
READ_TIMEOUT = 2.0  # seconds a sender has to send its line
MAX_PER_POLL = 32  # connections taken at one look: a flood waits, it does not stall the watcher
_PRINTABLE = re.compile(r"[^ -~]")
_MESSAGE = re.compile(r"pxeprov:(?P<token>[0-9a-f]{16}):(?P<result>done|failed)")
# The reports log: "<epoch> <sender address> <the line as sent, printable ASCII>"
_LOGGED = re.compile(r"(?P<t>[0-9]{1,12}(?:\.[0-9]{1,6})?) (?P<peer>[0-9.]{7,15}) (?P<text>.*)")
_OCS_RESULT = re.compile(
    r"(?P<verb>(?:Unicast|Multicast) restored|Saved) (?P<image>[^ ,]+),(?P<rest>.*)"
)


@dataclass(frozen=True)
class Report:
    time: float
    peer: str  # the sender's address, as the socket saw it
    token: str  # the plan's token
    ok: bool  # done (True) or failed


def clean(data: bytes) -> str:
    """A sender's bytes as one line of printable ASCII (anything else is '?')."""
    text = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return _PRINTABLE.sub("?", text)[:MAX_LINE]


def parse(text: str, when: float, peer: str) -> Report | None:
    """One line a job sent (None: not a report pxeprov knows)."""
    m = _MESSAGE.fullmatch(text.strip())
    if m is None:
        return None
    return Report(when, peer, m["token"], m["result"] == "done")


def parse_log(lines: Iterable[str]) -> list[Report]:
    """The reports log's lines as reports (others are skipped)."""
    out = []
    for line in lines:
        m = _LOGGED.fullmatch(line.strip())
        if m is None:
            continue
        report = parse(m["text"], float(m["t"]), m["peer"])
        if report is not None:
            out.append(report)
    return out


class Listener:
    """A TCP listener for the jobs' reports; `poll` takes what arrived, without blocking the
    watcher for more than READ_TIMEOUT per sender, and logs it."""

    def __init__(self, address: str, port: int, log: Path) -> None:
        self.log = log
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((address, port))
            self.sock.listen(64)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def poll(self) -> int:
        """Take the senders waiting now: each line goes to the log. How many were logged."""
        logged = 0
        for _ in range(MAX_PER_POLL):
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                break
            try:
                conn, (peer, _port) = self.sock.accept()
            except OSError:
                break
            with conn:
                data = _read_line(conn)
            text = clean(data)
            if not text:
                continue
            with self.log.open("a", encoding="ascii") as f:
                f.write(f"{time.time():.3f} {peer} {text}\n")
            logged += 1
        return logged


def _read_line(conn: socket.socket) -> bytes:
    conn.settimeout(READ_TIMEOUT)
    deadline = time.monotonic() + READ_TIMEOUT
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE and time.monotonic() < deadline:
        try:
            chunk = conn.recv(MAX_LINE - len(data))
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
