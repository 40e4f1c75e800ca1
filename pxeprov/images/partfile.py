"""The files of a download: the locked .part that a download appends to and resumes, hashed
(SHA-256) on a second thread while the bytes arrive, then moved into the cache once verified;
hashing a whole file; and the wording of filesystem errors in the cache."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pxeprov import fsutil
from pxeprov.errors import FilesystemError, LockedError

# Read, write and hash in 256 KiB pieces: never the whole file in memory. Smaller than 1 MiB,
# likely so that a piece is still in the CPU cache when the hashing thread reads it: on a 2-CPU
# VM, 1 MiB pieces were 5-10% slower, 4 MiB ones ~1.8x slower, 64 KiB and less slower again
# (runs like bench/download_bench.py's).
CHUNK_SIZE = 256 << 10


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


class PartFile:
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
    def open(cls, path: Path) -> Iterator[PartFile]:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise fs_error("open", path, exc) from None
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
            raise fs_error("read", self.path, exc) from None

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
            raise fs_error("write", self.path, exc) from None

    def restart(self) -> None:
        """The server sends the file from its first byte: forget what the .part holds."""
        try:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise fs_error("truncate", self.path, exc) from None
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
            raise fs_error("move the download to", target, exc) from None


def hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    try:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                hasher.update(view[:n])
    except OSError as exc:
        raise fs_error("read", path, exc) from None
    return hasher.hexdigest()


def make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error("create directory", path, exc) from None


def fs_error(action: str, path: Path, exc: OSError) -> FilesystemError:
    return fsutil.os_error(action, path, exc, "free some space or use another cache directory")
