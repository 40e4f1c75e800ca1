"""Opening an ISO image, looking files up, and copying their data out.

The image is read lazily (`isofs.Volume`): only the directories on the paths asked for. File
data is copied straight from the image's extents with `os.copy_file_range` (in the kernel, no
bytes through Python), with `os.sendfile`, then plain reads as fallbacks; nothing is ever held
whole in memory.

Everything read from an image is hostile until checked: a name is only ever a lookup key (files
are copied under fixed names), a file to copy must be a regular file with data inside the image
(not a symbolic link, not zisofs-compressed, not empty, not running past the image's end), and
text read from the image is only used through an allow-list (see `kinds` and `syntax`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

from pxeprov.errors import ImageError
from pxeprov.fsutil import new_file
from pxeprov.images.isofs import Entry, IsoFormatError, Volume
from pxeprov.progress import Counter

CHUNK = 64 << 20  # bytes per copy_file_range call: progress granularity, not a buffer
READ_CHUNK = 1 << 20  # the plain-read fallback's buffer
SMALL = 4096  # version and info files: more than this is not one
T = TypeVar("T")
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}


def _looks_like_text(f: BinaryIO) -> bool:
    """Whether a file starts as text does (no NUL byte, UTF-8): a checksum list, a page, a
    note saved under the ISO's name, not an image cut short."""
    try:
        f.seek(0)
        head = f.read(4096)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the first 4 KiB
    return True


