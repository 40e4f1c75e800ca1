"""Runs a plan: validation first, then the journal, then the changes, then the restarts.

Order, so that a failure or a kill at any point leaves the old set of files, the new one, or a
journal the next run completes (journal.py):
  1. conflicts and every rendered file's syntax are checked (dnsmasq --test, nginx -t,
     grub-script-check, pxeprov's own checks of the iPXE script and the pxelinux menu);
  2. new image directories are filled in staging directories (`images/.pxeprov-work/`, a
     directory only its owner may enter: neither dnsmasq nor nginx serves what is in it);
  3. the journal of every change is committed;
  4. the changes are made: image directories swapped in or out, files written atomically, the
     manifest last;
  5. services whose config changed are restarted; if one does not start, every change is undone
     (through a journal of its own) and the service restarted with the previous config;
  6. the old image directories are deleted and the journal is cleared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pxeprov import fsutil, journal
from pxeprov.errors import CommandError, ConflictError, FilesystemError, PxeprovError
from pxeprov.paths import BACKUP_DIR, DNSMASQ_DROP_IN_DIR, MANIFEST, Root
from pxeprov.plan import ChangeSet, DirAction, DirOp, Op, diff_text, manifest_bytes
from pxeprov.system import Service

Validator = Callable[[Path], None]
# Who rejects a file of each format, in messages.
CHECKERS = {
    "grub": "grub-script-check",
    "ipxe": "pxeprov's iPXE check",
    "pxelinux": "pxeprov's pxelinux check",
}
STAGING = ".staging-"
TRASH = ".trash-"
# Beside the image directories (the same filesystem: a rename swaps one in), the staging and
# trash directories of a run, in a directory dnsmasq's and nginx's users cannot enter (0700):
# dnsmasq's TFTP serves any file its user can read, dot names included, and a half copy or a
# replaced image is never served. Removed when a run ends, and by the next one after a crash.
WORK = ".pxeprov-work"
WORK_MODE = 0o700


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


def validate(plan: ChangeSet, root: Root, validators: Mapping[str, Validator]) -> None:
    """Every changed rendered file is checked in its own format before anything replaces a live
    file; dnsmasq's config also together with the other drop-ins dnsmasq would load with it (a
    leftover `port=0` elsewhere makes dnsmasq refuse to start)."""
    own = {a.path for a in plan.files}
    with tempfile.TemporaryDirectory(prefix="pxeprov-test-") as tmp:
        for action in plan.files:
            if action.syntax is None or action.new is None or not action.changes:
                continue
            validator = validators.get(action.syntax)
            if validator is None:
                raise PxeprovError(f"internal: no validator for {action.syntax} ({action.path})")
            candidate = Path(tmp) / action.path.name
            candidate.write_bytes(action.new)
            checker = CHECKERS.get(action.syntax, action.syntax)
            _check(validator, candidate, f"the new {action.path} is rejected by {checker}")
            others = _other_drop_ins(root, own) if action.syntax == "dnsmasq" else []
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


def check_conflicts(plan: ChangeSet, force: bool) -> None:
    if plan.conflicts and not force:
        first = plan.conflicts[0]
        raise ConflictError(
            f"{first.path} {first.note}; not overwritten",
            "see the diff above; rerun with --force to overwrite it (a copy is kept in "
            f"{BACKUP_DIR})",
            diff="".join(diff_text(a) for a in plan.conflicts),
        )


# ---------------------------------------------------------------- image directories


@dataclass(frozen=True)
class _Dir:
    action: DirAction
    staging: PurePosixPath
    trash: PurePosixPath
    had_old: bool


def _populate(plan: ChangeSet, root: Root) -> list[_Dir]:
    """Fill a staging directory for every new image directory; on any failure (a full disk, a
    damaged ISO, Ctrl-C) the staging directories go again and nothing else has changed."""
    done: list[_Dir] = []
    pid = os.getpid()
    try:
        for action in plan.dirs:
            name = action.path.name
            work = action.path.parent / WORK
            staging = work / f"{STAGING}{name}-{pid}"
            trash = work / f"{TRASH}{name}-{pid}"
            entry = _Dir(action, staging, trash, root.path(action.path).exists())
            fsutil.make_dirs(root.path(action.path.parent))
            if action.op is DirOp.INSTALL:
                _check_space(root.path(action.path.parent), action.size)
            work_dir(root.path(work))
            if action.op is DirOp.INSTALL:
                assert action.populate is not None
                real = root.path(staging)
                _fresh_dir(real)
                done.append(entry)
                action.populate(real)
                _sync_tree(real)
            else:
                done.append(entry)
    except BaseException:
        for entry in done:
            if entry.action.op is DirOp.INSTALL:
                shutil.rmtree(root.path(entry.staging), ignore_errors=True)
        _drop_work(root, plan.dirs)
        raise
    return done


def work_dir(path: Path) -> None:
    """The run's private directory beside the image directories: made 0700, or checked to be a
    directory (not a link) and made 0700 again."""
    try:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=WORK_MODE)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise FilesystemError(f"{path} is not a directory", f"remove it: pxeprov uses {WORK}")
        if stat.S_IMODE(st.st_mode) != WORK_MODE:
            path.chmod(WORK_MODE)
    except OSError as exc:
        raise fsutil.os_error("create", path, exc) from None


def _drop_work(root: Root, dirs: Iterable[DirAction]) -> None:
    """The run's private directories go when they are empty (a crash's leftovers stay there
    for the next run, which removes them: pipeline.recover)."""
    for parent in {a.path.parent for a in dirs}:
        with contextlib.suppress(OSError):
            root.path(parent / WORK).rmdir()


def _check_space(directory: Path, size: int) -> None:
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise fsutil.os_error("use", directory, exc) from None
    if size > free:
        raise FilesystemError(
            f"not enough space in {directory}: the image needs {size} bytes, {free} are free"
        )


def _fresh_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o755)
        path.chmod(0o755)  # the umask must not take world access away: dnsmasq serves it
    except OSError as exc:
        raise fsutil.os_error("create", path, exc) from None


def _sync_tree(path: Path) -> None:
    """fdatasync every file of a new image directory, then the directories: durable before it is
    renamed into use."""
    try:
        for dirpath, _dirs, names in os.walk(path):
            for name in names:
                fd = os.open(Path(dirpath) / name, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            fsutil.fsync_dir(Path(dirpath))
    except OSError as exc:
        raise fsutil.os_error("write", path, exc) from None


# ---------------------------------------------------------------- the journal of a plan


def _forward(
    plan: ChangeSet, dirs: list[_Dir], stamp: str
) -> tuple[journal.Journal, dict[str, str]]:
    """The journal that carries the plan out, and the manifest it ends with."""
    j = journal.Journal()
    for d in dirs:
        if d.action.op is DirOp.INSTALL:
            j.swap_in(d.action.path, d.staging, d.trash)
        else:
            j.move_out(d.action.path, d.trash)
    manifest = dict(plan.manifest)
    for a in plan.files:
        if not a.changes:
            continue
        if a.op is Op.CONFLICT and a.old is not None:
            # --force: keep the hand-edited file (never inside /etc/dnsmasq.d, which dnsmasq loads)
            j.write(BACKUP_DIR / stamp / a.path.relative_to("/"), a.old, 0o600)
        if a.keep_original is not None and a.old is not None:
            j.write(a.keep_original, a.old, a.mode)
        if a.new is None:  # REMOVE, or a CONFLICT of a file no longer rendered
            if a.restore_from is not None and a.restore is not None:
                j.write(a.path, a.restore)
                j.remove(a.restore_from)
            else:
                j.remove(a.path)
            manifest.pop(str(a.path), None)
        else:
            j.write(a.path, a.new, a.mode)
            if a.tracked:
                manifest[str(a.path)] = fsutil.sha256(a.new)
    if manifest != plan.manifest:
        j.write(MANIFEST, manifest_bytes(manifest))
    return j, manifest


def _backward(plan: ChangeSet, dirs: list[_Dir], pid: int) -> journal.Journal:
    """The journal that undoes `_forward`'s changes (after a failure or a failed restart)."""
    j = journal.Journal()
    for d in reversed(dirs):
        discard = d.trash.with_name(f"{TRASH}{d.action.path.name}-{pid}-undone")
        j.swap_back(d.action.path, d.trash, discard, d.had_old or d.action.op is DirOp.DELETE)
        j.delete_tree(discard)
    for a in reversed(plan.files):
        if not a.changes:
            continue
        if a.old is None:
            j.remove(a.path)
        else:
            j.write(a.path, a.old, a.mode)
        if a.restore_from is not None and a.restore is not None and a.new is None:
            j.write(a.restore_from, a.restore)
        if a.keep_original is not None and a.old is not None:
            j.remove(a.keep_original)
    j.write(MANIFEST, manifest_bytes(plan.manifest))
    for name in plan.restarts:
        j.restart(name)
    return j


