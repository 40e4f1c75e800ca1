"""The state: `/etc/pxeprov/pxeprov.toml`, the single source of truth every file is rendered from.

Typed and frozen; unknown keys are rejected; `dumps(loads(text))` round-trips.
"""

from __future__ import annotations

import calendar
import ipaddress
import itertools
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import PurePosixPath
from typing import Any, Literal, TypeGuard

import tomli_w

from pxeprov.errors import InputError
from pxeprov.paths import DEFAULT_TFTP_ROOT
from pxeprov.syntax import (
    check_apart,
    check_args,
    check_image_name,
    check_interface,
    check_name,
    check_path,
    check_repo_path,
    check_served_path,
    check_text,
    check_tftp_root,
    check_url,
)

DnsmasqMode = Literal["drop-in", "main"]
UefiLoader = Literal["auto", "grub", "ipxe"]
UEFI_LOADERS: tuple[UefiLoader, ...] = ("auto", "grub", "ipxe")
DNSMASQ_MODES: tuple[DnsmasqMode, ...] = ("drop-in", "main")
MAX_MENU_TIMEOUT = 3600
DEFAULT_HTTP_PORT = 80
DEFAULT_HTTP_FALLBACK_PORT = 8069
DEFAULT_LOCALE = "en_US.UTF-8"
DEFAULT_KEYBOARD = "us"
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(_[A-Za-z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
_KEYBOARD_RE = re.compile(r"[a-z]{2,8}(,[a-z]{2,8})*")
_KIND_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_VERSION_RE = re.compile(r"[A-Za-z0-9._+~:-]{0,64}")
_SHA256_RE = re.compile(r"([0-9a-f]{64})?")
_VARIANT_RE = re.compile(r"[a-z0-9._-]{0,32}")
MAX_STATE_BYTES = 1 << 20  # a state file is a few kB; more is not one

HEADER = (
    "# pxeprov state: every file pxeprov manages is rendered from this file.\n"
    "# Edit it and run `pxeprov init` (or use pxeprov's commands) to apply a change.\n"
    + "# Keep its last line: a state file without it was cut short, and pxeprov refuses it.\n"
)
# pxeprov writes this line last: a file that has the header's last line but not this one was
# cut short (a copy, a disk that ran out) and is refused, not read as a state with fewer images
# and plans. (A file written before pxeprov wrote this line has neither.)
TRAILER = "# pxeprov: end of the state\n"
WHOLE = HEADER.splitlines()[-1]


def check_port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise InputError(f"{what} {value} must be between 1 and 65535")
    return value


def check_timeout(value: int, what: str = "menu timeout") -> int:
    if not 0 <= value <= MAX_MENU_TIMEOUT:
        raise InputError(f"{what} {value} must be between 0 and {MAX_MENU_TIMEOUT} seconds")
    return value


def check_locale(value: str, what: str = "locale") -> str:
    if not _LOCALE_RE.fullmatch(value):
        raise InputError(f"{what} {value!r} is not like en_US.UTF-8")
    return value


def check_keyboard(value: str, what: str = "keyboard") -> str:
    if not _KEYBOARD_RE.fullmatch(value):
        raise InputError(f"{what} layout {value!r} is not like us or de,fr")
    return value


def _check_source(value: str) -> None:
    """Where an image came from is shown by `list`: one line, no control characters."""
    if len(value) > 4096 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"source {value[:60]!r} must be one line without control characters")


@dataclass(frozen=True)
class Network:
    interface: str
    address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network

    def __post_init__(self) -> None:
        check_interface(self.interface, "network.interface")
        if self.address not in self.subnet:
            raise InputError(f"address {self.address} is not inside subnet {self.subnet}")
        if self.subnet.prefixlen < 31 and self.address in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise InputError(
                f"address {self.address} is the "
                + ("network" if self.address == self.subnet.network_address else "broadcast")
                + f" address of {self.subnet}, not a host's"
            )


@dataclass(frozen=True)
class Image:
    """One menu entry: a kernel and initrd under the TFTP root, with its kernel arguments."""

    name: str
    label: str
    kind: str
    kernel: str  # paths relative to the TFTP root
    initrd: str  # "" when the kind boots without one
    rootfs: str = ""  # the squashfs live-boot fetches, if the kind has one
    append: str = ""  # the admin's own kernel arguments, after the kind's
    default: bool = False
    locale: str = DEFAULT_LOCALE
    keyboard: str = DEFAULT_KEYBOARD
    source: str = ""  # where it came from: an ISO path or URL
    sha256: str = ""  # of the ISO
    size: int = 0  # bytes under the TFTP root
    version: str = ""  # e.g. from Clonezilla-Live-Version
    unsigned_kernel: bool = False  # the kernel has no Authenticode signature (no Secure Boot)
    # More files the image serves (relative to the TFTP root); one ending in "/" is a tree.
    files: tuple[str, ...] = ()
    variant: str = ""  # what the kind says of this image (server/desktop, dvd/netinst, ...)

    def __post_init__(self) -> None:
        # The keys' own names, so that a bad state file says which key is wrong.
        check_image_name(self.name, "name")
        check_text(self.label, "label")
        if not _KIND_RE.fullmatch(self.kind):
            raise InputError(f"kind {self.kind!r} must match [a-z0-9][a-z0-9-]*")
        check_path(self.kernel, "kernel")
        if self.initrd:  # some kinds (memtest86+) boot without one
            check_path(self.initrd, "initrd")
        if self.rootfs:
            check_path(self.rootfs, "rootfs")
        check_args(self.append, "append")
        check_locale(self.locale)
        check_keyboard(self.keyboard)
        _check_source(self.source)
        if not _SHA256_RE.fullmatch(self.sha256):
            raise InputError(f"sha256 {self.sha256[:70]!r} must be 64 lower-case hex digits")
        if self.size < 0:
            raise InputError(f"size {self.size} must not be negative")
        if not _VERSION_RE.fullmatch(self.version):
            raise InputError(f"version {self.version[:70]!r} must match [A-Za-z0-9._+~:-]*")
        for path in self.files:
            check_served_path(path, "files")
        if not _VARIANT_RE.fullmatch(self.variant):
            raise InputError(f"variant {self.variant[:40]!r} must match [a-z0-9._-]*")


def utc_stamp(when: float | None = None) -> str:
    """A time as plans record it: 2026-11-28T13:00:00Z (UTC, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def stamp_epoch(stamp: str) -> float | None:
    """A plan's recorded time as epoch seconds; None for "" (not recorded)."""
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


PlanAction = Literal["entry", "local", "restore", "save"]
PLAN_ACTIONS: tuple[PlanAction, ...] = ("entry", "local", "restore", "save")
THEN: tuple[str, ...] = ("reboot", "poweroff", "local")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# Whole disks as Linux names them in the live system (no partitions): the disk a job uses
_DISK_RE = re.compile(r"(sd|vd|xvd)[a-z]{1,2}|hd[a-z]|nvme[0-9]{1,2}n[0-9]{1,2}|mmcblk[0-9]{1,2}")
# Clonezilla image names: a directory of the repository, in ocs-sr's command line
_OCS_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STAMP_RE = re.compile(r"([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z)?")
# A one-shot plan's identity: what its machine fetches (plans/<mac>-<token>) and what its job
# reports carry. Random, new at every `assign`.
_TOKEN_RE = re.compile(r"([0-9a-f]{16})?")
PLAN_RESULTS: tuple[str, ...] = ("", "done", "failed")
# What a job reported, as `plans` shows it: printable ASCII, one line.
_REASON_RE = re.compile(r"[ -~]{0,300}")
# A repository URL, as Clonezilla's ocs_repository takes it. The password may only hold
# characters that neither the URL, nor mount.cifs' option string, nor a kernel command line,
# nor Clonezilla's parse_cmdline_option (which sources it as shell) read as syntax.
_REPO_RE = re.compile(
    r"(?P<scheme>smb|smb3|nfs|nfs4|ssh)://"
    r"(?:(?P<user>[A-Za-z0-9._-]{1,32})(?::(?P<password>[A-Za-z0-9._~+=-]{1,64}))?@)?"
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._/-]{0,200})"
)


