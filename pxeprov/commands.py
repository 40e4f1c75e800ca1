"""The commands' core: state -> render -> plan -> apply. Returns results; never prints."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pxeprov import journal, loaders, menucheck, render, syntax, system
from pxeprov import state as state_mod
from pxeprov.apply import STAGING, TRASH, Outcome, Validator, apply, check_conflicts
from pxeprov.errors import InputError, MissingFileError, PxeprovError
from pxeprov.fsutil import locked, read_bytes
from pxeprov.images import kinds
from pxeprov.loaders import UefiChain
from pxeprov.network import NetworkRequest, Probe, resolve
from pxeprov.paths import (
    DNSMASQ_DEFAULTS,
    LOCK_FILE,
    MANIFEST,
    STATE_FILE,
    TEMPLATE_OVERRIDE_DIR,
    Root,
)
from pxeprov.plan import Plan, load_manifest, make_plan
from pxeprov.state import State

LOCK_TIMEOUT = 60.0
IMAGES_DIR = "images"  # under the TFTP root: one directory per image


def _dnsmasq_check(conf: Path) -> None:
    menucheck.check_dnsmasq_lines(conf)
    system.dnsmasq_test(conf)


# Each rendered format's validator (render.ManagedFile.syntax), run before a file goes live.
VALIDATORS: dict[str, Validator] = {
    "dnsmasq": _dnsmasq_check,
    "nginx": system.nginx_test,
    "grub": system.grub_script_check,
    "ipxe": menucheck.check_ipxe,
    "pxelinux": menucheck.check_pxelinux,
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
        }
    )
    validators: dict[str, Validator] = field(default_factory=lambda: dict(VALIDATORS))
    lock_timeout: float = LOCK_TIMEOUT


@dataclass(frozen=True)
class InitOptions:
    network: NetworkRequest = field(default_factory=NetworkRequest)
    tftp_root: str | None = None
    menu_timeout: int | None = None
    title: str | None = None
    dnsmasq_config: str | None = None
    uefi_loader: str | None = None
    http: bool | None = None
    http_port: int | None = None
    http_base_url: str | None = None
    install_packages: bool = True
    force: bool = False


@dataclass
class InitResult:
    state: State
    plan: Plan
    warnings: list[str]
    install_note: str  # what happens to packages, in words
    outcome: Outcome | None = None  # None for a dry run
    guidance: str = ""
    uefi_chain: UefiChain = "ipxe"


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
    for index, image in enumerate(state.images):
        if image.kind not in kinds.KINDS:
            raise InputError(
                f"{where}: images[{index}].kind {image.kind!r} is not a kind pxeprov knows "
                f"({', '.join(kinds.KINDS)})"
            )


def _check_options(options: InitOptions) -> None:
    """The options, checked by the state's own rules but named as the user typed them."""
    if options.network.interface is not None:
        syntax.check_interface(options.network.interface, "--interface")
    if options.tftp_root is not None:
        syntax.check_tftp_root(options.tftp_root, "--tftp-root")
    if options.menu_timeout is not None:
        state_mod.check_timeout(options.menu_timeout, "--menu-timeout")
    if options.title is not None:
        syntax.check_text(options.title, "--title")
    if options.http_port is not None and not 1 <= options.http_port <= 65535:
        raise InputError(f"--http-port {options.http_port} must be between 1 and 65535")
    if options.http_base_url:
        syntax.check_url(options.http_base_url, "--http-base-url")


def desired_state(machine: Machine, options: InitOptions) -> tuple[State, list[str]]:
    _check_options(options)
    previous = load_state(machine.root)
    network, warnings = resolve(options.network, previous.network, machine.probe)
    changes: dict[str, Any] = {"network": network}
    if options.tftp_root is not None:
        changes["tftp_root"] = PurePosixPath(options.tftp_root)
    if options.menu_timeout is not None:
        changes["menu_timeout"] = options.menu_timeout
    if options.title is not None:
        changes["title"] = options.title
    if options.dnsmasq_config is not None:
        changes["dnsmasq_config"] = state_mod.cast_mode(options.dnsmasq_config)
    if options.uefi_loader is not None:
        changes["uefi_loader"] = state_mod.cast_loader(options.uefi_loader)
    for name in ("http", "http_port", "http_base_url"):
        if getattr(options, name) is not None:
            changes[name] = getattr(options, name)
    return previous.with_changes(**changes), warnings


def _packages_to_install(
    machine: Machine, options: InitOptions, state: State
) -> tuple[list[str], str]:
    wanted = loaders.PACKAGES + (loaders.GRUB_PACKAGES if state.uefi_loader == "grub" else ())
    wanted += loaders.HTTP_PACKAGES if state.http else ()
    if not machine.root.is_system:
        return [], "skipped: package installation (--root is not /)"
    if not options.install_packages:
        return [], "skipped: package installation (--no-install-packages)"
    missing = machine.packages.missing(wanted)
    if missing:
        return missing, f"install: {' '.join(missing)}"
    return [], f"unchanged: packages {' '.join(wanted)} (installed)"


