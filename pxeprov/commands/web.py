"""The status page and its JSON API: the data pxeprov-watch writes for them, their address
(`web url`) and a new secret (`web rotate`).

nginx serves the page (`render`: index.html, status.js, status.css in WEB_DIR) and the data
(WEB_DATA, `api/v1/status.json` beside the page) under `/pxeprov/<token>/` only; no program
answers a request. pxeprov-watch (`watch --fire`) writes the data, atomically, when something
changed and at least every HEARTBEAT seconds, so that the page can tell live data from a watcher
that stopped. It is bounded: the MAX_MACHINES machines seen last, the MAX_EVENTS last lines.
What it holds is a copy of what the logs, the state and doctor say; never a plan's token, a
password or a repository's address.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxeprov import __version__, boot, bootlog, fsutil, pipeline, render
from pxeprov.bootlog import Client
from pxeprov.commands import doctor as doctor_command
from pxeprov.commands import plans as plans_command
from pxeprov.commands import session as session_command
from pxeprov.errors import InputError, PxeprovError
from pxeprov.pipeline import Change, Machine
from pxeprov.state import State, new_web_token, normal_mac

API = 1  # the data's version: its path (api/v1/) and its "api" field
HEARTBEAT = 10.0  # seconds: the data is written at least this often
MAX_MACHINES = 200  # the machines the data keeps, the ones seen last
MAX_EVENTS = 100  # the watcher's last lines
HEALTH_EVERY = 300.0  # seconds between two runs of doctor's checks (without its DHCP probe)
_MAX_PREVIOUS = 4 << 20  # bytes read of the data a watcher before this one wrote


def page_url(state: State) -> str:
    """The page's address with its token (the state must serve it: `render.web_token`)."""
    token = render.web_token(state)
    if not token or state.network is None:
        raise InputError(
            "the status page is not set up here",
            "it needs pxeprov's own nginx site: `pxeprov init` (with HTTP, the default) sets it up"
            if not state.http
            else "run `pxeprov init`: it adds the page",
        )
    port = "" if state.http_port == 80 else f":{state.http_port}"
    return f"http://{state.network.address}{port}/pxeprov/{token}/"


@dataclass(frozen=True)
class UrlResult:
    url: str
    notes: list[str]  # why the page may not show live data


def url(machine: Machine) -> UrlResult:
    """`web url`: the page's address, and whether what serves it and feeds it runs."""
    state = pipeline.load_state(machine.root)
    address = page_url(state)
    notes = []
    if machine.root.is_system:
        for name, why in (("nginx", "the page cannot be reached"),
                          ("pxeprov-watch", "the page shows no live data")):  # fmt: skip
            service = machine.services.get(name)
            if service is not None and service.manageable() and not service.is_active():
                notes.append(f"{name} is not running: {why} (`pxeprov init` starts it)")
    return UrlResult(address, notes)


def rotate(machine: Machine) -> tuple[UrlResult, pipeline.Run]:
    """`web rotate`: a new token (the first, for a state from before the page); nginx takes it
    at once, and the old address gets 403."""

    def build(previous: State) -> Change:
        if not previous.http or previous.network is None:
            page_url(previous)  # refused: no nginx site to serve a page
        return Change(previous.with_changes(web_token=new_web_token()))

    done = pipeline.run(machine, build)
    return UrlResult(page_url(done.change.state), []), done


# ---------------------------------------------------------------- the data


@dataclass
class Health:
    """doctor's checks (not its DHCP probe, which would send packets every few minutes), run
    in a thread every HEALTH_EVERY seconds: a check that waits (a fetch that times out) never
    holds the watcher up."""

    machine: Machine
    every: float = HEALTH_EVERY
    latest: dict[str, Any] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pxeprov-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.latest = health(self.machine)
            self._stop.wait(self.every)


