"""A room of PXE clients at once, simulated: each with its own MAC and address, as firmware
boots (run inside the clients' network namespace of a lab, never on a real network).

Each client: a DHCPDISCOVER with the PXE options of its firmware (architecture 0 BIOS or 7
UEFI; PXE's retransmissions after 4, 8, 16 and 32 s), the proxy's offer, the TFTP fetch of the
boot file it names as firmware does it (the file's size asked first, that transfer abandoned,
then the file, blksize 1468: OVMF's PXE client on the wire), then as the loader goes on: iPXE
asks the proxy again (user class "iPXE") and fetches boot.ipxe (blksize 1432 and tsize in one
request, as iPXE asks); pxelinux fetches ldlinux.c32, looks for its config by UUID, MAC and
address in hex, fetches the default, its modules and the default again (blksize 1408, as
pxelinux asks); then the kernel and the initrd over HTTP (from the menu's base URL) or TFTP. A
block not answered in a second is asked again. tests/e2e/test_load.py checks these requests,
with each read request's options, against what real QEMU clients in the same room ask for on
their own wire (tests/wire.py): all of OVMF's; a BIOS client's from its loader's first file on
(QEMU's BIOS ROM is iPXE, so a PXE ROM's own loader fetch is modelled on OVMF's, unchecked).
The time to kernel is when both are in, as a loader starts the kernel. The packets are
pxeprov's own DHCP codec (pxeprov.dhcpprobe, checked against scapy in tests/test_diagnosis.py);
TFTP and HTTP are the standard library's sockets.

`python -m tests.loadgen --clients 50 ...` prints one JSON document: each client's times,
retries and failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from pxeprov import dhcpprobe
from tests import wire

DHCP_TIMEOUTS = (4.0, 8.0, 16.0, 32.0)  # PXE 2.1: four DISCOVERs, then the ROM gives up
TFTP_TIMEOUT = 1.0
TFTP_TRIES = 8
BLKSIZE = {"firmware": 1468, "ipxe": 1432, "pxelinux": 1408}  # what each asks for, seen on the wire
HTTP_TRIES = 3
CHUNK = 1 << 16


class Failed(Exception):
    pass


@dataclass
class Client:
    index: int
    mac: str
    ip: str
    firmware: str  # bios, uefi
    started: float = 0.0
    times: dict[str, float] = field(default_factory=dict)  # stage -> seconds after `started`
    retries: dict[str, int] = field(default_factory=dict)  # dhcp, tftp, http
    bytes: int = 0
    error: str = ""
    # what it asked for, in order, as tests/wire.py records a real client: (tftp | http, path,
    # a read request's options)
    asked: list[tuple[str, str, str]] = field(default_factory=list)
    guid: bytes = field(default_factory=lambda: os.urandom(16), repr=False)

    def mark(self, stage: str) -> None:
        self.times[stage] = time.monotonic() - self.started

    def retry(self, what: str) -> None:
        self.retries[what] = self.retries.get(what, 0) + 1


class Dhcp:
    """One socket on port 68 for every client; replies handed to the client by xid."""

    def __init__(self, device: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, dhcpprobe.SO_BINDTODEVICE, device.encode())
        self.sock.bind(("0.0.0.0", 68))
        self.sock.settimeout(0.5)
        self.waiting: dict[int, queue.Queue[dhcpprobe.Reply]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.stop.is_set():
            try:
                data, (source, _port) = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = dhcpprobe.parse_reply(data, source)
            if os.environ.get("LOADGEN_DEBUG"):
                sys.stderr.write(f"dhcp from {source}: {reply}\n")
            if reply is None:
                continue
            with self.lock:
                box = self.waiting.get(reply.xid)
            if box is not None:
                box.put(reply)

    def proxy_offer(self, client: Client, arch: int, user_class: bytes = b"") -> dhcpprobe.Reply:
        """DISCOVER until the proxy's offer comes (PXE's schedule of retransmissions)."""
        xid = random.getrandbits(32)
        box: queue.Queue[dhcpprobe.Reply] = queue.Queue()
        with self.lock:
            self.waiting[xid] = box
        mac = bytes.fromhex(client.mac.replace(":", ""))
        packet = dhcpprobe.build_discover(mac, xid, arch, client.guid, user_class)
        try:
            for n, wait in enumerate(DHCP_TIMEOUTS):
                if n:
                    client.retry("dhcp")
                self.sock.sendto(packet, ("255.255.255.255", 67))
                end = time.monotonic() + wait
                while (left := end - time.monotonic()) > 0:
                    try:
                        reply = box.get(timeout=left)
                    except queue.Empty:
                        break
                    if reply.is_proxy:
                        return reply
            raise Failed("no proxy offer after 4 DISCOVERs")
        finally:
            with self.lock:
                del self.waiting[xid]

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def boot_request(
    client: Client, offer: dhcpprobe.Reply, arch: int, user_class: bytes = b""
) -> dhcpprobe.Reply:
    """PXE's boot server discovery: a DHCPREQUEST to the proxy's port 4011, answered by an ACK
    that names the boot file. The menu's first item is asked for only when the offer had a
    menu: OVMF and iPXE send no option 43 otherwise, and dnsmasq then answers with the service
    of the client's architecture (asking for item 0x8000 gets the first service listed, BIOS's,
    whatever the architecture: the comparison with real clients found that)."""
    server = offer.server_id
    options = [
        (53, b"\x03"),
        (60, b"PXEClient:Arch:%05d:UNDI:002001" % arch),
        (93, struct.pack("!H", arch)),
        (94, b"\x01\x02\x01"),
        (97, b"\x00" + client.guid),
    ]
    if item := offer.pxe.get(9, b"")[:2]:  # the first menu item's type
        options.append((43, bytes((71, 4)) + item + b"\x00\x00\xff"))
    if user_class:
        options.append((77, user_class))
    mac = bytes.fromhex(client.mac.replace(":", ""))
    for n, wait in enumerate(DHCP_TIMEOUTS):
        if n:
            client.retry("dhcp")
        xid = random.getrandbits(32)
        header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0,
                             socket.inet_aton(client.ip), bytes(4), bytes(4), bytes(4),
                             mac.ljust(16, b"\0"), bytes(64), bytes(128))  # fmt: skip
        body = b"".join(bytes((c, len(v))) + v for c, v in options) + b"\xff"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((client.ip, 0))
            sock.settimeout(wait)
            sock.sendto(header + dhcpprobe.MAGIC + body, (server, 4011))
            end = time.monotonic() + wait
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, (source, _port) = sock.recvfrom(4096)
                except TimeoutError:
                    break
                reply = dhcpprobe.parse_reply(data, source)
                if reply is not None and reply.xid == xid and reply.boot_file:
                    return reply
    raise Failed("no answer from the proxy's port 4011")


def tftp_size(client: Client, server: str, path: str) -> int:
    """Firmware's size query (PXE's TFTP "get file size"): a read request with tsize, and the
    transfer abandoned (error 8) once the server's option acknowledgement gave the size."""
    request = (
        struct.pack("!H", 1)
        + path.encode()
        + b"\0octet\0tsize\x000\0blksize\0%d\0" % (BLKSIZE["firmware"])
    )
    client.asked.append(("tftp", *_words(request)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client.ip, 0))
        sock.settimeout(TFTP_TIMEOUT)
        for _ in range(TFTP_TRIES):
            sock.sendto(request, (server, 69))
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                client.retry("tftp")
                continue
            (op,) = struct.unpack_from("!H", data)
            if op != 6:
                raise Failed(f"TFTP {path}: no option acknowledgement to the size query")
            sock.sendto(struct.pack("!HH", 5, 8) + b"User aborted the transfer\0", source)
            return int(_oack(data).get(b"tsize", b"0"))
    raise Failed(f"TFTP {path}: no answer to the size query after {TFTP_TRIES} tries")


