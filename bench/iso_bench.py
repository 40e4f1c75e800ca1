#!/usr/bin/env python3
"""Recognizing an ISO with many files: pxeprov's lazy reader against pycdlib and xorriso.

Run by hand from the repository (after tests/run-all.sh made .venv):

    .venv/bin/python bench/iso_bench.py [--entries 100000] [--rounds 3]

One Clonezilla-shaped ISO with `--entries` small files spread over 100 directories besides
live/ (built once with xorriso into --workdir, kept for the next run). Each tool, in a process
of its own, opens the ISO and finds what add-image needs (the kernel, initrd and squashfs under
/live and the version file):
  pxeprov   pxeprov.images.iso.Iso + kinds.detect (reads the root and /live only)
  pycdlib   PyCdlib.open + get_record of the three files (reads every directory of every
            namespace: what pxeprov did before)
  xorriso   xorriso -indev ISO -find /live (libisofs loads the directory tree)
Printed: median wall seconds and peak RSS (the child's ru_maxrss), and pxeprov's ratio to each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.copy_bench import timed  # noqa: E402 - after the path is set
from tests.isos import clonezilla_files, make_iso  # noqa: E402

PXEPROV = """
import sys
from pathlib import Path
from pxeprov.images import kinds
from pxeprov.images.iso import Iso
with Iso(Path(sys.argv[1])) as iso:
    layout = kinds.detect(iso)
    assert layout.kind == "clonezilla", layout
"""
PYCDLIB = """
import sys
import pycdlib
iso = pycdlib.PyCdlib()
iso.open(sys.argv[1])
for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
    iso.get_record(rr_path="/live/" + name)
iso.close()
"""


def build(workdir: Path, entries: int) -> Path:
    iso = workdir / f"many-{entries}.iso"
    if iso.exists():
        return iso
    files: dict[str, bytes | int] = dict(clonezilla_files())
    per_dir = max(1, entries // 100)
    for i in range(entries):
        files[f"junk/d{i // per_dir:03d}/a-file-with-a-longish-name-{i:06d}.txt"] = b""
    print(f"building {iso} ({entries} entries) ...", flush=True)
    make_iso(iso, files, volume_id="Clonezilla live")
    return iso


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/pxeprov-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    iso = build(args.workdir, args.entries)
    tools = {
        "pxeprov": [sys.executable, "-c", PXEPROV, str(iso)],
        "pycdlib": [sys.executable, "-c", PYCDLIB, str(iso)],
        "xorriso": ["xorriso", "-indev", str(iso), "-find", "/live"],
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
    timed(tools["pxeprov"])  # warm-up: the ISO in the page cache for everyone
    for _ in range(args.rounds):
        for name, argv in tools.items():
            results[name].append(timed(argv))
    rows = {
        name: (statistics.median(t for t, _ in runs), max(r for _, r in runs) / 1024)
        for name, runs in results.items()
    }
    print(f"\nISO with {args.entries} entries besides live/, {iso.stat().st_size >> 20} MiB, "
          f"median of {args.rounds} runs")  # fmt: skip
    print(
        f"{'tool':<10} {'seconds':>8} {'peak RSS MiB':>13} {'pxeprov time':>13} {'pxeprov RSS':>12}"
    )
    ours_t, ours_r = rows["pxeprov"]
    for name, (t, rss) in rows.items():
        print(f"{name:<10} {t:>8.3f} {rss:>13.1f} {ours_t / t:>12.2f}x {ours_r / rss:>11.2f}x")


if __name__ == "__main__":
    main()
