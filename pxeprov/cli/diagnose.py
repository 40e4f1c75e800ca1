"""The commands that say why a client did not boot: `doctor`, `watch`, `status`, `verify`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from pxeprov import bootlog
from pxeprov.cli.app import app, machine_of, may_act, one_line_errors
from pxeprov.commands import doctor as doctor_module
from pxeprov.commands import session as session_module
from pxeprov.commands import verify as verify_module
from pxeprov.commands import watch as watch_module
from pxeprov.errors import (
    InputError,
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
    with one_line_errors(ctx):
        if not 0.5 <= wait <= 60:
            raise InputError(f"--wait {wait} must be between 0.5 and 60 seconds")
        report = doctor_module.doctor(machine_of(ctx), doctor_module.Options(probe, wait))
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
    with one_line_errors(ctx):
        options = dataclasses.replace(
            watch_module.WatchOptions.parse(mac, since, stall, dnsmasq_log, nginx_log), fire=fire
        )
        try:
            watch_module.watch(machine_of(ctx), options, lambda line: typer.echo(line))
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
    with one_line_errors(ctx):
        options = watch_module.WatchOptions.parse(mac, since, stall, dnsmasq_log, nginx_log)
        machine = machine_of(ctx)
        for said in session_module.check_senders(machine, act=may_act(machine)):
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
        typer.Option(
            help="bios, uefi, uefi-sb, arm64 and/or arm64-sb, comma-separated [default: all "
            "served that this machine can emulate]."
        ),
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
    with one_line_errors(ctx):
        options = verify_module.VerifyOptions.parse(image, firmware, timeout, keep, accel)
        result = verify_module.verify(machine_of(ctx), options, lambda line: typer.echo(line))
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
