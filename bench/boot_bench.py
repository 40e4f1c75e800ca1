#!/usr/bin/env python3
"""Boot time with a Clonezilla-size payload: the how-to's TFTP path against `pxeprov init --http`.

Run by hand, as root, from the repository (after tests/run-all.sh made .venv and installed the
Debian packages the e2e tests use, nginx included):

    .venv/bin/python bench/boot_bench.py [--payload-mb 300] [--rounds 1] [--keep]

The e2e lab (tests/e2e/netlab.py: namespace A with the ordinary DHCP server and the QEMU
client, namespace B with the pxeprov box; deleted at the end, also after an error) serves two
roots rendered by `pxeprov init` inside B: one without --http (kernel and initrd over TFTP) and
one with --http --http-port 8080 (BIOS and UEFI: iPXE; kernel and initrd from nginx).
Both menus default to one image whose initrd is Debian's installer initrd.gz followed by an
uncompressed newc cpio of --payload-mb MiB of random data (the kernel accepts concatenated
initramfs archives): the loader must fetch all of it before the kernel starts, as it must
fetch a Clonezilla-size payload.

Each boot is timed from QEMU start to "Linux version" on the serial console (TCG, -m 2048);
TFTP and HTTP alternate within each firmware, in swapped order every other round. Printed: a
line per boot, then per firmware and path the median seconds to the kernel, the initrd's own
transfer time and rate, and the HTTP/TFTP speed-ups (the target is 2x or more).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.netlab import (  # noqa: E402 - after the path is set
    BootEvidence,
    Dnsmasq,
    LabError,
    NetLab,
    Nginx,
    missing_files,
    missing_preconditions,
    read_from,
    size_of,
    traversable_tempdir,
)
from tests.e2e.pxeserver import (  # noqa: E402 - after the path is set
    DI,
    HTTP_BASE,
    HTTP_PORT,
    LOADERS,
    TFTP_ROOT,
    UNDIONLY,
    build_root,
    conf_for_test,
    pxeprov,
    site_for_test,
)

Transport = Literal["tftp", "http"]
Firmware = Literal["bios", "uefi"]

IMAGE = "images/big"
KERNEL, INITRD = f"{IMAGE}/vmlinuz", f"{IMAGE}/initrd.img"
# Appended to the state build_root writes: the big image, the default of both menus.
STATE_IMAGE = f"""
[[images]]
name = "big"
label = "Debian 12 installer + random payload"
kind = "custom"
kernel = "{KERNEL}"
initrd = "{INITRD}"
append = "console=ttyS0,115200n8 priority=critical"
default = true
"""
MEMORY_MB = 2048  # the loaders hold the whole initrd in memory, iPXE under UEFI twice
LEASES = 51  # the lab's ordinary DHCP range; every boot has a MAC (and so an address) of its own
CHUNK = 1 << 20


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- the payload


def newc_header(name: str, size: int, mode: int) -> bytes:
    """A cpio "newc" header (as lab.sh writes it), padded so the file data is 4-byte aligned."""
    encoded = name.encode() + b"\0"
    fields = (1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % v for v in fields) + encoded
    return header + b"\0" * (-len(header) % 4)


def write_initrd(path: Path, payload_mb: int) -> int:
    """Debian's installer initrd.gz, then a newc cpio holding ``payload_mb`` MiB of random data.

    The kernel reads concatenated initramfs archives one after the other; an uncompressed one
    must start at a multiple of 4 bytes, and zero bytes in between are skipped: hence the pad.
    """
    size = payload_mb * CHUNK
    with path.open("wb") as out:
        with (DI / "initrd.gz").open("rb") as gz:
            shutil.copyfileobj(gz, out, CHUNK)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(newc_header("payload.bin", size, 0o100644))
        for _ in range(payload_mb):
            out.write(os.urandom(CHUNK))
        out.write(b"\0" * (-size % 4))
        out.write(newc_header("TRAILER!!!", 0, 0))
        return out.tell()


# ---------------------------------------------------------------- the two servers


@dataclass(frozen=True)
class Root:
    transport: Transport
    root: Path
    tftp_root: Path
    test_conf: Path  # pxeprov's dnsmasq config, only its tftp-root rewritten


def render(lab: NetLab, work: Path, transport: Transport, initrd: Path) -> Root:
    root = work / f"root-{transport}"
    build_root(root, {UNDIONLY: UNDIONLY})
    tftp_root = root / TFTP_ROOT.lstrip("/")
    image = tftp_root / IMAGE
    image.mkdir(parents=True)
    image.chmod(0o755)
    shutil.copyfile(DI / "linux", tftp_root / KERNEL)
    os.link(initrd, tftp_root / INITRD)  # one copy on disk for both roots
    for name in (KERNEL, INITRD):
        (tftp_root / name).chmod(0o644)  # dnsmasq and nginx's workers serve unprivileged
    with (root / "etc/pxeprov/pxeprov.toml").open("a") as state:
        state.write(STATE_IMAGE)
    init = ["init", "--no-install-packages", "--menu-timeout", "1"]
    init += ["--http", "--http-port", str(HTTP_PORT)] if transport == "http" else ["--no-http"]
    pxeprov(lab, root, *init)
    # Each menu must load the payload the way this case is meant to measure.
    base = f"{HTTP_BASE}/" if transport == "http" else ""
    checks = [(tftp_root / "boot.ipxe", f"initrd {base}{INITRD}")]
    if transport == "tftp":  # with HTTP, BIOS clients get iPXE and boot.ipxe too
        menu = tftp_root / "pxelinux.cfg/default"
        checks += [(menu, f"KERNEL {KERNEL}"), (menu, f"INITRD {INITRD}")]
    for file, line in checks:
        if line not in file.read_text():
            raise BenchError(f"{file} has no {line!r}:\n{file.read_text()}")
    conf = conf_for_test(
        root / "etc/dnsmasq.d/pxeprov.conf", tftp_root, lab.workdir / f"dnsmasq-{transport}.conf"
    )
    return Root(transport, root, tftp_root, conf)


class Proxy:
    """Only one proxyDHCP may answer on the lab's LAN: serving a root stops the other one."""

    def __init__(self, lab: NetLab) -> None:
        self.lab = lab
        self.running: tuple[Root, Dnsmasq] | None = None

    def serve(self, root: Root) -> Dnsmasq:
        if self.running is not None:
            if self.running[0] is root and self.running[1].proc.poll() is None:
                return self.running[1]
            self.lab.stop_dnsmasq(self.running[1])
            self.running = None
        proxy = self.lab.start_dnsmasq(f"proxy-{root.transport}", self.lab.ns_b, root.test_conf)
        self.running = (root, proxy)
        return proxy


