"""`init` (and `render`, which previews it): the server's settings, from options, the state and
the live network; the packages it needs; everything rendered and applied."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pxeprov import boot, pipeline, ports, render, syntax, system
from pxeprov import state as state_mod
from pxeprov.apply import Outcome
from pxeprov.boot import UefiChain
from pxeprov.errors import InputError
from pxeprov.network import NetworkRequest, resolve
from pxeprov.paths import Root
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import ChangeSet
from pxeprov.state import State


@dataclass(frozen=True)
class InitOptions:
    network: NetworkRequest = field(default_factory=NetworkRequest)
    tftp_root: str | None = None
    menu_timeout: int | None = None
    room_size: int | None = None
    title: str | None = None
    dnsmasq_config: str | None = None
    uefi_loader: str | None = None
    http: bool | None = None
    http_port: int | None = None
    http_fallback_port: int | None = None
    http_base_url: str | None = None
    install_packages: bool = True
    force: bool = False
    start_over: bool = False  # build on a fresh state; the state file is kept aside


@dataclass
class InitResult:
    state: State
    plan: ChangeSet
    warnings: list[str]
    install_note: str  # what happens to packages, in words
    outcome: Outcome | None = None  # None for a dry run
    guidance: str = ""
    uefi_chain: UefiChain = "ipxe"
    chains: tuple[boot.Chain, ...] = ()  # what each client is offered
    serving: list[str] = field(default_factory=list)  # what answers clients now, in words
    not_serving: list[str] = field(default_factory=list)  # what should but does not


def check_options(options: InitOptions) -> None:
    """The options, checked by the state's own rules but named as the user typed them."""
    if options.network.interface is not None:
        syntax.check_interface(options.network.interface, "--interface")
    if options.tftp_root is not None:
        syntax.check_tftp_root(options.tftp_root, "--tftp-root")
    if options.menu_timeout is not None:
        state_mod.check_timeout(options.menu_timeout, "--menu-timeout")
    if options.room_size is not None:
        state_mod.check_room_size(options.room_size, "--room-size")
    if options.title is not None:
        syntax.check_text(options.title, "--title")
    if options.http_port is not None:
        state_mod.check_port(options.http_port, "--http-port")
    if options.http_fallback_port is not None:
        state_mod.check_port(options.http_fallback_port, "--http-fallback-port")
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
    if options.room_size is not None:
        changes["room_size"] = options.room_size
    if options.title is not None:
        changes["title"] = options.title
    if options.dnsmasq_config is not None:
        changes["dnsmasq_config"] = state_mod.cast_mode(options.dnsmasq_config)
    if options.uefi_loader is not None:
        changes["uefi_loader"] = state_mod.cast_loader(options.uefi_loader)
    for name in ("http", "http_fallback_port", "http_base_url"):
        if getattr(options, name) is not None:
            changes[name] = getattr(options, name)
    state = previous.with_changes(**changes)
    if options.http is None and previous.network is None:
        # A new server serves payloads over HTTP when it can have nginx.
        state, note = _default_http(machine, options, state)
        warnings += note
    if state.http:
        port, note = _http_port(machine, options, previous, state)
        state = state.with_changes(http_port=port)
        warnings += note
    elif options.http_port is not None:
        state = state.with_changes(http_port=options.http_port)
    if state.http and not state.web_token:  # the status page, behind its own secret
        state = state.with_changes(web_token=state_mod.new_web_token())
    return state, warnings


def _nginx_obtainable(machine: Machine, options: InitOptions) -> str:
    """Why nginx cannot be had on this run ("" when it is installed or will be)."""
    if system.have("nginx"):
        return ""
    if "nginx" in machine.packages.failed:
        return "nginx could not be installed"
    if not machine.root.is_system:
        return "nginx is not installed (and --root is not /)"
    if not options.install_packages:
        return "nginx is not installed (and --no-install-packages)"
    return ""


def _default_http(machine: Machine, options: InitOptions, state: State) -> tuple[State, list[str]]:
    if state.http_base_url:
        return state, []  # payloads come from that web server: nginx would serve nothing
    why = _nginx_obtainable(machine, options)
    if not why:
        return state.with_changes(http=True), []
    return state.with_changes(http=False), [
        f"payloads go over TFTP: {why}. HTTP is several times faster for large images: "
        "install nginx, then run `pxeprov init --http`"
    ]


def _http_port(
    machine: Machine, options: InitOptions, previous: State, state: State
) -> tuple[int, list[str]]:
    """The port of pxeprov's site: --http-port; else the one it already serves on; else 80,
    or the fallback port when another web server serves port 80 already. pxeprov's site never
    takes the place of another one (it listens on this server's address, which nginx prefers
    to any wildcard `listen`)."""
    assert state.network is not None
    address = state.network.address

    def taken(port: int) -> list[str]:
        return ports.holders(machine.root, address, port)

    if options.http_port is not None:
        held = taken(options.http_port)
        if held:
            raise InputError(
                f"--http-port {options.http_port}: {held[0]}; pxeprov will not take its place",
                "choose a free port, or --no-http for TFTP only",
            )
        return options.http_port, []
    if previous.http and previous.network is not None:
        held = taken(previous.http_port)
        if not held:
            return previous.http_port, []
        return previous.http_port, [
            f"port {previous.http_port} of pxeprov's site is also served by {held[0]}; "
            "requests to this server's address reach pxeprov's site only "
            "(`pxeprov init --http-port N` moves it)"
        ]
    port = previous.http_port
    held = taken(port)
    if not held:
        return port, []
    fallback = state.http_fallback_port
    held_too = taken(fallback)
    if held_too:
        raise InputError(
            f"port {port} is in use ({held[0]}) and so is the fallback port {fallback} "
            f"({held_too[0]}); pxeprov will not take their place",
            "choose a free port with --http-port N, or --no-http for TFTP only",
        )
    return fallback, [
        f"port {port} is in use ({held[0]}): pxeprov's site serves on port {fallback} instead "
        "and leaves that one alone (--http-port N to choose)"
    ]


