"""The command line: the typer app (app.py) and its commands, one module per part of the job.
Each module parses options, calls the core (pxeprov.commands) and prints what it returns: no
logic of its own."""

from __future__ import annotations

import os
import sys

# importing them registers their commands, in this order in --help
from pxeprov.cli import server  # noqa: F401  (init, render, list, repo init)

# isort: split
from pxeprov.cli import images  # noqa: F401  (add-image, remove-image)

# isort: split
from pxeprov.cli import machines  # noqa: F401  (assign, wake, unassign, plans)

# isort: split
from pxeprov.cli import diagnose  # noqa: F401  (doctor, watch, status, verify)

# isort: split
from pxeprov.cli import web  # noqa: F401  (web url, web rotate)
from pxeprov.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app(prog_name="pxeprov")
    except BrokenPipeError:
        # `pxeprov render | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
