"""The commands that give machines plans and wake them: `assign`, `wake`, `unassign`,
`plans`, and the hidden `session-run` (a multicast session's sender as a service)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pxeprov import bootlog, wol
from pxeprov.cli.app import (
    app,
    machine_of,
    may_act,
    one_line_errors,
    print_files,
    print_outcome,
    warn,
)
from pxeprov.commands import plans as plans_module
from pxeprov.commands import session as session_module
from pxeprov.commands import watch as watch_module
from pxeprov.errors import (
    InputError,
)
from pxeprov.render import plan_label

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
    with one_line_errors(ctx):
        if not multicast and (clients, mcast_address, mcast_port, mcast_interface) != (None,) * 4:
            raise InputError("--clients and --mcast-* are for --multicast")
        session = session_module.MulticastOptions(
            clients, max_wait, part_pause, max_bitrate, mcast_address, mcast_port,
            mcast_interface, drop_retries,
        )  # fmt: skip
        chosen = {"entry": entry, "local": local, "menu": menu, "restore": restore, "save": save}
        options = plans_module.AssignOptions.parse(
            tuple(macs), chosen, disk=disk, then=then, multicast=session if multicast else None,
            repo=repo, once=once, group=group, yes=yes or dry_run, force=force,
        )  # fmt: skip
        action = options.action
        if action == "restore" and not options.yes and sys.stdin.isatty():
            answer = input(
                f"Restore {restore} to {options.disk} of {', '.join(macs)}: this erases the "
                "disk on the next network boot. Continue? [y/N] "
            )
            options = dataclasses.replace(options, yes=answer.strip().lower() in ("y", "yes"))
        machine = machine_of(ctx)
        if action == "menu":
            result = plans_module.unassign(machine, tuple(macs), dry_run=dry_run, force=force)
        else:
            result = plans_module.assign(machine, options, live=live, dry_run=dry_run)
        warn(result.notes)
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
            print_files(result.plan, diff=True)
            return
        print_outcome(result.outcome)
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
    with one_line_errors(ctx):
        _say_woken(plans_module.wake(machine_of(ctx), tuple(macs or ()), group, port))


@app.command()
def unassign(
    ctx: typer.Context,
    macs: Annotated[list[str] | None, typer.Argument(help="The machines' MAC addresses.")] = None,
    group: Annotated[str, typer.Option(help="Every machine of this group.")] = "",
    force: Annotated[bool, typer.Option(help="Overwrite menus edited by hand.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
) -> None:
    """Remove machines' plans: they get the menu again."""
    with one_line_errors(ctx):
        result = plans_module.unassign(
            machine_of(ctx), tuple(macs or ()), group, dry_run=dry_run, force=force
        )
        for plan in result.plans:
            typer.echo(f"{plan.mac}: no plan ({plan_label(plan)} removed)")
        if result.outcome is None:
            print_files(result.plan, diff=True)
            return
        print_outcome(result.outcome)
        for line in result.said:
            typer.echo(line)


@app.command("session-run", hidden=True)
def session_run(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The session.")]
) -> None:
    """The sender of a multicast session (started by `assign --multicast`, as a service)."""
    with one_line_errors(ctx):
        progress = session_module.run_sender(machine_of(ctx), name, typer.echo)
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
    with one_line_errors(ctx):
        machine = machine_of(ctx)
        said = session_module.check_senders(machine, act=may_act(machine))
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
            typer.echo(json.dumps(plans_module.plans_json(machine, views), indent=2))
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
