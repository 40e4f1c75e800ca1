"""The HTTP side of a download: one request at a time with redirects (never https:// to http://),
tries with exponential backoff (`Client.run`), a watchdog that ends a stalled body, reading a body
as it came over the wire, the response headers a resumed download needs (Content-Range, ETag,
Retry-After...), and the one-line wording of what went wrong (`reason`, `status_line`).

A try that may pass another time raises `Retryable`; what will not, DownloadError or InputError.
"""

from __future__ import annotations

import contextlib
import http
import http.client
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from pxeprov.errors import DownloadError, InputError
from pxeprov.images.partfile import CHUNK_SIZE, PartFile

MAX_DELAY = 30.0  # cap of the exponential backoff between tries, seconds
STALL_TIMEOUT = 60.0  # seconds in which a body must grow by STALL_BYTES, or the try ends
STALL_BYTES = CHUNK_SIZE  # what "growing" means: a trickle of bytes is a stall, not progress
MAX_REDIRECTS = 10

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

T = TypeVar("T")


class Retryable(Exception):
    """A try failed in a way another try may not (connection, timeout, 5xx, 429)."""

    def __init__(self, message: str, progressed: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.progressed = progressed
        self.retry_after = retry_after


@dataclass
class Client:
    session: requests.Session
    timeout: float
    retries: int
    backoff: float
    stall_timeout: float = STALL_TIMEOUT

    def run(self, attempt: Callable[[], T]) -> T:
        """Call `attempt` until it returns, sleeping backoff * 2**n (capped) between tries."""
        tries = failures = 0
        while True:
            tries += 1
            try:
                return attempt()
            except Retryable as exc:
                failures = 1 if exc.progressed else failures + 1
                if failures > self.retries:
                    count = "1 try" if tries == 1 else f"{tries} tries"
                    raise DownloadError(f"{exc.message} (after {count})") from None
                delay = min(self.backoff * 2 ** (failures - 1), MAX_DELAY)
                time.sleep(max(delay, min(exc.retry_after, MAX_DELAY)))

    def open(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        """Send one request, following redirects (never from https:// to http://), and return
        the streaming response, unless it failed: Retryable for what may pass, DownloadError or
        InputError for the rest."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._request(method, current, headers)
            location = resp.headers.get("Location") if resp.is_redirect else None
            if location is None:
                return resp
            resp.close()
            target = urljoin(current, location)
            if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
                raise DownloadError(
                    f"{current} redirects to {target}: refused, a download asked for over "
                    "https:// is never fetched unencrypted"
                )
            current = target
        raise DownloadError(f"too many redirects for {url}")

    def _request(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            resp = self.session.request(
                method,
                url,
                headers={"Accept-Encoding": "identity", **headers},
                stream=True,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise InputError(f"cannot download {url}: {reason(exc)}") from None
        except requests.ConnectTimeout as exc:
            raise Retryable(
                f"cannot reach {_where(exc, url)}: no connection within {self.timeout:g} s"
            ) from None
        except requests.ReadTimeout as exc:
            raise Retryable(
                f"{_where(exc, url)} sent no answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise Retryable(f"cannot reach {_where(exc, url)}: {reason(exc)}") from None
        except requests.RequestException as exc:
            raise Retryable(f"request for {url} failed: {reason(exc)}") from None
        status = resp.status_code
        if status == 429 or status >= 500:
            resp.close()
            raise Retryable(status_line(resp, url), retry_after=_retry_after(resp))
        return resp


def body_reader(resp: requests.Response) -> Callable[[bytearray], int]:
    """A readinto() for the body as it came over the wire: no content decoding (we asked for
    identity), so the bytes on disk are the bytes Range counts.

    urllib3's read() returns a new bytes object for every chunk (allocated, filled, copied once
    more). The http.client response underneath urllib3's can fill our one buffer directly, which
    measured ~25% less CPU and much steadier times (bench/download_bench.py). That object is
    urllib3's private `_fp`; when it is not what we expect, read() does the same job, slower.
    A connection closed early makes either return 0 before Content-Length: the caller checks."""
    fp = getattr(resp.raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        return fp.readinto
    return _urllib3_reader(resp.raw)


def _urllib3_reader(raw: urllib3.BaseHTTPResponse) -> Callable[[bytearray], int]:
    def read_into(buf: bytearray) -> int:
        data = raw.read(len(buf), decode_content=False)
        buf[: len(data)] = data
        return len(data)

    return read_into


def head_length(client: Client, url: str) -> int | None:
    with client.open("HEAD", url, {}) as resp:
        return int_header(resp, "Content-Length") if resp.status_code == 200 else None


def content_range(resp: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, complete length) from Content-Range; None for what it does not say."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match is None:
        return None, None
    start, _end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def validator(resp: requests.Response) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def _retry_after(resp: requests.Response) -> float:
    value = resp.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else 0.0


def status_line(resp: requests.Response, url: str) -> str:
    try:
        phrase = http.HTTPStatus(resp.status_code).phrase
    except ValueError:
        phrase = resp.reason or ""
    return f"HTTP {resp.status_code} {phrase} for {url}".replace("  ", " ")


def _where(exc: requests.RequestException, url: str) -> str:
    """host:port of the request that failed (after redirects, it may not be `url`'s)."""
    failed = exc.request.url if exc.request is not None and exc.request.url else url
    parts = urlsplit(str(failed))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason(exc: BaseException) -> str:
    """One short line for what went wrong underneath requests' and urllib3's wrappers."""
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    last = exc
    while queue:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        last = e
        if isinstance(e, http.client.IncompleteRead | http.client.RemoteDisconnected):
            return "the server closed the connection"
        if isinstance(e, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason})"
        if isinstance(e, TimeoutError | socket.timeout):
            return "timed out"
        if isinstance(e, OSError) and isinstance(e.errno, int) and e.errno:
            return os.strerror(e.errno).lower()
        inner = getattr(e, "reason", None)  # urllib3's MaxRetryError
        for nxt in (*e.args, inner, e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                queue.append(nxt)
    text = str(last).splitlines()[0] if str(last) else type(last).__name__
    text = re.sub(r"<[^>]*>: ", "", text)  # urllib3 puts object reprs in front of messages
    return text[:200]


class Watchdog:
    """Ends a try whose body grows by less than STALL_BYTES in `stall` seconds (stopped, or a
    trickle that would never end): it shuts the connection's socket down, which makes the
    blocked read return, and says why. A read fills a whole buffer before it returns, so the
    transfer's own loop cannot look at the clock while a trickle fills it."""

    def __init__(self, pf: PartFile, resp: requests.Response, stall: float) -> None:
        self.pf = pf
        self.stall = stall
        self.fired = False
        self.reason = ""
        self._sock = _socket_of(resp)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        mark_size, mark_time = self.pf.size, time.monotonic()
        while not self._done.wait(min(1.0, self.stall / 4)):
            now = time.monotonic()
            if self.pf.size - mark_size >= STALL_BYTES or self.pf.size < mark_size:
                mark_size, mark_time = self.pf.size, now
            elif now - mark_time >= self.stall:
                self.fired = True
                self.reason = f"less than {STALL_BYTES} bytes arrived in {self.stall:g} s (stalled)"
                if self._sock is not None:
                    with contextlib.suppress(OSError):
                        self._sock.shutdown(socket.SHUT_RDWR)
                return


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The connection's socket underneath urllib3 (private: None when it is not found, and the
    read timeout is then the only bound)."""
    connection = getattr(resp.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None
