"""Multicast restore sessions: Clonezilla's own feeder, run and watched.

The sender is not pxeprov's: drbl's `ocs-functions` has `feed_multicast_restoreparts`, the
function Clonezilla SE (`drbl-ocs ... startdisk multicast_restore`) and Clonezilla live's lite
server (`ocs-live-feed-img`) run. For each partition of the image, in the order of its `parts`
file, it pipes the saved files, as they are (compressed), into `udp-sender` on the session's
port base, the port two higher for each next partition, and waits for the receivers as told:
`--min-clients N --max-wait T` for the first partition, then the pause between partitions
(PART_PREPARE_TIME) as the longest wait for the next one. The clients run Clonezilla's
`ocs-sr ... --mcast-port P multicast_restoredisk IMAGE DISK`, whose `udp-receiver` joins each
partition in the same order; the image's small files (partition table, boot code) they read
from the repository's read-only share, as a unicast restore does.

`ocs-live-feed-img` itself is not driven: it also sets up a DHCP server or a PXE menu of its
own, and serves the image's description over its own web server, one session at a time; pxeprov
has all that already, and runs several sessions, each on its own ports and data address. FEED
below sources drbl's functions and calls the one that sends, with the settings a session holds.

Here: the feeder's command line, the image's partitions (the repository is written by clients:
its text is checked), the sender's output read as progress (who joined, which partition, bytes,
who was dropped), the progress file pxeprov-watch and `plans` read, and the sender's pid file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pxeprov import fsutil, system
from pxeprov.errors import InputError, PxeprovError
from pxeprov.paths import STATE_DIR, Root
from pxeprov.state import MAX_MCAST_PARTS, MCAST_PORT_SPAN, Session, State

# Debian's packages: udp-sender, and the feeder's functions (clonezilla brings drbl)
PACKAGES = ("udpcast", "clonezilla")
FUNCTIONS = Path("/usr/share/drbl/sbin/ocs-functions")
SESSIONS_DIR = STATE_DIR / "sessions"
UNIT_PREFIX = "pxeprov-mcast-"
FIRST_PORT = 2232  # Clonezilla's MULTICAST_PORT
RENDEZVOUS = "224.0.0.1"  # Clonezilla's MULTICAST_ALL_ADDR: where senders and receivers meet
IFF_MULTICAST = 0x1000  # <linux/if.h>

# drbl-ocs's multicast_restoredisk, without its DHCP and PXE part: the image's partitions of
# its disks, then feed_multicast_restoreparts in the foreground. udpcast's output (its joins,
# drops and progress) goes to this script's stderr, which pxeprov reads.
FEED = r"""
imagedir=$1 img=$2 MULTICAST_PORT=$3 eth_for_multicast=$4 n_clients=$5 wait_=$6 pause_=$7
udp_sender_extra_opt=$8 logdir=$9
DRBL_SCRIPT_PATH=/usr/share/drbl
. $DRBL_SCRIPT_PATH/sbin/drbl-conf-functions || exit 3
. /etc/drbl/drbl-ocs.conf || exit 3
. $DRBL_SCRIPT_PATH/sbin/ocs-functions || exit 3
PART_PREPARE_TIME=$pause_ mcast_max_wait_time=$wait_ mcast_wait_time="" always_restore=""
ocs_log_dir=$logdir OCS_LOGFILE=$logdir/feed.log udpcast_stderr=/dev/stderr
udpcast_hold_opt1="" udpcast_hold_opt2="--min-clients $n_clients"
udpcast_hold_opt3="--max-wait $mcast_max_wait_time"
target_parts=""
for ihd in $(< "$imagedir/$img/disk"); do
  for partition in $(get_parts_list_from_img "$imagedir/$img"); do
    case "$partition" in "$ihd"*) target_parts="$target_parts $partition" ;; esac
  done
