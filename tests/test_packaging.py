"""The wheel carries the templates, so an installed pxeprov renders without the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_templates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("pxeprov-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"pxeprov/templates/{p.relative_to(REPO / 'templates')}"
        for p in (REPO / "templates").rglob("*.j2")
    }
    assert len(shipped) >= 4
    assert shipped <= names
    code = {
        str(p.relative_to(REPO))
        for p in (REPO / "pxeprov").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert "pxeprov/cli/__init__.py" in code and "pxeprov/state/codec.py" in code
    assert code <= names, f"left out of the wheel: {sorted(code - names)}"


def test_install_sh_help_describes_itself_and_changes_nothing() -> None:
    """`./install.sh --help` says what the script does and changes nothing: run as an account
    that may change nothing (nobody), it must still answer, and no venv or link appears."""
    before = {p: p.exists() for p in (Path("/opt/pxeprov"), Path("/usr/local/bin/pxeprov"))}
    # a copy nobody can read (the checkout and pytest's tmp_path may be root's only)
    with tempfile.TemporaryDirectory(prefix="pxeprov-install-help-") as d:
        Path(d).chmod(0o755)
        script = Path(d) / "install.sh"
        shutil.copy(REPO / "install.sh", script)
        for flag in ("--help", "-h"):
            done = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 "bash", str(script), "--interface", "eth1", flag],
                capture_output=True, text=True, timeout=60, cwd="/", check=False,
            )  # fmt: skip
            _check_help(done)
    assert {p: p.exists() for p in before} == before


def _check_help(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: sudo "), done.stdout
    assert "--dry-run" in done.stdout and "pxeprov init" in done.stdout, done.stdout
    assert done.stderr == ""