_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def normal_mac(value: str, what: str = "MAC address") -> str:
    """52:54:00:ab:cd:ef from any common spelling (dashes, dots, upper case)."""
    text = value.strip().lower().replace("-", ":")
    if "." in text:  # Cisco's 5254.00ab.cdef
        text = text.replace(".", "")
    if ":" not in text and len(text) == 12:
        text = ":".join(text[i : i + 2] for i in range(0, 12, 2))
    if not _MAC_RE.fullmatch(text):
        raise InputError(f"{what} {value[:40]!r} is not a MAC address like 52:54:00:12:34:56")
    first = int(text[:2], 16)
    if first & 1 or text == "00:00:00:00:00:00":
        raise InputError(f"{what} {text} is a multicast or empty address, not a machine's")
    return text


def check_repo(value: str, what: str = "repository") -> str:
    m = _REPO_RE.fullmatch(value)
    if not m:
        raise InputError(
            f"{what} {value[:80]!r} must be smb://[user[:password]@]host/share/path, "
            "nfs://host/path, nfs4://host/path or ssh://user@host[:port]/path",
            "a password may hold letters, digits and ._~+=- only",
        )
    user, host, port = m["user"] or "", m["host"], m["port"]
    if user.startswith("-"):  # mount.cifs or ssh would read it as an option
        raise InputError(f"{what}: the user name {user!r} starts with '-'")
    if port is not None and not 1 <= int(port) <= 65535:
        raise InputError(f"{what}: port {port} is not a port (1-65535)")
    labels = host.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels) or (
        len(labels) != 4 and labels[-1].isdigit()
    ):
        raise InputError(
            f"{what}: the host {host!r} is neither an IPv4 address nor a host name "
            "(labels of letters, digits and inner '-')"
        )
    if len(labels) == 4 and all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InputError(f"{what}: the host {host!r} is not an IPv4 address") from None
    return value