done
echo "pxeprov-feed: parts ${target_parts# }" >&2
[ -n "$target_parts" ] || exit 4
feed_multicast_restoreparts "$img" "${target_parts# }"
echo "pxeprov-feed: end" >&2
"""

_PART_RE = re.compile(r"[a-z][a-z0-9]{1,15}")
_MAX_LIST = 4096


def unit(name: str) -> str:
    return f"{UNIT_PREFIX}{name}"


@dataclass(frozen=True)
class DiskImage:
    disks: list[str]  # the disks it was saved from (its `disk` file)
    parts: list[str]  # the partitions the feeder sends, in its order


def image_parts(image_dir: Path) -> list[str]:
    return read_image(image_dir).parts


def read_image(image_dir: Path) -> DiskImage:
    """The image's disks, and the partitions the feeder sends, in its order: those of its
    `parts` file on its `disk`s. A directory that is not a Clonezilla disk image is refused,
    as is any name that is not a plain partition name (the repository is written by
    clients)."""
    lists = {}
    for name in ("disk", "parts"):
        data = fsutil.read_bytes(image_dir / name, _MAX_LIST)
        if data is None:
            raise InputError(
                f"{image_dir} is not a Clonezilla disk image (no {name} file): save one with "
                "`pxeprov assign MAC --save NAME`"
            )
        words = data.decode("ascii", "replace").split()
        bad = next((w for w in words if not _PART_RE.fullmatch(w)), None)
        if bad is not None or not words:
            raise InputError(f"{image_dir / name} does not list {name} names like sda1")
        lists[name] = words
    parts = [p for d in lists["disk"] for p in lists["parts"] if p.startswith(d)]
    if not parts:
        raise InputError(f"{image_dir}: no partition of {' '.join(lists['disk'])} in its parts")
    if len(parts) > MAX_MCAST_PARTS:
        raise InputError(f"{image_dir} has {len(parts)} partitions: a session sends "
                         f"{MAX_MCAST_PARTS} at most")  # fmt: skip
    return DiskImage(lists["disk"], parts)


def feed_argv(session: Session, repository: Path, interface: str, logdir: Path) -> list[str]:
    extra = [
        f"--mcast-data-address {session.address}",
        f"--retries-until-drop {session.drop_retries}",
    ]
    if session.bitrate:
        extra.append(f"--max-bitrate {session.bitrate}")
    return [
        "bash", "-c", FEED, "pxeprov-feed", str(repository), session.image, str(session.port),
        interface, str(session.clients), str(session.max_wait), str(session.part_pause),
        " ".join(extra), str(logdir),
    ]  # fmt: skip


def interface_multicast(interface: str, sys_net: Path = Path("/sys/class/net")) -> bool | None:
    """Whether the interface has the MULTICAST flag (None: no such interface)."""
    try:
        return bool(int((sys_net / interface / "flags").read_text(), 16) & IFF_MULTICAST)
    except (OSError, ValueError):
        return None


def free_port(state: State, skip: str = "") -> int:
    taken = [s.ports for s in state.sessions if s.name != skip]
    port = FIRST_PORT
    while any(port in r or port + MCAST_PORT_SPAN - 1 in r for r in taken):
        port += MCAST_PORT_SPAN
    return port


def free_address(state: State, skip: str = "") -> str:
    taken = {s.address for s in state.sessions if s.name != skip}
    base = ipaddress.IPv4Address("239.255.10.1")
    return str(next(base + i for i in range(4096) if str(base + i) not in taken))


# ---------------------------------------------------------------- the sender's progress


@dataclass
class Receiver:
    ip: str
    mac: str = ""
    joined: int = 0  # the partition (1-based) it joined first
    dropped: int = 0  # the partition it was dropped in (0: not dropped)
    why: str = ""


@dataclass
class Progress:
    """What the sender said so far. Written to SESSIONS_DIR/<name>.json by the sender's
    supervisor; read by `plans`, `status`, `watch` and doctor."""

    name: str
    parts: list[str]
    pid: int = 0
    phase: str = "waiting"  # waiting, sending, between, sent, failed, stopped
    part: int = 0  # the partition going (1-based), 0 before the first
    bytes_part: int = 0  # sent of the current partition
    bytes_done: int = 0  # of the partitions finished
    # packets sent again (a receiver missed them): udp-sender's re-xmits, over the partitions
    rexmits_part: int = 0
    rexmits_done: int = 0
    receivers: list[Receiver] = field(default_factory=list)
    started: float = 0.0
    updated: float = 0.0
    message: str = ""
    feeder: int = 0  # the feeder's process group (bash, cat, udp-sender)
    _ids: dict[int, str] = field(default_factory=dict)

    @property
    def bytes_sent(self) -> int:
        return self.bytes_done + self.bytes_part

    @property
    def rexmits(self) -> int:
        return self.rexmits_done + self.rexmits_part

    def receiver(self, ip: str) -> Receiver:
        found = next((r for r in self.receivers if r.ip == ip), None)
        if found is None:
            found = Receiver(ip, joined=max(self.part, 1))
            self.receivers.append(found)
        return found

    def feed(self, line: str, mac_of: Callable[[str], str | None] | None = None) -> bool:
        """One line of the feeder's stderr; True when it changed something worth saying.
        `mac_of` (the neighbour table) names the receivers: asked on such lines only, not on
        the progress lines, for a receiver it could not name yet."""
        changed = self._feed(line.strip())
        if changed and mac_of is not None:
            for r in self.receivers:
                if not r.mac:
                    r.mac = mac_of(r.ip) or ""
        return changed

    def _feed(self, line: str) -> bool:
        if line.startswith("UDP sender for"):
            self.bytes_done += self.bytes_part
            self.rexmits_done += self.rexmits_part
            self.bytes_part = self.rexmits_part = 0
            self.part += 1
            self.phase = "waiting"
            self._ids = {}
            return True
        m = re.match(r"New connection from (\S+)\s+\(#(\d+)\)", line)
        if m:
            self._ids[int(m.group(2))] = m.group(1)
            self.receiver(m.group(1))
            return True
        if line.startswith("Starting transfer"):
            self.phase = "sending"
            if not self.started:
                self.started = time.time()
            return True
        m = re.match(r"bytes=\s*([0-9 ]+?)\s+re-xmits=\s*([0-9]+)", line)
        if m:
            self.bytes_part = int(m.group(1).replace(" ", ""))
            self.rexmits_part = int(m.group(2))
            return False
        m = re.match(r"Dropping client #(\d+) because of (\w+)", line)
        if m:
            ip = self._ids.get(int(m.group(1)), "")
            if ip:
                r = self.receiver(ip)
                r.dropped, r.why = self.part, f"it stopped answering ({m.group(2)})"
            return True
        if line.startswith("Transfer complete"):
            self.phase = "between"
            return True
        return False

    def summary(self) -> str:
        """One line: where the session is."""
        total = len(self.parts)
        joined = [r for r in self.receivers if not r.dropped]
        mb = self.bytes_sent / 1e6
        if self.phase == "waiting" and self.part <= 1:
            return f"waiting for machines ({len(joined)} joined)"
        if self.phase in ("waiting", "between"):
            return (f"between partitions ({self.part} of {total} sent, {len(joined)} machines, "
                    f"{mb:.1f} MB sent)")  # fmt: skip
        if self.phase == "sending":
            name = self.parts[self.part - 1] if 0 < self.part <= total else "?"
            return (f"sending partition {self.part} of {total} ({name}) to {len(joined)} "
                    f"machines, {mb:.1f} MB sent")  # fmt: skip
        return f"{self.phase}: {self.message}" if self.message else self.phase

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("_ids", None)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Progress:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        receivers = [Receiver(**r) for r in data.pop("receivers", [])]
        data.pop("_ids", None)
        return cls(**data, receivers=receivers)


def progress_file(root: Root, name: str) -> Path:
    return root.path(SESSIONS_DIR / f"{name}.json")


def pid_file(root: Root, name: str) -> Path:
    return root.path(SESSIONS_DIR / f"{name}.pid")


def log_file(root: Root, name: str) -> Path:
    return root.path(SESSIONS_DIR / f"{name}.log")


def read_progress(root: Root, name: str) -> Progress | None:
    try:
        data = fsutil.read_bytes(progress_file(root, name), 1 << 20)
        return Progress.from_json(data.decode()) if data else None
    except (PxeprovError, ValueError, TypeError, UnicodeDecodeError):
        return None


def write_progress(root: Root, progress: Progress) -> None:
    progress.updated = time.time()
    path = progress_file(root, progress.name)
    fsutil.make_dirs(path.parent, 0o700)
    fsutil.write_atomic(path, progress.to_json().encode(), 0o600)


def _is_sender(pid: int, name: str) -> bool:
    return system.runs(pid, b"session-run", name.encode())


def sender_pid(root: Root, name: str) -> int | None:
    """The pid of the session's sender (its supervisor, `pxeprov session-run NAME`), when it
    runs: a pid file whose process is that command."""
    try:
        pid = int(pid_file(root, name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 and _is_sender(pid, name) else None


def senders(root: Root) -> dict[str, int | None]:
    """Every session that has a pid file: its sender's pid, None when that is not running."""
    folder = root.path(SESSIONS_DIR)
    try:
        names = [p.stem for p in folder.glob("*.pid")]
    except OSError:
        return {}
    return {n: sender_pid(root, n) for n in sorted(names)}


