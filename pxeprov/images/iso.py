"""Reading ISO 9660 images with pycdlib: file list, small files, and copying file data out.

Names are looked up through Rock Ridge, then Joliet, then plain ISO 9660 (whose `NAME.EXT;1`
is shown as `name.ext`). File data is copied straight from the ISO's extents with
`os.copy_file_range` (in the kernel, no bytes through Python), with `os.sendfile` and then
pycdlib's own reader as fallbacks; nothing is ever held whole in memory.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pycdlib

from pxeprov.errors import FilesystemError, ImageError

Progress = Callable[[int], None]  # bytes copied since the last call
CHUNK = 64 << 20  # bytes per copy_file_range call: progress granularity, not a buffer
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}


@dataclass(frozen=True)
class IsoFile:
    path: str  # as shown to users and matched by kinds: lower case, absolute, no ";1"
    name: str  # the name in the ISO's namespace, for pycdlib
    size: int


def _display(name: str, plain: bool) -> str:
    if plain:  # ISO 9660 "VMLINUZ.;1" -> "vmlinuz"
        name = name.split(";", 1)[0].removesuffix(".")
    return name.lower()


class Iso:
    """An open ISO image. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an ISO image")
        try:
            self._size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"{path} does not exist") from None
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        if self._size == 0:
            raise ImageError(f"{path} is empty, not an ISO image")
        self._iso = pycdlib.PyCdlib()
        try:
            self._iso.open(str(path))
        # pycdlib raises its own exceptions for most damage, but struct/index/unicode errors for
        # some truncations: all mean the same to the user.
        except Exception as exc:
            raise ImageError(
                f"{path} is not a readable ISO 9660 image ({_short(exc)})",
                "check that the download is complete",
            ) from None
        # pycdlib clamps the files of a cut-off image to what is there, so compare the size the
        # primary volume descriptor declares (an image may be longer: appended partitions).
        declared = int(self._iso.pvd.space_size) * int(self._iso.pvd.log_block_size)
        if self._size < declared:
            self.close()
            raise ImageError(
                f"{path} is truncated: {self._size} bytes of the {declared} its volume "
                "descriptor declares",
                "download it again",
            )
        if self._iso.has_rock_ridge():
            self.namespace, self._plain = "rr_path", False
        elif self._iso.has_joliet():
            self.namespace, self._plain = "joliet_path", False
        else:
            self.namespace, self._plain = "iso_path", True
        self.files = self._list()

    def __enter__(self) -> Iso:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        # closing a damaged image must not hide the error that is being reported
        with contextlib.suppress(Exception):
            self._iso.close()

    @property
    def volume_id(self) -> str:
        raw: Any = self._iso.pvd.volume_identifier
        return bytes(raw).decode("ascii", "replace").strip()

    def _lookup(self, iso_file: IsoFile) -> dict[str, str]:
        return {self.namespace: iso_file.name}

    def _list(self) -> dict[str, IsoFile]:
        out: dict[str, IsoFile] = {}
        try:
            for dirpath, _dirs, names in self._iso.walk(**{self.namespace: "/"}):
                for name in names:
                    full = f"{dirpath.rstrip('/')}/{name}"
                    shown = "/".join(_display(part, self._plain) for part in full.split("/"))
                    record = self._iso.get_record(**{self.namespace: full})
                    out[shown] = IsoFile(shown, full, int(record.get_data_length()))
        except Exception as exc:  # damaged directory records, as in __init__
            raise ImageError(f"{self.path}: damaged directory ({_short(exc)})") from None
        return out

    def extents(self, iso_file: IsoFile) -> list[tuple[int, int]]:
        """(byte offset, length) runs of the file's data; checked against the image's size."""
        runs = [
            (int(o), int(n)) for o, n in self._iso.get_file_byte_extents(**self._lookup(iso_file))
        ]
        if iso_file.size < 0 or sum(n for _, n in runs) != iso_file.size:
            raise ImageError(f"{iso_file.path}: extents do not add up to its size")
        for offset, length in runs:
            if offset + length > self._size:
                raise ImageError(
                    f"{self.path} is truncated: {iso_file.path} ends at byte {offset + length}, "
                    f"the file has {self._size}",
                    "download it again",
                )
        return runs

    def head(self, path: str, size: int) -> bytes:
        """The first `size` bytes of a file."""
        with self._iso.open_file_from_iso(**self._lookup(self.files[path])) as f:
            data: bytes = f.read(size)
        return data

    def read_small(self, path: str, limit: int = 4096) -> str:
        iso_file = self.files[path]
        if iso_file.size > limit:
            return ""
        with self._iso.open_file_from_iso(**self._lookup(iso_file)) as f:
            data: bytes = f.read(limit)
        return data.decode("utf-8", "replace")

    def copy(self, path: str, dest: Path, progress: Progress | None = None) -> None:
        """Copy one file to `dest` (created, 0644), from its extents where the kernel can.

        Not fsynced: the caller syncs all files of an image at once (see `sync_files`), which
        lets the kernel write them back while the next file is copied."""
        iso_file = self.files[path]
        runs = self.extents(iso_file)
        try:
            with self.path.open("rb") as src, dest.open("xb") as dst:
                os.fchmod(dst.fileno(), 0o644)
                if not _copy_extents(src.fileno(), dst.fileno(), runs, progress):
                    dst.seek(0)
                    dst.truncate()
                    self._copy_with_pycdlib(iso_file, dst, progress)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                dest.unlink(missing_ok=True)  # no half file
            hint = "disk full" if exc.errno == errno.ENOSPC else None
            raise FilesystemError(f"cannot copy {path} to {dest}: {exc.strerror}", hint) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _copy_with_pycdlib(self, iso_file: IsoFile, dst: Any, progress: Progress | None) -> None:
        with self._iso.open_file_from_iso(**self._lookup(iso_file)) as f:
            while chunk := f.read(1 << 20):
                dst.write(chunk)
                if progress:
                    progress(len(chunk))


def sync_files(paths: list[Path]) -> None:
    """fdatasync each file, then their directories: durable before they are renamed into use."""
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        for directory in {p.parent for p in paths}:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        hint = "disk full" if exc.errno == errno.ENOSPC else None
        raise FilesystemError(f"cannot write {path}: {exc.strerror}", hint) from None


def _copy_extents(
    src: int, dst: int, runs: list[tuple[int, int]], progress: Progress | None
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


def _copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset_src=offset)


def _sendfile(src: int, dst: int, offset: int, count: int) -> int:
    return os.sendfile(dst, src, offset, count)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