# ---------------------------------------------------------------- one boot


@dataclass(frozen=True)
class Result:
    firmware: Firmware
    transport: Transport
    kernel_after: float  # seconds from QEMU start to "Linux version"
    transfer: float  # seconds the initrd took (see transfer_seconds)


def marks_for(transport: Transport, proxy: Dnsmasq, nginx: Nginx) -> Mapping[str, tuple[Path, str]]:
    """When the kernel and the initrd were complete: dnsmasq logs 'sent' at a TFTP transfer's
    end, nginx writes its access log line at a response's end."""
    if transport == "tftp":
        return {name: (proxy.log, rf"sent \S+/{re.escape(name)} to ") for name in (KERNEL, INITRD)}
    return {
        name: (nginx.access_log, rf'"GET /{re.escape(name)} [^"]*" 200 ')
        for name in (KERNEL, INITRD)
    }


def transfer_seconds(
    ev: BootEvidence, transport: Transport, nginx: Nginx, access_offset: int
) -> float:
    """TFTP: from 'sent vmlinuz' to 'sent initrd.img' as the log lines appeared (the client asks
    for the initrd as soon as it has the kernel; polled every 0.2 s, as lab.sh does, since
    dnsmasq's own timestamps have whole seconds). HTTP: nginx's own $request_time (ms)."""
    if transport == "tftp":
        return ev.marks[INITRD] - ev.marks[KERNEL]
    got = [r for r in nginx.requests(access_offset) if r.path == f"/{INITRD}" and r.status == 200]
    return got[-1].seconds


def boot_once(
    lab: NetLab,
    firmware: Firmware,
    transport: Transport,
    mac: str,
    proxy: Dnsmasq,
    nginx: Nginx,
    limit: float,
) -> Result:
    access_offset = size_of(nginx.access_log)
    ev = lab.boot(
        firmware,
        mac,
        proxy,
        limit=limit,
        memory_mb=MEMORY_MB,
        marks=marks_for(transport, proxy, nginx),
    )
    access = read_from(nginx.access_log, access_offset)
    problems = [f"{name} never complete" for name in (KERNEL, INITRD) if name not in ev.marks]
    if ev.kernel_after is None:
        problems.append("the kernel never started")
    # Each path must really have been the only one used.
    if transport == "tftp" and IMAGE in access:
        problems.append(f"nginx served the image during a TFTP boot:\n{access}")
    if transport == "http" and f"/{IMAGE}/" in ev.proxy_log:
        problems.append("dnsmasq was asked for the image during an HTTP boot")
    if problems or ev.kernel_after is None:
        raise BenchError(
            f"{firmware}/{transport} boot failed: {'; '.join(problems)}\n"
            f"--- nginx access log (this boot)\n{access}{ev.summary()}"
        )
    return Result(
        firmware, transport, ev.kernel_after, transfer_seconds(ev, transport, nginx, access_offset)
    )


