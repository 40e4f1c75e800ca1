"""Multicast restore sessions: `assign MAC… --restore IMAGE --multicast` makes one, and its
sender runs as a service until the image is sent.

- The session is state (`[[sessions]]`): its image, ports, data address and waits. Its machines'
  restore plans name it, and their boot line runs Clonezilla's multicast client
  (`ocs-sr … --mcast-port P multicast_restoredisk`). Each plan still fires on its own marker
  and ends on its own job's report, as a unicast restore does.
- The sender is `pxeprov session-run NAME`: Clonezilla's feeder (multicast.FEED) under a
  supervisor that reads udp-sender's output into the session's progress file. On a box with
  systemd it is the transient unit pxeprov-mcast-NAME; without, a process of its own session
  with a pid file. It ends when the last partition is sent; then the session is marked sent
  (or failed), and a machine the sender dropped gets its plan marked failed, with the reason.
- `check_senders` is run by the commands that touch sessions and by pxeprov-watch: a sender
  whose session is gone is stopped; a session whose sender is not running is resumed when no
  partition was sent yet (a reboot while it waited), else marked failed (its machines stopped
  mid-partition and cannot finish). Each says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import FrameType

from pxeprov import multicast, network, pipeline, system
from pxeprov.errors import CommandError, InputError
from pxeprov.multicast import Progress
from pxeprov.pipeline import Change, Machine
from pxeprov.state import Plan, Session, State, utc_stamp

WRITE_EVERY = 1.0  # seconds between two writes of the progress file while bytes flow


@dataclass(frozen=True)
class MulticastOptions:
    clients: int | None = None  # None: as many as machines
    max_wait: int = 300
    part_pause: int = 30
    bitrate: str = ""
    address: str | None = None
    port: int | None = None
    interface: str | None = None
    drop_retries: int = 30


def active(state: State) -> list[Session]:
    return [s for s in state.sessions if not s.ended]


def repository_dir(machine: Machine, state: State) -> Path:
    if not state.repo_path:
        raise InputError(
            "a multicast session sends from this box's image repository, and it has none",
            "`pxeprov repo init` makes one (images saved with `assign --save` go there)",
        )
    return machine.root.path(PurePosixPath(state.repo_path))


def new_session(
    machine: Machine,
    state: State,
    image: str,
    disk: str,
    name: str,
    macs: list[str],
    options: MulticastOptions,
) -> Session:
    """The session `assign --multicast` asks for, checked against the state and this box:
    the image is in the repository and was saved from a disk of the name restored (Clonezilla's
    multicast client restores no other), the name is free, the interface can multicast. (That
    no machine is in another running session, assign checks for every plan it makes.)"""
    repo = repository_dir(machine, state)
    saved = multicast.read_image(repo / image)
    if saved.disks != [disk]:
        raise InputError(
            f"{image} was saved from {' '.join(saved.disks)}, and Clonezilla's multicast "
            f"restore writes only a disk of that name (not {disk})",
            f"--disk {saved.disks[0]}, or rename the image's disk with Clonezilla's "
            f"`cnvt-ocs-dev -b -d {state.repo_path} {image} {saved.disks[0]} {disk}`"
            if len(saved.disks) == 1
            else "a multicast session restores an image of one disk",
        )
    old = state.session(name)
    if old is not None:
        others = [p.mac for p in state.plans if p.session == name and p.mac not in macs]
        if not old.ended or others:
            raise InputError(
                f"the session {name!r} exists ({', '.join(others) or 'its sender runs'})",
                f"`pxeprov unassign --group {name}` ends it; or choose another --group",
            )
    net = state.network
    if net is None:
        raise InputError("pxeprov is not set up here", "run `pxeprov init` first")
    interface = options.interface or net.interface
    flag = multicast.interface_multicast(interface)
    if flag is None:
        raise InputError(f"the interface {interface} does not exist here")
    if not flag:
        raise InputError(
            f"the interface {interface} cannot multicast (no MULTICAST flag)",
            f"`ip link set {interface} multicast on`, or choose --mcast-interface",
        )
    clients = options.clients if options.clients is not None else len(macs)
    if not 1 <= clients <= len(macs):
        raise InputError(f"--clients {clients}: from 1 to the {len(macs)} machines given")
    return Session(
        name=name,
        image=image,
        port=options.port if options.port is not None else multicast.free_port(state, name),
        address=options.address or multicast.free_address(state, name),
        clients=clients,
        max_wait=options.max_wait,
        part_pause=options.part_pause,
        bitrate=options.bitrate,
        drop_retries=options.drop_retries,
        interface=options.interface or "",
        created=utc_stamp(),
    )


def session_name(state: State, group: str) -> str:
    """The group's name, else the first free `mcast-N`."""
    if group:
        return group
    taken = {s.name for s in state.sessions} | {p.group for p in state.plans}
    return next(f"mcast-{n}" for n in range(1, 10000) if f"mcast-{n}" not in taken)


