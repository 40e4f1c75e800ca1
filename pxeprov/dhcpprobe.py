"""An active probe of the segment: PXE DHCPDISCOVERs as a BIOS and a UEFI client send them, and
every answer, decoded (the ordinary DHCP server's offer, proxyDHCP offers, pxeprov's own).

A small codec of its own (RFC 2131/2132 framing, the PXE options 43, 60, 93, 94, 97): the one
well-kept Python DHCP library, scapy, is GPL-only and pxeprov is MIT; the tests check this
codec against scapy's decoding.

Sending: a UDP socket bound to an ephemeral port and to the interface (SO_BINDTODEVICE), to
255.255.255.255:67 with the broadcast flag set, so every server broadcasts its answer. Receiving:
an AF_PACKET socket on the interface (ETH_P_ALL: a packet socket for one protocol sees incoming
frames only, and the answer of pxeprov's own dnsmasq on this box is outgoing), which sees the
answers (to port 68) before the host's own firewall could drop them and without owning port 68
(a DHCP client may hold it). Needs root
(CAP_NET_RAW). The interface's own MAC is used; no REQUEST follows, so no lease is taken.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

MAGIC = b"\x63\x82\x53\x63"
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003  # outgoing frames too: the answer of a proxy on this very box
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # the 236-byte BOOTP header
MESSAGE_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK"}
# The options a PXE ROM asks for (Intel PXE 2.1 spec, and what iPXE and OVMF send)
_REQUESTED = bytes([1, 3, 43, 54, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
# an ordinary dnsmasq pings the address for ~3 s before it offers it (doctor warns)
DEFAULT_WAIT = 5.0


class ProbeError(OSError):
    pass


def _option(code: int, data: bytes) -> bytes:
    return bytes((code, len(data))) + data


def build_discover(mac: bytes, xid: int, arch: int, guid: bytes, user_class: bytes = b"") -> bytes:
    """A PXE client's DHCPDISCOVER: options 60 (PXEClient:Arch:NNNNN), 93, 94, 97."""
    header = _HEADER.pack(1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4), bytes(4),
                          mac.ljust(16, b"\0"), bytes(64), bytes(128))  # fmt: skip
    options = [
        _option(53, b"\x01"),
        _option(55, _REQUESTED),
        _option(57, struct.pack("!H", 1260)),
        _option(60, b"PXEClient:Arch:%05d:UNDI:002001" % arch),
        _option(93, struct.pack("!H", arch)),
        _option(94, b"\x01\x02\x01"),
        _option(97, b"\x00" + guid),
    ]
    if user_class:
        options.append(_option(77, user_class))
    return header + MAGIC + b"".join(options) + b"\xff"


def parse_options(raw: bytes) -> dict[int, bytes]:
    """A DHCP option list (TLVs; a repeated code is concatenated, RFC 3396)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        code = raw[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        length = raw[i + 1]
        out[code] = out.get(code, b"") + raw[i + 2 : i + 2 + length]
        i += 2 + length
    return out


def _text(raw: bytes) -> str:
    """A NUL-padded field or option as text; anything but printable ASCII escaped."""
    data = raw.split(b"\0", 1)[0]
    return "".join(chr(c) if 0x20 <= c < 0x7F else f"\\x{c:02x}" for c in data)


@dataclass(frozen=True)
class Reply:
    """One answer to a probe: where it came from and what it says."""

    source: str  # the UDP source address
    message: str  # OFFER, ACK, ...
    xid: int
    yiaddr: str
    siaddr: str
    sname: str
    file: str
    options: dict[int, bytes] = field(default_factory=dict)
    arch: int = 0  # the architecture of the probe it answers
    after: float = 0.0  # seconds from the probe's DISCOVERs to this answer

    @property
    def server_id(self) -> str:
        raw = self.options.get(54, b"")
        return str(ipaddress.IPv4Address(raw)) if len(raw) == 4 else self.source

    @property
    def vendor_class(self) -> str:
        return _text(self.options.get(60, b""))

    @property
    def is_proxy(self) -> bool:
        """A proxyDHCP offer: PXEClient, and no address offered."""
        return self.vendor_class.startswith("PXEClient") and self.yiaddr == "0.0.0.0"

    @property
    def boot_file(self) -> str:
        """Option 67, else the BOOTP `file` field."""
        return _text(self.options[67]) if 67 in self.options else self.file

    @property
    def boot_server(self) -> str:
        """Option 66, else the BOOTP `sname` field."""
        return _text(self.options[66]) if 66 in self.options else self.sname

    @property
    def pxe(self) -> dict[int, bytes]:
        """Option 43 as PXE sub-options (only when option 60 says PXEClient)."""
        return parse_options(self.options.get(43, b"")) if self.vendor_class else {}

    @property
    def menu(self) -> list[str]:
        """The PXE boot menu's items (sub-option 9: type u16, length u8, text)."""
        raw = self.pxe.get(9, b"")
        items: list[str] = []
        i = 0
        while i + 3 <= len(raw):
            length = raw[i + 2]
            items.append(_text(raw[i + 3 : i + 3 + length]))
            i += 3 + length
        return items

    def pxe_settings(self) -> list[str]:
        """What an ordinary (leasing) server sends that makes PXE clients skip proxyDHCP."""
        found = []
        if self.vendor_class.startswith("PXEClient"):
            found.append(f"option 60 ({self.vendor_class})")
        if 66 in self.options:
            found.append(f"option 66 ({self.boot_server})")
        if 67 in self.options:
            found.append(f"option 67 ({self.boot_file})")
        if self.file and 67 not in self.options:
            found.append(f"a BOOTP file name ({self.file})")
        if self.sname and 66 not in self.options:
            found.append(f"a BOOTP server name ({self.sname})")
        return found