def _without(j: journal.Journal, kinds: tuple[str, ...]) -> journal.Journal:
    return journal.Journal([s for s in j.steps if s["do"] not in kinds], j.blobs)


def _only(j: journal.Journal, kinds: tuple[str, ...]) -> journal.Journal:
    return journal.Journal([s for s in j.steps if s["do"] in kinds], j.blobs)


def apply(
    plan: ChangeSet,
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
    if not plan.dirs and not any(a.changes for a in plan.files):
        for action in plan.files:
            outcome.add(_PAST[action.op], str(action.path))
        for name in plan.services:
            _restart(name, plan, [], root, services, outcome)
        return outcome
    dirs = _populate(plan, root)
    forward, _manifest = _forward(plan, dirs, time.strftime("%Y%m%d-%H%M%S"))
    restarts = list(dict.fromkeys([*plan.restarts, *plan.services]))
    for name in plan.restarts:
        forward.restart(name)
    for d in dirs:
        forward.delete_tree(d.trash)
    try:
        journal.commit(root, forward)
    except BaseException:
        _drop_staging(root, dirs)
        _drop_work(root, plan.dirs)
        raise
    try:
        journal.carry_out(root, _without(forward, ("restart", "delete_tree")), None)
    except PxeprovError:
        _undo(plan, dirs, root, None)
        raise
    for d in dirs:
        verb = "installed" if d.action.op is DirOp.INSTALL else "removed"
        detail = f" ({len(d.action.files)} files)" if d.action.files else ""
        outcome.add(verb, f"{d.action.path}/{detail}")
    for action in plan.files:
        note = f"  ({action.note})" if action.note and action.changes else ""
        outcome.add(_PAST[action.op], f"{action.path}{note}")
    outcome.changed = bool(dirs) or any(a.changes for a in plan.files)
    for name in restarts:
        _restart(name, plan, dirs, root, services, outcome)
    journal.carry_out(root, _only(forward, ("delete_tree",)), None)
    journal.clear(root)
    _drop_work(root, plan.dirs)
    return outcome


def _drop_staging(root: Root, dirs: list[_Dir]) -> None:
    for d in dirs:
        if d.action.op is DirOp.INSTALL:
            shutil.rmtree(root.path(d.staging), ignore_errors=True)


def _undo(plan: ChangeSet, dirs: list[_Dir], root: Root, restart: journal.Restart | None) -> None:
    """Put back what this run changed, through a journal of its own (which replaces the run's:
    a kill during the undo is completed by the next run as an undo)."""
    backward = _backward(plan, dirs, os.getpid())
    journal.commit(root, backward)
    journal.carry_out(root, backward, restart, keep_going=True)
    _drop_staging(root, dirs)
    journal.clear(root)
    _drop_work(root, plan.dirs)


def _restart(
    name: str,
    plan: ChangeSet,
    dirs: list[_Dir],
    root: Root,
    services: Mapping[str, Service] | None,
    outcome: Outcome,
) -> None:
    """Restart `name` when its config changed, start it when it is not running; when it does
    not start with the new config, undo every change of this run and restart again."""
    changed = name in plan.restarts
    if services is None:
        what = f"restart {name}" if changed else f"check that {name} runs"
        outcome.add("skipped", f"{what} (--root is not /)")
        return
    service = services[name]
    if not service.manageable():
        if changed:
            outcome.add(
                "skipped",
                f"restart {name}: neither systemd nor an init script runs services on this "
                f"machine; restart {name} yourself for the new config to take effect",
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
        if not changed:
            raise CommandError(
                f"{name} does not start: {exc.message}", service.log_hint()
            ) from None
        _undo(plan, dirs, root, None)
        try:
            service.enable_and_restart()
            state = f"the previous config was put back and {name} restarted with it"
        except CommandError:
            state = f"the previous config was put back, but {name} does not start with it either"
        raise CommandError(
            f"{name} did not start with the new config ({exc.message}); {state}",
            service.log_hint(),
        ) from None
    outcome.add("restarted", f"{name} ({service.how()})")