def repo_parts(value: str) -> dict[str, str]:
    m = _REPO_RE.fullmatch(value)
    assert m is not None, value
    return {k: v or "" for k, v in m.groupdict().items()}


@dataclass(frozen=True)
class Plan:
    """What one machine (by MAC) boots instead of the menu: an entry, its local disk, or a
    Clonezilla job (restore or save a disk image) run by a Clonezilla live image."""

    mac: str
    action: PlanAction
    entry: str = ""  # entry: the image it boots; restore/save: the Clonezilla live image
    image: str = ""  # restore/save: the disk image, a directory of the repository
    disk: str = "sda"
    then: str = "reboot"  # restore/save: reboot, poweroff, or local (reboot to the disk)
    repo: str = ""  # restore/save: the repository ("" = the state's)
    once: bool = False  # the plan stands for one boot
    # When the machine took its one-shot plan (UTC), "" before: it fetched the plan's own marker
    # file (plans/<mac>-<token>), which only that plan's boot asks for. From then on the menus
    # no longer send it to the plan.
    fired: str = ""
    # when the plan was assigned (UTC): only a boot after it fires the plan ("" in older states:
    # any boot seen)
    assigned: str = ""
    group: str = ""  # a name for a group of machines assigned together
    token: str = ""  # a one-shot plan's identity (16 hex digits), new at every assign
    # An imaging plan's outcome, as its job reported it: "" (none yet), done or failed; when
    # the report came (UTC) and what it said.
    result: str = ""
    reported: str = ""
    reason: str = ""
    # a restore plan of a multicast session ([[sessions]], by name): its machine takes the
    # image from the session's sender (udpcast), not from the share
    session: str = ""

    def __post_init__(self) -> None:
        if normal_mac(self.mac, "plans.mac") != self.mac:
            raise InputError(f"plans.mac {self.mac!r} must be written like 52:54:00:12:34:56")
        if self.action not in PLAN_ACTIONS:
            raise InputError(f"plans.action must be one of {', '.join(PLAN_ACTIONS)}")
        if self.action == "local" and self.entry:
            raise InputError("plans.entry is for the entry, restore and save actions")
        if self.action != "local":
            check_name(self.entry, "plans.entry")
        if self.action in ("restore", "save"):
            if not _OCS_IMAGE_RE.fullmatch(self.image):
                raise InputError(
                    f"plans.image {self.image[:70]!r} must match [A-Za-z0-9][A-Za-z0-9._-]*"
                )
            if not _DISK_RE.fullmatch(self.disk):
                raise InputError(f"plans.disk {self.disk[:30]!r} is not a disk like sda or nvme0n1")
            if self.then not in THEN:
                raise InputError(f"plans.then must be one of {', '.join(THEN)}")
            if self.repo:
                check_repo(self.repo, "plans.repo")
        elif self.image or self.repo:
            raise InputError("plans.image and plans.repo are for the restore and save actions")
        if not _TOKEN_RE.fullmatch(self.token):
            raise InputError(f"plans.token {self.token[:40]!r} must be 16 hex digits")
        if self.result not in PLAN_RESULTS:
            raise InputError("plans.result must be done, failed or empty")
        if self.result and not (self.imaging and self.fired):
            raise InputError("plans.result is for an imaging plan its machine took (fired)")
        if not _REASON_RE.fullmatch(self.reason):
            raise InputError("plans.reason must be one line of printable ASCII (300 at most)")
        stamps = (("fired", self.fired), ("assigned", self.assigned), ("reported", self.reported))
        for key, stamp in stamps:
            try:
                if not _STAMP_RE.fullmatch(stamp):
                    raise ValueError(stamp)
                stamp_epoch(stamp)  # a real time: no 2026-13-45T99:99:99Z
            except ValueError:
                raise InputError(
                    f"plans.{key} {stamp[:40]!r} must be like 2026-11-28T13:00:00Z"
                ) from None
        if self.group:
            check_name(self.group, "plans.group")
        if self.session:
            check_name(self.session, "plans.session")
            if self.action != "restore":
                raise InputError("plans.session is for restore plans")

    @property
    def imaging(self) -> bool:
        return self.action in ("restore", "save")

    @property
    def one_shot(self) -> bool:
        """Imaging plans always stand for one boot: a restore repeated at every boot is never
        what anyone wants."""
        return self.once or self.imaging

    @property
    def marker(self) -> str:
        """The file (under the TFTP root) the machine fetches when it takes this one-shot plan:
        it names the machine and the plan. "" when there is none (a standing plan, a fired
        one, or one from before plans had tokens)."""
        if not self.one_shot or self.fired or not self.token:
            return ""
        return f"plans/{self.mac.replace(':', '-')}-{self.token}"

    @property
    def status(self) -> str:
        """armed, started (taken, no report yet), done or failed; standing plans: standing."""
        if not self.one_shot:
            return "standing"
        if not self.fired:
            return "armed"
        if self.imaging:
            return self.result or "started"
        return "done"

    @property
    def now(self) -> str:
        """What the machine boots now: its action, or after a one-shot fired, `local` (an
        imaging plan with `then local`) or `menu`."""
        if not self.fired:
            return self.action
        return "local" if self.imaging and self.then == "local" else "menu"


