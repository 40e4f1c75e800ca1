"""The typer app and what every command shares: the global options, one line per error
(`one_line_errors`), the machine a command acts on, and how plans, files and outcomes are
printed."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pxeprov import __version__, fsutil, pipeline, ports
from pxeprov.apply import Outcome
from pxeprov.errors import (
    ConflictError,
    FilesystemError,
    PxeprovError,
)
from pxeprov.paths import Root
from pxeprov.plan import ChangeSet, DirOp, Op, diff_text, is_text
from pxeprov.progress import Progress

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


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def one_line_errors(ctx: typer.Context) -> Iterator[None]:
    """Our errors become one `error:` line and their exit code; tracebacks only with --debug."""
    settings: Settings = ctx.obj
    try:
        yield
    except PxeprovError as exc:
        if isinstance(exc, ConflictError) and exc.diff:
            typer.echo(exc.diff, nl=False)  # what the hand edit was
        if settings.debug:
            raise
        fail(exc.one_line(), exc.exit_code)
    except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
        raise
    except PermissionError as exc:
        # a file or directory this account may not read or change (root's state, logs, keys)
        if settings.debug:
            raise
        fail(permission_denied(exc), FilesystemError.exit_code)
    except Exception as exc:
        if settings.debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1)


def permission_denied(exc: PermissionError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if os.geteuid() != 0:
        return f"permission denied:{where} ({fsutil.NEEDS_ROOT})"
    return f"permission denied:{where} ({exc.strerror or exc})"


def machine_of(ctx: typer.Context) -> pipeline.Machine:
    settings: Settings = ctx.obj
    return pipeline.Machine(root=settings.root)


# ---------------------------------------------------------------- output


def print_plan(plan: ChangeSet, install_note: str, is_system: bool) -> None:
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
            f"{len(d.files)} files, {human(d.size)}" if d.op is DirOp.INSTALL else "and its files"
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


def print_files(plan: ChangeSet, diff: bool) -> None:
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


def warn(warnings: list[str]) -> None:
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)


# ---------------------------------------------------------------- images


@contextmanager
def progress_bar() -> Iterator[Progress | None]:
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


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def print_outcome(outcome: Outcome) -> None:
    for status, what in outcome.lines:
        if status != "unchanged":
            typer.echo(f"  {status:<10} {what}")


def may_act(machine: pipeline.Machine) -> bool:
    """Whether a report may also clean up after a sender (root, or a test's --root)."""
    return not machine.root.is_system or os.geteuid() == 0
