"""`watch` and `status`: the boot stages each client reached, from dnsmasq's log (the file
pxeprov's config names) and nginx's access log; a client that stops is reported as stalled
after its last stage, with the likely cause. Reads only.

`watch` follows the logs as they grow (a rotated or truncated log is reopened) and prints a line
per stage reached; `status` prints one line per client seen since a time, and exits.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxeprov import boot, bootlog, dhcpprobe, fsutil, jobreport, multicast, network, pipeline
from pxeprov import state as state_mod
from pxeprov.bootlog import Client, Event, Tracker
from pxeprov.commands import plans as plans_command
from pxeprov.commands import session as session_command
from pxeprov.commands import web
from pxeprov.errors import InputError, PxeprovError
from pxeprov.images.kinds.clonezilla import REPORT_PORT
from pxeprov.menucheck import MARKER_RE
from pxeprov.paths import (
    DNSMASQ_LOG,
    NGINX_ACCESS_LOG,
    REPORTS_LOG,
    STATE_FILE,
    WATCH_STATE,
    WEB_DATA,
)
from pxeprov.pipeline import Machine
from pxeprov.render import plan_label, plan_now
from pxeprov.state import State

POLL = 0.5  # seconds between looks at the logs
SESSION_POLL = 2.0  # seconds between looks at the multicast sessions' progress
SENDER_CHECK = 30.0  # seconds between checks that each session's sender runs (--fire)
RETRY = 2.0  # seconds between tries of a plan change that could not be made (busy, bad state)
DEFAULT_STALL = 30.0  # seconds without progress before a client is called stalled
_MAX_READ = 64 << 20  # bytes read from a log at once


@dataclass(frozen=True)
class WatchOptions:
    mac: str | None = None
    since: float | None = None  # epoch seconds; None: from now on (watch), the last hour (status)
    stall: float = DEFAULT_STALL
    dnsmasq_log: Path | None = None
    nginx_log: Path | None = None

    @classmethod
    def parse(
        cls,
        mac: str | None,
        since: str | None,
        stall: float,
        dnsmasq_log: Path | None,
        nginx_log: Path | None,
    ) -> WatchOptions:
        """The options as the command line gives them (`--since 10m`), checked."""
        if not 5 <= stall <= 3600:
            raise InputError(f"--stall {stall} must be between 5 and 3600 seconds")
        when = None
        if since is not None:
            try:
                when = bootlog.epoch(since)
            except ValueError:
                raise InputError(
                    f"--since {since!r} is not like 10m, 2h, 1d or 2026-11-28 13:00"
                ) from None
        return cls(normal_mac(mac) if mac else None, when, stall, dnsmasq_log, nginx_log)

    # mark one-shot plans fired when their machine fetched the plan's marker, take the jobs'
    # reports, and keep where it stopped (a restart takes up what happened meanwhile)
    fire: bool = False
    reports_log: Path | None = None
    report_port: int | None = REPORT_PORT  # None: take no reports (tests)
    watch_state: Path | None = None  # where it keeps its place (default /var/lib/pxeprov)
    # the status page's data (--fire; default /var/lib/pxeprov/web/api/v1/status.json), and
    # how often doctor's checks run for it (None: never)
    web_data: Path | None = None
    health_every: float | None = web.HEALTH_EVERY


def normal_mac(text: str) -> str:
    return state_mod.normal_mac(text, "--mac")


_HEAD = 64  # bytes at the start of a log that tell one file from the next (copytruncate)


@dataclass
class _Log:
    """A log file read as it grows; read again from its start when it is rotated (a new file)
    or truncated (copytruncate: shorter, or a different start)."""

    path: Path
    offset: int = 0
    inode: int = -1
    partial: str = ""
    head: bytes = b""

    def _head(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                return f.read(_HEAD)
        except OSError:
            return b""

    def place(self) -> dict[str, Any]:
        return {"inode": self.inode, "offset": self.offset, "head": self.head.hex()}

    def resume(self, saved: object) -> bool:
        """Take up at a saved place when the file is the one it was (same inode and start);
        a file rotated meanwhile is read from its start. False: nothing saved."""
        if not isinstance(saved, dict):
            return False
        try:
            inode, offset = int(saved["inode"]), int(saved["offset"])
            head = bytes.fromhex(str(saved["head"]))
        except (KeyError, TypeError, ValueError):
            return False
        try:
            st = self.path.stat()
        except OSError:
            return True  # not there yet: from its start when it comes
        if st.st_ino == inode and offset <= st.st_size and self._head()[: len(head)] == head:
            self.offset, self.inode, self.head = offset, inode, head
        return True

    def start_at_end(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        self.offset, self.inode, self.head = st.st_size, st.st_ino, self._head()

    def read(self) -> list[str]:
        try:
            st = self.path.stat()
        except OSError:
            return []
        same_start = self._head()[: len(self.head)] == self.head
        if st.st_ino != self.inode or st.st_size < self.offset or not same_start:
            self.offset, self.inode, self.partial, self.head = 0, st.st_ino, "", b""
        if st.st_size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(_MAX_READ)
        if len(self.head) < _HEAD and self.offset <= len(self.head):
            self.head = (self.head + data)[:_HEAD]
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        return lines


@dataclass
class Watcher:
    """The logs of one server, the stage tracker, and which stalls were already said."""

    state: State
    tracker: Tracker
    logs: list[tuple[_Log, str]]  # (log, "dnsmasq" | "nginx")
    options: WatchOptions
    tftp_roots: tuple[str, ...]  # the state's TFTP root, and where it really is (--root)
    said: dict[str, str] = field(default_factory=dict)  # mac -> the last stall said
    state_sig: tuple[int, int, int] = (0, 0, 0)  # the state file when it was read
    state_problem: str = ""  # why the state file could not be read again ("" it could)
    reports: list[jobreport.Report] = field(default_factory=list)  # read, not yet acted on
    saved_place: bytes = b""  # what was last written to the watcher's place file
    own_macs: frozenset[str] = frozenset()  # this server's: `doctor`'s probe is no client
    resumed_actions: list[_Action] = field(default_factory=list)  # saved, not done when it ended

    def refresh(self, machine: Machine) -> None:
        """The state again when its file changed (a plan assigned, an image added while this
        watches): the stages of files and the plans follow it."""
        sig = _state_signature(machine)
        if sig == self.state_sig:
            return
        try:
            state = pipeline.load_state(machine.root)
        except InputError as exc:  # caught mid-edit, or broken: the last good one meanwhile
            self.state_problem = exc.message
            return
        self.state_sig, self.state_problem, self.state = sig, "", state
        self.tracker.stages = _stages(machine, self.state)
        if self.state.http and all(kind != "nginx" for _, kind in self.logs):
            log = _Log(self.options.nginx_log or machine.root.path(NGINX_ACCESS_LOG))
            log.start_at_end()
            self.logs.append((log, "nginx"))

    def events(self, now: float) -> list[Event]:
        found: list[Event] = []
        tftp_root = self.tftp_roots
        for log, kind in self.logs:
            lines = log.read()
            if kind == "dnsmasq":
                found += bootlog.parse_dnsmasq(lines, tftp_root, now)
            elif kind == "nginx":
                found += bootlog.parse_nginx(lines)
            else:
                self.reports += jobreport.parse_log(lines)
        since = self.options.since
        found = [e for e in found if since is None or e.time >= since]
        return sorted(found, key=lambda e: e.time)

    def wanted(self, client: Client) -> bool:
        if client.mac in self.own_macs:
            return False  # doctor's DHCP probe, sent with the serving interface's own MAC
        return self.options.mac is None or client.mac == self.options.mac

    def stalled(self, client: Client, now: float) -> str:
        """Why the client is stalled, or "" (it moves, or it is done)."""
        image = bootlog.image_of(self.state, client)
        done = bootlog.expected_next(client, bootlog.has_rootfs(image)) is None
        if done and not client.problem:
            return ""
        if client.problem:
            return client.problem
        if now - client.last < self.options.stall:
            return ""
        return bootlog.stall_cause(client)


def _stages(machine: Machine, state: State) -> dict[str, str]:
    """Which stage each served file is, for the chain this state serves."""
    return bootlog.stage_of_files(state, boot.decide(state, machine.root, preview=True))


def _state_signature(machine: Machine) -> tuple[int, int, int]:
    try:
        st = machine.root.path(STATE_FILE).stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _watcher(machine: Machine, options: WatchOptions) -> Watcher:
    sig = _state_signature(machine)
    state = pipeline.load_state(machine.root)
    if state.network is None:
        raise InputError("pxeprov is not set up here", "run `pxeprov init`")
    dnsmasq = options.dnsmasq_log or machine.root.path(DNSMASQ_LOG)
    # The service (`watch --fire`) may start before dnsmasq made its log: it waits for it.
    if not dnsmasq.is_file() and not (options.fire and options.dnsmasq_log is None):
        raise InputError(
            f"dnsmasq's log {dnsmasq} does not exist",
            "run `pxeprov init` (its config logs there), or give --dnsmasq-log",
        )
    logs = [(_Log(dnsmasq), "dnsmasq")]
    nginx = options.nginx_log or machine.root.path(NGINX_ACCESS_LOG)
    if state.http and (nginx.is_file() or options.fire):
        logs.append((_Log(nginx), "nginx"))
    if options.fire:  # the jobs' reports: written by this watcher's listener, read back
        logs.append((_Log(options.reports_log or machine.root.path(REPORTS_LOG)), "reports"))
    lookup = network.neighbour if machine.root.is_system or options.dnsmasq_log else None
    tracker = Tracker(_stages(machine, state), neighbour=lookup)
    roots = (str(state.tftp_root), str(machine.root.path(state.tftp_root)))
    return Watcher(state, tracker, logs, options, roots, state_sig=sig,
                   own_macs=_own_macs(state))  # fmt: skip


def _own_macs(state: State) -> frozenset[str]:
    """The serving interface's MAC, as the logs write MACs (none when it cannot be read)."""
    if state.network is None:
        return frozenset()
    try:
        mac = dhcpprobe.interface_mac(state.network.interface)
    except dhcpprobe.ProbeError:
        return frozenset()
    return frozenset({":".join(f"{b:02x}" for b in mac)})