def tftp_get(
    client: Client, server: str, path: str, blksize: int, tsize: bool = True,
    missing_ok: bool = False,
) -> int:  # fmt: skip
    """Fetch `path` over TFTP from the client's own address; the bytes received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client.ip, 0))
        sock.settimeout(TFTP_TIMEOUT)
        request = struct.pack("!H", 1) + path.encode() + b"\0octet\0blksize\0%d\0" % blksize
        if tsize:
            request += b"tsize\x000\0"
        client.asked.append(("tftp", *_words(request)))
        last, peer = request, (server, 69)
        expected, size, agreed, tries = 1, 0, 512, 0
        while True:
            sock.sendto(last, peer)
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                tries += 1
                client.retry("tftp")
                if tries >= TFTP_TRIES:
                    raise Failed(f"TFTP {path}: no answer after {tries} tries") from None
                continue
            tries = 0
            if source[0] != server:
                continue
            peer = source  # the transfer's own port (its TID)
            (op,) = struct.unpack_from("!H", data)
            if op == 6:  # OACK
                agreed = int(_oack(data).get(b"blksize", b"512"))
                last = struct.pack("!HH", 4, 0)
            elif op == 3:  # DATA
                (block,) = struct.unpack_from("!H", data, 2)
                if block == expected & 0xFFFF:
                    size += len(data) - 4
                    expected += 1
                last = struct.pack("!HH", 4, block)
                if block == (expected - 1) & 0xFFFF and len(data) - 4 < agreed:
                    sock.sendto(last, peer)
                    client.bytes += size
                    return size
            elif op == 5:  # ERROR
                if missing_ok:
                    return 0
                text = data[4:].split(b"\0", 1)[0].decode(errors="replace")
                raise Failed(f"TFTP {path}: error {text}")


def _oack(data: bytes) -> dict[bytes, bytes]:
    """A TFTP option acknowledgement's options."""
    options = data[2:].split(b"\0")
    return dict(zip(options[::2], options[1::2], strict=False))


def _words(request: bytes) -> tuple[str, str]:
    found = wire.rrq(request)
    assert found is not None
    return found