def health(machine: Machine) -> dict[str, Any]:
    """doctor's summary as the page shows it."""
    when = time.time()
    try:
        report = doctor_command.doctor(machine, doctor_command.Options(probe=False))
    except Exception as exc:  # a thread of a service: said on the page, not a traceback
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        report = doctor_command.Report(
            (doctor_command.Check("doctor", "fail", f"doctor could not run: {message}"),), ""
        )
    summary = report.as_json()
    counts = collections.Counter(c.status for c in report.checks)
    return {
        "time": when,
        "status": summary["status"],
        "counts": {s: counts.get(s, 0) for s in ("pass", "info", "warn", "fail")},
        "checks": [
            {"name": c.name, "status": c.status, "message": c.message, "fix": c.fix}
            for c in report.checks
        ],
    }


def _plan(view: plans_command.PlanView) -> dict[str, Any]:
    """What the page shows of a plan: never its token, nor its repository (a password)."""
    p = view.plan
    return {
        "what": view.what,
        "now": view.now,
        "status": p.status,
        "one_shot": p.one_shot,
        "fired": p.fired,
        "result": p.result,
        "reason": p.reason,
        "group": p.group,
        "session": p.session,
        "progress": view.progress,
    }


def machine_json(
    client: Client, state: State, stalled: str, plan: dict[str, Any] | None
) -> dict[str, Any]:
    image = bootlog.image_of(state, client)
    order = sorted(client.reached, key=bootlog.STAGES.index)
    return {
        "mac": client.mac,
        "firmware": client.firmware,
        "address": client.ip,
        "first": client.started(),
        "last": client.last,
        "stage": client.stage,
        "stage_words": bootlog.STAGE_WORDS.get(client.stage, ""),
        "timeline": [
            {
                "stage": s,
                "words": bootlog.STAGE_WORDS[s],
                "time": client.reached[s],
                "detail": client.how.get(s, ""),
            }
            for s in order
        ],
        "stalled": stalled,
        "done": bool(client.reached)
        and not stalled
        and bootlog.expected_next(client, bootlog.has_rootfs(image)) is None,
        "image": image.name if image is not None else "",
        "earlier": False,
        "plan": plan,
    }


def _unseen(mac: str, plan: dict[str, Any]) -> dict[str, Any]:
    """A machine with a plan, not seen since the watcher started."""
    return {"mac": mac, "firmware": "", "address": "", "first": 0.0, "last": 0.0, "stage": "",
            "stage_words": "", "timeline": [], "stalled": "", "done": False, "image": "",
            "earlier": False, "plan": plan}  # fmt: skip