def _time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _readable(path: Path) -> None:
    """A log that is there must be readable now: one that is not (root's, watched without
    root) would otherwise be watched in silence until it grows."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return  # not there yet: read from its start when it comes
    except OSError as exc:
        raise fsutil.os_error("read", path, exc) from None


def watch(
    machine: Machine,
    options: WatchOptions,
    emit: Callable[[str], None],
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Follow the logs; `emit` a line per stage reached and per stall, until `keep_going` says
    no (the CLI: until Ctrl-C). With `fire`: take the jobs' reports, fire plans on their
    evidence, and keep its place in the logs."""
    w = _watcher(machine, options)
    for log, _kind in w.logs:
        _readable(log.path)
    place = options.watch_state or machine.root.path(WATCH_STATE)
    resumed = _resume(w, place) if options.fire and options.since is None else False
    if options.since is None and not resumed:
        for log, _kind in w.logs:
            log.start_at_end()
    page = None
    if options.fire:
        page = web.PageData.start(options.web_data or machine.root.path(WEB_DATA), machine,
                                  options.health_every)  # fmt: skip
        emit = _noting(emit, page)
    listener = _listen(w, options, emit) if options.fire else None
    emit(f"Watching {' and '.join(str(log.path) for log, _ in w.logs)} (Ctrl-C ends)."
         + (" Taken up where it stopped." if resumed else ""))  # fmt: skip
    shown: dict[str, set[str]] = {}
    waiting: list[_Action] = list(w.resumed_actions)
    said_waiting = ""
    next_try = next_session = next_check = 0.0
    sessions_said: dict[str, SessionKey] = {}
    try:
        while keep_going():
            now = time.time()
            if listener is not None:
                listener.poll()
            w.refresh(machine)
            if now >= next_session:
                next_session = now + SESSION_POLL
                for line in _session_news(machine, w.state, sessions_said):
                    emit(f"{_time(now)}  {line}")
            if options.fire and now >= next_check:
                next_check = now + SENDER_CHECK
                try:
                    for note in session_command.check_senders(machine):
                        emit(f"{_time(now)}  {note}")
                except PxeprovError as exc:
                    emit(f"{_time(now)}  the multicast senders could not be checked: {exc}")
            for event in w.events(now):
                client = w.tracker.feed(event)
                if options.fire and (action := _marker_action(event)) is not None:
                    waiting.append(action)
                if client is None or not w.wanted(client):
                    continue
                for stage in bootlog.STAGES:
                    if stage in client.reached and stage not in shown.setdefault(client.mac, set()):
                        shown[client.mac].add(stage)
                        what = _stage_detail(client, stage)
                        emit(f"{_time(client.reached[stage])}  {client.mac}  "
                             f"{client.firmware:<5} {client.ip or '-':<15} "
                             f"{bootlog.STAGE_WORDS[stage]}{what}")  # fmt: skip
                        w.said.pop(client.mac, None)
            waiting += [_report_action(r) for r in w.reports]
            w.reports.clear()
            if waiting and now >= next_try:
                problem = _act(machine, w, waiting, emit)
                if problem and problem != said_waiting:
                    emit(f"{_time(now)}  waiting to change the plans ({problem}); trying again")
                said_waiting = problem
                next_try = now + (RETRY if problem else 0.0)
            elif w.state_problem and w.state_problem != said_waiting:
                said_waiting = w.state_problem
                emit(f"{_time(now)}  the state file cannot be read ({w.state_problem}); "
                     "the last good one is used meanwhile")  # fmt: skip
            if options.fire:
                _save_place(w, waiting, place)
            for client in w.tracker.clients.values():
                if not w.wanted(client):
                    continue
                why = w.stalled(client, now)
                if why and w.said.get(client.mac) != why:
                    w.said[client.mac] = why
                    stage = bootlog.STAGE_WORDS.get(client.stage, "nothing")
                    emit(f"{_time(now)}  {client.mac}  stalled after {stage}: {why}")
            if page is not None:
                for mac in w.tracker.forget(2 * web.MAX_MACHINES):
                    shown.pop(mac, None)
                    w.said.pop(mac, None)
                page.write(w.state, filter(w.wanted, w.tracker.clients.values()),
                           functools.partial(w.stalled, now=now), now)  # fmt: skip
            time.sleep(POLL)
    finally:
        if listener is not None:
            listener.close()
        if page is not None:
            page.close()


