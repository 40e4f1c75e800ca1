"""The wheel carries the templates, so an installed pxeprov renders without the source tree."""

from __future__ import annotations

import subprocess
import sys
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
    assert "pxeprov/cli.py" in names
