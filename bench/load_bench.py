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

Run as root: sudo .venv/bin/python bench/load_bench.py [--sizes 50,100,200] [--real bios,uefi]
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


def measure(http: bool, n: int, real: tuple[vlab.Firmware, ...],
            edit: dict[str, str | None] | None = None,
            site_edit: dict[str, str] | None = None) -> loadlab.Result:  # fmt: skip
    work = vlab.traversable_tempdir("pxeprov-load-bench-")
    try:
        with loadlab.server(work, http, edit, site_edit) as srv:
            return loadlab.run(srv, n, real=real)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def real_times(r: loadlab.Result) -> dict[str, float | None]:
    """Each real client's time from its first DISCOVER to its kernel (None: never got there),
    by firmware."""
    return {x["firmware"]: x["kernel_after"] - x["asked_after"]
            if x["kernel_after"] is not None and x["asked_after"] is not None else None
            for x in r.real}  # fmt: skip


def row(label: str, n: int, r: loadlab.Result, one: float, alone: dict[str, float | None]
        ) -> str:  # fmt: skip
    ok = len(r.booted)
    p50, p99 = r.percentile(50), r.percentile(99)
    ratio = f"{p99 / one:.1f}x" if one > 0 and ok else "-"
    retries = ", ".join(f"{k} {v}" for k, v in sorted(r.retries.items())) or "0"
    reals = []
    for x in r.real:
        t, base = real_times(r)[x["firmware"]], alone.get(x["firmware"])
        if t is None:
            reals.append(f"{x['firmware']} lost ({x['why']})")
            continue
        times = f"{t / base:.1f}x" if base and n > 1 else "alone"
        overlap = f", {x['overlap']:.0%} in the room" if n > 1 and x["overlap"] is not None else ""
        reals.append(f"{x['firmware']} {t:.0f} s ({times}{overlap})")
    cpu = f"{r.server_cpu['dnsmasq']:.1f} / {r.server_cpu['nginx']:.1f}"
    rss = f"{r.server_rss['dnsmasq'] >> 20} / {r.server_rss['nginx'] >> 20}"
    return (f"| {label} | {n} | {ok}/{n} | {p50:.1f} | {p99:.1f} | {ratio} | {retries} | "
            f"{cpu} | {rss} | {', '.join(reals) or '-'} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50,100,200")
    parser.add_argument("--layouts", default="http,tftp")
    parser.add_argument(
        "--real", default="bios,uefi", help="real QEMU clients among them, by firmware ('': none)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    sizes = [int(x) for x in args.sizes.split(",")]
    real: tuple[vlab.Firmware, ...] = tuple(vlab.FIRMWARES[f] for f in args.real.split(",") if f)
    print("| layout | N | reached the kernel | p50 s | p99 s | p99 / one client | retries | "
          "CPU s dnsmasq / nginx | peak MiB dnsmasq / nginx | real clients: DISCOVER to kernel "
          "(/ alone, share of it in the room) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|")
    for layout in args.layouts.split(","):
        http = layout == "http"
        alone: dict[str, float | None] = {}
        single = 0.0
        for firmware in real or (None,):  # each real client alone (beside one simulated)
            one = measure(http, 1, (firmware,) if firmware else ())
            single = single or one.percentile(50)
            alone.update(real_times(one))
            print(row(f"{layout} (one client)", 1, one, single, alone), flush=True)
        for n in sizes:
            print(row(layout, n, measure(http, n, real), single, alone), flush=True)
        n = max(s for s in sizes if s <= 100) if not http else max(sizes)
        if http:  # the reference: nginx copying each file through itself
            ref = measure(http, n, real, site_edit={"sendfile on;": "sendfile off;"})
            print(row(f"{layout}, sendfile off (reference)", n, ref, single, alone), flush=True)
        else:  # the reference: dnsmasq's own limit of 50 transfers
            ref = measure(http, n, (), {"tftp-max": None})
            print(row(f"{layout}, dnsmasq's default tftp-max (reference)", n, ref, single, {}),
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
