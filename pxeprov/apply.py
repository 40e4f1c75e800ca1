"""Runs a plan: validation first, then atomic writes, then the dnsmasq restart, with rollback."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pxeprov import fsutil
from pxeprov.errors import CommandError, ConflictError, PxeprovError
from pxeprov.paths import BACKUP_DIR, DNSMASQ_DROP_IN_DIR, MANIFEST, Root
from pxeprov.plan import FileAction, Op, Plan, manifest_bytes
from pxeprov.system import Service

Validator = Callable[[Path], None]


@dataclass
class Outcome:
    """What happened, for the CLI to print: (status, what) pairs in order."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    changed: bool = False

    def add(self, status: str, what: str) -> None:
        self.lines.append((status, what))


_PAST = {
    Op.CREATE: "created",
    Op.UPDATE: "updated",
    Op.IDENTICAL: "unchanged",
    Op.REMOVE: "removed",
    Op.CONFLICT: "replaced",
}


def _other_drop_ins(root: Root, own: set[PurePosixPath]) -> list[Path]:
    """Files in /etc/dnsmasq.d that Debian's dnsmasq loads besides pxeprov's own."""
    directory = root.path(DNSMASQ_DROP_IN_DIR)
    if not directory.is_dir():
        return []
    skip_suffixes = (".dpkg-dist", ".dpkg-old", ".dpkg-new", "~")
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.endswith(skip_suffixes)
        and DNSMASQ_DROP_IN_DIR / p.name not in own
    )


def validate(plan: Plan, root: Root, validators: Mapping[str, Validator]) -> None:
    """Every changed service config is checked by its service (`dnsmasq --test`, `nginx -t`)
    before anything replaces a live file; dnsmasq's also together with the other drop-ins it
    would load with it (a leftover `port=0` elsewhere makes dnsmasq refuse to start)."""
    own = {a.path for a in plan.files}
    with tempfile.TemporaryDirectory(prefix="pxeprov-test-") as tmp:
        for action in plan.files:
            service = action.service
            if service is None or action.new is None or not action.changes:
                continue
            validator = validators.get(service)
            if validator is None or action.path.suffix != ".conf":
                continue  # /etc/default/dnsmasq: shell variables, nothing to test
            candidate = Path(tmp) / action.path.name
            candidate.write_bytes(action.new)
            _check(validator, candidate, f"the new {action.path} is rejected by {service}")
            others = _other_drop_ins(root, own) if service == "dnsmasq" else []
            if others:
                combined = Path(tmp) / "combined.conf"
                combined.write_text("".join(f"conf-file={p}\n" for p in [candidate, *others]))
                names = ", ".join(str(DNSMASQ_DROP_IN_DIR / p.name) for p in others)
                _check(
                    validator,
                    combined,
                    f"the new {action.path} conflicts with {names}",
                    "move the other file out of /etc/dnsmasq.d",
                )


def _check(validator: Validator, candidate: Path, what: str, hint: str | None = None) -> None:
    try:
        validator(candidate)
    except CommandError as exc:
        raise CommandError(f"{what}, nothing was changed: {exc.message}", hint) from None


def check_conflicts(plan: Plan, force: bool) -> None:
    if plan.conflicts and not force:
        first = plan.conflicts[0]
        raise ConflictError(
            f"{first.path} {first.note}; not overwritten",
            "see the diff above; rerun with --force to overwrite it (a copy is kept in "
            f"{BACKUP_DIR})",
        )


