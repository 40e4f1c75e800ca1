"""A small HTTP/1.1 file server on 127.0.0.1 for the download tests, with faults to order.

It serves files from a dict, answers Range requests (206 + Content-Range, 416 past the end,
If-Range against its ETag), HEAD, 404 and redirects, and records every request. Faults apply to
one path at a time: cut the connection after N body bytes, stall after N bytes (for read
timeouts), answer with an error status, ignore Range, or wait before answering.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None


@dataclass
class Fault:
    after: int  # body bytes sent before the fault
    times: int  # on this many GET requests of the path
    stall: float = 0.0  # 0: cut the connection; else wait this long first (then cut)
    trickle: float = 0.0  # instead: send the rest one byte every `trickle` seconds


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    statuses: dict[str, list[int]] = field(default_factory=dict)  # answered in turn, then the file
    ignore_range: bool = False
    delay: float = 0.0  # seconds before any answer
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def gets(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "GET" and s.path == path]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(path)
            if fault is None or fault.times <= 0:
                return None
            fault.times -= 1
            return fault

    def _take_status(self, path: str) -> int | None:
        with self._lock:
            queue = self.statuses.get(path)
            return queue.pop(0) if queue else None

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)  # cut short when the server stops


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 5  # idle keep-alive connections end on their own

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        fs = self.server.files
        path = urlsplit(self.path).path
        fs._record(Seen(self.command, path, self.headers.get("Range")))
        if fs.delay:
            fs._wait(fs.delay)
        if path in fs.redirects:
            self._send(302, {"Location": fs.redirects[path]})
            return
        body = fs.files.get(path)
        if body is None:
            self._send(404, {"Content-Type": "text/plain"}, b"not found\n")
            return
        status = None if head else fs._take_status(path)
        if status is not None:
            self._send(status, {"Retry-After": "0"}, b"try later\n")
            return
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        headers = {"Accept-Ranges": "bytes", "ETag": etag}
        start, code = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and not fs.ignore_range and (if_range is None or if_range == etag):
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            assert match is not None, f"unexpected Range {wanted!r}"
            start = int(match.group(1))
            if start >= len(body):
                self._send(416, {"Content-Range": f"bytes */{len(body)}"})
                return
            code = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        data = body[start:]
        self.send_response(code)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        fault = fs._take_fault(path)
        if fault is not None:
            self.wfile.write(data[: fault.after])
            self.wfile.flush()
            if fault.trickle:
                for i in range(fault.after, len(data)):
                    if fs._stop.is_set():
                        break
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    fs._wait(fault.trickle)
            if fault.stall:
                fs._wait(fault.stall)
            self.close_connection = True  # the client sees the body end early
            return
        try:
            view = memoryview(data)
            for offset in range(0, len(view), 1 << 16):
                self.wfile.write(view[offset : offset + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (disk full, checksum test)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a stall must not hold up the shutdown
    files: FileServer

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hangs up (the tests' faults, a closed session) is no news
        super().handle_error(request, client_address)


@contextmanager
def serve(fs: FileServer | None = None, tls: ssl.SSLContext | None = None) -> Iterator[FileServer]:
    """Run `fs` on 127.0.0.1 (a free port) in a thread until the block ends; over TLS with
    `tls` (see `self_signed`)."""
    fs = fs or FileServer()
    httpd = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        fs.scheme = "https"
    httpd.files = fs
    fs.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fs
    finally:
        fs._stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate
    (for the client session's `verify`)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert
