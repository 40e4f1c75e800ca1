"""`assign`, `unassign`, `plans`: what a machine (by MAC) boots instead of the menu.

A plan is state like the rest: each change goes through the pipeline (planned, validated by
every loader's checker, applied with rollback), and the menus render it with each loader's own
means (pxelinux's pxelinux.cfg/01-<mac>, GRUB's $net_default_mac, iPXE's ${mac}).

Imaging plans (restore, save) stand for one boot, as do plans assigned with --once. Each such
plan has a token, new at every assign, and its boot fetches the plan's own marker file
(plans/<mac>-<token>) before anything else: `pxeprov watch --fire` (the pxeprov-watch service)
marks the plan fired when it sees that fetch, and the machine boots its disk (`--then local`) or
the menu from then on. Nothing else fires a plan: not a kernel fetch, not an address.

An imaging job then reports its end itself (Clonezilla's own report to `ocs_server`, and a
message of pxeprov's naming the token after the job): the plan says done or failed, with the
reason, and never runs again by itself.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pxeprov import bootlog, multicast, pipeline, repository, wol
from pxeprov.apply import Outcome
from pxeprov.commands import session as sessions
from pxeprov.errors import InputError, PxeprovError
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import ChangeSet
from pxeprov.render import missed_session, plan_label, plan_now, plan_progress
from pxeprov.state import (
    Plan,
    Session,
    State,
    check_port,
    check_repo,
    normal_mac,
    repo_parts,
    utc_stamp,
)

ACTIONS = ("entry", "local", "menu", "restore", "save")


@dataclass(frozen=True)
class AssignOptions:
    macs: tuple[str, ...]
    action: str  # entry, local, menu (no plan), restore, save
    entry: str | None = None  # entry: the image; restore/save: the Clonezilla live image
    image: str | None = None  # restore/save: the disk image in the repository
    disk: str = "sda"
    then: str = "local"
    repo: str | None = None
    once: bool = False
    group: str = ""
    yes: bool = False  # a restore overwrites the disk: said yes to
    force: bool = False
    multicast: sessions.MulticastOptions | None = None  # a restore: one multicast session

    @classmethod
    def parse(
        cls,
        macs: tuple[str, ...],
        chosen: dict[str, str | bool | None],
        *,
        disk: str | None,
        then: str | None,
        multicast: sessions.MulticastOptions | None,
        repo: str | None,
        once: bool,
        group: str,
        yes: bool,
        force: bool,
    ) -> AssignOptions:
        """The options as the command line gives them, checked: `chosen` maps each of
        ACTIONS to its option's value (one must be given); `multicast`: the session's options
        when --multicast was given."""
        given = [name for name in ACTIONS if chosen.get(name)]
        if len(given) != 1:
            raise InputError(
                "give one of --entry NAME, --local, --menu, --restore IMAGE, --save IMAGE"
            )
        action = given[0]
        if action not in ("restore", "save") and (disk is not None or then is not None):
            raise InputError("--disk and --then are for --restore and --save")
        if (then or "local") not in ("local", "reboot", "poweroff"):
            raise InputError(f"--then {then!r}: one of local, reboot, poweroff")
        image = chosen.get(action) if action in ("restore", "save") else None
        entry = chosen.get("entry")
        return cls(
            macs,
            action,
            entry if isinstance(entry, str) else None,
            image if isinstance(image, str) else None,
            disk or "sda",
            then or "local",
            repo,
            once,
            group,
            yes,
            force,
            multicast,
        )


@dataclass
class PlansResult:
    plans: list[Plan]  # the plans changed (assign) or removed (unassign)
    plan: ChangeSet
    outcome: Outcome | None  # None: a dry run
    notes: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # what was done besides: senders started


def _macs(values: tuple[str, ...]) -> list[str]:
    if not values:
        raise InputError("give at least one MAC address")
    macs = [normal_mac(v) for v in values]
    twice = sorted({m for m in macs if macs.count(m) > 1})
    if twice:
        raise InputError(f"the MAC address {twice[0]} is given twice")
    return macs


def _live_image(state: State, wanted: str | None) -> str:
    """The Clonezilla live image that runs a job: the one asked for, else the only one."""
    clonezilla = [i.name for i in state.images if i.kind == "clonezilla"]
    if wanted is not None:
        if wanted not in clonezilla:
            raise InputError(
                f"--live {wanted!r} is not a Clonezilla image of the menus "
                f"({', '.join(clonezilla) or 'there is none'})"
            )
        return wanted
    if len(clonezilla) != 1:
        raise InputError(
            "imaging runs a Clonezilla live image: "
            + ("add one with `pxeprov add-image`" if not clonezilla
               else f"choose one with --live ({', '.join(clonezilla)})"),
        )  # fmt: skip
    return clonezilla[0]


def _repository(state: State, options: AssignOptions, macs: list[str]) -> str:
    """The repository of a restore or a save plan: --repo, else the state's. A save to this
    box's own repository (`repo init`) writes through its write share, with the password of
    the save plans that are armed or running, or a new one: the share takes it only until
    their jobs report or the plans are removed (pipeline.sync_write_access)."""
    if options.repo is not None:
        check_repo(options.repo, "--repo")
        if repository.own_write_share(state, options.repo):
            raise InputError(
                f"--repo names this box's write share {repository.WRITE_SHARE}, whose password "
                "pxeprov makes for each save plan",
                "leave --repo out: a save goes to this box's repository by itself",
            )
        return options.repo
    if not state.repo:
        raise InputError(
            "no image repository: give --repo smb://host/share/path (or nfs://, ssh://)",
            "`pxeprov repo init` makes this box serve one",
        )
    if options.action == "save" and state.repo_path:
        password = repository.write_password(state, skip=frozenset(macs))
        return repository.write_share_url(state, password or secrets.token_urlsafe(18))
    return ""  # the state's repository, as it is when the menus are rendered


def new_plans(
    state: State, options: AssignOptions, live: str | None = None, now: float | None = None
) -> list[Plan]:
    """The plans `assign` asks for, checked against the state (raises InputError), stamped
    with the time of `now` (only a boot after it fires a one-shot plan)."""
    if options.action not in ACTIONS:
        raise InputError(f"the action must be one of {', '.join(ACTIONS)}")
    macs = _macs(options.macs)
    if options.action == "menu":
        return []
    names = [i.name for i in state.images]
    entry = ""
    if options.action == "entry":
        if options.entry not in names:
            raise InputError(
                f"--entry {options.entry!r} is not an entry of the menus "
                f"({', '.join(names) or 'there is none'})"
            )
        entry = options.entry or ""
    repo = ""
    if options.action in ("restore", "save"):
        entry = _live_image(state, live)
        repo = _repository(state, options, macs)
        if options.action == "restore" and not options.yes:
            raise InputError(
                f"restoring {options.image} overwrites {options.disk} of "
                f"{', '.join(macs)}: add --yes to confirm"
            )
    one_shot = options.once or options.action in ("restore", "save")
    return [
        Plan(
            mac=mac,
            action=options.action,  # type: ignore[arg-type]  # checked above
            entry=entry,
            image=options.image or "" if options.action in ("restore", "save") else "",
            disk=options.disk if options.action in ("restore", "save") else "sda",
            then=options.then if options.action in ("restore", "save") else "reboot",
            repo=repo,
            once=options.once,
            group=options.group,
            assigned=utc_stamp(now),
            token=secrets.token_hex(8) if one_shot else "",
        )
        for mac in macs
    ]


def assign(
    machine: Machine, options: AssignOptions, *, live: str | None = None, dry_run: bool = False
) -> PlansResult:
    made: list[Plan] = []

    before: set[str] = set()

    def build(previous: State) -> Change:
        before.clear()
        before.update(s.name for s in previous.sessions)
        plans = new_plans(previous, options, live)
        macs = set(_macs(options.macs))
        kept = tuple(p for p in previous.plans if p.mac not in macs)
        new_sessions: tuple[Session, ...] = ()
        _check_sessions(previous, options, macs)
        if options.multicast is not None:
            name = sessions.session_name(previous, options.group)
            session = sessions.new_session(
                machine,
                previous,
                options.image or "",
                options.disk,
                name,
                sorted(macs),
                options.multicast,
            )
            new_sessions = (session,)
            plans = [replace(p, session=name, group=name) for p in plans]
        made[:] = plans
        warnings = []
        repo = (plans[0].repo or previous.repo) if plans and plans[0].imaging else ""
        parts = repo_parts(repo) if repo else {}
        if repository.own_write_share(previous, repo):
            warnings.append(
                f"the write share {repository.WRITE_SHARE} takes this save's password (in the "
                "boot line until the plan fires) until its job reports or the plan is removed"
            )
        elif parts.get("password"):
            warnings.append(
                f"the password of {parts['user']}@{parts['host']} is in "
                "the boot line of these machines: anyone on the LAN who can fetch TFTP or HTTP "
                "files can read it. Give this account write access to the image share only "
                "(restores need no account: a read-only guest share)"
            )
        names = {s.name for s in new_sessions}
        old = tuple(s for s in previous.sessions if s.name not in names)
        state = previous.with_changes(plans=kept + tuple(plans), sessions=old + new_sessions)
        state = state.with_changes(sessions=sessions.prune(state))
        return Change(
            state,
            install=tuple(machine.packages.missing(multicast.PACKAGES))
            if new_sessions and machine.root.is_system
            else (),
            warnings=tuple(warnings),
        )

    done = pipeline.run(machine, build, dry_run=dry_run, force=options.force)
    notes = list(done.warnings)
    said = []
    if done.outcome is not None:
        said = _after_sessions(machine, before, done.change.state, {p.session for p in made})
    if done.outcome is not None and any(p.one_shot for p in made):
        notes += _watcher_note(machine)
    return PlansResult(made, done.plan, done.outcome, notes, said)


def _check_sessions(state: State, options: AssignOptions, macs: set[str]) -> None:
    """A machine in a running session keeps its plan until it is unassigned; a save never
    writes into an image a session is sending; --multicast is for a restore from this box."""
    for plan in state.plans:
        session = state.session(plan.session) if plan.session else None
        if plan.mac in macs and session is not None and not session.ended:
            raise InputError(
                f"{plan.mac} is in the multicast session {session.name!r}",
                f"`pxeprov unassign {plan.mac}` first (or `unassign --group {session.name}`)",
            )
    if options.action == "save":
        reading = [s.name for s in sessions.active(state) if s.image == options.image]
        if reading:
            raise InputError(
                f"the multicast session {reading[0]!r} is sending {options.image}: a save "
                "into it would change the image under its machines",
                "save under another name, or wait for the session to end",
            )
    if options.multicast is not None:
        if options.action != "restore":
            raise InputError("--multicast is for --restore")
        if options.repo is not None:
            raise InputError(
                "--multicast sends the image from this box's repository: leave --repo out"
            )


def _after_sessions(
    machine: Machine, before: set[str], state: State, started: set[str]
) -> list[str]:
    """Stop the senders of sessions the change removed (`before`: the sessions it found, `state`
    the state it wrote); start those of new sessions."""
    after = {s.name for s in state.sessions}
    notes = sessions.stop_gone(machine, sorted(before - after))
    for name in sorted(started & after):
        how = sessions.start(machine, name)
        notes.append(f"the sender of the session {name!r} waits for its machines: {how}")
    return notes


def _watcher_note(machine: Machine) -> list[str]:
    """A one-shot plan fires only while pxeprov-watch follows the logs. Where no systemd keeps
    it running (its unit restarts it), a watcher that ended (a state it could not read when it
    started, a kill) is started again here, and said; else it is said that it does not run (on
    this box; nothing is said or done under --root)."""
    watcher = machine.services.get("pxeprov-watch")
    if watcher is None or not machine.root.is_system or watcher.is_active():
        return []
    if watcher.manageable() and not watcher.systemd_running():
        try:
            watcher.enable_and_restart()
        except PxeprovError as exc:
            return [f"pxeprov-watch is not running, and could not be started: {exc.message}"]
        if watcher.is_active():
            pid = watcher.pid()
            return [f"pxeprov-watch was not running: started it again"
                    f"{f' (pid {pid})' if pid else ''}, so that the plans fire"]  # fmt: skip
    return [
        "pxeprov-watch is not running: a one-shot plan fires (and a restore runs only once) "
        "while it follows the logs. `pxeprov init` starts it, or run `pxeprov watch --fire`"
    ]


def unassign(
    machine: Machine,
    macs: tuple[str, ...],
    group: str = "",
    *,
    dry_run: bool = False,
    force: bool = False,
) -> PlansResult:
    removed: list[Plan] = []
    before: set[str] = set()

    def build(previous: State) -> Change:
        before.clear()
        before.update(s.name for s in previous.sessions)
        wanted = set(_macs(macs)) if macs else set()
        if not macs and not group:
            raise InputError("give MAC addresses, or --group NAME")
        gone = [p for p in previous.plans if p.mac in wanted or (group and p.group == group)]
        if not gone:
            raise InputError("none of those machines has a plan (`pxeprov plans` lists them)")
        removed[:] = gone
        state = previous.with_changes(plans=tuple(p for p in previous.plans if p not in gone))
        return Change(state.with_changes(sessions=sessions.prune(state)))

    done = pipeline.run(machine, build, dry_run=dry_run, force=force)
    said = (
        [] if done.outcome is None else _after_sessions(machine, before, done.change.state, set())
    )
    return PlansResult(removed, done.plan, done.outcome, list(done.warnings), said)


def fire(machine: Machine, mac: str, token: str, when: float | None = None) -> list[Plan]:
    """The machine `mac` took its one-shot plan: it fetched the plan's marker, named by
    `token`. The plan is marked fired (from now on the machine boots its disk or the menu), and
    only that plan: another token (an older plan, another machine's) changes nothing. The plans
    fired ([] when none matched)."""
    fired: list[Plan] = []
    stamp = utc_stamp(when)

    def build(previous: State) -> Change:
        plans = []
        fired.clear()
        for p in previous.plans:
            if p.mac == mac and p.token == token and p.one_shot and not p.fired:
                p = replace(p, fired=stamp)
                fired.append(p)
            plans.append(p)
        return Change(previous.with_changes(plans=tuple(plans)))

    pipeline.run(machine, build)
    return fired


def record_result(
    machine: Machine,
    mac: str,
    token: str | None,
    result: str,
    reason: str,
    when: float | None = None,
) -> list[Plan]:
    """An imaging job reported its end: `result` (done, failed) and `reason`, for the plan of
    `mac` that its machine took (fired) and that has no result yet; with `token`, only the plan
    it names. The plans changed ([] when none matched)."""
    changed: list[Plan] = []
    stamp = utc_stamp(when)

    def build(previous: State) -> Change:
        plans = []
        changed.clear()
        for p in previous.plans:
            if (
                p.mac == mac
                and p.imaging
                and p.fired
                and not p.result
                and (token is None or p.token == token)
            ):
                p = replace(p, result=result, reported=stamp, reason=reason)
                changed.append(p)
            plans.append(p)
        return Change(previous.with_changes(plans=tuple(plans)))

    pipeline.run(machine, build)
    return changed


@dataclass(frozen=True)
class PlanView:
    plan: Plan
    what: str  # the plan in words
    now: str  # what the machine boots now
    last: str  # its last stage in the logs, "" when none
    progress: str = ""  # render.plan_progress: how far a one-shot plan is


def plans(machine: Machine, last_seen: dict[str, bootlog.Client] | None = None) -> list[PlanView]:
    return views(pipeline.load_state(machine.root), last_seen)


def views(state: State, last_seen: dict[str, bootlog.Client] | None = None) -> list[PlanView]:
    """Each plan of `state` in words: what it is, what its machine boots now, how far it is."""
    seen = last_seen or {}
    out = []
    for p in state.plans:
        client = seen.get(p.mac)
        last = ""
        if client is not None and client.stage:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(client.reached[client.stage]))
            last = f"{bootlog.STAGE_WORDS[client.stage]} at {when}"
        if missed_session(state, p):
            session = state.session(p.session)
            assert session is not None
            progress = (f"MISSED its multicast session {p.session}: it ended {session.ended} "
                        "before this machine took its plan")  # fmt: skip
            out.append(PlanView(p, plan_label(p), "the menu", last, progress))
            continue
        out.append(PlanView(p, plan_label(p), plan_now(p), last, plan_progress(p)))
    return out


def plans_json(machine: Machine, views: list[PlanView]) -> list[dict[str, Any]]:
    """`plans --json`: each plan's fields, what it boots now, and its session's progress."""
    return [
        {
            **dataclasses.asdict(v.plan),
            "one_shot": v.plan.one_shot,
            "status": v.plan.status,
            "what": v.what,
            "now": v.now,
            "last": v.last,
            "session_progress": sessions.progress_json(machine, v.plan.session)
            if v.plan.session
            else None,
        }
        for v in views
    ]


def wake(
    machine: Machine, macs: tuple[str, ...], group: str = "", port: int = wol.WOL_PORT
) -> wol.Sent:
    """Wake-on-LAN for the machines named, and those of `group` (by their plans), on the
    serving interface only."""
    state = pipeline.load_state(machine.root)
    if state.network is None:
        raise InputError("pxeprov is not set up here", "run `pxeprov init` first")
    wanted = _macs(macs) if macs else []
    if group:
        members = [p.mac for p in state.plans if p.group == group]
        if not members:
            raise InputError(f"no plan has the group {group!r} (`pxeprov plans` lists them)")
        wanted += [m for m in members if m not in wanted]
    if not wanted:
        raise InputError("give MAC addresses, or --group NAME")
    check_port(port, "--port")
    net = state.network
    return wol.wake(wanted, net.interface, net.subnet, net.address, port=port)
