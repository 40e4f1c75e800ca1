"""Shared fixtures: a root directory holding copies of the boot-loader files, and the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pxeprov.cli import app
from pxeprov.loaders import LOADER_FILES

# The host's packages provide the boot loaders the test roots get copies of.
_MISSING = [str(f.source) for f in LOADER_FILES if not Path(str(f.source)).is_file()]


@pytest.fixture
def loader_root(tmp_path: Path) -> Path:
    """A --root with the boot-loader files where their packages put them, and nothing else."""
    if _MISSING:
        pytest.fail(f"boot-loader files missing on this machine (run tests/run-all.sh): {_MISSING}")
    root = tmp_path / "root"
    for f in LOADER_FILES:
        target = root / str(f.source).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(f.source), target)
    return root


Cli = Callable[..., Result]


@pytest.fixture
def cli() -> Cli:
    runner = CliRunner()

    def invoke(root: Path, *args: str) -> Result:
        return runner.invoke(app, ["--root", str(root), *args])

    return invoke


# The lo interface exists everywhere (also inside a fresh network namespace).
NET = ["--interface", "lo", "--address", "127.0.0.1", "--subnet", "127.0.0.0/8"]


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and directory under root: content hash, mode and mtime."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return out