MCAST_PORT_SPAN = 64  # the ports of one session: udp-sender's portbase, +2 for each partition
MAX_MCAST_PARTS = MCAST_PORT_SPAN // 2
SESSION_OUTCOMES = ("", "sent", "failed", "stopped")
_BITRATE_RE = re.compile(r"[1-9][0-9]{0,5}[kmgKMG]?")


@dataclass(frozen=True)
class Session:
    """A multicast restore: one image sent once (Clonezilla's feeder, udp-sender, partition by
    partition) to the machines whose restore plans name the session. The settings are
    udp-sender's and Clonezilla's: how many clients to wait for, the longest wait after the
    first one joined, the pause between partitions (PART_PREPARE_TIME), a bitrate cap, the
    interface, the port base and the data address."""

    name: str
    image: str
    port: int = 2232  # Clonezilla's MULTICAST_PORT
    address: str = "239.255.10.1"  # the data's multicast address (udp-sender's)
    clients: int = 1  # start when this many machines joined (--clients-to-wait)
    max_wait: int = 300  # or this many seconds after the first one (--max-time-to-wait)
    part_pause: int = 30  # before each next partition (Clonezilla's PART_PREPARE_TIME)
    bitrate: str = ""  # udp-sender's --max-bitrate ("" none), e.g. 500m
    # udp-sender's --retries-until-drop: a machine that stops answering (powered off, crashed)
    # is dropped after this many unanswered requests, ~20 s at 30, so the others go on
    # (udpcast's own default, 200, holds them for minutes)
    drop_retries: int = 30
    interface: str = ""  # "" the serving interface
    created: str = ""
    # the sender's end: when, sent/failed/stopped, and why (its last words)
    ended: str = ""
    outcome: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "sessions.name")
        if not _OCS_IMAGE_RE.fullmatch(self.image):
            raise InputError(
                f"sessions.image {self.image[:70]!r} must match [A-Za-z0-9][A-Za-z0-9._-]*"
            )
        if not 1024 <= self.port <= 65535 - MCAST_PORT_SPAN or self.port % 2:
            raise InputError(
                f"sessions.port {self.port} must be an even port from 1024 to "
                f"{65535 - MCAST_PORT_SPAN} (each partition takes the next two)"
            )
        try:
            address = ipaddress.IPv4Address(self.address)
        except ValueError:
            raise InputError(
                f"sessions.address {self.address[:40]!r} is not an IPv4 address"
            ) from None
        if address not in ipaddress.IPv4Network("239.0.0.0/8"):
            raise InputError(
                f"sessions.address {self.address} must be in 239.0.0.0/8 (administratively "
                "scoped multicast: it stays on this LAN)"
            )
        if not 1 <= self.clients <= 1000:
            raise InputError("sessions.clients must be from 1 to 1000")
        if not 1 <= self.max_wait <= 86400:
            raise InputError("sessions.max_wait must be from 1 to 86400 seconds")
        if not 5 <= self.part_pause <= 3600:
            raise InputError("sessions.part_pause must be from 5 to 3600 seconds")
        if self.bitrate and not _BITRATE_RE.fullmatch(self.bitrate):
            raise InputError(
                f"sessions.bitrate {self.bitrate[:20]!r} must be a number with k, m or g "
                "(bits per second), like 500m"
            )
        if not 5 <= self.drop_retries <= 1000:
            raise InputError("sessions.drop_retries must be from 5 to 1000")
        if self.interface:
            check_interface(self.interface, "sessions.interface")
        if self.outcome not in SESSION_OUTCOMES:
            raise InputError("sessions.outcome must be sent, failed, stopped or empty")
        if bool(self.outcome) != bool(self.ended):
            raise InputError("sessions.ended and sessions.outcome go together")
        if not _REASON_RE.fullmatch(self.reason):
            raise InputError("sessions.reason must be one line of printable ASCII (300 at most)")
        for key, stamp in (("created", self.created), ("ended", self.ended)):
            if not _STAMP_RE.fullmatch(stamp):
                raise InputError(f"sessions.{key} {stamp[:40]!r} must be like 2026-11-28T13:00:00Z")

    @property
    def ports(self) -> range:
        return range(self.port, self.port + MCAST_PORT_SPAN)


