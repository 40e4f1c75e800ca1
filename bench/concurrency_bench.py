#!/usr/bin/env python3
"""Many clients at once: dnsmasq's TFTP against nginx's HTTP, both as pxeprov renders them.

Run by hand, as root, from the repository (after tests/run-all.sh made .venv; needs the
Debian packages tftp-hpa, curl, nginx and dnsmasq):

    .venv/bin/python bench/concurrency_bench.py [--size-mb 100] [--clients 1,4,8,16]

Two network namespaces made here (server 10.88.0.1, clients 10.88.0.2, joined by a veth pair;
deleted at the end, also after an error): `pxeprov init --http` runs in the server namespace,
dnsmasq and nginx run its rendered configs (only their root paths pointed at the temporary
root). N fetchers start together in the client namespace and pull the same file: tftp-hpa's
client (512-byte blocks, what most how-tos set up), curl over TFTP with 1468-byte blocks
(what PXE ROMs ask for), and curl over HTTP. Printed: seconds to the last byte and aggregate
MB/s for every N, and the HTTP/TFTP ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.netlab import stop_process  # noqa: E402 - after the path is set

SRV, CLI = f"pxb-srv-{os.getpid()}", f"pxb-cli-{os.getpid()}"
SRV_IP, CLI_IP = "10.88.0.1", "10.88.0.2"
PORT = 8080
FILE = "images/bench/payload.bin"
LOADERS = [
    "/usr/lib/PXELINUX/pxelinux.0",
    "/usr/lib/ipxe/undionly.kpxe",  # --http gives BIOS clients iPXE
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/syslinux/modules/bios/menu.c32",
    "/usr/lib/syslinux/modules/bios/libutil.c32",
    "/usr/lib/syslinux/modules/bios/libmenu.c32",
    "/usr/lib/ipxe/snponly.efi",
]
TIMEOUT = 600  # seconds for one round of fetchers


def sh(*argv: str, ns: str | None = None, timeout: float = 60) -> str:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(full)}\n{done.stderr}")
    return done.stdout


def net_up() -> None:
    sh("ip", "netns", "add", SRV)
    sh("ip", "netns", "add", CLI)
    sh("ip", "-n", SRV, "link", "add", "vsrv", "type", "veth", "peer", "name", "vcli", "netns", CLI)
    sh("ip", "-n", SRV, "addr", "add", f"{SRV_IP}/24", "dev", "vsrv")
    sh("ip", "-n", CLI, "addr", "add", f"{CLI_IP}/24", "dev", "vcli")
    for ns, dev in ((SRV, "vsrv"), (CLI, "vcli")):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", SRV, "route", "add", "default", "via", CLI_IP)  # for pxeprov's detection


def net_down() -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (CLI, SRV):
        if ns in listed.split():
            subprocess.run(["ip", "netns", "del", ns], check=False)


def start(
    argv: list[str], ns: str, ready: Callable[[], bool], what: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            sys.exit(f"{what} did not start: {err}")
        time.sleep(0.05)
    return proc


def prepare(work: Path, size_mb: int) -> tuple[Path, Path, Path]:
    root = work / "root"
    for src in LOADERS:
        dst = root / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    sh(
        sys.executable, "-m", "pxeprov", "--root", str(root), "init", "--no-install-packages",
        "--http", "--http-port", str(PORT), ns=SRV,
    )  # fmt: skip
    tftp = root / "var/lib/tftpboot"
    payload = tftp / FILE
    payload.parent.mkdir(parents=True, exist_ok=True)
    with payload.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    for p in (work, *work.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    conf = (root / "etc/dnsmasq.d/pxeprov.conf").read_text()
    assert conf.count("tftp-root=/var/lib/tftpboot\n") == 1
    dnsmasq_conf = work / "dnsmasq.conf"
    dnsmasq_conf.write_text(conf.replace("tftp-root=/var/lib/tftpboot", f"tftp-root={tftp}"))
    site = (root / "etc/nginx/conf.d/pxeprov.conf").read_text()
    assert site.count("root /var/lib/tftpboot;") == 1
    (work / "site.conf").write_text(site.replace("root /var/lib/tftpboot;", f"root {tftp};"))
    nginx_conf = work / "nginx.conf"
    nginx_conf.write_text(
        f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\n"
        "worker_processes auto;\nevents { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  include {work}/site.conf;\n}}\n"
    )
    return payload, dnsmasq_conf, nginx_conf


def fetchers(kind: str, n: int, out: Path) -> list[list[str]]:
    url_tftp = f"tftp://{SRV_IP}/{FILE}"
    argvs = []
    for i in range(n):
        target = str(out / f"{kind}-{i}")
        if kind == "tftp-hpa":
            argvs.append(["tftp", "-m", "binary", SRV_IP, "-c", "get", FILE, target])
        elif kind == "curl-tftp":
            argvs.append(["curl", "-sS", "--tftp-blksize", "1468", "-o", target, url_tftp])
        else:
            argvs.append(["curl", "-sS", "-o", target, f"http://{SRV_IP}:{PORT}/{FILE}"])
    return argvs


def round_(kind: str, n: int, out: Path, size: int, digest: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(["ip", "netns", "exec", CLI, *argv], stderr=subprocess.PIPE)
        for argv in fetchers(kind, n, out)
    ]
    for p in procs:
        p.wait(timeout=TIMEOUT)
    elapsed = time.perf_counter() - t0
    for i, p in enumerate(procs):
        err = p.stderr.read().decode() if p.stderr else ""
        got = out / f"{kind}-{i}"
        if p.returncode != 0 or not got.exists() or got.stat().st_size != size:
            sys.exit(f"{kind} fetcher {i} failed ({p.returncode}): {err}")
    first = out / f"{kind}-0"
    if hashlib.sha256(first.read_bytes()).hexdigest() != digest:
        sys.exit(f"{kind}: wrong bytes")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--clients", default="1,4,8,16")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    for program in ("tftp", "curl", "nginx", "dnsmasq"):
        if shutil.which(program) is None:
            sys.exit(f"{program} is missing (apt-get install tftp-hpa curl nginx dnsmasq-base)")
    work = Path(tempfile.mkdtemp(prefix="pxeprov-concurrency-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        net_up()
        payload, dnsmasq_conf, nginx_conf = prepare(work, args.size_mb)
        size = payload.stat().st_size
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        log = work / "dnsmasq.log"
        procs.append(start(
            ["dnsmasq", "--keep-in-foreground", f"--conf-file={dnsmasq_conf}",
             f"--log-facility={log}", f"--pid-file={work}/dnsmasq.pid",
             f"--dhcp-leasefile={work}/leases"],
            SRV, lambda: log.exists() and "started" in log.read_text(), "dnsmasq",
        ))  # fmt: skip
        procs.append(start(
            ["nginx", "-p", str(work), "-c", str(nginx_conf)], SRV,
            lambda: (work / "nginx.pid").exists(), "nginx",
        ))  # fmt: skip
        kinds = ("tftp-hpa", "curl-tftp", "http")
        results: dict[tuple[str, int], float] = {}
        for n in counts:
            for kind in kinds:
                results[(kind, n)] = round_(kind, n, work / "out", size, digest)
                t = results[(kind, n)]
                print(f"  {kind:<10} N={n:<3} last byte {t:7.2f} s  {n * size / t / 1e6:8.1f} MB/s")
        print(f"\n{args.size_mb} MB per client; aggregate MB/s (seconds to the last byte)")
        print(f"{'N':>4}" + "".join(f"{k:>22}" for k in kinds) + f"{'HTTP/TFTP(1468)':>17}")
        for n in counts:
            cells = "".join(
                f"{n * size / results[(k, n)] / 1e6:>12.1f} ({results[(k, n)]:6.2f}s)"
                for k in kinds
            )
            ratio = results[("curl-tftp", n)] / results[("http", n)]
            print(f"{n:>4}{cells}{ratio:>16.1f}x")
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        net_down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
