"""The commands that add and remove images: `add-image`, `remove-image`."""

from __future__ import annotations

from typing import Annotated

import typer

from pxeprov.cli.app import (
    app,
    human,
    machine_of,
    one_line_errors,
    print_files,
    print_outcome,
    progress_bar,
)
from pxeprov.commands import images
from pxeprov.images import kinds


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
    arch: Annotated[
        str | None,
        typer.Option(help="x86-64 or arm64, where the kernel's own bytes do not say."),
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
        arch=arch,
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
    with one_line_errors(ctx):
        machine = machine_of(ctx)
        with progress_bar() as progress:
            result = images.add_image(machine, options, dry_run=dry_run, progress=progress)
        for note in result.notes:
            typer.echo(note)
        image = result.image
        if result.layout is None:  # a dry run of a URL that is not downloaded yet
            return
        verb = "would add" if dry_run else "added"
        typer.echo(f"{verb} {image.name} ({image.kind}, {image.arch}, {human(image.size)}): "
                   f"{image.label}")  # fmt: skip
        for path, size in result.files:
            typer.echo(f"  {'would copy' if dry_run else 'copied':<10} {path} ({human(size)})")
        if dry_run:
            assert result.plan is not None
            print_files(result.plan, diff=True)
            return
        assert result.outcome is not None
        print_outcome(result.outcome)
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
    with one_line_errors(ctx):
        result = images.remove_image(machine_of(ctx), name, dry_run=dry_run, force=force)
        folder = f"images/{result.image.name}/"
        if dry_run:
            typer.echo(
                f"would remove {result.image.name} and {folder} ({human(result.image.size)})"
            )
            print_files(result.plan, diff=True)
            return
        assert result.outcome is not None
        print_outcome(result.outcome)
        typer.echo(f"removed {result.image.name} and {folder}")