def _noting(emit: Callable[[str], None], page: web.PageData) -> Callable[[str], None]:
    """`emit`, and each line kept for the status page too."""

    def both(line: str) -> None:
        emit(line)
        page.note(line)

    return both


SessionKey = tuple[str, int, int, int]  # phase, partition, receivers, dropped


def _session_news(machine: Machine, state: State, said: dict[str, SessionKey]) -> list[str]:
    """A line for each session whose phase, partition, joined or dropped machines changed."""
    lines = []
    for session in state.sessions:
        progress = multicast.read_progress(machine.root, session.name)
        if progress is None:
            continue
        dropped = [r for r in progress.receivers if r.dropped]
        key = (progress.phase, progress.part, len(progress.receivers), len(dropped))
        if said.get(session.name) == key:
            continue
        dropped_before = said[session.name][3] if session.name in said else 0
        said[session.name] = key
        lines.append(f"session {session.name}: {progress.summary()}")
        for r in dropped[dropped_before:]:
            lines.append(f"session {session.name}: dropped {r.mac or '?'} ({r.ip}) in "
                         f"partition {r.dropped}: {r.why}")  # fmt: skip
    return lines


@dataclass(frozen=True)
class _Action:
    """A change of the plans that evidence asks for: `fire` (a machine fetched its plan's
    marker: `mac` and `token` from the file's name), `result` (a job reported how it ended:
    `token`, `ok`)."""

    kind: str
    when: float
    mac: str = ""
    token: str = ""
    ok: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, item: object) -> _Action | None:
        """A saved action, checked (the file is root's, but a bad one is skipped, not fatal)."""
        if not isinstance(item, dict) or item.get("kind") not in ("fire", "result"):
            return None
        try:
            return cls(str(item["kind"]), float(item["when"]), str(item["mac"]),
                       str(item["token"]), item["ok"] is True)  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def _marker_action(event: Event) -> _Action | None:
    """A fetch of a plan's marker (over TFTP, or HTTP answered 200): the plan of that MAC with
    that token was taken. The file's name is the evidence; no address is involved."""
    ok = event.kind == "sent" or (event.kind == "http" and event.detail in ("200", "206"))
    if not ok or not MARKER_RE.fullmatch(event.path):
        return None
    name = event.path.removeprefix("plans/")
    mac, token = name[:17].replace("-", ":"), name[18:]
    return _Action("fire", event.time, mac=mac, token=token)


