#!/usr/bin/env python3
"""A real payload to userspace: the suite's Debian live image over TFTP and over HTTP, on BIOS,
UEFI and UEFI Secure Boot clients, side by side in one run.

Run by hand, as root, from the repository (after tests/run-all.sh made .venv and installed the
Debian packages the e2e tests use):

    .venv/bin/python bench/live_bench.py [--rounds 1] [--keep]

The live image is the one the e2e tests boot (tests/e2e/build-live-image.sh: live-boot
initramfs, a squashfs of ~180 MB; built with mmdebstrap on first use and cached in
/var/cache/pxeprov-tests/live), added with `pxeprov add-image` to four roots rendered by
`pxeprov init` inside the e2e lab's namespace B: {iPXE, shim + GRUB} x {--no-http, --http}.
Secure Boot uses Debian 13's signed shim and GRUB 2.12 (the e2e cache, tests/e2e/sbfiles.py)
and OVMF with Secure Boot enforced.

Each boot (QEMU TCG, -m 2048) is timed from power-on to three stages:
  kernel     "Linux version" on the serial console;
  squashfs   the squashfs fetched: dnsmasq's "sent .../filesystem.squashfs" (TFTP; logged when
             the transfer ends) or nginx's access-log line (HTTP; written when the response
             ends), polled every 0.2 s;
  userspace  the live system's LIVE-USERSPACE-OK line (systemd reached multi-user.target).
The squashfs stage is kernel -> squashfs (kernel boot, initramfs, DHCP, the fetch; only the
fetch differs between the paths). Printed: a line per boot, a table of medians, and the ratios
against the targets: squashfs stage >= 3x faster over HTTP on every chain; the Secure Boot chain
within 10% of plain UEFI over HTTP, to userspace.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.liveimage import LiveImage, LiveImageError, live_image  # noqa: E402
from tests.e2e.netlab import (  # noqa: E402
    OVMF_SB_CODE,
    OVMF_SB_VARS,
    LabError,
    NetLab,
    missing_files,
    missing_preconditions,
    size_of,
    traversable_tempdir,
)
from tests.e2e.pxeserver import (  # noqa: E402
    HTTP_PORT,
    LOADERS,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    pxeprov,
)
from tests.e2e.sbfiles import GRUB, SHIM, PackageError, secureboot_files  # noqa: E402

Transport = Literal["tftp", "http"]
Chain = Literal["bios", "uefi", "uefi-sb"]
CHAINS: tuple[Chain, ...] = ("bios", "uefi", "uefi-sb")
NAMES = {"bios": "BIOS (iPXE/pxelinux)", "uefi": "UEFI (iPXE)", "uefi-sb": "UEFI SB (shim+GRUB)"}
IMAGE = "live"
SQUASHFS = f"images/{IMAGE}/filesystem.squashfs"
USERSPACE = "LIVE-USERSPACE-OK"
MEMORY_MB = 2048
CONSOLE = "console=ttyS0,115200n8"
LEASES = 51


class BenchError(RuntimeError):
    pass


def render(lab: NetLab, work: Path, image: LiveImage, loader: str, transport: Transport,
           sb: dict[Path, Path]) -> Served:  # fmt: skip
    name = f"{loader}-{transport}"
    root = work / f"root-{name}"
    root.mkdir()
    extra = {UNDIONLY: UNDIONLY} | (sb if loader == "grub" else {})
    build_root(root, extra)
    http = ["--http", "--http-port", str(HTTP_PORT)] if transport == "http" else ["--no-http"]
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1",
            "--uefi-loader", loader, *http)  # fmt: skip
    pxeprov(lab, root, "add-image", str(image.debian_iso), "--name", IMAGE, "--default",
            "--append", CONSOLE)  # fmt: skip
    served = Served.of(name, root)
    menu = served.tftp_root / ("grub/grub.cfg" if loader == "grub" else "boot.ipxe")
    want = [f"fetch={transport}://"]
    if (loader, transport) == ("grub", "http"):
        want.append("(http,")  # GRUB loads kernel and initrd from nginx
    for text in want:  # each menu loads the payloads the way this case is meant to measure
        if text not in menu.read_text():
            raise BenchError(f"{menu} has no {text!r}:\n{menu.read_text()}")
    return served


@dataclass(frozen=True)
class Result:
    chain: Chain
    transport: Transport
    kernel: float  # seconds from power-on
    squashfs: float
    userspace: float
    transfer: float | None  # nginx's $request_time for the squashfs (HTTP only)


def boot_once(lab: NetLab, root: Served, chain: Chain, transport: Transport, mac: str,
              limit: float) -> Result:  # fmt: skip
    if root.nginx is not None:
        mark = (root.nginx.access_log, rf'"GET /{re.escape(SQUASHFS)} [^"]*" 200 ')
        offset = size_of(root.nginx.access_log)
    else:
        mark = (root.running.log, rf"sent \S+/{re.escape(SQUASHFS)} to ")
        offset = 0
    ev = lab.boot(chain, mac, root.running, limit=limit, stop_on=USERSPACE, stop_grace=0.5,
                  memory_mb=MEMORY_MB, marks={"squashfs": mark})  # fmt: skip
    problems = []
    if ev.kernel_after is None:
        problems.append("the kernel never started")
    if "squashfs" not in ev.marks:
        problems.append("the squashfs was never fetched whole")
    if ev.stop_after is None:
        problems.append(f"no {USERSPACE} on the serial console")
    if transport == "http" and f"/{SQUASHFS}" in ev.proxy_log:
        problems.append("the squashfs was asked for over TFTP during an HTTP boot")
    if chain == "uefi-sb" and "Secure boot enabled" not in ev.serial:
        problems.append("Secure Boot was not on")
    if problems or ev.kernel_after is None or ev.stop_after is None:
        raise BenchError(f"{chain}/{transport}: {'; '.join(problems)}\n{ev.summary()}")
    transfer = None
    if root.nginx is not None:
        got = [r for r in root.nginx.requests(offset) if r.path == f"/{SQUASHFS}"]
        transfer = got[-1].seconds if got else None
    return Result(chain, transport, ev.kernel_after, ev.marks["squashfs"], ev.stop_after,
                  transfer)  # fmt: skip


def order(round_: int) -> list[tuple[Chain, Transport]]:
    paths: tuple[Transport, Transport] = ("tftp", "http") if round_ % 2 == 0 else ("http", "tftp")
    return [(c, p) for c in CHAINS for p in paths]


def report(results: list[Result], image: LiveImage) -> None:
    squashfs_mb = image.squashfs.stat().st_size / 1e6
    print()
    print(f"live image: {image.manifest.splitlines()}; squashfs {squashfs_mb:.0f} MB; "
          f"QEMU -accel tcg -m {MEMORY_MB}")  # fmt: skip
    print(f"{'chain':<22}{'path':<6}{'boots':>6}{'kernel':>9}{'squashfs':>10}{'userspace':>11}"
          f"{'squashfs stage':>16}{'fetch (nginx)':>15}")  # fmt: skip
    med: dict[tuple[Chain, Transport], tuple[float, float, float]] = {}
    for chain, transport in order(0):
        mine = [r for r in results if (r.chain, r.transport) == (chain, transport)]
        if not mine:
            continue
        k = statistics.median(r.kernel for r in mine)
        s = statistics.median(r.squashfs for r in mine)
        u = statistics.median(r.userspace for r in mine)
        fetches = [r.transfer for r in mine if r.transfer is not None]
        fetch = f"{statistics.median(fetches):.1f} s" if fetches else "-"
        med[(chain, transport)] = (k, s, u)
        print(f"{NAMES[chain]:<22}{transport:<6}{len(mine):>6}{k:>8.1f}s{s:>9.1f}s{u:>10.1f}s"
              f"{s - k:>15.1f}s{fetch:>15}")  # fmt: skip
    print("(seconds from power-on, medians; squashfs stage = kernel -> squashfs fetched)")
    print()
    for chain in CHAINS:
        tftp, http = med.get((chain, "tftp")), med.get((chain, "http"))
        if tftp is None or http is None:
            continue
        stage = (tftp[1] - tftp[0]) / (http[1] - http[0])
        print(f"{NAMES[chain]}: squashfs stage {stage:.2f}x faster over HTTP "
              f"({'meets' if stage >= 3 else 'misses'} the 3x target); to userspace "
              f"{tftp[2] / http[2]:.2f}x")  # fmt: skip
    uefi, sb = med.get(("uefi", "http")), med.get(("uefi-sb", "http"))
    if uefi is not None and sb is not None:
        ratio = sb[2] / uefi[2]
        print(f"Secure Boot over HTTP: {ratio:.2f}x plain UEFI's time to userspace "
              f"({'meets' if ratio <= 1.10 else 'misses'} the within-10% target); to the kernel "
              f"{sb[0] / uefi[0]:.2f}x")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    problems = missing_preconditions() + missing_files((*LOADERS, UNDIONLY, OVMF_SB_CODE,
                                                        OVMF_SB_VARS))  # fmt: skip
    problems += [] if shutil.which("nginx") else ["program not found on PATH: nginx"]
    if problems:
        raise BenchError("preconditions not met:\n  " + "\n  ".join(problems))
    if args.rounds * len(order(0)) > LEASES:
        raise BenchError(f"at most {LEASES // len(order(0))} rounds: the lab has {LEASES} leases")
    image = live_image()
    files = secureboot_files()
    sb = {Path("/") / SHIM: files.shim, Path("/") / GRUB: files.grub}
    work = traversable_tempdir("pxeprov-live-bench-")
    try:
        lab = NetLab(work / "lab", tag=f"live-{os.getpid()}")
        with lab:
            roots = {(loader, transport): render(lab, work, image, loader, transport, sb)
                     for loader in ("ipxe", "grub") for transport in ("tftp", "http")}  # fmt: skip
            serving = OneAtATime(lab)
            results: list[Result] = []
            try:
                for r in range(args.rounds):
                    for i, (chain, transport) in enumerate(order(r)):
                        loader = "grub" if chain == "uefi-sb" else "ipxe"
                        root = serving.serve(roots[(loader, transport)])
                        mac = f"52:54:00:79:{r:02x}:{i:02x}"
                        res = boot_once(lab, root, chain, transport, mac, args.limit)
                        results.append(res)
                        fetch = f", fetch {res.transfer:.1f} s" if res.transfer else ""
                        print(f"round {r + 1} {NAMES[chain]:<22} {transport:<4} kernel "
                              f"{res.kernel:6.1f} s, squashfs {res.squashfs:6.1f} s, userspace "
                              f"{res.userspace:6.1f} s{fetch}", flush=True)  # fmt: skip
            finally:
                serving.stop()
        report(results, image)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="boots per chain and path")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds allowed per boot")
    parser.add_argument("--keep", action="store_true", help="keep the logs and roots")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        run(args)
    except (BenchError, LabError, LiveImageError, PackageError, pytest.fail.Exception) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
