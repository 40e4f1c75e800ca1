"""Download a boot image into the cache: resume with HTTP Range, retry with backoff, verify SHA-256.

Layout under `cache_dir`:

    partial/<16 hex of sha256(url)>-<filename>.part   the bytes received so far
    <sha256>/<filename>                               verified files, named by their content

The SHA-256 is computed while the bytes arrive (after hashing what a resumed .part already holds),
so a download is read once. A file reaches `<sha256>/` only by one `os.replace` after it was
verified; a crash leaves a .part that the next call resumes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import http
import http.client
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3

from pxeprov import fsutil
from pxeprov.errors import (
    ChecksumError,
    DownloadError,
    FilesystemError,
    InputError,
    LockedError,
)
from pxeprov.progress import Progress

# Read, write and hash in 256 KiB pieces: never the whole file in memory. Smaller than 1 MiB,
# likely so that a piece is still in the CPU cache when the hashing thread reads it: on a 2-CPU
# VM, 1 MiB pieces were 5-10% slower, 4 MiB ones ~1.8x slower, 64 KiB and less slower again
# (runs like bench/download_bench.py's).
CHUNK_SIZE = 256 << 10
MAX_DELAY = 30.0  # cap of the exponential backoff between tries, seconds
STALL_TIMEOUT = 60.0  # seconds in which a body must grow by STALL_BYTES, or the try ends
STALL_BYTES = CHUNK_SIZE  # what "growing" means: a trickle of bytes is a stall, not progress
MAX_REDIRECTS = 10
PROGRESS_INTERVAL = 0.1  # seconds between two progress calls (plus one at the end)
# Looked for in the image's directory, in this order. Clonezilla publishes CHECKSUMS.TXT, which
# holds MD5, SHA-1, SHA-256 and SHA-512 lines; only the 64-hex line naming our file counts.
CHECKSUM_FILES = ("SHA256SUMS", "CHECKSUMS.TXT", "CHECKSUMS")
MAX_CHECKSUM_FILE = 4 << 20  # a longer "checksum file" is not one

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+[*]?(.+)")  # GNU: "<hex>  name" / "<hex> *name"
_BSD_LINE = re.compile(r"SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]{64})")  # BSD: "SHA256 (name) = <hex>"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

T = TypeVar("T")


@dataclass(frozen=True)
class Downloaded:
    path: Path  # the verified file in the cache
    filename: str  # basename of the URL's path as given (not of where it redirected to)
    sha256: str  # hex, lower case
    size: int
    checksum_source: str  # "--sha256", "SHA256SUMS at <url>", ..., or "none" ("none (why)")
    from_cache: bool


def fetch(
    url: str,
    cache_dir: Path,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 0.5,
    stall_timeout: float = STALL_TIMEOUT,
) -> Downloaded:
    """Download `url` into `cache_dir` (or find it there) and verify it.

    The expected SHA-256 is `sha256` when given, else the one a checksum file next to the URL
    lists for the file, else there is none (checksum_source "none"). When a hash is expected
    (from either place) and cache_dir/<hash>/ holds a file that still has it, that file is
    returned without downloading the image; its name may differ from `filename` when it came
    from another URL. `retries` is the number of tries after the first that a failing transfer
    gets; the count starts again whenever a try brought bytes beyond the most the download ever
    held, so a flaky connection that makes progress does not end a long download, while a
    server that cuts every body and ignores Range (each try starting again from byte 0) does.
    A body that grows by less than STALL_BYTES in `stall_timeout` seconds (stopped, or
    trickling) ends its try, which counts as a failure. A redirect from https:// to http:// is
    refused. The session (if given) is not closed.
    """
    filename = url_filename(url)
    expected = normalise_sha256(sha256) if sha256 is not None else None
    own_session = session is None
    client = _Client(session or requests.Session(), timeout, retries, backoff, stall_timeout)
    try:
        if expected is not None:
            source = "--sha256"
        else:
            expected, source = _published_sha256(client, url, filename)
        if expected is not None:
            hit = _cached(cache_dir, expected)
            if hit is not None:
                size = hit.stat().st_size
                if progress is not None:
                    progress(f"download {filename}", size, size)
                return Downloaded(hit, filename, expected, size, source, from_cache=True)
        part = (
            cache_dir
            / "partial"
            / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{filename}.part"
        )
        _make_dirs(part.parent)
        reporter = _Reporter(progress, f"download {filename}")
        with _PartFile.open(part) as pf:
            client.run(lambda: _transfer(client, url, pf, reporter))
            actual, size = pf.sha256(), pf.size
            if expected is not None and actual != expected:
                pf.discard()
                raise ChecksumError(
                    f"SHA-256 of {filename} is {actual}, expected {expected}; the file was deleted",
                    f"expected value from {source}",
                )
            target = cache_dir / actual / filename
            _make_dirs(target.parent)
            pf.finish(target)
        return Downloaded(target, filename, actual, size, source, from_cache=False)
    finally:
        if own_session:
            client.session.close()


def url_filename(url: str) -> str:
    """The file name a download of `url` gets: the last segment of its path, percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InputError(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"only http:// and https:// URLs can be downloaded, not {url!r}")
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InputError(f"the URL {url} does not end in a file name")
    return name


