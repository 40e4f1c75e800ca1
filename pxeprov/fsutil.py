"""Atomic file operations: write next to the target, fsync, rename into place."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pxeprov.errors import FilesystemError, InputError, LockedError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MAX_READ = 64 << 20  # what pxeprov reads whole: configs, menus, boot loaders, its state


def read_bytes(path: Path, limit: int = MAX_READ) -> bytes | None:
    """The file's content, or None when there is no file. A directory, a device (a state file
    that is a link to /dev/zero), a file larger than `limit` or an unreadable file is an error,
    not an absent file: nothing is read without bound."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error("read", path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a regular file", "pxeprov reads only regular files")
        if st.st_size > limit:
            raise InputError(f"{path} is larger than {limit} bytes, too large for what it is")
        chunks = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise InputError(f"{path} is larger than {limit} bytes, too large for what it is")
        return b"".join(chunks)
    except OSError as exc:
        raise os_error("read", path, exc) from None
    finally:
        os.close(fd)


FULL_HINT = "free some space on that filesystem, then run the command again"
NEEDS_ROOT = "this command needs root: run it with sudo"


def os_error(action: str, path: Path, exc: OSError, full: str = FULL_HINT) -> FilesystemError:
    """The one mapping of an OSError to what the user reads: `cannot <action> <path>: <why>`,
    with `full` as the hint when the filesystem is full (what to do: the message says that it
    is full)."""
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return FilesystemError(f"cannot {action} {path}: disk full ({why})", full)
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        return FilesystemError(f"cannot {action} {path}: {why}", NEEDS_ROOT)
    return FilesystemError(f"cannot {action} {path}: {why}")


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[BinaryIO]:
    """A new file (created exclusively, world-readable whatever the umask) for a copy: when the
    block fails or is interrupted, the half file goes again."""
    try:
        with path.open("xb") as f:
            os.fchmod(f.fileno(), 0o644)
            yield f
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            path.unlink(missing_ok=True)
        raise os_error("copy", path, exc) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create `path` and its missing parents with `mode` whatever the umask: dnsmasq and nginx
    serve files as their own unprivileged users, who must be able to traverse every directory."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            directory.chmod(mode)
    except OSError as exc:
        raise os_error("create directory", path, exc) from None


def hand_over(path: Path, uid: int, gid: int, mode: int, keep: tuple[str, ...] = ()) -> None:
    """Make the directory `path` (`mode`) and everything in it belong to uid:gid. No symbolic
    link is followed: `path` must not be one, and a link inside is changed itself (the tree is
    walked through directory descriptors, so a link put in place meanwhile leads nowhere).
    Names in `keep`, at the top, stay as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error("open the directory", path, exc) from None
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in dirs + files:
                if top == "." and name in keep:
                    continue
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise os_error("change the owner of", path, exc) from None
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename. The temporary name starts with a dot, which
    dnsmasq's conf-dir skips, so a crash never leaves a half file that dnsmasq would load."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.pxeprov-{os.getpid()}.tmp")
    try:
        # private while it is written: in the TFTP root, a dot file that dnsmasq (which serves
        # any file its user can read) cannot read
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # umask must not take away world-readability
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise os_error("write", path, exc) from None
    fsync_dir(path.parent)


def remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise os_error("remove", path, exc) from None
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def flock(fd: int, timeout: float, busy: LockedError) -> None:
    """Take an exclusive flock on `fd`, waiting at most `timeout` seconds; `busy` when another
    process keeps it. Closing the descriptor releases it. The one lock of pxeprov: the run's
    lock file and a download's .part file both use it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise busy from None
            time.sleep(0.1)


@contextlib.contextmanager
def locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting at most `timeout` seconds for it."""
    make_dirs(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise os_error("open lock file", path, exc) from None
    try:
        busy = LockedError(
            f"another pxeprov run holds {path}",
            f"waited {timeout:.0f} s; try again when it has finished",
        )
        flock(fd, timeout, busy)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