def stop(root: Root, name: str, wait: float = 15.0) -> int | None:
    """SIGTERM to the session's sender (it ends its udp-sender and says `stopped`); the pid
    stopped, None when none ran. Raises InputError when it does not end within `wait`."""
    pid = sender_pid(root, name)
    if pid is None:
        pid_file(root, name).unlink(missing_ok=True)
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _is_sender(pid, name):
            pid_file(root, name).unlink(missing_ok=True)
            return pid
        time.sleep(0.1)
    raise InputError(f"the sender of session {name!r} (pid {pid}) did not stop in {wait:.0f} s")


def _group_is_feeder(pgid: int) -> bool:
    """Whether a process of group `pgid` is a feeder's: its bash (named pxeprov-feed) or
    its udp-sender (a pid reused after a reboot is not taken for one)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
            fields_ = stat[stat.rindex(")") + 2 :].split()
            if int(fields_[2]) != pgid:
                continue
            argv = (stat_file.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"pxeprov-feed" in argv or (argv and argv[0].endswith(b"udp-sender")):
            return True
    return False


def kill_feeder(root: Root, name: str) -> bool:
    """End what a killed sender left running: its feeder's process group. True when there
    was one."""
    progress = read_progress(root, name)
    if progress is None or progress.feeder <= 1 or not _group_is_feeder(progress.feeder):
        return False
    try:
        os.killpg(progress.feeder, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while _group_is_feeder(progress.feeder) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def split_lines(chunks: Iterable[bytes]) -> Iterable[str]:
    """udpcast ends its progress lines with a carriage return: every CR or LF ends a line."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        pieces = re.split(rb"[\r\n]", rest)
        rest = pieces.pop()
        for piece in pieces:
            if piece.strip():
                yield piece.decode("ascii", "replace")
        if len(rest) > 65536:
            rest = b""
    if rest.strip():
        yield rest.decode("ascii", "replace")
