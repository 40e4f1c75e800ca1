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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pxeprov import boot, journal, menucheck, render, syntax, system
from pxeprov import state as state_mod
from pxeprov.apply import STAGING, TRASH, Outcome, Validator, apply, check_conflicts
from pxeprov.boot import UefiChain
from pxeprov.errors import InputError, PxeprovError
from pxeprov.fsutil import locked, read_bytes
from pxeprov.images import kinds
from pxeprov.network import Probe
from pxeprov.paths import (
    DNSMASQ_DEFAULTS,
    LOCK_FILE,
    MANIFEST,
    STATE_FILE,
    TEMPLATE_OVERRIDE_DIR,
    Root,
)
from pxeprov.plan import DirAction, Plan, load_manifest, make_plan, with_dirs
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


# ---------------------------------------------------------------- the state


def load_state(root: Root) -> State:
    path = root.path(STATE_FILE)
    raw = read_bytes(path, limit=state_mod.MAX_STATE_BYTES)
    if raw is None:
        return State()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
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
    plan: Plan
    chain: UefiChain  # the UEFI chain resolved for the new state
    warnings: list[str]
    outcome: Outcome | None = None  # None: a dry run
    installed: tuple[str, ...] = ()


def override_dir(root: Root) -> Path:
    return root.path(TEMPLATE_OVERRIDE_DIR)


def check_tftp_root_on_disk(root: Root, tftp_root: PurePosixPath) -> None:
    """The TFTP root as the filesystem has it: a symbolic link (it, or a directory above it)
    may not lead into a tree the state's rules refuse (`/srv/tftp -> /etc` would serve /etc)."""
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


def plan_change(
    machine: Machine, change: Change, *, preview: bool = False
) -> tuple[Plan, UefiChain]:
    """The plan that brings the root to the change. `preview`: files still to come with a
    package are shown as pending instead of missing."""
    root = machine.root
    check_tftp_root_on_disk(root, change.state.tftp_root)
    pending = change.install + change.optional
    chain, _warnings = boot.resolve_uefi(change.state, root, preview=preview or bool(pending))
    boot.check_https(change.state, root, chain)
    grub_http, _ = boot.grub_over_http(change.state, root, chain, preview=preview or bool(pending))
    files = render.render(change.state, override_dir(root), chain, grub_http=grub_http)
    plan = make_plan(files, root, pending, preview=preview)
    return with_dirs(plan, change.dirs), chain


def run(machine: Machine, build: Build, *, dry_run: bool = False, force: bool = False) -> Run:
    """Carry a command's change out, or (dry run) only plan it: no lock, nothing written."""
    if dry_run:
        change = build(load_state(machine.root))
        plan, chain = plan_change(machine, change, preview=True)
        return Run(change, plan, chain, list(change.warnings))
    with session(machine) as notes:
        change = build(load_state(machine.root))
        plan, chain = plan_change(machine, change)
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
            change = build(load_state(machine.root))
            plan, chain = plan_change(machine, change)
        outcome = apply_plan(machine, plan, force=force)
        return Run(change, plan, chain, notes + list(change.warnings), outcome, installed)


def apply_plan(machine: Machine, plan: Plan, *, force: bool = False) -> Outcome:
    """Apply under the lock the caller holds."""
    root = machine.root
    services = machine.services if root.is_system else None
    return apply(plan, root, force=force, validators=machine.validators, services=services)


def uefi_warnings(machine: Machine, state: State, *, preview: bool) -> list[str]:
    """What UEFI clients will not get: Secure Boot (iPXE), or their payloads over HTTP."""
    chain, warnings = boot.resolve_uefi(state, machine.root, preview=preview)
    return warnings + boot.grub_over_http(state, machine.root, chain, preview=preview)[1]


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
    if images.is_dir():
        for p in sorted(images.iterdir()):
            if p.name.startswith((STAGING, TRASH)) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                notes.append(f"removed {p.name}, left by an interrupted run")
    return notes


def _restarter(machine: Machine) -> journal.Restart | None:
    """How a journal's restart steps are carried out: on a real system with systemd only."""
    if not machine.root.is_system:
        return None

    def restart(name: str) -> None:
        service = machine.services.get(name)
        if service is not None and service.manageable():
            service.enable_and_restart()

    return restart