def apply(
    plan: Plan,
    root: Root,
    *,
    force: bool,
    validators: Mapping[str, Validator],
    services: Mapping[str, Service] | None,
) -> Outcome:
    """Carry out `plan` under `root`. `services` is None when no system action may run."""
    check_conflicts(plan, force)
    if any(a.op is Op.PENDING for a in plan.files):
        raise PxeprovError("internal: plan still waits for packages to be installed")
    validate(plan, root, validators)

    outcome = Outcome()
    done: list[FileAction] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        for action in plan.files:
            _apply_one(action, root, stamp)
            if action.changes:
                done.append(action)
            note = f"  ({action.note})" if action.note and action.changes else ""
            outcome.add(_PAST[action.op], f"{action.path}{note}")
        manifest = dict(plan.manifest)
        for action in plan.files:
            if action.op is Op.REMOVE or (action.op is Op.CONFLICT and action.new is None):
                manifest.pop(str(action.path), None)
            elif action.tracked and action.new is not None:
                manifest[str(action.path)] = fsutil.sha256(action.new)
        if manifest != plan.manifest:
            fsutil.write_atomic(root.path(MANIFEST), manifest_bytes(manifest))
    except PxeprovError:
        _revert(done, root)
        raise
    outcome.changed = bool(done)
    for name in dict.fromkeys([*plan.restarts, *plan.services]):
        _restart(name, plan, root, services, done, outcome)
    return outcome


def _apply_one(action: FileAction, root: Root, stamp: str) -> None:
    target = root.path(action.path)
    if action.op is Op.CONFLICT and action.old is not None:
        # --force: keep the hand-edited file (never inside /etc/dnsmasq.d, which dnsmasq loads)
        backup = root.path(BACKUP_DIR / stamp / action.path.relative_to("/"))
        fsutil.write_atomic(backup, action.old, 0o600)
    if action.keep_original is not None and action.old is not None:
        fsutil.write_atomic(root.path(action.keep_original), action.old, action.mode)
    if action.op in (Op.REMOVE,) or (action.op is Op.CONFLICT and action.new is None):
        if action.restore_from is not None:
            original = fsutil.read_bytes(root.path(action.restore_from))
            if original is not None:
                fsutil.write_atomic(target, original)
                fsutil.remove(root.path(action.restore_from))
                return
        fsutil.remove(target)
    elif action.op in (Op.CREATE, Op.UPDATE, Op.CONFLICT):
        assert action.new is not None
        fsutil.write_atomic(target, action.new, action.mode)


def _revert(done: list[FileAction], root: Root) -> None:
    """Best effort: put back what this run already replaced, newest first."""
    for action in reversed(done):
        target = root.path(action.path)
        try:
            if action.old is None:
                fsutil.remove(target)
            else:
                fsutil.write_atomic(target, action.old, action.mode)
        except PxeprovError:
            continue


def _restart(
    name: str,
    plan: Plan,
    root: Root,
    services: Mapping[str, Service] | None,
    done: list[FileAction],
    outcome: Outcome,
) -> None:
    """Restart `name` when its config changed, start it when it is not running; when it does
    not start with the new config, put every file of this run back and restart again."""
    changed = name in plan.restarts
    if services is None:
        what = f"restart {name}" if changed else f"check that {name} runs"
        outcome.add("skipped", f"{what} (--root is not /)")
        return
    service = services[name]
    if not service.systemd_running():
        if changed:
            outcome.add(
                "skipped",
                f"restart {name}: systemd is not running on this machine; "
                f"restart {name} yourself for the new config to take effect",
            )
        else:
            outcome.add("skipped", f"check that {name} runs: systemd is not running")
        return
    if not changed:
        if service.is_active():
            outcome.add("unchanged", f"{name} (running, config unchanged)")
            return
        outcome.changed = True
    try:
        service.enable_and_restart()
    except CommandError as exc:
        if not any(a.service == name for a in done):
            raise CommandError(
                f"{name} does not start: {exc.message}", f"see `journalctl -u {name}`"
            ) from None
        _revert(done, root)
        fsutil.write_atomic(root.path(MANIFEST), manifest_bytes(plan.manifest))
        try:
            service.enable_and_restart()
            state = f"the previous config was put back and {name} restarted with it"
        except CommandError:
            state = f"the previous config was put back, but {name} does not start with it either"
        raise CommandError(
            f"{name} did not start with the new config ({exc.message}); {state}",
            f"see `journalctl -u {name}`",
        ) from None
    outcome.add("restarted", f"{name} (enabled at boot)")
