"""The pipeline every command that changes something goes through:

    load the state -> the command's change -> render -> plan -> (lock) -> apply

A command says what it wants as a function of the state (`Build` -> `Change`); `run` takes the
lock (not for a dry run), finishes what an interrupted run left (journal), loads the state,
asks for the change, installs the packages it needs, plans, and applies (or, for a dry run,
returns the plan). Nothing here prints; results go back to the CLI.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pxeprov import boot, fsutil, journal, menucheck, render, syntax, system
from pxeprov import state as state_mod
from pxeprov.apply import STAGING, TRASH, WORK, Outcome, Validator, apply, check_conflicts
from pxeprov.boot import Decision
from pxeprov.errors import InputError, PxeprovError
from pxeprov.fsutil import locked, read_bytes
from pxeprov.images import kinds
from pxeprov.network import Probe
from pxeprov.paths import (
    DNSMASQ_DEFAULTS,
    LOCK_FILE,
    MANIFEST,
    SAMBA_SHARES,
    STATE_FILE,
    TEMPLATE_OVERRIDE_DIR,
    Root,
)
from pxeprov.plan import ChangeSet, DirAction, load_manifest, make_plan, with_dirs
from pxeprov.repository import REPO_ACCOUNT, REPO_MODE, write_password
from pxeprov.state import State

LOCK_TIMEOUT = 60.0
IMAGES_DIR = kinds.IMAGES_DIR  # under the TFTP root: one directory per image


def _dnsmasq_check(conf: Path) -> None:
    menucheck.check_dnsmasq_lines(conf)
    system.dnsmasq_test(conf)


def _samba_check(conf: Path) -> None:
    system.testparm_check(conf)


def _logrotate_check(conf: Path) -> None:
    menucheck.check_logrotate(conf)
    system.logrotate_check(conf)


# Each rendered format's validator (render.ManagedFile.syntax), run before a file goes live.
VALIDATORS: dict[str, Validator] = {
    "dnsmasq": _dnsmasq_check,
    "nginx": system.nginx_test,
    "grub": system.grub_script_check,
    "ipxe": menucheck.check_ipxe,
    "pxelinux": menucheck.check_pxelinux,
    "logrotate": _logrotate_check,
    "samba": _samba_check,
    "systemd": menucheck.check_unit,
}


@dataclass
class Machine:
    """Everything outside pxeprov that the commands talk to."""

    root: Root
    probe: Probe = field(default_factory=Probe)
    packages: system.Packages = field(default_factory=system.Packages)
    # the write share's password; used on this system, or under --root when a test gives one
    samba: system.SambaPasswords | None = None
    services: dict[str, system.Service] = field(
        default_factory=lambda: {
            "dnsmasq": system.Service("dnsmasq"),
            "nginx": system.Service("nginx", verb="reload-or-restart"),
            "smbd": system.Service("smbd"),
            "pxeprov-watch": system.Service("pxeprov-watch", program="pxeprov", own_unit=True),
        }
    )
    validators: dict[str, Validator] = field(default_factory=lambda: dict(VALIDATORS))
    lock_timeout: float = LOCK_TIMEOUT

    def passwords(self) -> system.SambaPasswords | None:
        """Samba's passwords to keep: the one given (a test's smbd), else this system's; None
        under --root."""
        return self.samba or (system.SambaPasswords() if self.root.is_system else None)


# ---------------------------------------------------------------- the state


START_OVER = "restore it from a backup, or start over on purpose: `pxeprov init --start-over`"


def load_state(root: Root) -> State:
    """The state, or a fresh one where there is no state file. A file that is there but is not
    whole (empty, cut short, not text) or not a file of its own (a link) is refused: read as
    a fresh install it would forget every image and plan (a restore too)."""
    path = root.path(STATE_FILE)
    if path.is_symlink():
        raise InputError(
            f"{path} is a symbolic link: pxeprov keeps its state in a file of its own, which "
            "it replaces whole at each change",
            "copy the file it points to over the link with `cp --remove-destination`; or "
            + START_OVER,
        )
    raw = read_bytes(path, limit=state_mod.MAX_STATE_BYTES)
    if raw is None:
        return State()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", START_OVER) from None
    lines = text.splitlines()
    if all(not line.strip() or line.lstrip().startswith("#") for line in lines):
        raise InputError(
            f"{path} is empty{' but for comments' if text.strip() else ''}: pxeprov does not "
            "take that for a fresh install (every image and plan would be forgotten)",
            START_OVER,
        )
    if state_mod.WHOLE in lines and state_mod.TRAILER.strip() not in lines:
        raise InputError(
            f"{path} was cut short: its last line {state_mod.TRAILER.strip()!r}, which pxeprov "
            "writes last, is missing",
            "if you took it out while editing, put it back; else " + START_OVER,
        )
    state = state_mod.loads(text, where=str(path))
    check_kinds(state, str(path))
    return state


def check_kinds(state: State, where: str) -> None:
    """Every image's kind is one pxeprov knows (the state module does not know the kinds)."""
    known = kinds.names()
    for index, image in enumerate(state.images):
        if image.kind not in known:
            raise InputError(
                f"{where}: images[{index}].kind {image.kind!r} is not a kind pxeprov knows "
                f"({', '.join(known)})"
            )


