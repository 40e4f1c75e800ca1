"""What machines boot instead of the menu: their plans (an entry, the local disk, or a
Clonezilla job), and the multicast sessions restore plans join; each checks itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from pxeprov.errors import InputError
from pxeprov.state.values import check_repo, normal_mac, stamp_epoch
from pxeprov.syntax import check_interface, check_name

PlanAction = Literal["entry", "local", "restore", "save"]
PLAN_ACTIONS: tuple[PlanAction, ...] = ("entry", "local", "restore", "save")
THEN: tuple[str, ...] = ("reboot", "poweroff", "local")
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
