"""What imaging jobs report to the server, and the listener that takes it.

A Clonezilla job planned by pxeprov boots with `ocs_server=<this server>`: at the end of its job,
ocs-sr sends Clonezilla SE's own report to port 6461 (OCSMGRD_PORT) with Clonezilla's
`ocs-socket`, one line: `<ip> <mac> [EFI details] <what it did>`, where what it did is like
`Unicast restored img1, /dev/vda1, success, 4.1MB, 0.1 mins; /dev/vda2, success, ...;` (a
partition that failed says `***FAIL***`). After the job, whatever its outcome, the plan's
`ocs_postrun` sends `pxeprov:<token>:end` the same way.

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
_END = re.compile(r"pxeprov:(?P<token>[0-9a-f]{16}):end")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
# The reports log: "<epoch> <sender address> <the line as sent, printable ASCII>"
_LOGGED = re.compile(r"(?P<t>[0-9]{1,12}(?:\.[0-9]{1,6})?) (?P<peer>[0-9.]{7,15}) (?P<text>.*)")
_OCS_RESULT = re.compile(
    r"(?P<verb>(?:Unicast|Multicast) restored|Saved) (?P<image>[^ ,]+),(?P<rest>.*)"
)


@dataclass(frozen=True)
class Report:
    time: float
    peer: str  # the sender's address, as the socket saw it
    kind: str  # "end" (pxeprov's, after the job) or "result" (Clonezilla's own)
    token: str = ""  # end: the plan's token
    mac: str = ""  # result: the machine it names
    image: str = ""  # result: the disk image it names
    ok: bool = False  # result: every partition says success
    text: str = ""  # result: what it said, for `plans`


def clean(data: bytes) -> str:
    """A sender's bytes as one line of printable ASCII (anything else is '?')."""
    text = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return _PRINTABLE.sub("?", text)[:MAX_LINE]


def parse(text: str, when: float, peer: str) -> Report | None:
    """One line a job sent (None: not a report pxeprov knows)."""
    text = text.strip()
    if (m := _END.fullmatch(text)) is not None:
        return Report(when, peer, "end", token=m["token"])
    words = text.split(" ", 2)
    if len(words) < 3 or not _MAC.fullmatch(words[1]):
        return None
    mac = words[1].lower()
    found = _OCS_RESULT.search(words[2])
    if found is None:
        return None
    statuses = []
    for item in found["rest"].split(";"):
        fields = [f.strip() for f in item.split(",")]
        if len(fields) >= 2 and fields[0]:
            statuses.append((fields[0], fields[1]))
    ok = bool(statuses) and all(status == "success" for _, status in statuses)
    what = f"{found['verb']} {found['image']}: " + ", ".join(
        f"{part} {status}" for part, status in statuses
    )
    return Report(
        when, peer, "result", mac=mac, image=found["image"], ok=ok, text=what[:300].strip()
    )


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