def _packages(
    machine: Machine, options: InitOptions, state: State, optional: tuple[str, ...]
) -> tuple[list[str], list[str], str]:
    """The packages to install (needed, and those the server can do without), and what happens
    to packages, in words."""
    wanted = boot.packages(state)
    if not machine.root.is_system:
        return [], [], "skipped: package installation (--root is not /)"
    if not options.install_packages:
        return [], [], "skipped: package installation (--no-install-packages)"
    missing = machine.packages.missing(wanted)
    needed = [p for p in missing if p not in optional]
    extra = [p for p in missing if p in optional]
    if missing:
        return needed, extra, f"install: {' '.join(missing)}"
    return [], [], f"unchanged: packages {' '.join(wanted)} (installed)"


def _retire_default_site(root: Root, had_nginx: bool) -> pipeline.AfterInstall:
    """Debian's nginx package enables a default site on every address's port 80; when pxeprov
    has just installed nginx (it was not there before), nobody uses that site yet, and it goes."""

    def after(installed: tuple[str, ...]) -> list[str]:
        if had_nginx or not set(boot.HTTP_PACKAGES) & set(installed):
            return []
        return ports.disable_default_site(root)

    return after


def init(machine: Machine, options: InitOptions, *, dry_run: bool = False) -> InitResult:
    """Set the server up (or, dry run: render and plan; nothing written, no lock taken)."""
    check_options(options)
    notes: dict[str, str] = {}

    had_nginx = system.have("nginx")

    def build(previous: State) -> Change:
        state, warnings = desired_state(machine, options, previous)
        # nginx is optional where HTTP is only the default: without it, TFTP
        defaulted = options.http is None and previous.network is None
        optional = boot.HTTP_PACKAGES if defaulted and state.http else ()
        install, extra, notes["install"] = _packages(machine, options, state, optional)
        return Change(
            state,
            install=tuple(install),
            optional=tuple(extra),
            warnings=tuple(warnings),
            after_install=_retire_default_site(machine.root, had_nginx),
        )

    done = pipeline.run(
        machine, build, dry_run=dry_run, force=options.force, start_over=options.start_over
    )
    state = done.change.state
    warnings = done.warnings + list(done.decision.warnings)
    warnings += pipeline.stray_warnings(machine.root, state.tftp_root)  # TFTP would serve them
    override = pipeline.override_dir(machine.root)
    result = InitResult(
        state,
        done.plan,
        warnings,
        notes["install"],
        done.outcome,
        render.guidance(state, override, done.decision),
        done.decision.uefi,
        done.decision.chains(state),
    )
    if done.outcome is not None and machine.root.is_system:
        result.serving, result.not_serving = serving(
            state, watcher=machine.services.get("pxeprov-watch")
        )
    if done.outcome is not None:
        if done.installed:
            done.outcome.lines.insert(0, ("installed", " ".join(done.installed)))
            done.outcome.changed = True
        else:
            status, _, what = result.install_note.partition(": ")
            done.outcome.lines.insert(0, (status, what))
    return result


SERVING_WAIT = 5.0  # seconds a freshly started daemon gets to bind its sockets


def serving(
    state: State, wait: float = SERVING_WAIT, watcher: system.Service | None = None
) -> tuple[list[str], list[str]]:
    """Whether dnsmasq (and nginx with HTTP) listens where clients will ask, and pxeprov-watch
    runs: (what serves, what does not), in words."""
    assert state.network is not None
    address = state.network.address
    deadline = time.monotonic() + wait
    while True:
        good, bad = [], []
        udp = {p: [s for s in ports.listeners(p, proto="udp") if "dnsmasq" in s.names
                   and ports.covers(s.address, address)] for p in (67, 69, 4011)}  # fmt: skip
        missing = [str(p) for p, socks in udp.items() if not socks]
        if missing:
            bad.append(f"dnsmasq does not listen on UDP {', '.join(missing)} for {address}")
        else:
            pids = sorted({pid for socks in udp.values() for s in socks for pid, _ in s.programs})
            good.append(
                f"dnsmasq (pid {', '.join(map(str, pids))}) answers PXE clients on "
                f"{state.network.interface} ({address})"
            )
        if state.http and not state.http_base_url:
            web = [s for s in ports.listeners(state.http_port) if "nginx" in s.names
                   and ports.covers(s.address, address)]  # fmt: skip
            if web:
                good.append(f"nginx serves the payloads on {address}:{state.http_port}")
            else:
                bad.append(f"nginx does not listen on {address}:{state.http_port}")
        if watcher is not None and watcher.manageable():
            pid = watcher.pid() if not watcher.systemd_running() else None
            if watcher.is_active():
                good.append(f"pxeprov-watch{f' (pid {pid})' if pid else ''} follows the boots "
                            "and fires one-shot plans")  # fmt: skip
            else:
                bad.append("pxeprov-watch does not run (one-shot plans would not fire)")
        if not bad or time.monotonic() > deadline:
            return good, bad
        time.sleep(0.2)
