"""`init` (and `render`, which previews it): the server's settings, from options, the state and
the live network; the packages it needs; everything rendered and applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pxeprov import boot, pipeline, render, syntax
from pxeprov import state as state_mod
from pxeprov.apply import Outcome
from pxeprov.boot import UefiChain
from pxeprov.errors import InputError
from pxeprov.network import NetworkRequest, resolve
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import Plan
from pxeprov.state import State


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
    chains: tuple[boot.Chain, ...] = ()  # what each client is offered


def check_options(options: InitOptions) -> None:
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


def desired_state(
    machine: Machine, options: InitOptions, previous: State
) -> tuple[State, list[str]]:
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


def _packages(machine: Machine, options: InitOptions, state: State) -> tuple[list[str], str]:
    """The packages to install, and what happens to packages, in words."""
    wanted = boot.packages(state)
    if not machine.root.is_system:
        return [], "skipped: package installation (--root is not /)"
    if not options.install_packages:
        return [], "skipped: package installation (--no-install-packages)"
    missing = machine.packages.missing(wanted)
    if missing:
        return missing, f"install: {' '.join(missing)}"
    return [], f"unchanged: packages {' '.join(wanted)} (installed)"


def init(machine: Machine, options: InitOptions, *, dry_run: bool = False) -> InitResult:
    """Set the server up (or, dry run: render and plan; nothing written, no lock taken)."""
    check_options(options)
    notes: dict[str, str] = {}

    def build(previous: State) -> Change:
        state, warnings = desired_state(machine, options, previous)
        install, notes["install"] = _packages(machine, options, state)
        return Change(state, install=tuple(install), warnings=tuple(warnings))

    done = pipeline.run(machine, build, dry_run=dry_run, force=options.force)
    state = done.change.state
    warnings = done.warnings + pipeline.uefi_warnings(machine, state, preview=True)
    override = pipeline.override_dir(machine.root)
    result = InitResult(
        state,
        done.plan,
        warnings,
        notes["install"],
        done.outcome,
        render.guidance(state, override, done.chain),
        done.chain,
        boot.served(state, done.chain),
    )
    if done.outcome is not None:
        if done.installed:
            done.outcome.lines.insert(0, ("installed", " ".join(done.installed)))
            done.outcome.changed = True
        else:
            status, _, what = result.install_note.partition(": ")
            done.outcome.lines.insert(0, (status, what))
    return result
