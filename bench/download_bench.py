"""Throughput of pxeprov.images.download.fetch against curl, on 127.0.0.1. Run by hand:

    .venv/bin/python bench/download_bench.py [--size-mb 500] [--rounds 3]

A file of random bytes is served by nginx (started here on a free port with a config in a temp
directory, stopped by its PID at the end) or, without nginx, by Python's http.server using
sendfile. Each round times, in alternating order, `curl -s -o OUT URL` and
`python -c 'fetch(URL, CACHE, sha256=KNOWN)'` (a new process each, so both pay their start-up),
plus curl followed by sha256sum for reference, since fetch hashes and curl does not, and the
Python start-up alone (interpreter + `import requests`), which a 500 MB run cannot hide. Prints
seconds and MB/s per run, the medians, fetch/curl throughput, and fetch's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 600.0  # seconds any one download may take before it is killed
FETCH = """
import sys
from pathlib import Path
import requests
from pxeprov.images.download import fetch
session = requests.Session()
session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
got = fetch(sys.argv[1], Path(sys.argv[2]), sha256=sys.argv[3], session=session)
assert got.size == int(sys.argv[4]) and not got.from_cache, got
"""
STARTUP = "import requests, pxeprov.images.download"  # what FETCH pays before its first byte


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Run:
    what: str
    seconds: float
    max_rss_kib: int


def make_file(path: Path, size: int) -> str:
    """`size` random bytes in `path`; their SHA-256."""
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            f.write(block)
            hasher.update(block)
            left -= len(block)
    return hasher.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def nginx(www: Path, tmp: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    temps = "\n".join(
        f"  {kind}_temp_path {tmp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes 1;
user root;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
{temps}
  server {{
    listen 127.0.0.1:{port};
    root {www};
  }}
}}
"""
    )
    log = (tmp / "nginx.out").open("wb")
    proc = subprocess.Popen(
        ["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(port)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)  # the master we started; it stops its worker
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


class _SendfileHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def copyfile(self, source: object, outputfile: object) -> None:
        self.connection.sendfile(source)  # the file SimpleHTTPRequestHandler opened


@contextlib.contextmanager
def python_server(www: Path) -> Iterator[int]:
    handler = lambda *a: _SendfileHandler(*a, directory=str(www))  # noqa: E731 (a factory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def run_child(
    argv: Sequence[str], rss_file: Path, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Run argv to its end; (wall seconds, its peak RSS in KiB).

    The RSS comes from GNU time when there is one: wait4's ru_maxrss of a child forked from this
    Python process would count the pages of the fork, before exec, and say ~30 MiB for any
    command. Both commands pay the same few milliseconds for the wrapper."""
    if Path("/usr/bin/time").exists():
        argv = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    # Not proc.wait(timeout): with a timeout it polls, sleeping up to 50 ms between looks, which
    # rounds every time up to a 50 ms step. A pidfd becomes readable the moment the child ends.
    pidfd = os.pidfd_open(proc.pid)
    try:
        ended, _, _ = select.select([pidfd], [], [], CHILD_TIMEOUT)
    finally:
        os.close(pidfd)
    seconds = time.perf_counter() - start
    if not ended:
        proc.kill()
        proc.wait(timeout=10)
        raise SystemExit(f"{argv} took more than {CHILD_TIMEOUT} s")
    proc.wait(timeout=10)  # it has ended: this only collects the exit status
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed with exit code {proc.returncode}")
    if argv[0] == "/usr/bin/time":
        return seconds, int(rss_file.read_text().split()[-1])
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["auto", "nginx", "python"], default="auto")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp files go")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is missing: apt-get install -y curl")
    use_nginx = args.server == "nginx" or (args.server == "auto" and shutil.which("nginx"))
    size = args.size_mb * 1000 * 1000

    with tempfile.TemporaryDirectory(prefix="pxeprov-bench-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        www = tmp / "www"
        www.mkdir()
        say(f"generating {args.size_mb} MB of random bytes ...")
        digest = make_file(www / "live.iso", size)
        server = nginx(www, tmp) if use_nginx else python_server(www)
        with server as port:
            url = f"http://127.0.0.1:{port}/live.iso"
            out = tmp / "out.iso"
            cache = tmp / "cache"
            rss_file = tmp / "rss"
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            curl = ["curl", "-s", "--noproxy", "*", "--fail", "-o", str(out), url]
            pxe = [sys.executable, "-c", FETCH, url, str(cache), digest, str(size)]
            startup = [sys.executable, "-c", STARTUP]

            def clean() -> None:
                out.unlink(missing_ok=True)
                shutil.rmtree(cache, ignore_errors=True)
                os.sync()  # the last run's dirty pages are not written back during the next

            def one(what: str) -> Run:
                clean()
                if what == "curl":
                    secs, rss = run_child(curl, rss_file)
                elif what == "pxeprov":
                    secs, rss = run_child(pxe, rss_file, env)
                elif what == "start-up":
                    secs, rss = run_child(startup, rss_file, env)
                else:  # curl, then sha256sum of what it wrote
                    secs, rss = run_child(curl, rss_file)
                    more, _ = run_child(["sha256sum", str(out)], rss_file)
                    secs += more
                return Run(what, secs, rss)

            say(f"server: {'nginx' if use_nginx else 'python http.server + sendfile'}, {url}")
            one("curl")  # warm-up: page cache, .pyc files
            one("pxeprov")
            runs: list[Run] = []
            for r in range(args.rounds):
                order = ["curl", "pxeprov"] if r % 2 == 0 else ["pxeprov", "curl"]
                for what in [*order, "curl+sha256sum", "start-up"]:
                    runs.append(one(what))
                    last = runs[-1]
                    rate = "" if what == "start-up" else f"{size / 1e6 / last.seconds:8.1f} MB/s"
                    say(
                        f"round {r + 1}  {what:15} {last.seconds:7.3f} s {rate:>13}  "
                        f"peak RSS {last.max_rss_kib / 1024:6.1f} MiB"
                    )
            clean()

    say()
    say(f"{'':15} {'median s':>9} {'MB/s':>8}")
    med: dict[str, float] = {}
    for what in ("curl", "pxeprov", "curl+sha256sum", "start-up"):
        med[what] = statistics.median(r.seconds for r in runs if r.what == what)
        rate = f"{size / 1e6 / med[what]:8.1f}" if what != "start-up" else f"{'':>8}"
        say(f"{what:15} {med[what]:9.3f} {rate}")
    peak = max(r.max_rss_kib for r in runs if r.what == "pxeprov")
    transfer = med["pxeprov"] - med["start-up"]
    say()
    say(f"pxeprov / curl throughput:          {med['curl'] / med['pxeprov']:.2f}x (target >= 0.9)")
    say(f"pxeprov / (curl + sha256sum):       {med['curl+sha256sum'] / med['pxeprov']:.2f}x")
    say(
        f"pxeprov less its start-up / curl:   {med['curl'] / transfer:.2f}x "
        f"(start-up = python + import requests, pxeprov: {med['start-up']:.3f} s; curl's is ~5 ms)"
    )
    say(f"pxeprov peak RSS (GNU time %M):     {peak / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
