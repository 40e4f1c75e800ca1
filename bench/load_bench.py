"""A room powers on at once: N simulated PXE clients (tests/loadgen.py) against pxeprov's
rendered dnsmasq (proxy + TFTP) and nginx, in a private network of namespaces (tests/loadlab.py).

For N in --sizes and each layout (HTTP payloads, the default; TFTP only, `--no-http`) it prints
the clients that reached their kernel, p50/p99 time to kernel (kernel and initrd in: the real
Debian installer's, 39 MB), the retries, and the server's CPU seconds and peak memory; then the
ratio of p99 to one client's time (the goal: 200 at once, none lost, p99 <= 3x one client's),
and the reference measured in the same run: the same config with dnsmasq's own TFTP limit
(tftp-max 50, what pxeprov rendered before it was tuned), and the rendered nginx site with
`sendfile off` (nginx reading each file into its own buffers).

With --real (default 2: one SeaBIOS, one OVMF, under TCG) real QEMU clients boot among the
simulated ones, and alone in the one-client row: their time from their first DISCOVER to their
kernel, and its ratio to the same client's alone, is the goal measured with firmware's own
pace. (Under TCG each VM needs a core of its own: on 2 cores, beside 200 simulated clients,
part of a real client's time is the emulation's wait for the CPU, not the server.)

Run as root: sudo .venv/bin/python bench/load_bench.py [--sizes 50,100,200] [--real 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pxeprov import vlab
from tests import loadlab


def measure(http: bool, n: int, real: int, edit: dict[str, str | None] | None,
            site_edit: dict[str, str] | None = None) -> loadlab.Result:  # fmt: skip
    work = vlab.traversable_tempdir("pxeprov-load-bench-")
    try:
        with loadlab.server(work, http, edit, site_edit) as srv:
            return loadlab.run(srv, n, real=real)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def real_times(r: loadlab.Result) -> list[float | None]:
    """Each real client's time from its first DISCOVER to its kernel (None: never got there)."""
    return [x["kernel_after"] - x["asked_after"] if x["kernel_after"] and x["asked_after"]
            else None for x in r.real]  # fmt: skip


def row(label: str, n: int, r: loadlab.Result, one: float, real_one: list[float | None]) -> str:
    ok = len(r.booted)
    p50, p99 = r.percentile(50), r.percentile(99)
    ratio = p99 / one if one > 0 and ok else float("nan")
    retries = ", ".join(f"{k} {v}" for k, v in sorted(r.retries.items())) or "0"
    reals = []
    for x, t, alone in zip(r.real, real_times(r), real_one, strict=False):
        if t is None:
            reals.append(f"{x['firmware']} lost")
        else:
            times = f"{t / alone:.1f}x" if alone else "-"
            reals.append(f"{x['firmware']} {t:.0f} s ({times})")
    cpu = f"{r.server_cpu['dnsmasq']:.1f} / {r.server_cpu['nginx']:.1f}"
    rss = f"{r.server_rss['dnsmasq'] >> 20} / {r.server_rss['nginx'] >> 20}"
    return (f"| {label} | {n} | {ok}/{n} | {p50:.1f} | {p99:.1f} | {ratio:.1f}x | {retries} | "
            f"{cpu} | {rss} | {', '.join(reals) or '-'} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50,100,200")
    parser.add_argument("--layouts", default="http,tftp")
    parser.add_argument("--real", type=int, default=2, help="real QEMU clients among them")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    sizes = [int(x) for x in args.sizes.split(",")]
    print("| layout | N | reached the kernel | p50 s | p99 s | p99 / one client | retries | "
          "CPU s dnsmasq / nginx | peak MiB dnsmasq / nginx | real clients: DISCOVER to kernel "
          "(/ alone) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|")
    for layout in args.layouts.split(","):
        http = layout == "http"
        one = measure(http, 1, args.real, None)
        single, alone = one.percentile(50), real_times(one)
        print(row(f"{layout} (one client)", 1, one, single, alone), flush=True)
        for n in sizes:
            print(row(layout, n, measure(http, n, args.real, None), single, alone), flush=True)
        if http:  # the reference: nginx copying each file through itself
            n = max(sizes)
            ref = measure(http, n, 0, None, {"sendfile on;": "sendfile off;"})
            print(row(f"{layout}, sendfile off (reference)", n, ref, single, []), flush=True)
        else:  # the reference: dnsmasq's own limit of 50 transfers
            n = max(s for s in sizes if s <= 100)
            ref = measure(http, n, 0, {"tftp-max": None})
            print(row(f"{layout}, dnsmasq's default tftp-max (reference)", n, ref, single, []),
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