# ---------------------------------------------------------------- the run


def order(round_: int) -> list[tuple[Firmware, Transport]]:
    """TFTP and HTTP alternate; which goes first swaps every round (drift hits both alike)."""
    paths: tuple[Transport, Transport] = ("tftp", "http") if round_ % 2 == 0 else ("http", "tftp")
    firmwares: tuple[Firmware, ...] = ("bios", "uefi")
    return [(fw, p) for fw in firmwares for p in paths]


def report(results: list[Result], initrd_size: int, payload_mb: int) -> None:
    mb = initrd_size / 1e6
    print()
    print(
        f"initrd: Debian installer initrd.gz + {payload_mb} MiB newc cpio = {mb:.1f} MB; "
        f"QEMU -accel tcg -m {MEMORY_MB}"
    )
    print(
        f"{'firmware':<9}{'path':<6}{'boots':>6}{'kernel at (s), median':>24}"
        f"{'initrd transfer (s)':>22}{'MB/s':>8}   all kernel times"
    )
    medians: dict[tuple[Firmware, Transport], tuple[float, float]] = {}
    for fw, tr in order(0):
        mine = [r for r in results if (r.firmware, r.transport) == (fw, tr)]
        if not mine:
            continue
        k = statistics.median(r.kernel_after for r in mine)
        t = statistics.median(r.transfer for r in mine)
        medians[(fw, tr)] = (k, t)
        every = " ".join(f"{r.kernel_after:.1f}" for r in mine)
        print(f"{fw:<9}{tr:<6}{len(mine):>6}{k:>24.1f}{t:>22.1f}{mb / t:>8.1f}   {every}")
    print()
    for fw in ("bios", "uefi"):
        tftp, http = medians.get((fw, "tftp")), medians.get((fw, "http"))
        if tftp is None or http is None:
            continue
        speedup = tftp[0] / http[0]
        verdict = "meets" if speedup >= 2 else "misses"
        print(
            f"{fw}: HTTP/TFTP speed-up {speedup:.2f}x to the kernel ({verdict} the 2x target), "
            f"{tftp[1] / http[1]:.2f}x for the initrd transfer alone"
        )
    print(
        "(TFTP transfer: 'sent vmlinuz' to 'sent initrd.img' in dnsmasq's log, polled every "
        "0.2 s; HTTP transfer: nginx's $request_time for initrd.img)"
    )


def run(args: argparse.Namespace) -> None:
    problems = missing_preconditions() + missing_files(
        (*LOADERS, UNDIONLY, DI / "linux", DI / "initrd.gz")
    )
    problems += [] if shutil.which("nginx") else ["program not found on PATH: nginx"]
    if problems:
        raise BenchError("preconditions not met:\n  " + "\n  ".join(problems))
    if args.rounds * 4 > LEASES:
        raise BenchError(f"at most {LEASES // 4} rounds: the lab leases {LEASES} addresses")
    work = traversable_tempdir("pxeprov-boot-bench-")
    try:
        t0 = time.monotonic()
        initrd = work / "initrd.img"
        size = write_initrd(initrd, args.payload_mb)
        print(f"payload {initrd}: {size / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s")
        lab = NetLab(work / "lab", tag=f"bench-{os.getpid()}")
        with lab:
            roots = {p: render(lab, work, p, initrd) for p in ("tftp", "http")}
            site = site_for_test(
                roots["http"].root / "etc/nginx/conf.d/pxeprov.conf",
                roots["http"].tftp_root,
                lab.workdir / "nginx-site.conf",
            )
            # nginx can run through the TFTP boots too: they never ask it for anything.
            nginx = lab.start_nginx("bench", lab.ns_b, site)
            proxy = Proxy(lab)
            results: list[Result] = []
            for r in range(args.rounds):
                for i, (fw, tr) in enumerate(order(r)):
                    mac = f"52:54:00:78:{r:02x}:{i:02x}"
                    res = boot_once(lab, fw, tr, mac, proxy.serve(roots[tr]), nginx, args.limit)
                    results.append(res)
                    print(
                        f"round {r + 1} {fw:<4} {tr:<4} kernel at {res.kernel_after:6.1f} s, "
                        f"initrd in {res.transfer:5.1f} s ({size / 1e6 / res.transfer:5.1f} MB/s)",
                        flush=True,
                    )
        report(results, size, args.payload_mb)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload-mb", type=int, default=300, help="MiB of random data")
    parser.add_argument("--rounds", type=int, default=1, help="boots per firmware and path")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds allowed per boot")
    parser.add_argument("--keep", action="store_true", help="keep the logs and roots")
    args = parser.parse_args()
    if args.payload_mb < 1 or args.rounds < 1:
        parser.error("--payload-mb and --rounds must be at least 1")
    try:
        run(args)
    except (BenchError, LabError, pytest.fail.Exception) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