def _report_action(report: jobreport.Report) -> _Action:
    return _Action("result", report.time, token=report.token, ok=report.ok)


def _act(machine: Machine, w: Watcher, waiting: list[_Action], emit: Callable[[str], None]) -> str:
    """Carry out the waiting actions in order; those that cannot be done now (the lock is busy,
    the state file unreadable) stay, with the reason returned ("" when all were done)."""
    while waiting:
        action = waiting[0]
        try:
            lines = _apply_action(machine, w, action)
        except PxeprovError as exc:  # busy (exit 6), a state caught mid-edit (exit 2), ...
            return str(getattr(exc, "message", exc)) or type(exc).__name__
        waiting.pop(0)
        for line in lines:
            emit(line)
    return ""


def _apply_action(machine: Machine, w: Watcher, action: _Action) -> list[str]:
    state = pipeline.load_state(machine.root)  # the plans as they are now, not as last seen
    stamp = _time(time.time())
    if action.kind == "fire":
        plan = next((p for p in state.plans if p.mac == action.mac), None)
        if plan is None or plan.token != action.token or plan.fired:
            return []  # an old plan's marker, another plan's: nothing to do
        fired = plans_command.fire(machine, action.mac, action.token, action.when)
        w.refresh(machine)
        out = []
        for p in fired:
            what = "its job runs now; its report says how it ended" if p.imaging else ""
            out.append(f"{stamp}  {p.mac}  plan fired ({plan_label(p)}): from now on it boots "
                       + plan_now(p) + (f"; {what}" if what else ""))  # fmt: skip
        return out
    plan = next((p for p in state.plans if p.token and p.token == action.token), None)
    if plan is None or not plan.imaging or not plan.fired or plan.result:
        return []  # no such plan, not taken yet, or it has its result: nothing to do
    result, reason = ("done", DONE) if action.ok else ("failed", FAILED)
    done = plans_command.record_result(machine, plan.mac, action.token, result, reason,
                                       action.when)  # fmt: skip
    w.refresh(machine)
    word = "job done" if action.ok else "job failed"
    return [f"{stamp}  {p.mac}  {word} ({plan_label(p)}): {reason}" for p in done]