def normalise_sha256(value: str) -> str:
    text = value.strip()
    if not _HEX64.fullmatch(text):
        raise InputError(f"a SHA-256 is 64 hexadecimal digits, not {value!r}")
    return text.lower()


def parse_checksums(text: str, filename: str) -> str | None:
    """The SHA-256 that a SHA256SUMS-like text lists for `filename` (lower case), or None.

    Lines of other hash types (MD5, SHA-1, SHA-512 in Clonezilla's CHECKSUMS.TXT), comments and
    headings are skipped: only a 64-hex hash followed by our file name counts."""
    for raw in text.splitlines():
        line = raw.strip()
        gnu = _SUM_LINE.fullmatch(line)
        if gnu is not None:
            digest, name = gnu.group(1), gnu.group(2)
        else:
            bsd = _BSD_LINE.fullmatch(line)
            if bsd is None:
                continue
            name, digest = bsd.group(1), bsd.group(2)
        name = name.strip().removeprefix("./")
        if name == filename:
            return digest.lower()
    return None


# --- HTTP -------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A try failed in a way another try may not (connection, timeout, 5xx, 429)."""

    def __init__(self, message: str, progressed: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.progressed = progressed
        self.retry_after = retry_after


@dataclass
class _Client:
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
            except _Retryable as exc:
                failures = 1 if exc.progressed else failures + 1
                if failures > self.retries:
                    count = "1 try" if tries == 1 else f"{tries} tries"
                    raise DownloadError(f"{exc.message} (after {count})") from None
                delay = min(self.backoff * 2 ** (failures - 1), MAX_DELAY)
                time.sleep(max(delay, min(exc.retry_after, MAX_DELAY)))

    def open(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        """Send one request, following redirects (never from https:// to http://), and return
        the streaming response, unless it failed: _Retryable for what may pass, DownloadError or
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
            raise InputError(f"cannot download {url}: {_reason(exc)}") from None
        except requests.ConnectTimeout as exc:
            raise _Retryable(
                f"cannot reach {_where(exc, url)}: no connection within {self.timeout:g} s"
            ) from None
        except requests.ReadTimeout as exc:
            raise _Retryable(
                f"{_where(exc, url)} sent no answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise _Retryable(f"cannot reach {_where(exc, url)}: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise _Retryable(f"request for {url} failed: {_reason(exc)}") from None
        status = resp.status_code
        if status == 429 or status >= 500:
            resp.close()
            raise _Retryable(_status_line(resp, url), retry_after=_retry_after(resp))
        return resp


def _transfer(client: _Client, url: str, pf: _PartFile, report: _Reporter) -> None:
    """One try: get the rest of `url` into `pf` (or all of it, when the server sends all)."""
    headers: dict[str, str] = {}
    if pf.size:
        headers["Range"] = f"bytes={pf.size}-"
        if pf.validator is not None:
            headers["If-Range"] = pf.validator  # a changed file comes back whole (200)
    with client.open("GET", url, headers) as resp:
        status = resp.status_code
        if status == 416 and pf.size:
            total = _content_range(resp)[1]
            if total is None:
                total = _head_length(client, url)
            if total == pf.size:
                report.finish(pf.size, total)
                return  # the .part already holds the whole file
            pf.restart()
            return _transfer(client, url, pf, report)  # now without Range: no second 416
        if status >= 400:
            raise DownloadError(_status_line(resp, url))
        if status == 206:
            start, total = _content_range(resp)
            if start != pf.size:  # not the piece asked for
                if start is None or pf.size == 0:
                    raise DownloadError(f"{url}: the server sent a part that was not asked for")
                pf.restart()
                return _transfer(client, url, pf, report)  # without Range this time
        elif status == 200:
            pf.restart()
            total = _int_header(resp, "Content-Length")
        else:
            raise DownloadError(_status_line(resp, url))
        pf.validator = _validator(resp)
        before = pf.most
        read_into = _body_reader(resp)
        with _Watchdog(pf, resp, client.stall_timeout) as watchdog:
            while True:
                try:
                    n = pf.receive(read_into)
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                    got = f"{pf.size} of {total}" if total is not None else f"{pf.size}"
                    reason = _reason(exc)
                    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
                        reason = f"nothing received for {client.timeout:g} s"
                    if watchdog.fired:
                        reason = watchdog.reason
                    raise _Retryable(
                        f"download of {url} broke off after {got} bytes: {reason}",
                        progressed=pf.most > before and not watchdog.fired,
                    ) from None
                if not n:
                    break
                report.update(pf.size, total)
        if total is not None and pf.size != total:
            reason = f": {watchdog.reason}" if watchdog.fired else ""
            raise _Retryable(
                f"download of {url} broke off after {pf.size} of {total} bytes{reason}",
                progressed=pf.most > before and not watchdog.fired,
            )
        report.finish(pf.size, total)


def _body_reader(resp: requests.Response) -> Callable[[bytearray], int]:
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


def _published_sha256(client: _Client, url: str, filename: str) -> tuple[str | None, str]:
    """The SHA-256 a checksum file in the image's directory lists for `filename`, and where;
    or None and "none", with the reason when a checksum file was there but could not be read.
    A checksum file is the publisher's extra, which the user did not ask for: one that fails
    (a 5xx, a broken connection; one retry) does not stop the download, and is said."""
    failed: list[str] = []
    once = replace(client, retries=min(client.retries, 1))
    for name in CHECKSUM_FILES:
        sums_url = urljoin(url, name)
        try:
            text = once.run(functools.partial(_get_text, client, sums_url))
        except DownloadError as exc:
            failed.append(exc.message)
            continue
        if text is None:
            continue
        digest = parse_checksums(text, filename)
        if digest is not None:
            return digest, f"{name} at {sums_url}"
    return None, f"none ({'; '.join(failed)})" if failed else "none"


def _get_text(client: _Client, url: str) -> str | None:
    """The body of a small text file, or None when the server has none (any 4xx)."""
    with client.open("GET", url, {}) as resp:
        if resp.status_code != 200:
            return None
        try:
            body = resp.raw.read(MAX_CHECKSUM_FILE + 1, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Retryable(f"download of {url} broke off: {_reason(exc)}") from None
        if not isinstance(body, bytes) or len(body) > MAX_CHECKSUM_FILE:
            return None
        return body.decode("utf-8", errors="replace")


def _head_length(client: _Client, url: str) -> int | None:
    with client.open("HEAD", url, {}) as resp:
        return _int_header(resp, "Content-Length") if resp.status_code == 200 else None


def _content_range(resp: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, complete length) from Content-Range; None for what it does not say."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match is None:
        return None, None
    start, _end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _validator(resp: requests.Response) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def _retry_after(resp: requests.Response) -> float:
    value = resp.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else 0.0


def _status_line(resp: requests.Response, url: str) -> str:
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


def _reason(exc: BaseException) -> str:
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


# --- Files ------------------------------------------------------------------------------------


class _Watchdog:
    """Ends a try whose body grows by less than STALL_BYTES in `stall` seconds (stopped, or a
    trickle that would never end): it shuts the connection's socket down, which makes the
    blocked read return, and says why. A read fills a whole buffer before it returns, so the
    transfer's own loop cannot look at the clock while a trickle fills it."""

    def __init__(self, pf: _PartFile, resp: requests.Response, stall: float) -> None:
        self.pf = pf
        self.stall = stall
        self.fired = False
        self.reason = ""
        self._sock = _socket_of(resp)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
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


class _Reporter:
    """Calls `progress` at most every PROGRESS_INTERVAL seconds, and once at the end."""

    def __init__(self, progress: Progress | None, what: str) -> None:
        self.progress = progress
        self.what = what
        self.last = float("-inf")

    def update(self, done: int, total: int | None) -> None:
        if self.progress is not None:
            now = time.monotonic()
            if now - self.last >= PROGRESS_INTERVAL:
                self.last = now
                self.progress(self.what, done, total)

    def finish(self, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(self.what, done, total)


class _Sha256Pipe:
    """SHA-256 computed on a second thread, over a few recycled buffers.

    hashlib, recv and os.write release the GIL, so hashing one piece overlaps receiving and
    writing the next. Hashing is ~0.3 s of CPU per 500 MB, which curl does not spend; in line,
    it kept fetch well under curl's throughput (bench/download_bench.py). A buffer is free
    again when the thread has hashed it; the digest is read when all of them are free."""

    DEPTH = 8  # buffers: 2 MiB of memory
    WAIT = 60.0  # seconds; hashing a piece takes well under a millisecond: only a dead thread

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        for _ in range(self.DEPTH):
            self._free.put(bytearray(CHUNK_SIZE))
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, n = item
            self._sha.update(memoryview(buf)[:n])
            self._free.put(buf)

    def buffer(self) -> bytearray:
        try:
            return self._free.get(timeout=self.WAIT)
        except queue.Empty:
            raise RuntimeError("the SHA-256 thread stopped") from None

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def hash(self, buf: bytearray, n: int) -> None:
        """Hash buf[:n] after what was given before; the buffer comes back free after that."""
        self._todo.put((buf, n))

    def _drain(self) -> None:
        bufs = [self.buffer() for _ in range(self.DEPTH)]  # all free: nothing left to hash
        for buf in bufs:
            self._free.put(buf)

    def hexdigest(self) -> str:
        self._drain()
        return self._sha.hexdigest()

    def reset(self) -> None:
        self._drain()
        self._sha = hashlib.sha256()

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join(timeout=self.WAIT)


class _PartFile:
    """The .part of a download, locked against a second pxeprov writing it, with the SHA-256 of
    the bytes it holds so far."""

    def __init__(self, path: Path, fd: int, pipe: _Sha256Pipe) -> None:
        self.path = path
        self.fd = fd
        self.pipe = pipe
        self.size = 0
        self.most = 0  # the most bytes this download ever held: progress is measured against it
        self.validator: str | None = None  # of the response the bytes came from, for If-Range

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path) -> Iterator[_PartFile]:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _fs_error("open", path, exc) from None
        try:
            busy = LockedError(f"another pxeprov process is downloading into {path}")
            fsutil.flock(fd, 0, busy)
            pf = cls(path, fd, _Sha256Pipe())
            try:
                pf._hash_existing()
                yield pf
            finally:
                pf.pipe.close()
                if pf.size == 0:  # a try that got no byte (404, unreachable) leaves no trace
                    pf.discard()
        finally:
            os.close(fd)  # also releases the lock

    def sha256(self) -> str:
        return self.pipe.hexdigest()

    def _hash_existing(self) -> None:
        """Resume: hash the bytes an earlier try left, so the digest covers the whole file."""
        try:
            with open(self.fd, "rb", buffering=0, closefd=False) as f:
                while self.receive(f.readinto, append=False):
                    pass
            os.lseek(self.fd, self.size, os.SEEK_SET)
        except OSError as exc:
            raise _fs_error("read", self.path, exc) from None

    def receive(self, read_into: Callable[[bytearray], int | None], append: bool = True) -> int:
        """Read the next piece into a free buffer, append it to the file and have it hashed.
        The number of bytes, 0 at the end; read_into's exceptions pass through."""
        buf = self.pipe.buffer()
        try:
            n = read_into(buf) or 0
            if n and append:
                self._append(buf, n)
        except BaseException:
            self.pipe.give_back(buf)
            raise
        if not n:
            self.pipe.give_back(buf)
            return 0
        self.pipe.hash(buf, n)
        self.size += n
        self.most = max(self.most, self.size)
        return n

    def _append(self, buf: bytearray, n: int) -> None:
        view = memoryview(buf)[:n]
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.discard()  # a .part that cannot grow is no use to a later try
            raise _fs_error("write", self.path, exc) from None

    def restart(self) -> None:
        """The server sends the file from its first byte: forget what the .part holds."""
        try:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise _fs_error("truncate", self.path, exc) from None
        self.pipe.reset()
        self.size = 0

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def finish(self, target: Path) -> None:
        """Move the verified .part to `target`, world-readable. No fsync: a file torn by a crash
        fails the re-hash every cache hit does, and is downloaded again."""
        try:
            os.fchmod(self.fd, 0o644)  # the umask must not take away world-readability
            self.path.replace(target)
        except OSError as exc:
            raise _fs_error("move the download to", target, exc) from None


def _cached(cache_dir: Path, expected: str) -> Path | None:
    """A file in cache_dir/<expected>/ whose content still has that hash. Files there that do not
    (torn by a crash, changed by hand) are removed: their directory name says they would."""
    folder = cache_dir / expected
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _fs_error("read", folder, exc) from None
    for path in candidates:
        if _hash_file(path) == expected:
            return path
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    try:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                hasher.update(view[:n])
    except OSError as exc:
        raise _fs_error("read", path, exc) from None
    return hasher.hexdigest()


def _make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fs_error("create directory", path, exc) from None


def _fs_error(action: str, path: Path, exc: OSError) -> FilesystemError:
    return fsutil.os_error(action, path, exc, "free some space or use another cache directory")
