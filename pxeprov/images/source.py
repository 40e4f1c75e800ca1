"""Where an image comes from: an ISO file, a directory (an installed package's files), or a
tarball (netboot.tar.gz). All answer the same questions (`Source`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pxeprov.images.iso import Iso
from pxeprov.images.isofs import Entry
from pxeprov.images.trees import DirTree, TarSource, is_tarball
from pxeprov.progress import Counter


class Source(Protocol):
    path: Path

    @property
    def volume_id(self) -> str: ...

    def listdir(self, path: str) -> dict[str, Entry]: ...

    def lookup(self, path: str) -> Entry | None: ...

    def file(self, path: str, *, allow_empty: bool = False) -> Entry: ...

    def read_small(self, path: str, limit: int = ...) -> str | None: ...

    def head(self, path: str, size: int) -> bytes: ...

    def copy(self, path: str, dest: Path, counter: Counter | None = None) -> int: ...

    def close(self) -> None: ...


def open_source(path: Path) -> Source:
    """An ISO image, a directory, or a tarball, by what `path` is (the caller closes it)."""
    if path.is_dir():
        return DirTree(path)
    if path.is_file() and is_tarball(path):
        return TarSource(path)
    return Iso(path)
