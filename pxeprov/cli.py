"""The typer app: parse options, call the core, print what it returns. No logic of its own."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pxeprov import __version__, bootlog, fsutil, pipeline, ports, vlab, wol
from pxeprov.apply import Outcome
from pxeprov.commands import doctor as doctor_module
from pxeprov.commands import images, listing
from pxeprov.commands import plans as plans_module
from pxeprov.commands import repo as repo_module
from pxeprov.commands import session as session_module
from pxeprov.commands import verify as verify_module
from pxeprov.commands import watch as watch_module
from pxeprov.commands.init import InitOptions, InitResult
from pxeprov.commands.init import init as init_command
from pxeprov.errors import (
    ConflictError,
    FilesystemError,
    InputError,
    NotServingError,
    PxeprovError,
)
from pxeprov.images import kinds
from pxeprov.network import NetworkRequest
from pxeprov.paths import DEFAULT_REPO_PATH, Root
from pxeprov.plan import ChangeSet, DirOp, Op, diff_text, is_text
from pxeprov.progress import Progress
from pxeprov.render import plan_label

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Make this box a proxyDHCP + TFTP network-boot server next to your DHCP server.",
)


class Settings:
    def __init__(self, root: Root, debug: bool) -> None:
        self.root = root
        self.debug = debug


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pxeprov {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    root: Annotated[
        Path, typer.Option(help="Directory every system path is under; not / = no system action.")
    ] = Path("/"),
    debug: Annotated[bool, typer.Option(help="Show tracebacks and the commands run.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")
    ctx.obj = Settings(Root.of(root), debug)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors(ctx: typer.Context) -> Iterator[None]:
    """Our errors become one `error:` line and their exit code; tracebacks only with --debug."""
    settings: Settings = ctx.obj
    try:
        yield
    except PxeprovError as exc:
        if isinstance(exc, ConflictError) and exc.diff:
            typer.echo(exc.diff, nl=False)  # what the hand edit was
        if settings.debug:
            raise
        _fail(exc.one_line(), exc.exit_code)
    except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
        raise
    except PermissionError as exc:
        # a file or directory this account may not read or change (root's state, logs, keys)
        if settings.debug:
            raise
        _fail(_permission_denied(exc), FilesystemError.exit_code)
    except Exception as exc:
        if settings.debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1)


def _permission_denied(exc: PermissionError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if os.geteuid() != 0:
        return f"permission denied:{where} ({fsutil.NEEDS_ROOT})"
    return f"permission denied:{where} ({exc.strerror or exc})"


def _machine(ctx: typer.Context) -> pipeline.Machine:
    settings: Settings = ctx.obj
    return pipeline.Machine(root=settings.root)


# ---------------------------------------------------------------- output


def _print_plan(plan: ChangeSet, install_note: str, is_system: bool) -> None:
    typer.echo("Plan (nothing is written):")
    status, _, what = install_note.partition(": ")
    typer.echo(f"  {'would ' + status if status == 'install' else status:<22} {what}")
    for a in plan.files:
        label = a.op.value if a.op is Op.IDENTICAL else f"would {a.op.value}"
        if a.op is Op.CONFLICT:
            label = "CONFLICT (needs --force)"
        note = f"  ({a.note})" if a.note and a.changes else ""
        typer.echo(f"  {label:<22} {a.path}{note}")
    for d in plan.dirs:
        what = (
            f"{len(d.files)} files, {_human(d.size)}" if d.op is DirOp.INSTALL else "and its files"
        )
        typer.echo(f"  {'would ' + d.op.value:<22} {d.path}/ ({what})")
    if status == "install" and "nginx" in what.split():
        # init._retire_default_site: a freshly installed nginx's default site serves nobody
        typer.echo(f"  {'would disable':<22} nginx's default site {ports.DEFAULT_SITE} "
                   "(enabled by the package)")  # fmt: skip
    for name in plan.services:
        # every service of the rendered files: restarted when its config changes, else started
        # when it is not running (apply._restart)
        if not is_system:
            what_then = "restart" if name in plan.restarts else "check that it runs"
            typer.echo(f"  {'skipped':<22} {name}: {what_then} (--root is not /)")
        elif name in plan.restarts:
            typer.echo(f"  {'would restart':<22} {name}")
        else:
            typer.echo(f"  {'would start':<22} {name} (when it is not running)")


def _print_files(plan: ChangeSet, diff: bool) -> None:
    for a in plan.files:
        if diff:
            if a.changes:
                typer.echo(diff_text(a), nl=False)
            continue
        typer.echo(f"\n==> {a.path} <==")
        if a.new is None:
            typer.echo("(removed)" if a.op in (Op.REMOVE, Op.CONFLICT) else f"({a.note})")
        elif is_text(a.new):
            typer.echo(a.new.decode(errors="replace"), nl=False)
        else:
            typer.echo(f"(binary, {len(a.new)} bytes; {a.note})")


def _print_summary(result: InitResult) -> None:
    net = result.state.network
    assert net is not None and result.outcome is not None
    typer.echo(
        f"pxeprov: proxyDHCP + TFTP on {net.interface} ({net.address}, {net.subnet}), "
        f"TFTP root {result.state.tftp_root}"
    )
    for status, what in result.outcome.lines:
        typer.echo(f"  {status:<10} {what}")
    if result.not_serving:
        typer.echo("Changes applied, but this server does not serve PXE clients (see below).")
    else:
        typer.echo(
            "Changes applied." if result.outcome.changed else "Nothing changed: already up to date."
        )
    base = result.state.payload_base
    for i, chain in enumerate(result.chains):
        typer.echo(f"{'Boot loaders:' if i == 0 else '':<13} {chain.client} -> {chain.summary}")
    if base is not None:
        typer.echo(f"Payloads (kernels, initrds, squashfs) over HTTP from {base}/")
    else:
        typer.echo(
            "Payloads (kernels, initrds, squashfs) over TFTP "
            "(`pxeprov init --http`: over HTTP, several times faster)"
        )
    typer.echo("")
    typer.echo(result.guidance, nl=False)
    if not result.state.images:
        # the menu holds only "Boot from local disk": say what makes it useful
        typer.echo(
            "\nNext: the menu has only 'Boot from local disk'. Add what the machines should boot:\n"
            "  pxeprov add-image https://…/some.iso   (or a local ISO or a directory; --help)\n"
            "  pxeprov doctor                          (checks the server, as a client would)"
        )


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)


# ---------------------------------------------------------------- commands


@app.command()
def init(
    ctx: typer.Context,
    interface: Annotated[str | None, typer.Option(help="Interface to serve on.")] = None,
    address: Annotated[str | None, typer.Option(help="This server's IPv4 address.")] = None,
    subnet: Annotated[
        str | None, typer.Option(help="Subnet to serve, CIDR or network address.")
    ] = None,
    tftp_root: Annotated[
        str | None, typer.Option(help="TFTP root [default: /var/lib/tftpboot].")
    ] = None,
    menu_timeout: Annotated[
        int | None, typer.Option(help="Seconds before the default entry boots (0 = wait).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Menu title.")] = None,
    dnsmasq_config: Annotated[
        str | None,
        typer.Option(
            help="drop-in (/etc/dnsmasq.d/pxeprov.conf) or main (own /etc/dnsmasq.conf, "
            "the original kept aside)."
        ),
    ] = None,
    uefi_loader: Annotated[
        str | None,
        typer.Option(
            help="UEFI chain: grub (shim + signed GRUB >= 2.12: Secure Boot), ipxe (snponly.efi, "
            "unsigned), or auto (grub when a suitable signed GRUB is installed) [default: auto]."
        ),
    ] = None,
    http: Annotated[
        bool | None,
        typer.Option(
            "--http/--no-http",
            help="Serve the TFTP root with nginx too and boot payloads over HTTP [default: yes "
            "on a new server when nginx can be installed; an existing server keeps its choice].",
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(help="Port of pxeprov's site [default: 80, or the fallback port if taken]."),
    ] = None,
    http_fallback_port: Annotated[
        int | None,
        typer.Option(
            help="Port used when another web server already serves port 80 [default: 8069]."
        ),
    ] = None,
    http_base_url: Annotated[
        str | None,
        typer.Option(help="Fetch payloads from this web server or CDN instead ('' = none)."),
    ] = None,
    install_packages: Annotated[
        bool, typer.Option(help="Install missing packages with apt-get (on / only).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Overwrite managed files edited by hand.")] = False,
    start_over: Annotated[
        bool,
        typer.Option(
            help="Set up as on a fresh box, forgetting every image and plan: the state file is "
            "kept as /etc/pxeprov/pxeprov.toml.bad-TIME."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan and the rendered files; write nothing.")
    ] = False,
) -> None:
    """Set up (or update) the proxyDHCP + TFTP server. Re-running changes nothing."""
    options = InitOptions(
        network=NetworkRequest(interface, address, subnet),
        tftp_root=tftp_root,
        menu_timeout=menu_timeout,
        title=title,
        dnsmasq_config=dnsmasq_config,
        uefi_loader=uefi_loader,
        http=http,
        http_port=http_port,
        http_fallback_port=http_fallback_port,
        http_base_url=http_base_url,
        install_packages=install_packages,
        force=force,
        start_over=start_over,
    )
    with _errors(ctx):
        machine = _machine(ctx)
        result = init_command(machine, options, dry_run=dry_run)
        _warn(result.warnings)
        if result.outcome is None:
            _print_plan(result.plan, result.install_note, machine.root.is_system)
            _print_files(result.plan, diff=True)
            return
        _print_summary(result)
        for line in result.serving:
            typer.echo(f"Serving: {line}")
        if result.not_serving:
            raise NotServingError(
                "the changes are applied, but " + "; ".join(result.not_serving),
                "`pxeprov doctor` says why",
            )


@app.command()
def render(
    ctx: typer.Context,
    diff: Annotated[bool, typer.Option(help="Show a unified diff against disk instead.")] = False,
) -> None:
    """Print the plan and every file pxeprov would write, from the current state."""
    with _errors(ctx):
        machine = _machine(ctx)
        result = init_command(machine, InitOptions(), dry_run=True)
        _warn(result.warnings)
        _print_plan(result.plan, result.install_note, machine.root.is_system)
        _print_files(result.plan, diff=diff)


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What the boot menus offer, and which boot loader each kind of client gets."""
    with _errors(ctx):
        found = listing.listing(_machine(ctx))
        if as_json:
            typer.echo(json.dumps(found.as_json(), indent=2))
            return
        typer.echo(f"{found.title} (timeout {found.menu_timeout} s; * = default)")
        for e in found.entries:
            mark = "*" if e.default else " "
            size = _human(e.size) if e.size else "-"
            typer.echo(f" {mark} {e.name:<24} {e.kind:<12} {size:>10}  {e.label}")
            if e.source:
                checksum = e.sha256 or "not checked"
                typer.echo(f"   {'':<24} from {e.source} (SHA-256 {checksum})")
        for i, c in enumerate(found.chains):
            typer.echo(f"{'Boot loaders:' if i == 0 else '':<13} {c.client} -> {c.summary}")
        for i, p in enumerate(found.plans):
            once = f" ({p.progress})" if p.progress else ""
            typer.echo(
                f"{'Plans:' if i == 0 else '':<13} {p.mac}  {p.what}{once}; boots now: {p.now}"
            )


