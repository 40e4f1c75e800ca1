"""The status page: `web url`, `web rotate`."""

from __future__ import annotations

import typer

from pxeprov.cli.app import app, machine_of, one_line_errors, print_outcome, warn
from pxeprov.commands import web as web_module

web_app = typer.Typer(
    no_args_is_help=True,
    help="The status page and its JSON API (served by nginx behind a secret token).",
)
app.add_typer(web_app, name="web")


@web_app.command("url")
def web_url(ctx: typer.Context) -> None:
    """Print the status page's address, with its token (the JSON API is under it:
    api/v1/status.json). Anyone with it sees the machines, their addresses and plans."""
    with one_line_errors(ctx):
        result = web_module.url(machine_of(ctx))
        warn(result.notes)
        typer.echo(result.url)


@web_app.command("rotate")
def web_rotate(ctx: typer.Context) -> None:
    """Give the page a new token: the old address gets 403 from now on. Prints the new one."""
    with one_line_errors(ctx):
        result, done = web_module.rotate(machine_of(ctx))
        if done.outcome is not None:
            print_outcome(done.outcome)
        typer.echo(result.url)