@dataclass
class PageData:
    """What pxeprov-watch keeps for the page, and writes to `path`."""

    path: Path
    machine: Machine
    started: float = field(default_factory=time.time)
    events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_EVENTS)
    )
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)  # mac -> from before
    health: Health | None = None
    written: float = 0.0  # when it was last written
    body: str = ""  # what was written then, without its time
    hostname: str = field(default_factory=socket.gethostname)
    _chain: tuple[State | None, str] = (None, "")  # the UEFI chain decided for that state

    def _uefi(self, state: State) -> str:
        """The UEFI chain served (ipxe, grub), decided again only when the state changed."""
        if self._chain[0] is not state:
            self._chain = (state, boot.decide(state, self.machine.root, preview=True).uefi)
        return self._chain[1]

    @classmethod
    def start(cls, path: Path, machine: Machine, health_every: float | None) -> PageData:
        """The data kept for the page; what a watcher before this one wrote stays, marked
        `earlier`, until its machine comes again. `health_every` None: doctor never runs."""
        data = cls(path, machine)
        data.earlier = _earlier(path)
        if health_every is not None:
            data.health = Health(machine, health_every)
            data.health.start()
        return data

    def close(self) -> None:
        if self.health is not None:
            self.health.stop()

    def note(self, line: str) -> None:
        self.events.append({"time": time.time(), "text": line})

    def snapshot(
        self,
        state: State,
        clients: Iterable[Client],
        stalled: Callable[[Client], str],
    ) -> dict[str, Any]:
        seen = {c.mac: c for c in clients if c.reached}
        views = {v.plan.mac: v for v in plans_command.views(state, seen)}
        machines = {
            mac: machine_json(c, state, stalled(c), _plan(views[mac]) if mac in views else None)
            for mac, c in seen.items()
        }
        for mac, old in self.earlier.items():
            if mac not in machines:
                view = views.get(mac)
                machines[mac] = {**old, "earlier": True,
                                 "plan": _plan(view) if view else None}  # fmt: skip
        for mac, view in views.items():
            if mac not in machines:
                machines[mac] = _unseen(mac, _plan(view))
        ordered = sorted(machines.values(), key=lambda m: (-m["last"], m["mac"]))
        net = state.network
        return {
            "api": API,
            "heartbeat": HEARTBEAT,
            "server": {
                "hostname": self.hostname,
                "interface": net.interface if net else "",
                "address": str(net.address) if net else "",
                "subnet": str(net.subnet) if net else "",
                "http_port": state.http_port,
                "layout": "http" if state.payload_base else "tftp",
                "uefi_chain": self._uefi(state),
                "version": __version__,
                "watcher_since": self.started,
            },
            "health": self.health.latest if self.health is not None else None,
            "machines": ordered[:MAX_MACHINES],
            "sessions": [_session(self.machine, s.name, s.image) for s in state.sessions],
            "images": [
                {
                    "name": i.name,
                    "label": i.label,
                    "kind": i.kind,
                    "size": i.size,
                    "version": i.version,
                    "default": i.default,
                }
                for i in state.images
            ],
            "events": list(self.events),
        }

    def write(
        self,
        state: State,
        clients: Iterable[Client],
        stalled: Callable[[Client], str],
        now: float | None = None,
    ) -> bool:
        """Write the data when it changed, or HEARTBEAT seconds after it was last written;
        nothing while the state has no page. True: written."""
        if not render.web_token(state):
            return False
        now = time.time() if now is None else now
        data = self.snapshot(state, clients, stalled)
        body = json.dumps(data, sort_keys=True)
        if body == self.body and now - self.written < HEARTBEAT:
            return False
        raw = json.dumps({**data, "generated": now}, sort_keys=True, indent=1).encode()
        try:  # world-readable: nginx's workers read it (they run as www-data, or nobody)
            fsutil.write_atomic(self.path, raw, mode=0o644)
        except PxeprovError:
            return False  # tried again at the next change or heartbeat
        self.body, self.written = body, now
        return True


def _session(machine: Machine, name: str, image: str) -> dict[str, Any]:
    progress: dict[str, Any] = dict(session_command.progress_json(machine, name) or {})
    return {
        "name": name,
        "image": image,
        "phase": progress.get("phase", "waiting"),
        "partition": progress.get("partition", 0),
        "partitions": len(progress.get("partitions") or []),
        "bytes_sent": progress.get("bytes_sent", 0),
        "summary": progress.get("summary", ""),
        "receivers": progress.get("receivers", []),
    }


def _earlier(path: Path) -> dict[str, dict[str, Any]]:
    """The machines the data held when the watcher started (its own file, still checked: a
    broken one is ignored)."""
    try:
        raw = fsutil.read_bytes(path, limit=_MAX_PREVIOUS)
        data = json.loads(raw) if raw is not None else None
    except (PxeprovError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("api") != API:
        return {}
    kept: dict[str, dict[str, Any]] = {}
    for m in data.get("machines", []):
        if not isinstance(m, dict) or not isinstance(m.get("mac"), str) or not m.get("timeline"):
            continue
        try:
            mac = normal_mac(m["mac"], "mac")
        except InputError:
            continue
        if isinstance(m.get("last"), (int, float)):
            kept[mac] = m
    return kept