def _ip(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def parse_reply(data: bytes, source: str) -> Reply | None:
    """A BOOTREPLY, or None for anything else."""
    if len(data) < _HEADER.size + 4 or data[_HEADER.size : _HEADER.size + 4] != MAGIC:
        return None
    fields = _HEADER.unpack_from(data)
    if fields[0] != 2:
        return None
    options = parse_options(data[_HEADER.size + 4 :])
    code = options.get(53, b"")
    kind = MESSAGE_TYPES.get(code[0], f"type {code[0]}") if code else "BOOTP"
    return Reply(source, kind, fields[4], _ip(fields[8]), _ip(fields[9]), _text(fields[12]),
                 _text(fields[13]), options)  # fmt: skip


def _udp_payload(frame: bytes) -> tuple[str, int, int, bytes] | None:
    """(source address, source port, destination port, payload) of an IPv4 UDP packet."""
    if len(frame) < 20 or frame[0] >> 4 != 4 or frame[9] != 17:
        return None
    ihl = (frame[0] & 0x0F) * 4
    if len(frame) < ihl + 8:
        return None
    sport, dport = struct.unpack_from("!HH", frame, ihl)
    return socket.inet_ntoa(frame[12:16]), sport, dport, frame[ihl + 8 :]


def interface_mac(interface: str) -> bytes:
    try:
        text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    except OSError as exc:
        raise ProbeError(f"interface {interface}: {exc.strerror}") from None
    return bytes.fromhex(text.replace(":", ""))


def probe(
    interface: str, arches: Sequence[int] = (0, 7), wait: float = DEFAULT_WAIT
) -> list[Reply]:
    """Broadcast one PXE DHCPDISCOVER per architecture on `interface`; every answer that comes
    within `wait` seconds, in order of arrival (identical retransmissions once)."""
    mac = interface_mac(interface)
    xids = {int.from_bytes(os.urandom(4), "big"): arch for arch in arches}
    guid = os.urandom(16)
    try:
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise ProbeError("the DHCP probe needs root (a packet socket)") from None
    with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        try:
            rx.bind((interface, ETH_P_ALL))
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            tx.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
            tx.bind(("0.0.0.0", 0))
            for xid, arch in xids.items():
                tx.sendto(build_discover(mac, xid, arch, guid), ("255.255.255.255", 67))
            sent = time.monotonic()
        except OSError as exc:
            raise ProbeError(f"cannot send on {interface}: {exc.strerror}") from None
        seen: set[bytes] = set()
        found: list[Reply] = []
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            if not select.select([rx], [], [], left)[0]:
                break
            frame, address = rx.recvfrom(65535)
            udp = _udp_payload(frame) if address[1] == ETH_P_IP else None
            if udp is None or udp[1] not in (67, 4011) or udp[2] != 68 or udp[3] in seen:
                continue
            reply = parse_reply(udp[3], udp[0])
            if reply is None or reply.xid not in xids:
                continue
            seen.add(udp[3])
            found.append(replace(reply, arch=xids[reply.xid], after=time.monotonic() - sent))
        return found