def prune(state: State) -> tuple[Session, ...]:
    """The sessions some plan still names."""
    named = {p.session for p in state.plans}
    return tuple(s for s in state.sessions if s.name in named)


# ---------------------------------------------------------------- starting and stopping


def _argv(machine: Machine, name: str) -> list[str]:
    argv = [sys.executable, "-m", "pxeprov"]
    if not machine.root.is_system:
        argv += ["--root", str(machine.root.base)]
    return [*argv, "session-run", name]


def _systemd() -> bool:
    return system.Service("pxeprov-watch").systemd_running()


def running(machine: Machine, name: str) -> bool:
    """Whether the session's sender runs: its pid file's process, or on a box with systemd
    its unit (active before the sender wrote its pid file)."""
    if multicast.sender_pid(machine.root, name) is not None:
        return True
    if not (_systemd() and machine.root.is_system):
        return False
    unit = f"{multicast.unit(name)}.service"
    return system.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0


def start(machine: Machine, name: str) -> str:
    """Start the session's sender; how, in words."""
    root = machine.root
    if running(machine, name):
        return "its sender runs already"
    argv = _argv(machine, name)
    if _systemd() and root.is_system:
        unit = multicast.unit(name)
        system.run(["systemctl", "reset-failed", f"{unit}.service"], check=False)
        system.run(["systemd-run", f"--unit={unit}", "--collect", "--quiet",
                    "--property=KillMode=control-group", "--setenv=PYTHONUNBUFFERED=1",
                    f"--description=pxeprov: multicast session {name}", *argv],
                   timeout=60)  # fmt: skip
        return f"systemd unit {unit} (`journalctl -u {unit}`)"
    log = multicast.log_file(root, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.parent.chmod(0o700)
    try:
        system.spawn(argv, multicast.pid_file(root, name), log)
    except CommandError:
        if multicast.sender_pid(root, name) is not None:
            return "its sender runs already"  # started meanwhile by another command
        raise
    return f"pid {multicast.sender_pid(root, name)}, its log {log}"


# ---------------------------------------------------------------- the sender itself


def run_sender(machine: Machine, name: str, emit: Callable[[str], None] = print) -> Progress:
    """`pxeprov session-run NAME`: run Clonezilla's feeder for the session until it has sent
    every partition (or is stopped), keeping the progress file; then record the end."""
    root = machine.root
    state = pipeline.load_state(root)
    session = state.session(name)
    if session is None:
        raise InputError(f"no session {name!r} in the state")
    if session.ended:
        raise InputError(f"the session {name!r} ended ({session.outcome}) at {session.ended}")
    assert state.network is not None
    repo = repository_dir(machine, state)
    parts = multicast.image_parts(repo / session.image)
    interface = session.interface or state.network.interface
    pid_file = multicast.pid_file(root, name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    # one sender per session: a second one (two commands starting it at once) leaves
    lock = os.open(pid_file.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"a sender of the session {name!r} runs already") from None
    progress = Progress(name, parts, pid=os.getpid())
    pid_file.write_text(f"{os.getpid()}\n")
    multicast.write_progress(root, progress)
    argv = multicast.feed_argv(session, repo, interface, multicast.log_file(root, name).parent)
    emit(f"session {name}: {session.image} ({' '.join(parts)}) on {interface}, "
         f"{session.address} ports {session.port}-{session.port + 2 * len(parts) - 1}, "
         f"{session.clients} machines, at most {session.max_wait} s after the first")  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    progress.feeder = proc.pid
    multicast.write_progress(root, progress)
    stopped: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    err = proc.stderr
    assert err is not None
    last_write = 0.0
    tail: list[str] = []
    try:
        for line in multicast.split_lines(iter(lambda: os.read(err.fileno(), 65536), b"")):
            changed = progress.feed(line, network.neighbour)
            if not line.startswith("bytes="):
                tail = [*tail[-5:], line.strip()]
            if changed:
                emit(f"session {name}: {line.strip()}")
            now = time.monotonic()
            if changed or now - last_write >= WRITE_EVERY:
                multicast.write_progress(root, progress)
                last_write = now
        rc = proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    if stopped:
        progress.phase, progress.message = "stopped", f"stopped by signal {stopped[0]}"
    elif rc == 0 and progress.part == len(parts) and progress.phase == "between":
        progress.phase = "sent"
        progress.message = (f"{len(parts)} partitions, {progress.bytes_sent / 1e6:.1f} MB, "
                            f"{progress.rexmits} packets sent again")  # fmt: skip
    else:
        progress.phase = "failed"
        why = next((t for t in reversed(tail) if not t.startswith("pxeprov-feed")), "")
        progress.message = f"the feeder ended with {rc} in partition {progress.part}: {why}"
    multicast.write_progress(root, progress)
    emit(f"session {name}: {progress.phase}: {progress.message}")
    try:
        # Stopped by a signal (unassign, or the box shutting down): the session is not ended
        # here; the next check_senders resumes it if nothing was sent, or fails it.
        if not stopped:
            record_end(machine, name, progress)
    finally:
        pid_file.unlink(missing_ok=True)
    return progress


def _reason(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:300]


def record_end(machine: Machine, name: str, progress: Progress) -> list[Plan]:
    """The session ended: mark it, and fail the plans of machines the sender dropped (their
    job cannot finish). Machines that finished report themselves. The plans failed."""
    failed: list[Plan] = []
    dropped = {r.mac: r for r in progress.receivers if r.dropped and r.mac}
    stamp = utc_stamp()

    def build(previous: State) -> Change:
        session = previous.session(name)
        failed.clear()
        if session is None or session.ended:
            return Change(previous)
        sessions = tuple(
            replace(s, ended=stamp, outcome=progress.phase, reason=_reason(progress.message))
            if s.name == name
            else s
            for s in previous.sessions
        )
        plans = []
        for p in previous.plans:
            r = dropped.get(p.mac)
            if p.session == name and r is not None and p.fired and not p.result:
                why = f"the multicast sender dropped it in partition {r.dropped}: {r.why}"
                p = replace(p, result="failed", reported=stamp, reason=_reason(why))
                failed.append(p)
            plans.append(p)
        return Change(previous.with_changes(sessions=sessions, plans=tuple(plans)))

    pipeline.run(machine, build)
    return failed


# ---------------------------------------------------------------- after a kill, a crash, a reboot


def check_senders(machine: Machine, *, act: bool = True) -> list[str]:
    """Senders and sessions that do not match: what was done (or, without `act`, what is
    wrong), one line each."""
    root = machine.root
    try:
        state = pipeline.load_state(root)
    except InputError:
        return []
    notes = []
    live = {s.name for s in active(state)}
    for name, pid in multicast.senders(root).items():
        if name in live:
            continue
        if pid is None:
            if act:
                if multicast.kill_feeder(root, name):
                    notes.append(f"ended the udp-sender a killed sender of the session "
                                 f"{name!r} left behind")  # fmt: skip
                multicast.pid_file(root, name).unlink(missing_ok=True)
            continue
        if act:
            multicast.stop(root, name)
            notes.append(f"stopped a leftover sender of the session {name!r} (pid {pid}), "
                         "which is no longer in the state")  # fmt: skip
        else:
            notes.append(f"a sender of the session {name!r} runs (pid {pid}), which is "
                         "not in the state: `pxeprov plans` (as root) stops it")  # fmt: skip
    for session in active(state):
        if running(machine, session.name):
            continue
        if act and multicast.kill_feeder(root, session.name):
            notes.append(f"ended the udp-sender a killed sender of the session "
                         f"{session.name!r} left behind")  # fmt: skip
        progress = multicast.read_progress(root, session.name)
        sent_some = progress is not None and (progress.started or progress.part > 1)
        if not act:
            notes.append(f"the sender of the session {session.name!r} is not running"
                         + (" (it stopped mid-partition)" if sent_some else ""))  # fmt: skip
            continue
        if not sent_some:
            how = start(machine, session.name)
            notes.append(f"the sender of the session {session.name!r} was not running (a "
                         "reboot or a crash before it sent anything): started it again, "
                         f"{how}")  # fmt: skip
            continue
        assert progress is not None
        part = progress.part
        progress.phase = "failed"
        progress.message = (f"the sender stopped in partition {part} of {len(progress.parts)} "
                            "(a kill, a crash or a reboot)")  # fmt: skip
        progress.receivers = [
            replace(r, dropped=r.dropped or part, why=r.why or "the sender stopped")
            for r in progress.receivers
        ]
        multicast.write_progress(root, progress)
        record_end(machine, session.name, progress)
        notes.append(f"the session {session.name!r} failed: {progress.message}; its machines "
                     "that joined cannot finish (assign them again)")  # fmt: skip
    return notes


def stop_gone(machine: Machine, names: list[str]) -> list[str]:
    """Stop the senders of sessions just removed from the state."""
    notes = []
    for name in names:
        pid = multicast.stop(machine.root, name)
        if pid is not None:
            notes.append(f"stopped the sender of the session {name!r} (pid {pid})")
    return notes


# ---------------------------------------------------------------- seeing a session


def describe(machine: Machine, state: State | None = None) -> list[str]:
    """Every session in words: its settings, where it is, who joined, who was dropped."""
    root = machine.root
    state = state or pipeline.load_state(root)
    lines = []
    for s in state.sessions:
        macs = [p.mac for p in state.plans if p.session == s.name]
        interface = s.interface or (state.network.interface if state.network else "?")
        cap = f"at most {s.bitrate}bit/s" if s.bitrate else "no bitrate cap"
        lines.append(
            f"Session {s.name}: {s.image} over multicast to {len(macs)} machines on {interface} "
            f"({s.address}, ports from {s.port}); starts with {s.clients} machines or "
            f"{s.max_wait} s after the first; {s.part_pause} s between partitions; {cap}; a "
            f"silent machine dropped after {s.drop_retries} retries"
        )
        progress = multicast.read_progress(root, s.name)
        if s.ended:
            lines.append(
                f"    ended {s.ended}: {s.outcome}" + (f": {s.reason}" if s.reason else "")
            )
        elif progress is None:
            lines.append("    its sender has not started")
        else:
            pid = multicast.sender_pid(root, s.name)
            running = f"sender pid {pid}" if pid else "its sender is NOT running"
            lines.append(f"    now: {progress.summary()} ({running})")
        if progress is None:
            continue
        joined = [r for r in progress.receivers if not r.dropped]
        if joined:
            lines.append("    joined: " + ", ".join(f"{r.mac or '?'} ({r.ip})" for r in joined))
        for r in progress.receivers:
            if r.dropped:
                lines.append(f"    dropped: {r.mac or '?'} ({r.ip}) in partition {r.dropped}: "
                             f"{r.why}")  # fmt: skip
    return lines


def progress_json(machine: Machine, name: str) -> dict[str, object] | None:
    progress = multicast.read_progress(machine.root, name)
    if progress is None:
        return None
    return {
        "phase": progress.phase,
        "partition": progress.part,
        "partitions": progress.parts,
        "bytes_sent": progress.bytes_sent,
        "summary": progress.summary(),
        "receivers": [dataclasses.asdict(r) for r in progress.receivers],
    }