def http_get(client: Client, url: str) -> int:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    client.asked.append(("http", path, ""))
    for attempt in range(HTTP_TRIES):
        if attempt:
            client.retry("http")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=30,
                                          source_address=(client.ip, 0))  # fmt: skip
        try:
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            if resp.status != 200:
                raise Failed(f"HTTP {url}: {resp.status}")
            size = 0
            while chunk := resp.read(CHUNK):
                size += len(chunk)
            client.bytes += size
            return size
        except (OSError, http.client.HTTPException) as exc:
            if attempt == HTTP_TRIES - 1:
                raise Failed(f"HTTP {url}: {exc}") from None
        finally:
            conn.close()
    raise Failed(f"HTTP {url}: no answer")


def pxelinux_configs(client: Client) -> list[str]:
    """The per-client config names pxelinux asks for before `default`: its UUID, its MAC, its
    address in hex, one digit shorter each time."""
    address = socket.inet_aton(client.ip).hex().upper()
    return [str(uuid.UUID(bytes_le=client.guid)), f"01-{client.mac.replace(':', '-')}",
            *(address[:n] for n in range(len(address), 0, -1))]  # fmt: skip


def boot(client: Client, dhcp: Dhcp, kernel: str, initrd: str, base: str | None) -> None:
    """One client's boot, to its kernel (kernel and initrd in)."""
    arch = 0 if client.firmware == "bios" else 7
    offer = dhcp.proxy_offer(client, arch)
    if not offer.boot_file:
        offer = boot_request(client, offer, arch)
    client.mark("offer")
    server = offer.siaddr if offer.siaddr != "0.0.0.0" else offer.server_id
    loader = offer.boot_file
    tftp_size(client, server, loader)
    tftp_get(client, server, loader, BLKSIZE["firmware"], tsize=False)
    client.mark("loader")
    if loader.endswith((".kpxe", ".efi")):  # iPXE: asks again, and gets the menu script
        again = dhcp.proxy_offer(client, arch, user_class=b"iPXE")
        if not again.boot_file:
            again = boot_request(client, again, arch, user_class=b"iPXE")
        if again.boot_file == loader:  # iPXE would load itself again, and again
            raise Failed(f"the proxy offered iPXE its own loader {loader} again: a loop")
        tftp_get(client, server, again.boot_file, BLKSIZE["ipxe"])
        blksize = BLKSIZE["ipxe"]
    else:  # pxelinux: its modules, its config (looked for as per client first), its menu
        blksize = BLKSIZE["pxelinux"]
        tftp_get(client, server, "ldlinux.c32", blksize)
        for name in pxelinux_configs(client):
            tftp_get(client, server, f"pxelinux.cfg/{name}", blksize, missing_ok=True)
        for name in ("pxelinux.cfg/default", "menu.c32", "libutil.c32", "pxelinux.cfg/default"):
            tftp_get(client, server, name, blksize)
    client.mark("menu")
    for path in (kernel, initrd):
        if base is not None:
            http_get(client, f"{base}/{path}")
        else:
            tftp_get(client, server, path, blksize)
    client.mark("kernel")


def room(
    clients: list[Client],
    device: str,
    kernel: str,
    initrd: str,
    base: str | None,
    spread: float,
) -> None:
    """Every client at once (each powers on within `spread` seconds, as a woken room does)."""
    dhcp = Dhcp(device)
    start = time.monotonic()

    def one(c: Client) -> None:
        time.sleep(random.uniform(0, spread))
        c.started = time.monotonic()
        try:
            boot(c, dhcp, kernel, initrd, base)
        except (Failed, OSError) as exc:
            c.error = str(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600 - (time.monotonic() - start))
    dhcp.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--device", required=True, help="the clients' interface (its bridge)")
    parser.add_argument("--addresses", required=True, help="first,step: 10.88.1.1")
    parser.add_argument("--kernel", required=True, help="paths under the TFTP root")
    parser.add_argument("--initrd", required=True)
    parser.add_argument("--http-base", help="payloads over HTTP from here (else TFTP)")
    parser.add_argument("--uefi-share", type=float, default=0.5, help="UEFI clients' share")
    parser.add_argument("--spread", type=float, default=1.0)
    args = parser.parse_args()
    if not 1 <= args.clients <= 1000:
        parser.error("--clients must be 1 to 1000")
    first = [int(x) for x in args.addresses.split(".")]
    base_ip = struct.unpack("!I", bytes(first))[0]
    clients = []
    for i in range(args.clients):
        ip = socket.inet_ntoa(struct.pack("!I", base_ip + i))
        firmware = "uefi" if i < args.clients * args.uefi_share else "bios"
        clients.append(Client(i, f"02:88:00:00:{i >> 8:02x}:{i & 255:02x}", ip, firmware))
    t0 = time.monotonic()
    room(clients, args.device, args.kernel, args.initrd, args.http_base, args.spread)
    rows = [{k: v for k, v in asdict(c).items() if k != "guid"} for c in clients]
    out: dict[str, Any] = {"seconds": time.monotonic() - t0, "clients": rows}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