# ---------------------------------------------------------------- change -> plan -> apply


AfterInstall = Callable[[tuple[str, ...]], list[str]]  # what was installed -> notes


@dataclass(frozen=True)
class Change:
    """What a command asks for: the state to reach, image directories to install or delete,
    packages to install first."""

    state: State
    dirs: tuple[DirAction, ...] = ()
    install: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Packages the change can do without: a failed install is a warning, and the change is
    # asked for again (its Build sees them in machine.packages.failed).
    optional: tuple[str, ...] = ()
    # Called with what was installed (before the change is asked for again): notes for the user.
    after_install: AfterInstall | None = None


Build = Callable[[State], Change]  # the state as loaded (under the lock) -> the change


@dataclass
class Run:
    change: Change
    plan: ChangeSet
    decision: Decision  # how the new state boots its clients (boot.decide)
    warnings: list[str]
    outcome: Outcome | None = None  # None: a dry run
    installed: tuple[str, ...] = ()


def override_dir(root: Root) -> Path:
    return root.path(TEMPLATE_OVERRIDE_DIR)


def check_tftp_root_on_disk(root: Root, tftp_root: PurePosixPath) -> PurePosixPath:
    """The TFTP root as the filesystem has it: a symbolic link (it, or a directory above it)
    may not lead into a tree the state's rules refuse (`/srv/tftp -> /etc` would serve /etc).
    Returns the system path it leads to."""
    real = Path(os.path.realpath(root.path(tftp_root)))
    base = Path(os.path.realpath(root.base))
    if base != Path("/"):
        try:
            real = Path("/") / real.relative_to(base)
        except ValueError:
            raise InputError(
                f"the TFTP root {tftp_root} is a symbolic link that leads out of {root.base}"
            ) from None
    if real != Path(tftp_root):
        syntax.check_tftp_root(str(real), f"the TFTP root {tftp_root} leads to")
    return PurePosixPath(real)


@dataclass(frozen=True)
class Stray:
    """Something under the TFTP root that dnsmasq's TFTP would serve and nginx refuses: a dot
    name (but an installer tree's .treeinfo and .discinfo) or a symbolic link, which dnsmasq
    follows. `leaves`: a link that leads out of the TFTP root."""

    path: PurePosixPath  # the system path
    what: str
    leaves: bool = False


MAX_STRAY_WALK = 200_000  # entries looked at under the TFTP root


def strays(root: Root, tftp_root: PurePosixPath) -> list[Stray]:
    """What TFTP would serve beyond what HTTP serves (dnsmasq has no option to refuse dot
    names or links: pxeprov never puts them there, and `init` and `doctor` report them)."""
    top = Path(os.path.realpath(root.path(tftp_root)))
    found: list[Stray] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            seen += 1
            path = here / name
            shown = tftp_root / path.relative_to(top)
            if path.is_symlink():
                target = path.readlink()
                real = Path(os.path.realpath(path))
                if real != top and top not in real.parents:
                    what = f"a symbolic link to {target}, out of the TFTP root: TFTP serves it"
                    found.append(Stray(shown, what, leaves=True))
                else:
                    what = f"a symbolic link to {target}: TFTP follows it, HTTP does not"
                    found.append(Stray(shown, what))
            elif name.startswith(".") and not (name in syntax.SERVED_DOTFILES and path.is_file()):
                if name == WORK and here == top / IMAGES_DIR and _private(path):
                    continue  # a run's (or a crash's) work: no one but root enters it
                kind = "directory" if name in dirnames else "file"
                found.append(Stray(shown, f"a dot {kind}: TFTP serves it, HTTP does not"))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # reported as a whole
        if seen > MAX_STRAY_WALK:
            break
    return found


