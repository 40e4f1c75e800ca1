#!/usr/bin/env python3
"""add-image's copy against `xorriso -osirrox on -extract` of the same files, side by side.

Run by hand, as root, from the repository (after tests/run-all.sh made .venv):

    .venv/bin/python bench/copy_bench.py [--small-mb 50] [--large-mb 850] [--rounds 3]

Two Clonezilla-shaped ISOs (built once with xorriso into --workdir, kept for the next run) so
that start-up and per-byte cost separate: per-byte cost = (t_large - t_small) / (MB_large -
MB_small), start-up = what is left of t_small. Runs alternate between the tools (pxeprov,
xorriso, pxeprov, ...) so drift hits both. Both read the ISO from the page cache (a warm-up run
comes first). pxeprov fsyncs what it copies (the image must survive a power cut once it is in
the menu); xorriso does not, so it is also timed followed by `sync` of its output files, which
is the like-for-like figure. Peak RSS is the child's ru_maxrss (os.wait4).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.isos import clonezilla_files, make_iso  # noqa: E402 - after the path is set

LOADERS = [
    "/usr/lib/PXELINUX/pxelinux.0",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/syslinux/modules/bios/menu.c32",
    "/usr/lib/syslinux/modules/bios/libutil.c32",
    "/usr/lib/syslinux/modules/bios/libmenu.c32",
    "/usr/lib/ipxe/snponly.efi",
]
FILES = ["/live/vmlinuz", "/live/initrd.img", "/live/filesystem.squashfs"]


def timed(argv: list[str], cwd: Path = REPO) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command."""
    os.sync()  # the previous run's writeback must not be billed to this one
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"failed: {' '.join(argv)}\n{err}")
    return elapsed, int(usage.ru_maxrss)


def build_iso(workdir: Path, mb: int) -> Path:
    iso = workdir / f"clonezilla-{mb}mb.iso"
    if iso.exists():
        return iso
    squashfs = max(1, mb - 48) << 20  # about 8 MB kernel + 40 MB initrd, like Clonezilla's
    make_iso(iso, clonezilla_files(kernel=8 << 20, initrd=40 << 20, squashfs=squashfs))
    shutil.rmtree(iso.with_suffix(".src"))
    return iso


def fresh_root(workdir: Path) -> Path:
    root = workdir / "root"
    shutil.rmtree(root, ignore_errors=True)
    for src in LOADERS:
        dst = root / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    subprocess.run(
        [sys.executable, "-m", "pxeprov", "--root", str(root), "init", "--interface", "lo"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return root


def run_pxeprov(root: Path, iso: Path) -> tuple[float, int]:
    shutil.rmtree(root / "var/lib/tftpboot/images/bench", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pxeprov", "--root", str(root), "remove-image", "bench"],
        cwd=REPO, capture_output=True, check=False,
    )  # fmt: skip
    return timed(
        [
            sys.executable,
            "-m",
            "pxeprov",
            "--root",
            str(root),
            "add-image",
            str(iso),
            "--name",
            "bench",
        ]
    )


def run_xorriso(out: Path, iso: Path, sync: bool) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = ["xorriso", "-osirrox", "on", "-indev", str(iso)]
    for f in FILES:
        argv += ["-extract", f, str(out / Path(f).name)]
    t, rss = timed(argv)
    if sync:
        t0 = time.perf_counter()
        subprocess.run(["sync", *[str(out / Path(f).name) for f in FILES]], check=True)
        t += time.perf_counter() - t0
    return t, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small-mb", type=int, default=50)
    ap.add_argument("--large-mb", type=int, default=850)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/pxeprov-bench"))
    ap.add_argument(
        "--tmpfs",
        action="store_true",
        help="write the copies to a tmpfs: the tools' own cost, without the disk's writeback",
    )
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    isos = {size: build_iso(args.workdir, size) for size in (args.small_mb, args.large_mb)}
    target = args.workdir / "out"
    target.mkdir(exist_ok=True)
    if args.tmpfs:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", str(target)], check=True)
    try:
        measure(args, isos, target)
    finally:
        if args.tmpfs:
            subprocess.run(["umount", str(target)], check=True)


def measure(args: argparse.Namespace, isos: dict[int, Path], target: Path) -> None:
    root = fresh_root(target)
    out = target / "xorriso-out"
    results: dict[tuple[str, int], list[tuple[float, int]]] = {}
    tools: dict[str, Callable[[Path], tuple[float, int]]] = {
        "pxeprov": lambda iso: run_pxeprov(root, iso),
        "xorriso": lambda iso: run_xorriso(out, iso, sync=False),
        "xorriso+sync": lambda iso: run_xorriso(out, iso, sync=True),
    }
    for _size, iso in isos.items():
        for tool in tools.values():  # warm-up: the ISO into the page cache, imports compiled
            tool(iso)
    for _ in range(args.rounds):
        for size, iso in isos.items():
            for name, tool in tools.items():
                results.setdefault((name, size), []).append(tool(iso))
    copied = {size: payload_bytes(iso) for size, iso in isos.items()}
    small, large = copied[args.small_mb], copied[args.large_mb]
    print(f"\nfiles copied per run: small {small / 1e6:.1f} MB, large {large / 1e6:.1f} MB; "
          f"{args.rounds} alternated rounds, medians")  # fmt: skip
    print(
        f"{'tool':<14}{'small s':>9}{'large s':>9}{'ms/100MB':>10}{'start-up s':>11}{'RSS MiB':>9}"
    )
    per_byte = {}
    for name in tools:
        ts = statistics.median(t for t, _ in results[(name, args.small_mb)])
        tl = statistics.median(t for t, _ in results[(name, args.large_mb)])
        slope = (tl - ts) / (large - small)
        start = ts - slope * small
        rss = max(r for size in isos for _, r in results[(name, size)]) / 1024
        per_byte[name] = slope
        print(f"{name:<14}{ts:>9.3f}{tl:>9.3f}{slope * 1e11:>10.1f}{start:>11.3f}{rss:>9.1f}")
    fastest = {
        name: (min(t for t, _ in results[(name, args.large_mb)])
               - min(t for t, _ in results[(name, args.small_mb)])) / (large - small)
        for name in tools
    }  # fmt: skip
    fair_min = fastest["pxeprov"] / fastest["xorriso+sync"]
    print(f"per-byte cost from the fastest runs, pxeprov / xorriso+sync: {fair_min:.2f}x")
    fair = per_byte["pxeprov"] / per_byte["xorriso+sync"]
    raw = per_byte["pxeprov"] / per_byte["xorriso"]
    print(f"\nper-byte cost, pxeprov / xorriso+sync: {fair:.2f}x (target <= 1.0)")
    print(f"per-byte cost, pxeprov / xorriso without sync: {raw:.2f}x")
    for name in tools:
        runs = ", ".join(f"{s}MB {t:.3f}s" for s in isos for t, _ in results[(name, s)])
        print(f"  {name}: {runs}")


def payload_bytes(iso: Path) -> int:
    listing = subprocess.run(
        ["xorriso", "-indev", str(iso), "-find", "/live", "-type", "f", "-exec", "lsdl"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(int(line.split()[4]) for line in listing.splitlines() if line.startswith("-"))


if __name__ == "__main__":
    main()