DONE = "Clonezilla reached its end and logged no failed partition"
FAILED = (
    "Clonezilla stopped before its end or failed a partition: see /var/log/clonezilla.log on the "
    "machine"
)


def _listen(w: Watcher, options: WatchOptions, emit: Callable[[str], None]) -> (
    jobreport.Listener | None
):  # fmt: skip
    """The jobs' reports, on the server's address."""
    reports = next((log.path for log, kind in w.logs if kind == "reports"), None)
    if options.report_port is None or reports is None or w.state.network is None:
        return None
    address = str(w.state.network.address)
    try:
        fsutil.make_dirs(reports.parent)
        return jobreport.Listener(address, options.report_port, reports)
    except (OSError, PxeprovError) as exc:
        emit(f"cannot take the imaging jobs' reports on {address}:{options.report_port} "
             f"({exc}): imaging plans will show no result")  # fmt: skip
        return None


def _resume(w: Watcher, place: Path) -> bool:
    """The place this watcher kept when it last ran, and what it had not done yet."""
    raw = fsutil.read_bytes(place, limit=1 << 20)
    if raw is None:
        return False
    try:
        saved = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(saved, dict) or not isinstance(saved.get("logs"), dict):
        return False
    resumed = False
    for log, _kind in w.logs:
        if log.resume(saved["logs"].get(str(log.path))):
            resumed = True
        else:
            log.start_at_end()
    for item in saved.get("waiting", []):
        action = _Action.from_dict(item)
        if action is not None:
            w.resumed_actions.append(action)
    return resumed


def _save_place(w: Watcher, waiting: list[_Action], place: Path) -> None:
    data = {
        "logs": {str(log.path): log.place() for log, _kind in w.logs},
        "waiting": [a.as_dict() for a in waiting],
    }
    raw = json.dumps(data, sort_keys=True).encode()
    if raw == w.saved_place:
        return
    try:
        fsutil.write_atomic(place, raw, mode=0o600)
    except PxeprovError:
        return  # kept in memory; tried again at the next change
    w.saved_place = raw


def _stage_detail(client: Client, stage: str) -> str:
    how = client.how.get(stage)
    return f"  {how}" if how else ""


@dataclass(frozen=True)
class StatusLine:
    client: Client
    stalled: str  # "" when it moved recently or finished


def status(machine: Machine, options: WatchOptions) -> list[StatusLine]:
    """Every client seen since `options.since` (default: the last hour), with its stages."""
    since = options.since if options.since is not None else time.time() - 3600
    w = _watcher(machine, WatchOptions(options.mac, since, options.stall, options.dnsmasq_log,
                                       options.nginx_log))  # fmt: skip
    now = time.time()
    for event in w.events(now):
        w.tracker.feed(event)
    clients = sorted(w.tracker.clients.values(), key=lambda c: c.started())
    return [StatusLine(c, w.stalled(c, now)) for c in clients if w.wanted(c)]