@dataclass(frozen=True)
class State:
    network: Network | None = None
    tftp_root: PurePosixPath = DEFAULT_TFTP_ROOT
    dnsmasq_config: DnsmasqMode = "drop-in"
    uefi_loader: UefiLoader = "auto"  # as asked; `pxeprov init` resolves auto on each run
    title: str = "pxeprov network boot"
    menu_timeout: int = 10
    http: bool = False  # serve the TFTP root with nginx too, and boot payloads over HTTP
    http_port: int = DEFAULT_HTTP_PORT
    # The port `init` gives pxeprov's site when another web server already serves port 80.
    http_fallback_port: int = DEFAULT_HTTP_FALLBACK_PORT
    http_base_url: str = ""  # payloads from another web server (a CDN) instead
    repo: str = ""  # the image repository of Clonezilla jobs (plans may name their own)
    repo_path: str = ""  # the directory this box shares with Samba as a repository ("" none)
    images: tuple[Image, ...] = field(default_factory=tuple)
    plans: tuple[Plan, ...] = field(default_factory=tuple)
    sessions: tuple[Session, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_tftp_root(str(self.tftp_root), "server.tftp_root")
        if self.dnsmasq_config not in DNSMASQ_MODES:
            raise InputError(f"dnsmasq_config must be one of {', '.join(DNSMASQ_MODES)}")
        if self.uefi_loader not in UEFI_LOADERS:
            raise InputError(f"uefi_loader must be one of {', '.join(UEFI_LOADERS)}")
        check_text(self.title, "menu.title")
        check_timeout(self.menu_timeout, "menu.timeout")
        check_port(self.http_port, "http.port")
        check_port(self.http_fallback_port, "http.fallback_port")
        if self.http_base_url:
            check_url(self.http_base_url, "http.base_url")
        names = [image.name for image in self.images]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"image name {duplicates[0]!r} is used twice in the state")
        if sum(image.default for image in self.images) > 1:
            raise InputError("more than one image is marked default")
        if self.repo:
            check_repo(self.repo, "imaging.repo")
        if self.repo_path:
            repo_path = check_repo_path(self.repo_path, "imaging.path")
            check_apart(self.tftp_root, repo_path, "imaging.path")
        macs = [plan.mac for plan in self.plans]
        twice = sorted({m for m in macs if macs.count(m) > 1})
        if twice:
            raise InputError(f"the machine {twice[0]} has two plans in the state")
        known = set(names)
        for plan in self.plans:
            if plan.action != "local" and plan.entry not in known:
                raise InputError(
                    f"the plan of {plan.mac} names the image {plan.entry!r}, which is not in "
                    "the menus"
                )
            if plan.imaging and not (plan.repo or self.repo):
                raise InputError(f"the plan of {plan.mac} has no repository (and the state none)")
        self._check_sessions()

    def _check_sessions(self) -> None:
        by_name = {s.name: s for s in self.sessions}
        if len(by_name) != len(self.sessions):
            raise InputError("two sessions have the same name in the state")
        for plan in self.plans:
            session = by_name.get(plan.session) if plan.session else None
            if plan.session and session is None:
                raise InputError(f"the plan of {plan.mac} names the session {plan.session!r}, "
                                 "which is not in the state")  # fmt: skip
            if session is not None and plan.image != session.image:
                raise InputError(
                    f"the plan of {plan.mac} restores {plan.image!r}, its session "
                    f"{session.name!r} sends {session.image!r}"
                )
        ordered = sorted(self.sessions, key=lambda s: s.port)
        for a, b in itertools.pairwise(ordered):
            if b.port < a.port + MCAST_PORT_SPAN:
                raise InputError(
                    f"the sessions {a.name!r} and {b.name!r} share ports: each takes "
                    f"{MCAST_PORT_SPAN} ports from its own"
                )
        addresses = [s.address for s in self.sessions]
        if len(set(addresses)) != len(addresses):
            raise InputError("two sessions have the same multicast address")

    def session(self, name: str) -> Session | None:
        return next((s for s in self.sessions if s.name == name), None)

    @property
    def payload_base(self) -> str | None:
        """Where kernels, initrds and squashfs files are fetched over HTTP (None: TFTP)."""
        if self.http_base_url:
            return self.http_base_url.rstrip("/")
        if self.http and self.network is not None:
            port = "" if self.http_port == 80 else f":{self.http_port}"
            return f"http://{self.network.address}{port}"
        return None

    @property
    def default_image(self) -> Image | None:
        return next((image for image in self.images if image.default), None)

    def with_changes(self, **changes: Any) -> State:
        return replace(self, **changes)


