"""`watch` and `status`: the boot stages each client reached, from dnsmasq's log (the file
pxeprov's config names) and nginx's access log; a client that stops is reported as stalled
after its last stage, with the likely cause. Reads only.

`watch` follows the logs as they grow (a rotated or truncated log is reopened) and prints a line
per stage reached; `status` prints one line per client seen since a time, and exits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pxeprov import boot, bootlog, pipeline, system
from pxeprov import state as state_mod
from pxeprov.bootlog import Client, Event, Tracker
from pxeprov.commands import plans as plans_command
from pxeprov.errors import InputError
from pxeprov.paths import DNSMASQ_LOG, NGINX_ACCESS_LOG, STATE_FILE
from pxeprov.pipeline import Machine
from pxeprov.render import plan_label, plan_now
from pxeprov.state import Plan, State

POLL = 0.5  # seconds between looks at the logs
DEFAULT_STALL = 30.0  # seconds without progress before a client is called stalled
_MAX_READ = 64 << 20  # bytes read from a log at once


@dataclass(frozen=True)
class WatchOptions:
    mac: str | None = None
    since: float | None = None  # epoch seconds; None: from now on (watch), the last hour (status)
    stall: float = DEFAULT_STALL
    dnsmasq_log: Path | None = None
    nginx_log: Path | None = None
    fire: bool = False  # mark one-shot plans fired when their machine fetched the kernel


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


def _neighbour(ip: str) -> str | None:
    """The MAC of `ip` in this host's neighbour table."""
    if not system.have("ip"):
        return None
    done = system.run(["ip", "-j", "neigh", "show", "to", ip], check=False, timeout=10)
    try:
        entries = json.loads(done.stdout or "[]")
    except ValueError:
        return None
    for entry in entries:
        mac = entry.get("lladdr")
        if isinstance(mac, str):
            return mac.lower()
    return None


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

    def refresh(self, machine: Machine) -> None:
        """The state again when its file changed (a plan assigned, an image added while this
        watches): the stages of files and the plans follow it."""
        sig = _state_signature(machine)
        if sig == self.state_sig:
            return
        self.state_sig = sig
        self.state = pipeline.load_state(machine.root)
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
            else:
                found += bootlog.parse_nginx(lines)
        since = self.options.since
        found = [e for e in found if since is None or e.time >= since]
        return sorted(found, key=lambda e: e.time)

    def wanted(self, client: Client) -> bool:
        return self.options.mac is None or client.mac == self.options.mac

    def has_rootfs(self, client: Client) -> bool:
        image = next((i for i in self.state.images if i.kernel == client.kernel), None)
        return image is not None and bool(image.rootfs or image.files)

    def stalled(self, client: Client, now: float) -> str:
        """Why the client is stalled, or "" (it moves, or it is done)."""
        if bootlog.expected_next(client, self.has_rootfs(client)) is None and not client.problem:
            return ""
        if client.problem:
            return client.problem
        if now - client.last < self.options.stall:
            return ""
        return bootlog.stall_cause(client)


def _stages(machine: Machine, state: State) -> dict[str, str]:
    """Which stage each served file is, for the chain this state serves."""
    chain, _ = boot.resolve_uefi(state, machine.root, preview=True)
    return bootlog.stage_of_files(state, chain)


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
    lookup = _neighbour if machine.root.is_system or options.dnsmasq_log else None
    tracker = Tracker(_stages(machine, state), neighbour=lookup)
    roots = (str(state.tftp_root), str(machine.root.path(state.tftp_root)))
    return Watcher(state, tracker, logs, options, roots, state_sig=sig)


def _time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def watch(
    machine: Machine,
    options: WatchOptions,
    emit: Callable[[str], None],
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Follow the logs; `emit` a line per stage reached and per stall, until `keep_going` says
    no (the CLI: until Ctrl-C)."""
    w = _watcher(machine, options)
    if options.since is None:
        for log, _kind in w.logs:
            log.start_at_end()
    emit(f"Watching {' and '.join(str(log.path) for log, _ in w.logs)} (Ctrl-C ends).")
    shown: dict[str, set[str]] = {}
    while keep_going():
        now = time.time()
        w.refresh(machine)
        for event in w.events(now):
            client = w.tracker.feed(event)
            if client is None or not w.wanted(client):
                continue
            for stage in bootlog.STAGES:
                if stage in client.reached and stage not in shown.setdefault(client.mac, set()):
                    shown[client.mac].add(stage)
                    what = _stage_detail(client, stage)
                    emit(f"{_time(client.reached[stage])}  {client.mac}  {client.firmware:<5} "
                         f"{client.ip or '-':<15} {bootlog.STAGE_WORDS[stage]}{what}")  # fmt: skip
                    w.said.pop(client.mac, None)
            if options.fire and client.reached:
                for line in _fire(machine, w, client):
                    emit(line)
        for client in w.tracker.clients.values():
            if not w.wanted(client):
                continue
            why = w.stalled(client, now)
            if why and w.said.get(client.mac) != why:
                w.said[client.mac] = why
                stage = bootlog.STAGE_WORDS.get(client.stage, "nothing")
                emit(f"{_time(now)}  {client.mac}  stalled after {stage}: {why}")
        time.sleep(POLL)


def due(plan: Plan, state: State, client: Client) -> float | None:
    """When `client` carried out its one-shot `plan` (None: not yet): it fetched the plan's
    kernel (a `--local` plan: its menu, which sends it to its disk) after the plan was
    assigned. A boot before the assignment, still in the logs, never fires it."""
    if not plan.one_shot or plan.fired:
        return None
    if plan.action == "local":
        stage = "menu"
    else:
        image = next((i for i in state.images if i.name == plan.entry), None)
        if image is None or image.kernel != client.kernel:
            return None
        stage = "kernel"
    when = client.reached.get(stage)
    after = state_mod.stamp_epoch(plan.assigned)
    if when is None or (after is not None and int(when) < after):
        return None
    return when


def _fire(machine: Machine, w: Watcher, client: Client) -> list[str]:
    """A one-shot plan this client carried out is fired (the state says so, and the menus no
    longer send the machine to it)."""
    w.refresh(machine)
    plan = next((p for p in w.state.plans if p.mac == client.mac), None)
    when = due(plan, w.state, client) if plan is not None else None
    if plan is None or when is None:
        return []
    fired = plans_command.fire(machine, {client.mac}, when)
    w.refresh(machine)
    return [
        f"{_time(time.time())}  {p.mac}  plan fired ({plan_label(p)}): from now on it boots "
        + plan_now(p)
        for p in fired
    ]


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