# ---------------------------------------------------------------- images


@contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A progress bar on stderr for downloads and copies; none when stderr is not a terminal
    (logs and pipes get the result lines only)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def report(what: str, done: int, total: int | None) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    with bar:
        yield report


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def _print_outcome(outcome: Outcome) -> None:
    for status, what in outcome.lines:
        if status != "unchanged":
            typer.echo(f"  {status:<10} {what}")


@app.command("add-image")
def add_image(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An ISO file, or an http(s) URL of one.")],
    name: Annotated[
        str | None, typer.Option(help="Image name [a-z0-9][a-z0-9._-]* (default: from the ISO).")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Menu label.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(kinds.names())} (default: recognized from the ISO)."),
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the ISO.")] = None,
    append: Annotated[str, typer.Option(help="Extra kernel arguments.")] = "",
    default: Annotated[bool, typer.Option(help="Make it the menu default.")] = False,
    kernel: Annotated[
        str | None, typer.Option(help="--kind custom: kernel path in the ISO.")
    ] = None,
    initrd: Annotated[
        str | None, typer.Option(help="--kind custom: initrd path in the ISO.")
    ] = None,
    rootfs: Annotated[
        str | None, typer.Option(help="--kind custom: squashfs path in the ISO.")
    ] = None,
    locale: Annotated[str, typer.Option(help="Locale of live systems.")] = "en_US.UTF-8",
    keyboard: Annotated[str, typer.Option(help="Keyboard layout(s) of live systems.")] = "us",
    replace: Annotated[bool, typer.Option(help="Replace an image of the same name.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite menus edited by hand.")] = False,
    stall_timeout: Annotated[
        float,
        typer.Option(
            help="A download that grows by less than 256 KiB in this many seconds "
            "is retried, then given up."
        ),
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option(help="Show what would be copied; write nothing.")
    ] = False,
) -> None:
    """Add an ISO (a kind pxeprov recognizes, or custom) to the boot menus."""
    options = images.AddImageOptions(
        source=source,
        name=name,
        label=label,
        kind=kind,
        sha256=sha256,
        append=append,
        default=default,
        kernel=kernel,
        initrd=initrd,
        rootfs=rootfs,
        locale=locale,
        keyboard=keyboard,
        replace=replace,
        force=force,
        stall_timeout=stall_timeout,
    )
    with _errors(ctx):
        machine = _machine(ctx)
        with _progress_bar() as progress:
            result = images.add_image(machine, options, dry_run=dry_run, progress=progress)
        for note in result.notes:
            typer.echo(note)
        image = result.image
        if result.layout is None:  # a dry run of a URL that is not downloaded yet
            return
        verb = "would add" if dry_run else "added"
        typer.echo(f"{verb} {image.name} ({image.kind}, {_human(image.size)}): {image.label}")
        for path, size in result.files:
            typer.echo(f"  {'would copy' if dry_run else 'copied':<10} {path} ({_human(size)})")
        if dry_run:
            assert result.plan is not None
            _print_files(result.plan, diff=True)
            return
        assert result.outcome is not None
        _print_outcome(result.outcome)
        default_note = " (the menu default)" if image.default else ""
        typer.echo(f"The menus offer {image.name}{default_note}; dnsmasq needs no restart.")