def resolve_uefi(state: State, root: Root, *, preview: bool = False) -> tuple[UefiChain, list[str]]:
    """The UEFI chain to serve, and a warning when Secure Boot clients will not boot."""
    if state.uefi_loader == "ipxe":
        return "ipxe", []
    grub = root.path(loaders.SIGNED_GRUB)
    proxy = loaders.grub_supports_proxy(grub)
    if state.uefi_loader == "grub":
        if proxy is False:
            raise MissingFileError(
                f"the signed GRUB {loaders.SIGNED_GRUB} has no proxyDHCP support (GRUB older "
                "than 2.12 asks the ordinary DHCP server for its files, so it cannot boot here)",
                "install grub-efi-amd64-signed >= 2.12 (Debian 13, Ubuntu 24.04), or use "
                "--uefi-loader ipxe",
            )
        if proxy is None and not preview:
            raise MissingFileError(
                f"boot-loader file {loaders.SIGNED_GRUB} is missing",
                "install the packages shim-signed and grub-efi-amd64-signed",
            )
        return "grub", []
    if proxy:
        return "grub", []
    why = "is not installed" if proxy is None else "is older than 2.12 (no proxyDHCP support)"
    return "ipxe", [
        "UEFI clients get iPXE (snponly.efi), which is not signed: clients with Secure Boot on "
        f"will refuse it. Debian's signed GRUB ({loaders.SIGNED_GRUB}) {why}; with "
        "grub-efi-amd64-signed >= 2.12 and shim-signed (Debian 13, Ubuntu 24.04), "
        "`pxeprov init --uefi-loader grub` serves a signed chain."
    ]


def check_https(state: State, root: Root, chain: UefiChain) -> None:
    """An https:// base URL only where every iPXE binary served can fetch it: Debian 12's iPXE
    has no TLS at all, and would be pointed at URLs it cannot open."""
    if not state.payload_base or not state.payload_base.startswith("https://"):
        return
    for f in loaders.files_for(chain, http=True):
        if not f.name.endswith((".efi", ".kpxe")) or f.package != "ipxe":
            continue
        source = next((root.path(s) for s in f.sources if root.path(s).is_file()), None)
        if source is not None and loaders.ipxe_supports_https(source) is False:
            raise InputError(
                f"the HTTP base URL {state.payload_base} is https://, but the iPXE this server "
                f"serves ({f.name}, from {source}) cannot fetch https:// URLs: it was built "
                "without TLS (as Debian 12's ipxe package is)",
                "give an http:// URL, or install an ipxe package built with HTTPS",
            )


def _override_dir(root: Root) -> Path:
    return root.path(TEMPLATE_OVERRIDE_DIR)


def _prepare(
    machine: Machine, options: InitOptions, *, preview: bool
) -> tuple[InitResult, list[str]]:
    state, warnings = desired_state(machine, options)
    to_install, note = _packages_to_install(machine, options, state)
    chain, uefi_warnings = resolve_uefi(state, machine.root, preview=preview or bool(to_install))
    check_https(state, machine.root, chain)
    files = render.render(state, _override_dir(machine.root), chain)
    plan = make_plan(files, machine.root, to_install, preview=preview)
    guidance = render.guidance(state, _override_dir(machine.root), chain)
    result = InitResult(state, plan, warnings + uefi_warnings, note, None, guidance, chain)
    return result, to_install


def preview(machine: Machine, options: InitOptions) -> InitResult:
    """Render and plan; nothing is written, no lock is taken, no root privileges needed."""
    return _prepare(machine, options, preview=True)[0]


def init(machine: Machine, options: InitOptions) -> InitResult:
    with session(machine) as notes:
        result, to_install = _prepare(machine, options, preview=False)
        if to_install:
            # Conflicts are reported before anything is installed.
            check_conflicts(result.plan, options.force)
            machine.packages.install(to_install)
            result, _ = _prepare(machine, options, preview=False)
        outcome = apply_plan(machine, result.plan, force=options.force)
        if to_install:
            outcome.lines.insert(0, ("installed", " ".join(to_install)))
            outcome.changed = True
        else:
            status, _, what = result.install_note.partition(": ")
            outcome.lines.insert(0, (status, what))
        result.outcome = outcome
        result.warnings[:0] = notes
    return result


def plan_state(machine: Machine, state: State, *, preview: bool = False) -> Plan:
    """The plan that brings the root to `state` (no packages: `init` installs those)."""
    chain, _ = resolve_uefi(state, machine.root, preview=preview)
    check_https(state, machine.root, chain)
    files = render.render(state, _override_dir(machine.root), chain)
    return make_plan(files, machine.root, preview=preview)


def apply_plan(machine: Machine, plan: Plan, *, force: bool = False) -> Outcome:
    """Apply under the lock the caller holds."""
    root = machine.root
    services = machine.services if root.is_system else None
    return apply(plan, root, force=force, validators=machine.validators, services=services)


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
        if service is not None and service.systemd_running():
            service.enable_and_restart()

    return restart


def menu_entries(state: State) -> list[dict[str, Any]]:
    default = state.default_image
    entries: list[dict[str, Any]] = [
        {
            "name": "local",
            "label": "Boot from local disk",
            "kind": "local",
            "default": default is None,
        }
    ]
    for image in state.images:
        entry = render.menu_entry(state, image) if state.network is not None else None
        entries.append(
            {
                "name": image.name,
                "label": image.label,
                "kind": image.kind,
                "default": image.default,
                "size": image.size,
                "source": image.source,
                "sha256": image.sha256,
                "version": image.version,
                "kernel": image.kernel,
                "initrd": image.initrd,
                "rootfs": image.rootfs,
                "args": entry.args if entry is not None else image.append,
            }
        )
    return entries