def _private(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and not stat.S_IMODE(st.st_mode) & 0o077


def stray_warnings(root: Root, tftp_root: PurePosixPath, most: int = 5) -> list[str]:
    """`strays` as warnings, at most `most` of them and a count of the rest."""
    found = strays(root, tftp_root)
    lines = [f"{s.path} is {s.what}; remove it" for s in found[:most]]
    if len(found) > most:
        lines.append(f"and {len(found) - most} more such files under {tftp_root} (pxeprov doctor)")
    return lines


PASSWD = PurePosixPath("/etc/passwd")


def homes(root: Root, but: tuple[str, ...] = ()) -> dict[PurePosixPath, str]:
    """The accounts' home directories (passwd under `root`) -> an account's name; accounts
    named in `but`, and homes that are no directory of their own (/, /nonexistent), left out."""
    data = read_bytes(root.path(PASSWD), 4 << 20)
    found: dict[PurePosixPath, str] = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) < 7 or fields[0] in but or not fields[5].startswith("/"):
            continue
        home = PurePosixPath(os.path.normpath(fields[5]))
        if home not in (PurePosixPath("/"), PurePosixPath("/nonexistent")):
            found.setdefault(home, fields[0])
    return found


def check_repo_on_disk(root: Root, repo: PurePosixPath, tftp_real: PurePosixPath) -> None:
    """The image repository as the filesystem has it (a run writes its README there, and `repo
    init` hands it to its account): no symbolic link on the way (a link would make Samba share,
    and pxeprov write into, whatever it leads to), no account's home, and apart from where the
    TFTP root really is (`tftp_real`, its links followed)."""
    what = f"the image repository {repo}"
    here = root.base
    for i, part in enumerate(repo.parts[1:], start=1):
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            break  # to be created: nothing below can be a link yet
        except OSError as exc:
            raise InputError(f"{what}: {here} cannot be looked at ({exc.strerror})") from None
        shown = PurePosixPath(*repo.parts[: i + 1])
        if stat.S_ISLNK(st.st_mode):
            raise InputError(
                f"{what} goes through a symbolic link: {shown} -> {here.readlink()}",
                "give the directory's real path (pxeprov repo init --path DIR)",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(f"{what}: {shown} is not a directory")
    for home, account in sorted(homes(root, but=(REPO_ACCOUNT,)).items()):
        if repo == home or home in repo.parents or repo in home.parents:
            where = "contains" if repo in home.parents else "is in"
            raise InputError(
                f"{what} {where} the home directory of the account {account} ({home})",
                "give a directory of its own, such as /srv/pxeprov/images",
            )
    syntax.check_apart(tftp_real, repo)


def plan_change(
    machine: Machine, change: Change, *, preview: bool = False
) -> tuple[ChangeSet, Decision]:
    """The plan that brings the root to the change. `preview`: files still to come with a
    package are shown as pending instead of missing."""
    root = machine.root
    tftp_real = check_tftp_root_on_disk(root, change.state.tftp_root)
    if change.state.repo_path:
        check_repo_on_disk(root, PurePosixPath(change.state.repo_path), tftp_real)
    pending = change.install + change.optional
    if (change.state.uefi_loader == "grub" and boot.SIGNED_GRUB_PACKAGE in pending
            and root.is_system):  # fmt: skip
        boot.check_grub_candidate(machine.packages.candidate(boot.SIGNED_GRUB_PACKAGE))
    decision = boot.decide(change.state, root, preview=preview or bool(pending))
    boot.check_https(change.state, root, decision.uefi)
    files = render.render(change.state, override_dir(root), decision)
    plan = make_plan(files, root, pending, preview=preview)
    return with_dirs(plan, change.dirs), decision


def run(
    machine: Machine,
    build: Build,
    *,
    dry_run: bool = False,
    force: bool = False,
    start_over: bool = False,
) -> Run:
    """Carry a command's change out, or (dry run) only plan it: no lock, nothing written.
    With `start_over`, the change is built on a fresh state, and the state file is kept aside
    first (set_aside)."""

    def load() -> State:
        return State() if start_over else load_state(machine.root)

    if dry_run:
        change = build(load())
        plan, decision = plan_change(machine, change, preview=True)
        aside = [f"would keep {STATE_FILE} as {aside_name()}"] if start_over else []
        return Run(change, plan, decision, aside + list(change.warnings))
    with session(machine) as notes:
        if start_over:
            kept = set_aside(machine.root)
            if kept is not None:
                notes.append(f"the state file was kept as {kept}")
        previous = load()
        change = build(previous)
        plan, decision = plan_change(machine, change)
        installed: tuple[str, ...] = ()
        if change.install or change.optional:
            check_conflicts(plan, force)  # reported before anything is installed
            if change.install:
                machine.packages.install(change.install)
                installed = change.install
            if change.optional:
                failure = machine.packages.try_install(change.optional)
                if failure is None:
                    installed += change.optional
                else:
                    notes.append(f"could not install {' '.join(change.optional)}: {failure}")
            if change.after_install is not None:
                notes += change.after_install(installed)
            change = build(load())
            plan, decision = plan_change(machine, change)
        outcome = apply_plan(machine, plan, force=force)
        shares = any(a.path == SAMBA_SHARES and a.changes for a in plan.files)
        if machine.root.is_system and change.state.repo_path and shares:
            hand_over_repo(change.state)  # shares that act as the account: its directory
        if write_password(previous) != write_password(change.state):
            notes += sync_write_access(machine, change.state)
        return Run(change, plan, decision, notes + list(change.warnings), outcome, installed)


# ---------------------------------------------------------------- the write share's password


def sync_write_access(machine: Machine, state: State) -> list[str]:
    """Samba's password of the repository's account: the save plans' (write_password), or
    none (disabled) when no save plan is armed or running. Said in notes, not raised: the
    state is already written; `doctor` and `repo init` find and mend a mismatch."""
    samba = machine.passwords()
    if samba is None or not state.repo_path:
        return []
    password = write_password(state)
    try:
        if password:
            samba.enable(REPO_ACCOUNT, password)
        else:
            samba.disable(REPO_ACCOUNT)
    except PxeprovError as exc:
        what = "open the write share to the save plans" if password else "close the write share"
        return [f"could not {what}: {exc.message} (`pxeprov repo init` tries again)"]
    return []


def aside_name(when: float | None = None) -> PurePosixPath:
    stamp = state_mod.utc_stamp(when).replace(":", "")
    return STATE_FILE.with_name(f"{STATE_FILE.name}.bad-{stamp}")


def set_aside(root: Root) -> PurePosixPath | None:
    """Keep the state file (start over on purpose) as pxeprov.toml.bad-<time>, root's only: a
    file is copied (it stays in place until the new state replaces it), anything else (a
    link, a directory) is moved as it is. None when there is nothing."""
    path = root.path(STATE_FILE)
    if not path.is_symlink() and not path.exists():
        return None
    name = aside_name()
    target = root.path(name)
    try:
        if path.is_symlink() or not path.is_file():
            path.rename(target)
        else:
            fsutil.write_atomic(target, path.read_bytes(), mode=0o600)
    except OSError as exc:
        raise fsutil.os_error("keep", target, exc) from None
    return name


def hand_over_repo(state: State) -> None:
    """The image repository (on this system) to its account, which Samba's shares act as: the
    directory (0750: other local users read no disk image) and what is in it, but the README
    pxeprov writes there. The account is made if it is missing."""
    uid, gid = system.system_account(REPO_ACCOUNT)
    fsutil.hand_over(Path(state.repo_path), uid, gid, REPO_MODE, keep=("README.txt",))


def apply_plan(machine: Machine, plan: ChangeSet, *, force: bool = False) -> Outcome:
    """Apply under the lock the caller holds."""
    root = machine.root
    services = machine.services if root.is_system else None
    return apply(plan, root, force=force, validators=machine.validators, services=services)


# ---------------------------------------------------------------- the lock and recovery


def lock(machine: Machine) -> AbstractContextManager[None]:
    return locked(machine.root.path(LOCK_FILE), machine.lock_timeout)


@contextmanager
def session(machine: Machine) -> Iterator[list[str]]:
    """The lock, and what an interrupted run left finished or cleaned up (notes for the user),
    before the command reads anything."""
    with lock(machine):
        yield recover(machine)


def recover(machine: Machine) -> list[str]:
    """Complete an interrupted run's journal, then remove its temporary files and its staging
    and trash directories. The caller holds the lock."""
    root = machine.root
    notes: list[str] = []
    done = journal.recover(root, _restarter(machine))
    if done is not None:
        notes.append(done)
    directories = {root.path(PurePosixPath(p)).parent for p in load_manifest(root)}
    directories |= {root.path(p).parent for p in (STATE_FILE, MANIFEST, DNSMASQ_DEFAULTS)}
    for path in journal.cleanup(directories):
        notes.append(f"removed {path}, left by an interrupted run")
    try:
        state = load_state(root)
    except PxeprovError:
        return notes  # the command reports the state's problem itself
    images = root.path(state.tftp_root / IMAGES_DIR)
    work = images / WORK  # apply's private directory: only pxeprov's own leftovers are there
    if work.is_symlink():
        _remove_tree(work)
        notes.append(f"removed {work}, a symbolic link where pxeprov keeps its work")
    elif work.is_dir():
        for p in sorted(work.iterdir()):
            _remove_tree(p)
            notes.append(f"removed {p.name}, left by an interrupted run")
        with suppress(OSError):
            work.rmdir()
    if images.is_dir():  # where earlier versions kept them
        for p in sorted(images.iterdir()):
            if p.name.startswith((STAGING, TRASH)) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                notes.append(f"removed {p.name}, left by an interrupted run")
    return notes


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()


def _restarter(machine: Machine) -> journal.Restart | None:
    """How a journal's restart steps are carried out: on a real system with systemd only."""
    if not machine.root.is_system:
        return None

    def restart(name: str) -> None:
        service = machine.services.get(name)
        if service is not None and service.manageable():
            service.enable_and_restart()

    return restart