class Iso:
    """An open ISO image. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an ISO image")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ImageError(f"{path} does not exist") from None
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path} is not a regular file")
        self._size = st.st_size
        if self._size == 0:
            raise ImageError(f"{path} is empty, not an ISO image")
        try:
            self._f: BinaryIO = path.open("rb")
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        try:
            self._volume = Volume(self._f, self._size)
        except IsoFormatError as exc:
            text = _looks_like_text(self._f)
            self.close()
            if text:
                raise ImageError(
                    f"{path} is a text file, not an ISO 9660 image",
                    "give the ISO image itself, or a directory of its files",
                ) from None
            raise ImageError(
                f"{path} is not a readable ISO 9660 image ({exc})",
                "if it was downloaded, check that the download is complete",
            ) from None
        except OSError as exc:
            self.close()
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        # An image may be longer than it declares (appended partitions), never shorter.
        declared = self._volume.declared_size
        if self._size < declared:
            self.close()
            raise ImageError(
                f"{path} is truncated: {self._size} bytes of the {declared} its volume "
                "descriptor declares",
                "download it again",
            )

    def __enter__(self) -> Iso:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    @property
    def volume_id(self) -> str:
        return self._volume.volume_id

    @property
    def namespace(self) -> str:
        """Where names come from: rock-ridge, joliet or iso9660."""
        return self._volume.namespace

    @property
    def size(self) -> int:
        return self._size

    @property
    def records_read(self) -> int:
        """Directory records read so far: only those of the directories looked into."""
        return self._volume.records_read

    def _guard(self, what: Callable[[], T]) -> T:
        try:
            return what()
        except IsoFormatError as exc:
            raise ImageError(f"{self.path}: damaged ISO ({exc})") from None
        except OSError as exc:
            raise ImageError(f"cannot read {self.path}: {exc.strerror}") from None

    def listdir(self, path: str) -> dict[str, Entry]:
        """{lower-case name: entry} of a directory; {} when there is no such directory."""
        return self._guard(lambda: self._volume.listdir(path)) or {}

    def lookup(self, path: str) -> Entry | None:
        return self._guard(lambda: self._volume.lookup(path))

    def exists(self, path: str) -> bool:
        return self.lookup(path) is not None

    def file(self, path: str, *, allow_empty: bool = False) -> Entry:
        """The regular file at `path`, with every extent inside the image, or ImageError."""
        entry = self.lookup(path)
        if entry is None:
            raise ImageError(f"{path}: no such file in the ISO")
        if entry.is_dir:
            raise ImageError(f"{path} in the ISO is a directory, not a file")
        if entry.symlink:
            raise ImageError(f"{path} in the ISO is a symbolic link, not a file")
        if entry.compressed:
            raise ImageError(f"{path} in the ISO is zisofs-compressed, which pxeprov cannot copy")
        if entry.mode is not None and not stat.S_ISREG(entry.mode):
            raise ImageError(f"{path} in the ISO is not a regular file")
        if entry.size == 0 and not allow_empty:
            raise ImageError(f"{path} in the ISO is empty")
        for offset, length in entry.extents:
            if offset + length > self._size:
                raise ImageError(
                    f"{self.path} is truncated: {path} ends at byte {offset + length}, "
                    f"the file has {self._size}",
                    "download it again",
                )
        return entry

    def _pread(self, offset: int, length: int) -> bytes:
        return self._guard(lambda: os.pread(self._f.fileno(), length, offset))

    def head(self, path: str, size: int) -> bytes:
        """The first `size` bytes of a file (of its first extent)."""
        entry = self.file(path)
        offset, length = entry.extents[0]
        return self._pread(offset, min(size, length))

    def read_small(self, path: str, limit: int = SMALL) -> str | None:
        """The text of a small file (None when there is none or it is larger than `limit`)."""
        entry = self.lookup(path)
        if entry is None or entry.is_dir or entry.symlink or entry.compressed:
            return None
        if entry.size > limit or entry.size == 0:
            return None
        data = b"".join(self._pread(o, n) for o, n in self.file(path).extents)
        return data.decode("utf-8", "replace")

    def copy_whole(self, dest: Path, counter: Counter | None = None) -> int:
        """Copy the whole image to `dest` (casper's url=, iPXE's sanboot, memdisk)."""
        self._copy_runs(((0, self._size),), dest, counter)
        return self._size

    def copy(self, path: str, dest: Path, counter: Counter | None = None) -> int:
        """Copy one file to `dest` (created, 0644) from its extents; the number of bytes.

        Not fsynced: the caller syncs all files of an image at once, which lets the kernel
        write them back while the next file is copied."""
        entry = self.file(path)
        self._copy_runs(entry.extents, dest, counter)
        return entry.size

    def _copy_runs(
        self, runs: tuple[tuple[int, int], ...], dest: Path, counter: Counter | None
    ) -> None:
        step = None if counter is None else functools.partial(counter.add, f"copy {dest.name}")
        with new_file(dest) as dst:
            copy_runs(self._f.fileno(), dst.fileno(), runs, step)


def copy_runs(
    src: int, dst: int, runs: tuple[tuple[int, int], ...], progress: Step | None = None
) -> None:
    """Copy (offset, length) runs of `src` to the start of the empty `dst`: in the kernel
    (copy_file_range, sendfile) where it can, else by reads (across filesystems that refuse
    both, such as an overlay over another filesystem)."""
    if not _copy_extents(src, dst, runs, progress):
        os.lseek(dst, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
        _copy_with_reads(src, dst, runs, progress)


Step = Callable[[int], None]  # bytes copied since the last call


def _copy_extents(
    src: int, dst: int, runs: tuple[tuple[int, int], ...], progress: Step | None
) -> bool:
    """copy_file_range, else sendfile, run by run. False: neither works here (fall back)."""
    copy: Callable[[int, int, int, int], int]
    for copy in (_copy_file_range, _sendfile):
        try:
            for offset, length in runs:
                done = 0
                while done < length:
                    n = copy(src, dst, offset + done, min(CHUNK, length - done))
                    if n == 0:
                        raise ImageError("the ISO ended in the middle of a file (truncated?)")
                    done += n
                    if progress:
                        progress(n)
            return True
        except OSError as exc:
            if exc.errno not in _FALLBACK_ERRNOS:
                raise
            os.lseek(dst, 0, os.SEEK_SET)
            os.ftruncate(dst, 0)
    return False


def _copy_with_reads(
    src: int, dst: int, runs: tuple[tuple[int, int], ...], progress: Step | None
) -> None:
    for offset, length in runs:
        done = 0
        while done < length:
            chunk = os.pread(src, min(READ_CHUNK, length - done), offset + done)
            if not chunk:
                raise ImageError("the ISO ended in the middle of a file (truncated?)")
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
            done += len(chunk)
            if progress:
                progress(len(chunk))


def _copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset_src=offset)


def _sendfile(src: int, dst: int, offset: int, count: int) -> int:
    return os.sendfile(dst, src, offset, count)