@app.command("remove-image")
def remove_image(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The image to remove (see `pxeprov list`).")],
    force: Annotated[bool, typer.Option(help="Overwrite menus edited by hand.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
) -> None:
    """Remove an image: its menu entries and its files."""
    with _errors(ctx):
        result = images.remove_image(_machine(ctx), name, dry_run=dry_run, force=force)
        folder = f"images/{result.image.name}/"
        if dry_run:
            typer.echo(
                f"would remove {result.image.name} and {folder} ({_human(result.image.size)})"
            )
            _print_files(result.plan, diff=True)
            return
        assert result.outcome is not None
        _print_outcome(result.outcome)
        typer.echo(f"removed {result.image.name} and {folder}")


# ---------------------------------------------------------------- plans


@app.command()
def assign(
    ctx: typer.Context,
    macs: Annotated[list[str], typer.Argument(help="The machines' MAC addresses.")],
    entry: Annotated[
        str | None, typer.Option(help="Boot this menu entry (an image's name), no menu.")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Boot from the local disk.")] = False,
    menu: Annotated[bool, typer.Option("--menu", help="Back to the menu (no plan).")] = False,
    restore: Annotated[
        str | None, typer.Option(help="Restore this disk image (Clonezilla) from the repository.")
    ] = None,
    save: Annotated[
        str | None, typer.Option(help="Save the disk as this image (Clonezilla) to the repository.")
    ] = None,
    disk: Annotated[
        str | None, typer.Option(help="The disk a restore or save uses [default: sda].")
    ] = None,
    then: Annotated[
        str | None,
        typer.Option(
            help="After a restore or save: local (boot the disk), reboot, poweroff "
            "[default: local]."
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            help="The image repository: smb://[user[:password]@]host/share/path, "
            "nfs://host/path, ssh://user@host/path [default: the state's]."
        ),
    ] = None,
    live: Annotated[
        str | None, typer.Option(help="The Clonezilla live image that runs the job.")
    ] = None,
    once: Annotated[
        bool, typer.Option(help="For one boot only (imaging plans always are).")
    ] = False,
    group: Annotated[str, typer.Option(help="A name for these machines (unassign --group).")] = "",
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm that a restore erases the disk.")
    ] = False,
    wake: Annotated[
        bool,
        typer.Option(
            "--wake", help="Then wake the machines (Wake-on-LAN on the serving interface)."
        ),
    ] = False,
    multicast: Annotated[
        bool,
        typer.Option(
            "--multicast",
            help="Restore all these machines at once: one multicast session (Clonezilla's "
            "feeder, udp-sender) sends each partition once, from this box's repository. Its "
            "name is --group's.",
        ),
    ] = False,
    clients: Annotated[
        int | None,
        typer.Option(help="--multicast: start when this many joined [default: all of them]."),
    ] = None,
    max_wait: Annotated[
        int,
        typer.Option(help="--multicast: or this many seconds after the first one joined."),
    ] = 300,
    part_pause: Annotated[
        int,
        typer.Option(
            help="--multicast: the longest wait for the machines before each next partition "
            "(Clonezilla's 30 s; a slow disk needs its time to settle)."
        ),
    ] = 30,
    max_bitrate: Annotated[
        str,
        typer.Option(help="--multicast: a cap in bits per second, like 500m [default: none]."),
    ] = "",
    mcast_address: Annotated[
        str | None,
        typer.Option(help="--multicast: the data's address in 239.0.0.0/8 [default: a free one]."),
    ] = None,
    mcast_port: Annotated[
        int | None,
        typer.Option(
            help="--multicast: the port base, even; the session takes 64 ports from it "
            "[default: 2232 or the next free]."
        ),
    ] = None,
    mcast_interface: Annotated[
        str | None,
        typer.Option(help="--multicast: the interface to send on [default: the serving one]."),
    ] = None,
    drop_retries: Annotated[
        int,
        typer.Option(
            help="--multicast: drop a machine that stops answering after this many retries "
            "(udp-sender's --retries-until-drop; ~20 s at 30), so the others go on."
        ),
    ] = 30,
    force: Annotated[bool, typer.Option(help="Overwrite menus edited by hand.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
) -> None:
    """Give machines a plan: an entry, the local disk, or an unattended Clonezilla restore or
    save, booted without the menu."""
    with _errors(ctx):
        chosen = [
            n
            for n, v in (
                ("entry", entry),
                ("local", local),
                ("menu", menu),
                ("restore", restore),
                ("save", save),
            )
            if v
        ]
        if len(chosen) != 1:
            raise InputError(
                "give one of --entry NAME, --local, --menu, --restore IMAGE, --save IMAGE"
            )
        action = chosen[0]
        if action not in ("restore", "save") and (disk is not None or then is not None):
            raise InputError("--disk and --then are for --restore and --save")
        disk, then = disk or "sda", then or "local"
        if then not in ("local", "reboot", "poweroff"):
            raise InputError(f"--then {then!r}: one of local, reboot, poweroff")
        if action == "restore" and not yes and not dry_run and sys.stdin.isatty():
            answer = input(
                f"Restore {restore} to {disk} of {', '.join(macs)}: this erases the "
                "disk on the next network boot. Continue? [y/N] "
            )
            yes = answer.strip().lower() in ("y", "yes")
        options = plans_module.AssignOptions(
            tuple(macs),
            action,
            entry,
            restore or save,
            disk,
            then,
            repo,
            once,
            group,
            yes or dry_run,
            force,
            session_module.MulticastOptions(
                clients, max_wait, part_pause, max_bitrate, mcast_address, mcast_port,
                mcast_interface, drop_retries,
            ) if multicast else None,
        )  # fmt: skip
        if not multicast and (clients, mcast_address, mcast_port, mcast_interface) != (None,) * 4:
            raise InputError("--clients and --mcast-* are for --multicast")
        machine = _machine(ctx)
        if action == "menu":
            result = plans_module.unassign(machine, tuple(macs), dry_run=dry_run, force=force)
        else:
            result = plans_module.assign(machine, options, live=live, dry_run=dry_run)
        _warn(result.notes)
        for plan in result.plans:
            typer.echo(
                f"{plan.mac}: {'no plan: the menu' if action == 'menu' else plan_label(plan)}"
                + (" (one boot)" if plan.one_shot and action != "menu" else "")
            )
            if plan.action == "restore":
                typer.echo(
                    f"  {plan.disk} of {plan.mac} is overwritten with {plan.image} on its "
                    "next network boot"
                )
        if result.outcome is None:
            if wake:
                typer.echo(f"would wake {', '.join(macs)}")
            _print_files(result.plan, diff=True)
            return
        _print_outcome(result.outcome)
        for line in result.said:
            typer.echo(line)
        if wake:
            _say_woken(plans_module.wake(machine, tuple(macs)))


def _say_woken(sent: wol.Sent) -> None:
    typer.echo(
        f"Woke {', '.join(sent.macs)}: {sent.count} magic packets each to {sent.target} on "
        f"{sent.interface}."
    )


@app.command("wake")
def wake_(
    ctx: typer.Context,
    macs: Annotated[list[str] | None, typer.Argument(help="The machines' MAC addresses.")] = None,
    group: Annotated[str, typer.Option(help="Every machine of this group (its plans).")] = "",
    port: Annotated[
        int, typer.Option(help="The UDP port of the magic packets (9 or 7).")
    ] = wol.WOL_PORT,
) -> None:
    """Wake machines with Wake-on-LAN: magic packets to the serving subnet's broadcast
    address, out of the serving interface only."""
    with _errors(ctx):
        _say_woken(plans_module.wake(_machine(ctx), tuple(macs or ()), group, port))


@app.command()
def unassign(
    ctx: typer.Context,
    macs: Annotated[list[str] | None, typer.Argument(help="The machines' MAC addresses.")] = None,
    group: Annotated[str, typer.Option(help="Every machine of this group.")] = "",
    force: Annotated[bool, typer.Option(help="Overwrite menus edited by hand.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
) -> None:
    """Remove machines' plans: they get the menu again."""
    with _errors(ctx):
        result = plans_module.unassign(
            _machine(ctx), tuple(macs or ()), group, dry_run=dry_run, force=force
        )
        for plan in result.plans:
            typer.echo(f"{plan.mac}: no plan ({plan_label(plan)} removed)")
        if result.outcome is None:
            _print_files(result.plan, diff=True)
            return
        _print_outcome(result.outcome)
        for line in result.said:
            typer.echo(line)


@app.command("session-run", hidden=True)
def session_run(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The session.")]
) -> None:
    """The sender of a multicast session (started by `assign --multicast`, as a service)."""
    with _errors(ctx):
        progress = session_module.run_sender(_machine(ctx), name, typer.echo)
        if progress.phase != "sent":
            raise typer.Exit(1)


@app.command("plans")
def plans_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    dnsmasq_log: Annotated[
        Path | None, typer.Option(help="dnsmasq's log [default: /var/log/pxeprov-dnsmasq.log].")
    ] = None,
) -> None:
    """Every machine's plan, what it boots now, and its last stage in the logs; multicast
    sessions: who joined, which partition goes, who was dropped."""
    with _errors(ctx):
        machine = _machine(ctx)
        said = session_module.check_senders(machine, act=_may_act(machine))
        seen: dict[str, bootlog.Client] = {}
        try:
            found = watch_module.status(
                machine, watch_module.WatchOptions(since=0.0, dnsmasq_log=dnsmasq_log)
            )
            seen = {line.client.mac: line.client for line in found}
        except InputError:
            pass  # no log yet: no stage to show
        views = plans_module.plans(machine, seen)
        if as_json:
            typer.echo(
                json.dumps(
                    [
                        {
                            **dataclasses.asdict(v.plan),
                            "one_shot": v.plan.one_shot,
                            "status": v.plan.status,
                            "what": v.what,
                            "now": v.now,
                            "last": v.last,
                            "session_progress": session_module.progress_json(
                                machine, v.plan.session
                            )
                            if v.plan.session
                            else None,
                        }
                        for v in views
                    ],
                    indent=2,
                )
            )
            return
        for line in said:
            typer.echo(line)
        if not views:
            typer.echo("No machine has a plan: every one gets the menu.")
        for v in views:
            once = f" ({v.progress})" if v.progress else ""
            group = f" [{v.plan.group}]" if v.plan.group else ""
            typer.echo(f"{v.plan.mac}{group}  {v.what}{once}")
            typer.echo(f"    boots now: {v.now}" + (f"; last seen: {v.last}" if v.last else ""))
        for line in session_module.describe(machine):
            typer.echo(line)


def _may_act(machine: pipeline.Machine) -> bool:
    """Whether a report may also clean up after a sender (root, or a test's --root)."""
    return not machine.root.is_system or os.geteuid() == 0


repo_app = typer.Typer(
    no_args_is_help=True, help="The image repository of Clonezilla jobs (restores and saves)."
)
app.add_typer(repo_app, name="repo")


@repo_app.command("init")
def repo_init(
    ctx: typer.Context,
    path: Annotated[str, typer.Option(help="The directory to share.")] = DEFAULT_REPO_PATH,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
) -> None:
    """Share a directory of this box with Samba as the image repository: read-only for
    guests (restores), writable for the account pxeprov-imaging (saves)."""
    with _errors(ctx):
        result = repo_module.repo_init(_machine(ctx), path, dry_run=dry_run)
        _warn(result.notes)
        if result.outcome is None:
            _print_files(result.plan, diff=True)
            return
        _print_outcome(result.outcome)
        typer.echo(f"Restores read {result.read_url} (the default repository of plans).")
        typer.echo(
            f"Saves (`pxeprov assign MAC --save NAME`) write to {result.write_url}, with a "
            "password made for the save plans: the share takes it until their jobs report or "
            "the plans are removed."
        )


# ---------------------------------------------------------------- diagnosis


_MARK = {"pass": "pass", "info": "info", "warn": "WARN", "fail": "FAIL"}


@app.command()
def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    probe: Annotated[
        bool,
        typer.Option(help="Send PXE DHCPDISCOVERs on the interface and read every answer."),
    ] = True,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the probe's answers.")] = 5.0,
) -> None:
    """Check this server and its segment: why a machine does not boot. Exit 0: all pass,
    1: a warning, 2: a failure."""
    with _errors(ctx):
        if not 0.5 <= wait <= 60:
            raise InputError(f"--wait {wait} must be between 0.5 and 60 seconds")
        report = doctor_module.doctor(_machine(ctx), doctor_module.Options(probe, wait))
        if as_json:
            typer.echo(json.dumps(report.as_json(), indent=2))
        else:
            if report.header:
                typer.echo(report.header)
            for check in report.checks:
                typer.echo(f"  {_MARK[check.status]:<5} {check.message}")
                if check.fix and check.status in ("warn", "fail"):
                    typer.echo(f"        fix: {check.fix}")
            fails = sum(c.status == "fail" for c in report.checks)
            warns = sum(c.status == "warn" for c in report.checks)
            typer.echo(
                "All checks passed." if not fails + warns else f"{fails} failed, {warns} warned."
            )
    raise typer.Exit(report.exit_code)


def _watch_options(
    mac: str | None,
    since: str | None,
    stall: float,
    dnsmasq_log: Path | None,
    nginx_log: Path | None,
) -> watch_module.WatchOptions:
    if not 5 <= stall <= 3600:
        raise InputError(f"--stall {stall} must be between 5 and 3600 seconds")
    when = None
    if since is not None:
        try:
            when = bootlog.epoch(since)
        except ValueError:
            raise InputError(
                f"--since {since!r} is not like 10m, 2h, 1d or 2026-11-28 13:00"
            ) from None
    return watch_module.WatchOptions(
        watch_module.normal_mac(mac) if mac else None, when, stall, dnsmasq_log, nginx_log
    )


_MAC_HELP = "Only this client (its MAC address)."
_SINCE_HELP = "From this time: 10m, 2h, 1d, or 2026-11-28 13:00."
_STALL_HELP = "Seconds without progress before a client is reported stalled."
_DNSMASQ_LOG_HELP = "dnsmasq's log [default: /var/log/pxeprov-dnsmasq.log]."
_NGINX_LOG_HELP = "nginx's access log [default: /var/log/nginx/access.log]."
_FIRE_HELP = (
    "Mark one-shot plans fired when their machine fetches the plan's own file, take imaging "
    "jobs' reports (TCP 6461 on the server's address), and keep its place in the logs "
    "(what pxeprov-watch runs)."
)


@app.command()
def watch(
    ctx: typer.Context,
    mac: Annotated[str | None, typer.Option(help=_MAC_HELP)] = None,
    since: Annotated[str | None, typer.Option(help=_SINCE_HELP + " [default: now]")] = None,
    stall: Annotated[float, typer.Option(help=_STALL_HELP)] = watch_module.DEFAULT_STALL,
    dnsmasq_log: Annotated[Path | None, typer.Option(help=_DNSMASQ_LOG_HELP)] = None,
    nginx_log: Annotated[Path | None, typer.Option(help=_NGINX_LOG_HELP)] = None,
    fire: Annotated[bool, typer.Option("--fire", help=_FIRE_HELP)] = False,
) -> None:
    """Follow clients as they boot: a line per stage (proxy offer, boot loader, menu, kernel,
    initrd, root filesystem), and why a client stalls. Ctrl-C ends it."""
    with _errors(ctx):
        options = dataclasses.replace(
            _watch_options(mac, since, stall, dnsmasq_log, nginx_log), fire=fire
        )
        try:
            watch_module.watch(_machine(ctx), options, lambda line: typer.echo(line))
        except KeyboardInterrupt:
            return


@app.command()
def status(
    ctx: typer.Context,
    mac: Annotated[str | None, typer.Option(help=_MAC_HELP)] = None,
    since: Annotated[str | None, typer.Option(help=_SINCE_HELP + " [default: 1h]")] = None,
    stall: Annotated[float, typer.Option(help=_STALL_HELP)] = watch_module.DEFAULT_STALL,
    dnsmasq_log: Annotated[Path | None, typer.Option(help=_DNSMASQ_LOG_HELP)] = None,
    nginx_log: Annotated[Path | None, typer.Option(help=_NGINX_LOG_HELP)] = None,
) -> None:
    """The clients that booted (or tried to) recently: the stages each reached."""
    with _errors(ctx):
        options = _watch_options(mac, since, stall, dnsmasq_log, nginx_log)
        machine = _machine(ctx)
        for said in session_module.check_senders(machine, act=_may_act(machine)):
            typer.echo(said)
        for said in session_module.describe(machine):
            typer.echo(said)
        lines = watch_module.status(machine, options)
        if not lines:
            typer.echo("No PXE client in the logs for that time.")
        for line in lines:
            typer.echo(bootlog.summary_line(line.client))
            if line.stalled:
                stage = bootlog.STAGE_WORDS.get(line.client.stage, "nothing")
                typer.echo(f"    stalled after {stage}: {line.stalled}")


@app.command()
def verify(
    ctx: typer.Context,
    image: Annotated[
        str | None, typer.Option(help="The image to boot [default: the menus' default].")
    ] = None,
    firmware: Annotated[
        str | None,
        typer.Option(help="bios, uefi and/or uefi-sb, comma-separated [default: all served]."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per boot.")] = 300.0,
    keep: Annotated[bool, typer.Option(help="Keep the logs and serial consoles.")] = False,
    accel: Annotated[
        str,
        typer.Option(help="QEMU's accelerator: tcg (emulation, works everywhere) or kvm (fast)."),
    ] = "tcg",
) -> None:
    """Boot virtual BIOS and UEFI clients (QEMU) from this server's config and TFTP root, on a
    private network of their own (never the LAN), and report each stage. Exit 0: every client
    booted; 2: one did not."""
    with _errors(ctx):
        firmwares: tuple[vlab.Firmware, ...] = ()
        if firmware:
            names = tuple(f.strip() for f in firmware.split(","))
            bad = [n for n in names if n not in verify_module.NAMES]
            if bad:
                raise InputError(f"--firmware {bad[0]!r}: one of bios, uefi, uefi-sb")
            firmwares = tuple(vlab.FIRMWARES[n] for n in names)
        if not 30 <= timeout <= 3600:
            raise InputError(f"--timeout {timeout} must be between 30 and 3600 seconds")
        if accel not in ("tcg", "kvm"):
            raise InputError(f"--accel {accel!r}: tcg or kvm")
        options = verify_module.VerifyOptions(image, firmwares, timeout, keep=keep, accel=accel)
        result = verify_module.verify(_machine(ctx), options, lambda line: typer.echo(line))
        for note in result.notes:
            typer.echo(f"note: {note}")
        for b in result.boots:
            verdict = "pass" if b.ok else "FAIL"
            typer.echo(f"{b.name}: {verdict} ({b.seconds:.0f} s)")
            for stage, seconds, what in b.reached:
                typer.echo(f"  {bootlog.STAGE_WORDS[stage]:<16} {seconds:6.1f} s  {what}")
            if b.kernel_started:
                typer.echo(f"  {'kernel started':<16} (its console says so)")
            if b.problem:
                typer.echo(f"  {b.problem}")
        if result.scratch is not None:
            typer.echo(f"kept {result.scratch}")
        failed = [b.name for b in result.boots if not b.ok]
        target = f"image {result.image}" if result.image else "the menu"
        typer.echo(
            f"Verified: every client reached {target}."
            if not failed
            else f"Not verified: {', '.join(failed)} did not reach {target}."
        )
    if failed:
        raise typer.Exit(2)


def main() -> None:
    try:
        app(prog_name="pxeprov")
    except BrokenPipeError:
        # `pxeprov render | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