# ---------------------------------------------------------------- TOML


def _table(data: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {key}.{unknown[0]}")
    return value


def _typed(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where}: {key} must be a {kind.__name__}")
    return value


def loads(text: str, where: str = "state") -> State:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(f"{where}: not a state: arrays or tables nested too deeply") from None
    unknown = sorted(set(data) - {"network", "server", "menu", "http", "images", "imaging",
                                  "plans", "sessions"})  # fmt: skip
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]}")
    try:
        return _from_dict(data, where)
    except InputError as exc:
        if exc.message.startswith(f"{where}: "):
            raise
        raise InputError(f"{where}: {exc.message}", exc.hint) from None
    except (KeyError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def _from_dict(data: dict[str, Any], where: str) -> State:
    kwargs: dict[str, Any] = {}
    net = _table(data, "network", {"interface", "address", "subnet"}, where)
    if net:
        missing = sorted({"interface", "address", "subnet"} - set(net))
        if missing:
            raise InputError(f"{where}: network.{missing[0]} is missing")
        kwargs["network"] = Network(
            interface=_typed(net, "interface", str, where),
            address=parse_address(_typed(net, "address", str, where)),
            subnet=parse_subnet(_typed(net, "subnet", str, where)),
        )
    server = _table(data, "server", {"tftp_root", "dnsmasq_config", "uefi_loader"}, where)
    if "tftp_root" in server:
        kwargs["tftp_root"] = PurePosixPath(_typed(server, "tftp_root", str, where))
    if "dnsmasq_config" in server:
        kwargs["dnsmasq_config"] = _typed(server, "dnsmasq_config", str, where)
    if "uefi_loader" in server:
        kwargs["uefi_loader"] = _typed(server, "uefi_loader", str, where)
    menu = _table(data, "menu", {"title", "timeout"}, where)
    if "title" in menu:
        kwargs["title"] = _typed(menu, "title", str, where)
    if "timeout" in menu:
        kwargs["menu_timeout"] = _typed(menu, "timeout", int, where)
    http = _table(data, "http", {"enabled", "port", "fallback_port", "base_url"}, where)
    if "enabled" in http:
        kwargs["http"] = _typed(http, "enabled", bool, where)
    if "port" in http:
        kwargs["http_port"] = _typed(http, "port", int, where)
    if "fallback_port" in http:
        kwargs["http_fallback_port"] = _typed(http, "fallback_port", int, where)
    if "base_url" in http:
        kwargs["http_base_url"] = _typed(http, "base_url", str, where)
    images = data.get("images", [])
    if not isinstance(images, list):
        raise InputError(f"{where}: images must be an array of tables ([[images]])")
    kwargs["images"] = tuple(_image(entry, where, i) for i, entry in enumerate(images))
    imaging = _table(data, "imaging", {"repo", "path"}, where)
    if "repo" in imaging:
        kwargs["repo"] = _typed(imaging, "repo", str, where)
    if "path" in imaging:
        kwargs["repo_path"] = _typed(imaging, "path", str, where)
    plans = data.get("plans", [])
    if not isinstance(plans, list):
        raise InputError(f"{where}: plans must be an array of tables ([[plans]])")
    kwargs["plans"] = tuple(_plan(entry, where, i) for i, entry in enumerate(plans))
    sessions = data.get("sessions", [])
    if not isinstance(sessions, list):
        raise InputError(f"{where}: sessions must be an array of tables ([[sessions]])")
    kwargs["sessions"] = tuple(_session(entry, where, i) for i, entry in enumerate(sessions))
    return State(**kwargs)


_SESSION_KEYS = {f.name: f for f in fields(Session)}


def _session(entry: Any, where: str, index: int) -> Session:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: each [[sessions]] entry must be a table")
    unknown = sorted(set(entry) - set(_SESSION_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key sessions.{unknown[0]}")
    missing = sorted({"name", "image"} - set(entry))
    if missing:
        raise InputError(f"{where}: a session has no {missing[0]}")
    kwargs = {
        name: _typed(entry, name, int if str(f.type) == "int" else str, where)
        for name, f in _SESSION_KEYS.items()
        if name in entry
    }
    try:
        return Session(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: sessions[{index}]: {exc.message}", exc.hint) from None


_PLAN_KEYS = {f.name for f in fields(Plan)}


def _plan(entry: Any, where: str, index: int) -> Plan:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: each [[plans]] entry must be a table")
    unknown = sorted(set(entry) - _PLAN_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key plans.{unknown[0]}")
    missing = sorted({"mac", "action"} - set(entry))
    if missing:
        raise InputError(f"{where}: a plan has no {missing[0]}")
    kwargs: dict[str, Any] = {}
    for f in fields(Plan):
        if f.name in entry:
            kwargs[f.name] = _typed(entry, f.name, bool if f.name == "once" else str, where)
    try:
        return Plan(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: plans[{index}]: {exc.message}", exc.hint) from None


_IMAGE_KEYS = {f.name for f in fields(Image)}


def _image(entry: Any, where: str, index: int) -> Image:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: each [[images]] entry must be a table")
    unknown = sorted(set(entry) - _IMAGE_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key images.{unknown[0]}")
    missing = sorted({"name", "kernel"} - set(entry))
    if missing:
        raise InputError(f"{where}: an image has no {missing[0]}")
    kwargs: dict[str, Any] = {}
    for f in fields(Image):
        if f.name == "files" and "files" in entry:
            files = _typed(entry, "files", list, where)
            if not all(isinstance(p, str) for p in files):
                raise InputError(f"{where}: images[{index}].files must be a list of paths")
            kwargs["files"] = tuple(files)
        elif f.name in entry:
            kind = {"bool": bool, "int": int}.get(str(f.type), str)
            kwargs[f.name] = _typed(entry, f.name, kind, where)
    kwargs.setdefault("label", kwargs["name"])
    kwargs.setdefault("kind", "custom")
    try:
        return Image(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: images[{index}].{exc.message}", exc.hint) from None


def dumps(state: State) -> str:
    data: dict[str, Any] = {}
    if state.network is not None:
        data["network"] = {
            "interface": state.network.interface,
            "address": str(state.network.address),
            "subnet": str(state.network.subnet),
        }
    data["server"] = {
        "tftp_root": str(state.tftp_root),
        "dnsmasq_config": state.dnsmasq_config,
        "uefi_loader": state.uefi_loader,
    }
    data["menu"] = {"title": state.title, "timeout": state.menu_timeout}
    data["http"] = {
        "enabled": state.http,
        "port": state.http_port,
        "fallback_port": state.http_fallback_port,
        "base_url": state.http_base_url,
    }
    if state.repo or state.repo_path:
        data["imaging"] = {
            "repo": state.repo,
            **({"path": state.repo_path} if state.repo_path else {}),
        }
    if state.images:
        data["images"] = [_image_table(image) for image in state.images]
    if state.plans:
        data["plans"] = [_plan_table(plan) for plan in state.plans]
    if state.sessions:
        defaults = {f.name: f.default for f in fields(Session)}
        data["sessions"] = [
            {k: v for k, v in asdict(s).items() if k in ("name", "image") or v != defaults[k]}
            for s in state.sessions
        ]
    return HEADER + "\n" + tomli_w.dumps(data) + "\n" + TRAILER


def _image_table(image: Image) -> dict[str, Any]:
    table = asdict(image)
    # Most images have none of these: the state file stays as it was.
    if not image.files:
        del table["files"]
    else:
        table["files"] = list(image.files)
    if not image.variant:
        del table["variant"]
    return table


def _plan_table(plan: Plan) -> dict[str, Any]:
    """Only what the plan uses: the state file stays readable."""
    defaults = {f.name: f.default for f in fields(Plan)}
    keep = {"mac", "action"} | ({"disk", "then"} if plan.imaging else set())
    return {k: v for k, v in asdict(plan).items() if k in keep or v != defaults[k]}


# ---------------------------------------------------------------- address parsing


def parse_address(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InputError(f"{value!r} is not an IPv4 address") from None


def parse_subnet(value: str, prefix_hint: int | None = None) -> ipaddress.IPv4Network:
    """A CIDR (`192.168.1.0/24`), or a bare network address (`172.16.1.0`, as in dnsmasq's
    `dhcp-range=172.16.1.0,proxy`) whose prefix then comes from the interface (`prefix_hint`)."""
    try:
        if "/" in value:
            return ipaddress.IPv4Network(value, strict=True)
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise InputError(
            f"{value!r} is not a valid subnet (CIDR like 192.168.1.0/24): {exc}"
        ) from None
    if prefix_hint is None:
        raise InputError(f"subnet {value!r} has no prefix length; give a CIDR like {value}/24")
    try:
        return ipaddress.IPv4Network(f"{address}/{prefix_hint}", strict=True)
    except ValueError:
        raise InputError(
            f"{value!r} is not the network address of a /{prefix_hint}; give a CIDR"
        ) from None


def _is_loader(value: str) -> TypeGuard[UefiLoader]:
    return value in UEFI_LOADERS


def cast_loader(value: str) -> UefiLoader:
    if not _is_loader(value):
        raise InputError(f"--uefi-loader must be one of {', '.join(UEFI_LOADERS)}")
    return value


def _is_mode(value: str) -> TypeGuard[DnsmasqMode]:
    return value in DNSMASQ_MODES


def cast_mode(value: str) -> DnsmasqMode:
    if not _is_mode(value):
        raise InputError(f"--dnsmasq-config must be one of {', '.join(DNSMASQ_MODES)}")
    return value
