"""What clients did, read from the servers' logs: dnsmasq's (log-dhcp, TFTP) and nginx's access
log, turned into boot stages per client MAC.

    offer -> loader -> menu -> kernel -> initrd -> rootfs

dnsmasq's lines (log-dhcp puts the DHCP transaction id first): `<xid> PXE(<if>) <mac> proxy` is
an offer (port 67, and a UEFI client's request on 4011); `<xid> PXE(<if>) <ip> <mac> <file>` is a
BIOS client's boot-server request on 4011, which pairs its address with its MAC; `sent <path> to
<ip>`, `file <path> not found for <ip>`, `cannot access <path>: <why>` and `failed sending <path>
to <ip>` are TFTP's. TFTP and HTTP lines carry the client's address only: it is paired with a
MAC by the 4011 line, else by the neighbour table, else it is the latest offered MAC without an
address yet (one client booting at a time is unambiguous; many at once may be mixed up).

A file is a stage by what it is in the state: a boot loader of the chains, a menu, an image's
kernel, initrd, or root filesystem (and the files its kind fetches at run time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from pxeprov import arch, boot
from pxeprov.state import Image, State

STAGES = ("offer", "loader", "menu", "kernel", "initrd", "rootfs")
STAGE_WORDS = {
    "offer": "proxy offer",
    "loader": "boot loader",
    "menu": "menu",
    "kernel": "kernel",
    "initrd": "initrd",
    "rootfs": "root filesystem",
}
_DNSMASQ = re.compile(
    r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) dnsmasq(?:-(?P<fac>\w+))?\[\d+\]: (?P<msg>.*?)\s*$"
)
_PXE = re.compile(
    r"^(?P<xid>\d+) PXE\((?P<if>[^)]+)\) (?:(?P<ip>\d+\.\d+\.\d+\.\d+) )?"
    r"(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5}) (?P<what>\S+)"
)
_VENDOR = re.compile(r"^(?P<xid>\d+) vendor class: PXEClient:Arch:(?P<arch>\d{5})")
_SENT = re.compile(r"^sent (?P<path>\S+) to (?P<ip>\S+)$")
_NOT_FOUND = re.compile(r"^file (?P<path>\S+) not found for (?P<ip>\S+)$")
_DENIED = re.compile(r"^cannot access (?P<path>\S+): (?P<why>.*)$")
_FAILED = re.compile(r"^failed sending (?P<path>\S+) to (?P<ip>\S+)$")
_ERROR = re.compile(r"^error (?P<code>\d+) (?P<text>.*) received from (?P<ip>\S+)$")
# nginx: "combined" ($remote_addr - $remote_user [$time_local] "$request" $status $bytes ...)
# and formats without the user field (the e2e lab's) alike.
_NGINX = re.compile(
    r'^(?P<ip>\S+) (?:\S+ \S+ )?\[(?P<ts>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
    r"(?P<size>\d+)"
)


@dataclass(frozen=True)
class Event:
    time: float  # epoch seconds
    kind: str  # offer, pair, sent, missing, denied, failed, aborted, http
    ip: str = ""
    mac: str = ""
    path: str = ""  # relative to the TFTP root (TFTP), or the URL path without its "/"
    detail: str = ""  # the boot file of a 4011 answer; an HTTP status; an error
    arch: int | None = None


def _dnsmasq_time(stamp: str, now: float) -> float:
    """dnsmasq's local time without a year: this year's, or last year's if that is the future."""
    year = time.localtime(now).tm_year
    for y in (year, year - 1):
        try:
            t = time.mktime(time.strptime(f"{y} {stamp}", "%Y %b %d %H:%M:%S"))
        except ValueError:
            return now
        if t <= now + 86400:
            return t
    return now


def _relative(path: str, tftp_roots: tuple[str, ...]) -> str:
    for tftp_root in tftp_roots:
        root = tftp_root.rstrip("/") + "/"
        if path.startswith(root):
            return path[len(root) :]
    return path.lstrip("/")


