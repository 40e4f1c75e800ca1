"""fetch() against a real HTTP server on 127.0.0.1: resume, retries, checksums, cache, errors."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pxeprov.errors import (
    ChecksumError,
    DownloadError,
    FilesystemError,
    InputError,
    LockedError,
)
from pxeprov.images import httpclient
from pxeprov.images.checksums import parse_checksums
from pxeprov.images.download import fetch

from .httpserver import Fault, FileServer, self_signed, serve

MiB = 1 << 20
ISO = "/live/clonezilla-live-3.1.2-22-amd64.iso"
NAME = "clonezilla-live-3.1.2-22-amd64.iso"
DATA = os.urandom(3 * MiB + 12345)  # not a multiple of the chunk size
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serve(FileServer(files={ISO: DATA})) as fs:
        yield fs


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # no proxy from the environment: 127.0.0.1 only
    yield s
    s.close()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def part_of(cache: Path) -> Path:
    (part,) = (cache / "partial").iterdir()
    return part


def test_download_verified_by_sha256sums(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.files["/live/SHA256SUMS"] = f"{DIGEST}  {NAME}\n{'0' * 64}  other.iso\n".encode()
    calls: list[tuple[int, int | None]] = []
    got = fetch(
        server.url(ISO),
        tmp_path,
        session=session,
        progress=lambda _what, done, total: calls.append((done, total)),
    )
    assert got.path == tmp_path / DIGEST / NAME
    assert got.path.read_bytes() == DATA
    assert (got.filename, got.sha256, got.size, got.from_cache) == (NAME, DIGEST, len(DATA), False)
    assert got.checksum_source == f"SHA256SUMS at {server.url('/live/SHA256SUMS')}"
    assert got.path.stat().st_mode & 0o777 == 0o644
    assert files_under(tmp_path) == [got.path]  # no .part left
    assert calls[-1] == (len(DATA), len(DATA))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) <= 10  # throttled: a local 3 MiB download takes far less than a second
    assert server.gets(ISO)[0].range is None


def test_checksums_txt_with_other_hash_types(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    md5 = hashlib.md5(DATA).hexdigest()
    sha1 = hashlib.sha1(DATA).hexdigest()
    sha512 = hashlib.sha512(DATA).hexdigest()
    server.files["/live/CHECKSUMS.TXT"] = (
        f"### MD5SUMS:\n{md5}  {NAME}\n### SHA1SUMS:\n{sha1}  {NAME}\n"
        f"### SHA256SUMS:\n{'1' * 64}  clonezilla-live-3.1.2-22-i686.iso\n{DIGEST} *{NAME}\n"
        f"### SHA512SUMS:\n{sha512}  {NAME}\n"
    ).encode()
    got = fetch(server.url(ISO), tmp_path, session=session)
    assert got.checksum_source == f"CHECKSUMS.TXT at {server.url('/live/CHECKSUMS.TXT')}"
    assert got.sha256 == DIGEST
    # SHA256SUMS was asked for first and was not there
    asked = [s.path for s in server.seen]
    assert asked == ["/live/SHA256SUMS", "/live/CHECKSUMS.TXT", ISO]


def test_a_checksum_file_that_fails_does_not_stop_a_good_download(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    """SHA256SUMS answers 500 (twice: one retry): a file the user never asked for does not end
    the download; the next checksum file counts, and where none can be read it is said."""
    server.files["/live/SHA256SUMS"] = f"{'0' * 64}  {NAME}\n".encode()  # never got past 500
    server.statuses["/live/SHA256SUMS"] = [500] * 5
    server.files["/live/CHECKSUMS.TXT"] = f"{DIGEST}  {NAME}\n".encode()
    got = fetch(server.url(ISO), tmp_path, session=session, backoff=0.01)
    assert got.checksum_source == f"CHECKSUMS.TXT at {server.url('/live/CHECKSUMS.TXT')}"
    assert [s.path for s in server.seen].count("/live/SHA256SUMS") == 2

    other = tmp_path / "other"
    del server.files["/live/CHECKSUMS.TXT"]
    server.statuses["/live/SHA256SUMS"] = [500] * 5
    got = fetch(server.url(ISO), other, session=session, backoff=0.01)
    assert got.sha256 == DIGEST and got.path.read_bytes() == DATA
    assert got.checksum_source.startswith("none (") and "SHA256SUMS" in got.checksum_source
    assert "500" in got.checksum_source, got.checksum_source


def test_parse_checksums_forms() -> None:
    h = "AB" * 32
    assert parse_checksums(f"{h}  ./{NAME}\n", NAME) == h.lower()
    assert parse_checksums(f"SHA256 ({NAME}) = {h}\n", NAME) == h.lower()
    assert parse_checksums(f"{h}  {NAME}.torrent\n", NAME) is None
    assert parse_checksums(f"{'c' * 128}  {NAME}\n", NAME) is None  # SHA-512, not ours


def test_sha256_argument_upper_case(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    got = fetch(server.url(ISO), tmp_path, sha256=DIGEST.upper(), session=session)
    assert (got.sha256, got.checksum_source) == (DIGEST, "--sha256")
    assert [s.path for s in server.seen] == [ISO]  # no checksum file looked for


def test_no_checksum_file_means_none(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    got = fetch(server.url(ISO), tmp_path, session=session)
    assert (got.checksum_source, got.sha256) == ("none", DIGEST)


@pytest.mark.parametrize("where", ["argument", "SHA256SUMS"])
def test_mismatch_deletes_the_file(
    where: str, server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    if where == "SHA256SUMS":
        server.files["/live/SHA256SUMS"] = f"{wrong}  {NAME}\n".encode()
    with pytest.raises(ChecksumError) as info:
        expected = wrong if where == "argument" else None
        fetch(server.url(ISO), tmp_path, sha256=expected, session=session, backoff=0.01)
    assert info.value.message == (
        f"SHA-256 of {NAME} is {DIGEST}, expected {wrong}; the file was deleted"
    )
    assert files_under(tmp_path) == []


def test_404(server: FileServer, session: requests.Session, tmp_path: Path) -> None:
    url = server.url("/live/missing.iso")
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path, session=session, backoff=0.01)
    assert info.value.message == f"HTTP 404 Not Found for {url}"
    assert len(server.gets("/live/missing.iso")) == 1  # not retried
    assert files_under(tmp_path) == []


def test_unreachable_is_one_readable_line(session: requests.Session, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as info:
        fetch(f"http://127.0.0.1:{port}/x.iso", tmp_path, session=session, retries=2, backoff=0.01)
    line = info.value.one_line()
    assert line == f"cannot reach 127.0.0.1:{port}: connection refused (after 3 tries)"
    assert files_under(tmp_path) == []


def test_server_errors_are_retried(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.statuses[ISO] = [503, 429, 500]
    got = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, backoff=0.01)
    assert got.path.read_bytes() == DATA
    assert len(server.gets(ISO)) == 4


def test_server_errors_until_the_retries_run_out(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.statuses[ISO] = [503] * 3
    with pytest.raises(DownloadError) as info:
        fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=2, backoff=0.01)
    assert info.value.message == (
        f"HTTP 503 Service Unavailable for {server.url(ISO)} (after 3 tries)"
    )


def test_interrupted_then_resumed_in_one_call(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.faults[ISO] = Fault(after=MiB + 1000, times=2)
    got = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=1, backoff=0.01)
    assert got.path.read_bytes() == DATA
    # each try resumes exactly where the bytes stopped; retries=1 was enough for two cuts,
    # because a try that brought new bytes starts the count again
    cut = MiB + 1000
    assert [s.range for s in server.gets(ISO)] == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]


def test_interrupted_then_resumed_by_a_second_call(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.faults[ISO] = Fault(after=2 * MiB + 5, times=1)
    with pytest.raises(DownloadError, match=r"broke off after \d+ of \d+ bytes.*\(after 1 try\)"):
        fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=0, backoff=0.01)
    part = part_of(tmp_path)
    kept = part.stat().st_size
    assert kept == 2 * MiB + 5
    assert part.read_bytes() == DATA[:kept]

    got = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=0, backoff=0.01)
    assert server.gets(ISO)[-1].range == f"bytes={kept}-"
    assert got.path.read_bytes() == DATA
    assert files_under(tmp_path) == [got.path]


def test_server_ignoring_range_starts_over(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.ignore_range = True
    part = tmp_path / "partial"
    part.mkdir()
    url = server.url(ISO)
    stale = part / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{NAME}.part"
    stale.write_bytes(b"garbage that is not the start of the file")
    got = fetch(url, tmp_path, sha256=DIGEST, session=session, backoff=0.01)
    assert (
        server.gets(ISO)[0].range == f"bytes={len(b'garbage that is not the start of the file')}-"
    )
    assert got.path.read_bytes() == DATA
    assert not stale.exists()


def test_complete_part_and_416(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    url = server.url(ISO)
    part = tmp_path / "partial" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{NAME}.part"
    part.parent.mkdir()
    part.write_bytes(DATA)  # a crash after the last byte, before the rename
    got = fetch(url, tmp_path, sha256=DIGEST, session=session, backoff=0.01)
    assert got.path.read_bytes() == DATA
    assert [s.range for s in server.gets(ISO)] == [f"bytes={len(DATA)}-"]  # answered 416

    part.write_bytes(DATA + b"longer than the file")  # 416, but the sizes differ: start over
    (got.path).unlink()
    got = fetch(url, tmp_path, sha256=DIGEST, session=session, backoff=0.01)
    assert got.path.read_bytes() == DATA
    assert [s.range for s in server.gets(ISO)][-1] is None


def test_read_timeout_mid_body_is_resumed(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.faults[ISO] = Fault(after=MiB, times=1, stall=2.0)
    got = fetch(
        server.url(ISO), tmp_path, sha256=DIGEST, session=session, timeout=0.3, backoff=0.01
    )
    assert got.path.read_bytes() == DATA
    assert server.gets(ISO)[-1].range is not None


def test_server_that_cuts_every_body_and_ignores_range_ends(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    """Each try starts again from byte 0 and is cut at the same place: only the first try
    brought bytes the download did not hold already, so the retries run out (exit 8)."""
    server.ignore_range = True
    server.faults[ISO] = Fault(after=MiB, times=1000)
    with pytest.raises(DownloadError, match="broke off after 1048576 of") as info:
        fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=3, backoff=0.01)
    assert info.value.exit_code == 8
    # the first try counts as the first failure once it broke off; 3 more gained nothing
    assert len(server.gets(ISO)) == 1 + 3
    assert files_under(tmp_path) == [part_of(tmp_path)]  # kept for a later, better server


def test_trickling_body_ends(server: FileServer, session: requests.Session, tmp_path: Path) -> None:
    """A byte every 20 ms is not a download: each try ends after the stall time."""
    server.faults[ISO] = Fault(after=1000, times=1000, trickle=0.02)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"\(stalled\) \(after 3 tries\)"):
        fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=2,
              backoff=0.01, stall_timeout=1.0)  # fmt: skip
    assert time.monotonic() - start < 3 * 1.0 + 5
    assert len(server.gets(ISO)) == 3


def test_stopped_body_ends_at_the_stall_time(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.faults[ISO] = Fault(after=1000, times=1000, stall=60.0)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="stalled"):
        fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session, retries=1,
              backoff=0.01, stall_timeout=1.0)  # fmt: skip
    assert time.monotonic() - start < 2 * 1.0 + 5  # not the 30 s read timeout, nor 60 s


def test_https_to_http_redirect_is_refused(server: FileServer, tmp_path: Path) -> None:
    context, cert = self_signed(tmp_path)
    with serve(FileServer(redirects={"/cz.iso": server.url(ISO)}), tls=context) as tls:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(cert)
        with pytest.raises(DownloadError, match="refused") as info:
            fetch(tls.url("/cz.iso"), tmp_path / "cache", sha256=DIGEST, session=session)
        session.close()
    assert info.value.message.startswith(f"{tls.url('/cz.iso')} redirects to http://127.0.0.1")
    assert server.gets(ISO) == []  # nothing was asked for over plain HTTP
    tls_redirect = FileServer(files={ISO: DATA}, redirects={"/cz.iso": ISO})
    with serve(tls_redirect, tls=context) as tls:  # https -> https is followed
        session = requests.Session()
        session.trust_env = False
        session.verify = str(cert)
        got = fetch(tls.url("/cz.iso"), tmp_path / "cache", sha256=DIGEST, session=session)
        session.close()
    assert got.path.read_bytes() == DATA


def test_slow_server_times_out(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.delay = 1.0
    with pytest.raises(DownloadError) as info:
        fetch(
            server.url(ISO), tmp_path, sha256=DIGEST, session=session, timeout=0.2, retries=1,
            backoff=0.01,
        )  # fmt: skip
    assert info.value.message == (
        f"127.0.0.1:{server.port} sent no answer within 0.2 s (after 2 tries)"
    )


def test_cache_hit_makes_no_request(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    first = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session)
    server.seen.clear()
    again = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session)
    assert server.seen == []
    assert (again.path, again.from_cache, again.size) == (first.path, True, len(DATA))


def test_cache_hit_through_sha256sums_skips_the_image(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.files["/live/SHA256SUMS"] = f"{DIGEST}  {NAME}\n".encode()
    fetch(server.url(ISO), tmp_path, session=session)
    again = fetch(server.url(ISO), tmp_path, session=session)
    assert again.from_cache
    assert len(server.gets(ISO)) == 1


def test_damaged_cache_file_is_downloaded_again(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    first = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session)
    first.path.write_bytes(b"torn")
    again = fetch(server.url(ISO), tmp_path, sha256=DIGEST, session=session)
    assert not again.from_cache
    assert again.path.read_bytes() == DATA


def test_redirect_keeps_the_original_name(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    server.redirects["/dl/clonezilla.iso"] = server.url(ISO) + "?mirror=1"
    got = fetch(server.url("/dl/clonezilla.iso"), tmp_path, sha256=DIGEST, session=session)
    assert (got.filename, got.path.name) == ("clonezilla.iso", "clonezilla.iso")


def test_second_download_of_the_same_url_is_refused(
    server: FileServer, session: requests.Session, tmp_path: Path
) -> None:
    url = server.url(ISO)
    part = tmp_path / "partial" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{NAME}.part"
    part.parent.mkdir()
    with part.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LockedError):
            fetch(url, tmp_path, sha256=DIGEST, session=session)
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x.iso", "file:///etc/passwd", "x.iso", "http:///x.iso", "http://h/dir/"],
)
def test_bad_url(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        fetch(url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_sha256(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="64 hexadecimal digits"):
        fetch("http://127.0.0.1:9/x.iso", tmp_path, sha256="abc123")


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot mount a tmpfs (run the suite as root): {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=10)


def test_disk_full(server: FileServer, session: requests.Session, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small") as cache:
        with pytest.raises(FilesystemError) as info:
            fetch(server.url(ISO), cache, sha256=DIGEST, session=session, backoff=0.01)
        assert "disk full" in info.value.message
        assert "\n" not in info.value.one_line()
        assert files_under(cache) == []


def test_unwritable_cache(server: FileServer, session: requests.Session, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FilesystemError, match=r"^cannot create directory .*: Not a directory$"):
        fetch(server.url(ISO), blocker / "cache", session=session)
    assert server.gets(ISO) == []


def test_fallback_reader_gives_the_same_bytes(
    server: FileServer, session: requests.Session
) -> None:
    """The reader used when urllib3's http.client response is not at hand."""
    with session.get(server.url(ISO), stream=True) as resp:
        read_into = httpclient._urllib3_reader(resp.raw)
        buf = bytearray(MiB)
        got = bytearray()
        while n := read_into(buf):
            got += buf[:n]
    assert bytes(got) == DATA
