"""The commands that set the server up: `init`, `render`, `list`, `repo init`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pxeprov import boot
from pxeprov.cli.app import (
    app,
    human,
    machine_of,
    one_line_errors,
    print_files,
    print_outcome,
    print_plan,
    warn,
)
from pxeprov.commands import listing
from pxeprov.commands import repo as repo_module
from pxeprov.commands.init import InitOptions, InitResult
from pxeprov.commands.init import init as init_command
from pxeprov.errors import (
    NotServingError,
)
from pxeprov.network import NetworkRequest
from pxeprov.paths import DEFAULT_REPO_PATH


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
    print_chains([(c.client, c.summary, c.arch) for c in result.chains])
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
    room_size: Annotated[
        int | None,
        typer.Option(
            help="Machines expected to boot at once (a room woken together): TFTP's limits "
            "follow it [default: 200]."
        ),
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
        room_size=room_size,
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
    with one_line_errors(ctx):
        machine = machine_of(ctx)
        result = init_command(machine, options, dry_run=dry_run)
        warn(result.warnings)
        if result.outcome is None:
            print_plan(result.plan, result.install_note, machine.root.is_system)
            print_files(result.plan, diff=True)
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
    with one_line_errors(ctx):
        machine = machine_of(ctx)
        result = init_command(machine, InitOptions(), dry_run=True)
        warn(result.warnings)
        print_plan(result.plan, result.install_note, machine.root.is_system)
        print_files(result.plan, diff=diff)


def print_chains(chains: list[tuple[str, str, str]]) -> None:
    """Which loader each kind of client gets (client, summary, architecture), and the clients
    that no chain answers."""
    lines = [(client, summary) for client, summary, _ in chains]
    lines += boot.unanswered({a for _, _, a in chains})
    for i, (client, summary) in enumerate(lines):
        typer.echo(f"{'Boot loaders:' if i == 0 else '':<13} {client} -> {summary}")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What the boot menus offer, and which boot loader each kind of client gets."""
    with one_line_errors(ctx):
        found = listing.listing(machine_of(ctx))
        if as_json:
            typer.echo(json.dumps(found.as_json(), indent=2))
            return
        typer.echo(f"{found.title} (timeout {found.menu_timeout} s; * = default)")
        for e in found.entries:
            mark = "*" if e.default else " "
            size = human(e.size) if e.size else "-"
            typer.echo(f" {mark} {e.name:<24} {e.kind:<12} {e.arch:<7} {size:>10}  {e.label}")
            if e.source:
                checksum = e.sha256 or "not checked"
                typer.echo(f"   {'':<24} from {e.source} (SHA-256 {checksum})")
        print_chains([(c.client, c.summary, c.arch) for c in found.chains])
        for i, p in enumerate(found.plans):
            once = f" ({p.progress})" if p.progress else ""
            typer.echo(
                f"{'Plans:' if i == 0 else '':<13} {p.mac}  {p.what}{once}; boots now: {p.now}"
            )


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
    with one_line_errors(ctx):
        result = repo_module.repo_init(machine_of(ctx), path, dry_run=dry_run)
        warn(result.notes)
        if result.outcome is None:
            print_files(result.plan, diff=True)
            return
        print_outcome(result.outcome)
        typer.echo(f"Restores read {result.read_url} (the default repository of plans).")
        typer.echo(
            f"Saves (`pxeprov assign MAC --save NAME`) write to {result.write_url}, with a "
            "password made for the save plans: the share takes it until their jobs report or "
            "the plans are removed."
        )