def parse_dnsmasq(
    lines: Iterable[str], tftp_root: str | tuple[str, ...], now: float | None = None
) -> list[Event]:
    """dnsmasq's log lines (its own file, or journald's with the same text) as events.
    `tftp_root`: where dnsmasq serves from (more than one: the state's path and where it
    really is under --root)."""
    roots = (tftp_root,) if isinstance(tftp_root, str) else tftp_root
    now = time.time() if now is None else now
    arches: dict[str, int] = {}
    out: list[Event] = []
    for line in lines:
        m = _DNSMASQ.match(line)
        if m is None:
            continue
        t, msg = _dnsmasq_time(m["ts"], now), m["msg"]
        if (v := _VENDOR.match(msg)) is not None:
            arches[v["xid"]] = int(v["arch"])
        elif (p := _PXE.match(msg)) is not None:
            arch = arches.get(p["xid"])
            if p["ip"]:
                out.append(Event(t, "pair", p["ip"], p["mac"], detail=p["what"], arch=arch))
            elif p["what"] == "proxy":
                out.append(Event(t, "offer", mac=p["mac"], arch=arch))
        elif (s := _SENT.match(msg)) is not None:
            out.append(Event(t, "sent", s["ip"], path=_relative(s["path"], roots)))
        elif (s := _NOT_FOUND.match(msg)) is not None:
            out.append(Event(t, "missing", s["ip"], path=_relative(s["path"], roots)))
        elif (s := _DENIED.match(msg)) is not None:
            path = _relative(s["path"], roots)
            out.append(Event(t, "denied", path=path, detail=s["why"]))
        elif (s := _FAILED.match(msg)) is not None:
            out.append(Event(t, "failed", s["ip"], path=_relative(s["path"], roots)))
        elif (s := _ERROR.match(msg)) is not None:
            out.append(Event(t, "aborted", s["ip"], detail=f"error {s['code']} {s['text']}"))
    return out


