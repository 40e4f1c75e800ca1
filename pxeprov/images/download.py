"""Download a boot image into the cache: resume with HTTP Range, retry with backoff, verify SHA-256.

Layout under `cache_dir`:

    partial/<16 hex of sha256(url)>-<filename>.part   the bytes received so far
    <sha256>/<filename>                               verified files, named by their content

The SHA-256 is computed while the bytes arrive (after hashing what a resumed .part already holds),
so a download is read once. A file reaches `<sha256>/` only by one `os.replace` after it was
verified; a crash leaves a .part that the next call resumes.

This module is the orchestration (`fetch`, one try's transfer, the cache lookup, progress);
the pieces are in httpclient (requests, retries, stalls, error wording), checksums (published
checksum files) and partfile (the .part and its hashing).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from pxeprov.errors import ChecksumError, DownloadError, InputError
from pxeprov.images.checksums import CHECKSUM_FILES, normalise_sha256, published_sha256
from pxeprov.images.httpclient import (
    STALL_TIMEOUT,
    Client,
    Retryable,
    Watchdog,
    body_reader,
    content_range,
    head_length,
    int_header,
    reason,
    status_line,
    validator,
)
from pxeprov.images.partfile import PartFile, fs_error, hash_file, make_dirs
from pxeprov.progress import Progress

__all__ = ["CHECKSUM_FILES", "Downloaded", "fetch", "url_filename"]

PROGRESS_INTERVAL = 0.1  # seconds between two progress calls (plus one at the end)


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
    client = Client(session or requests.Session(), timeout, retries, backoff, stall_timeout)
    try:
        if expected is not None:
            source = "--sha256"
        else:
            expected, source = published_sha256(client, url, filename)
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
        make_dirs(part.parent)
        reporter = _Reporter(progress, f"download {filename}")
        with PartFile.open(part) as pf:
            client.run(lambda: _transfer(client, url, pf, reporter))
            actual, size = pf.sha256(), pf.size
            if expected is not None and actual != expected:
                pf.discard()
                raise ChecksumError(
                    f"SHA-256 of {filename} is {actual}, expected {expected}; the file was deleted",
                    f"expected value from {source}",
                )
            target = cache_dir / actual / filename
            make_dirs(target.parent)
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


def _transfer(client: Client, url: str, pf: PartFile, report: _Reporter) -> None:
    """One try: get the rest of `url` into `pf` (or all of it, when the server sends all)."""
    headers: dict[str, str] = {}
    if pf.size:
        headers["Range"] = f"bytes={pf.size}-"
        if pf.validator is not None:
            headers["If-Range"] = pf.validator  # a changed file comes back whole (200)
    with client.open("GET", url, headers) as resp:
        status = resp.status_code
        if status == 416 and pf.size:
            total = content_range(resp)[1]
            if total is None:
                total = head_length(client, url)
            if total == pf.size:
                report.finish(pf.size, total)
                return  # the .part already holds the whole file
            pf.restart()
            return _transfer(client, url, pf, report)  # now without Range: no second 416
        if status >= 400:
            raise DownloadError(status_line(resp, url))
        if status == 206:
            start, total = content_range(resp)
            if start != pf.size:  # not the piece asked for
                if start is None or pf.size == 0:
                    raise DownloadError(f"{url}: the server sent a part that was not asked for")
                pf.restart()
                return _transfer(client, url, pf, report)  # without Range this time
        elif status == 200:
            pf.restart()
            total = int_header(resp, "Content-Length")
        else:
            raise DownloadError(status_line(resp, url))
        pf.validator = validator(resp)
        before = pf.most
        read_into = body_reader(resp)
        with Watchdog(pf, resp, client.stall_timeout) as watchdog:
            while True:
                try:
                    n = pf.receive(read_into)
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                    got = f"{pf.size} of {total}" if total is not None else f"{pf.size}"
                    why = reason(exc)
                    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
                        why = f"nothing received for {client.timeout:g} s"
                    if watchdog.fired:
                        why = watchdog.reason
                    raise Retryable(
                        f"download of {url} broke off after {got} bytes: {why}",
                        progressed=pf.most > before and not watchdog.fired,
                    ) from None
                if not n:
                    break
                report.update(pf.size, total)
        if total is not None and pf.size != total:
            why = f": {watchdog.reason}" if watchdog.fired else ""
            raise Retryable(
                f"download of {url} broke off after {pf.size} of {total} bytes{why}",
                progressed=pf.most > before and not watchdog.fired,
            )
        report.finish(pf.size, total)


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


def _cached(cache_dir: Path, expected: str) -> Path | None:
    """A file in cache_dir/<expected>/ whose content still has that hash. Files there that do not
    (torn by a crash, changed by hand) are removed: their directory name says they would."""
    folder = cache_dir / expected
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise fs_error("read", folder, exc) from None
    for path in candidates:
        if hash_file(path) == expected:
            return path
        with contextlib.suppress(OSError):
            path.unlink()
    return None