def parse_nginx(lines: Iterable[str]) -> list[Event]:
    out: list[Event] = []
    for line in lines:
        m = _NGINX.match(line)
        if m is None:
            continue
        try:
            t = datetime.strptime(m["ts"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
        except ValueError:
            continue
        parts = m["request"].split(" ")
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            continue
        path = parts[1].split("?", 1)[0].lstrip("/")
        out.append(Event(t, "http", m["ip"], path=path, detail=m["status"]))
    return out


# ---------------------------------------------------------------- stages per client


def stage_of_files(state: State, decision: boot.Decision) -> dict[str, str]:
    """Which stage each file under the TFTP root is (a directory's files by its prefix)."""
    stages: dict[str, str] = {}
    for c in decision.chains(state):
        for f in c.files:
            stages[f.name] = "loader"
    for name in ("ldlinux.c32", "menu.c32", "libutil.c32", "libmenu.c32", "memdisk"):
        stages.setdefault(name, "loader")
    for name, _template in boot.MENUS.values():
        stages[name] = "menu"
    for plan in state.plans:  # pxelinux reads a machine's plan from its own file
        stages[f"pxelinux.cfg/01-{plan.mac.replace(':', '-')}"] = "menu"
    for image in state.images:
        stages[image.kernel] = "kernel"
        if image.initrd:
            stages[image.initrd] = "initrd"
        if image.rootfs:
            stages[image.rootfs] = "rootfs"
        for extra in image.files:
            stages[extra] = "rootfs"
    return stages


def _stage(path: str, stages: Mapping[str, str]) -> str | None:
    if path in stages:
        return stages[path]
    for prefix, stage in stages.items():
        if prefix.endswith("/") and path.startswith(prefix):
            return stage
    return None


# What shim (16, Debian 13's) looks for beside itself and may well not find: more certificates
# and revocation lists (SBAT, SKU)
_SHIM_OPTIONAL = re.compile(r"shim_certificate_\d+\.efi|revocations(_\w+)?\.efi")


def _optional(path: str) -> bool:
    """Files loaders look for and may well not find: pxelinux's per-client configs, GRUB's
    (grub/ and its platform's lists, grub/arm64-efi/command.lst), shim's extra lists."""
    p = PurePosixPath(path)
    return (
        (p.parent.name == "pxelinux.cfg" and p.name != "default")
        or p.parent.name == "grub"
        or (len(p.parts) == 3 and p.parts[0] == "grub" and p.parts[1].endswith("-efi"))
        or bool(_SHIM_OPTIONAL.fullmatch(p.name))
    )


@dataclass
class Client:
    mac: str
    arch: int | None = None
    ip: str = ""
    reached: dict[str, float] = field(default_factory=dict)  # stage -> when first reached
    files: list[tuple[float, str, str]] = field(default_factory=list)  # (when, path, how)
    problem: str = ""  # what went wrong, when the logs say
    last: float = 0.0  # the latest event
    kernel: str = ""  # the kernel it fetched (which image it boots)
    how: dict[str, str] = field(default_factory=dict)  # stage -> "path (tftp)" that reached it

    @property
    def firmware(self) -> str:
        return arch.firmware_name(self.arch) if self.arch is not None else "?"

    @property
    def stage(self) -> str:
        return max(self.reached, key=STAGES.index) if self.reached else ""

    def reach(self, stage: str, when: float) -> None:
        self.reached.setdefault(stage, when)
        self.last = max(self.last, when)

    def started(self) -> float:
        return min(self.reached.values()) if self.reached else self.last

    def new_boot(self) -> None:
        """The machine boots again (a proxy offer after it had its menu): its stages start
        afresh. Loaders ask the proxy again before their menu (iPXE after the firmware's PXE,
        GRUB after shim): those offers belong to the same boot."""
        if self.reached and STAGES.index(self.stage) >= STAGES.index("menu"):
            self.reached, self.files, self.how = {}, [], {}
            self.kernel, self.problem = "", ""


@dataclass
class Tracker:
    """Boot stages per client, fed events in order."""

    stages: Mapping[str, str]
    neighbour: Callable[[str], str | None] | None = None  # ip -> mac (the neighbour table)
    clients: dict[str, Client] = field(default_factory=dict)
    by_ip: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[float, str]] = field(default_factory=list)  # not tied to a client

    def _client(self, mac: str) -> Client:
        if mac not in self.clients:
            self.clients[mac] = Client(mac)
        return self.clients[mac]

    def _mac_of(self, ip: str) -> str | None:
        if ip in self.by_ip:
            return self.by_ip[ip]
        mac = self.neighbour(ip) if self.neighbour is not None else None
        if mac is None:  # the latest client offered and not yet seen at an address
            waiting = [c for c in self.clients.values() if not c.ip and "offer" in c.reached]
            mac = max(waiting, key=lambda c: c.reached["offer"]).mac if waiting else None
        if mac is not None:
            self.by_ip[ip] = mac
            self._client(mac).ip = ip
        return mac

    def forget(self, keep: int) -> list[str]:
        """Keep only the `keep` clients seen last (a watcher that runs for months stays
        small); the MACs forgotten."""
        if len(self.clients) <= keep:
            return []
        gone = sorted(self.clients, key=lambda m: self.clients[m].last)[: len(self.clients) - keep]
        for mac in gone:
            del self.clients[mac]
        self.by_ip = {ip: mac for ip, mac in self.by_ip.items() if mac in self.clients}
        del self.problems[:-keep]
        return gone

    def feed(self, event: Event) -> Client | None:
        """Take one event; the client it moved (or None)."""
        if event.kind == "offer":
            client = self._client(event.mac)
            client.new_boot()
            if event.arch is not None:
                client.arch = event.arch
            client.reach("offer", event.time)
            return client
        if event.kind == "pair":
            self.by_ip[event.ip] = event.mac
            client = self._client(event.mac)
            client.new_boot()
            client.ip = event.ip
            if event.arch is not None:
                client.arch = event.arch
            client.reach("offer", event.time)
            return client
        if event.kind == "denied":  # dnsmasq does not say to whom
            why = f"{event.path} cannot be read by dnsmasq ({event.detail})"
            self.problems.append((event.time, why))
            recent = [c for c in self.clients.values() if event.time - c.last < 10]
            for c in recent:
                c.problem = why
            return recent[0] if recent else None
        mac = self._mac_of(event.ip) if event.ip else None
        if mac is None:
            return None
        client = self._client(mac)
        client.last = max(client.last, event.time)
        stage = _stage(event.path, self.stages)
        if event.kind == "sent" or (event.kind == "http" and event.detail in ("200", "206")):
            how = "tftp" if event.kind == "sent" else "http"
            client.files.append((event.time, event.path, how))
            if stage is not None:
                client.reach(stage, event.time)
                client.how.setdefault(stage, f"{event.path} ({how})")
                client.problem = ""
            if stage == "kernel":
                client.kernel = event.path
        elif event.kind == "missing" or (event.kind == "http" and event.detail == "404"):
            if not _optional(event.path):
                client.problem = f"{event.path} is not on the server (asked for over " + (
                    "TFTP)" if event.kind == "missing" else "HTTP, answer 404)"
                )
        elif event.kind == "http" and event.detail.startswith(("4", "5")):
            client.problem = f"{event.path}: HTTP {event.detail}"
        elif event.kind == "failed":
            client.problem = f"sending {event.path} failed (the client stopped answering)"
        return client


def image_of(state: State, client: Client) -> Image | None:
    """The image whose kernel the client fetched (None: none yet, or not one of the state's)."""
    if not client.kernel:
        return None
    return next((i for i in state.images if i.kernel == client.kernel), None)


def has_rootfs(image: Image | None) -> bool:
    """Whether a client booting `image` (image_of) fetches a root filesystem after its
    initrd."""
    return image is not None and bool(image.rootfs or image.files)


def expected_next(client: Client, has_rootfs: bool) -> str | None:
    """The stage a client should reach next (None when it reached its last)."""
    order = STAGES if has_rootfs else STAGES[:-1]
    if not client.reached:
        return order[0]
    index = STAGES.index(client.stage)
    return order[index + 1] if index + 1 < len(order) else None


def stall_cause(client: Client) -> str:
    """The likely cause of a client stopping after its stage, in words."""
    if client.problem:
        return client.problem
    stage = client.stage
    names = [p for _, p, _ in client.files]
    if stage == "offer":
        return (
            "it got the proxy offer but never fetched its boot loader over TFTP: a firewall "
            "dropping UDP 69 (or 4011 for UEFI), or the DHCP server sends options 66/67 or a "
            "boot file name and the client followed those (`pxeprov doctor` checks both)"
        )
    for a in arch.ARCHITECTURES:
        shim, grub = f"shim{a.efi}.efi", f"grub{a.efi}.efi"
        if stage == "loader" and shim in names and grub not in names:
            return (
                f"shim was fetched but never asked for {grub} from this server: shim follows a "
                "boot file name in the ordinary DHCP server's answer (Windows DHCP: unset option "
                "67) and asks that server instead"
            )
    if stage == "loader":
        return "the boot loader never fetched its menu (a firewall, or a second proxyDHCP answer)"
    if stage == "menu":
        return "it shows the menu (waiting for a choice) or booted the local disk"
    if stage == "kernel":
        return "the kernel was fetched but not its initrd"
    if stage == "initrd":
        return (
            "kernel and initrd were fetched, but the root filesystem was never asked for: the "
            "kernel did not start, or its initramfs found no network (a missing driver) or "
            "could not reach this server"
        )
    return "no request since"


def summary_line(client: Client) -> str:
    """`52:54:00:12:34:56  UEFI  10.0.0.7  offer 0.0 s -> ... -> rootfs 41.2 s`"""
    t0 = client.started()
    steps = " -> ".join(
        f"{STAGE_WORDS[s]} {client.reached[s] - t0:.0f} s" for s in STAGES if s in client.reached
    )
    return f"{client.mac}  {client.firmware:<5} {client.ip or '-':<15} {steps}"


def epoch(text: str, now: float | None = None) -> float:
    """`--since`: "10m", "2h", "1d", "30s", or a date "2026-11-28 13:00[:00]" (local time)."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m is not None:
        return now - int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text.strip(), fmt))
        except ValueError:
            continue
    raise ValueError(text)
