"""Sources that are not ISO images: a directory (an installed package's files, such as
debian-installer-12-netboot-amd64's or memtest86+'s) and a tarball (Debian's netboot.tar.gz).

They answer what kinds ask of an ISO (`listdir`, `lookup`, `read_small`, `file`, `head`, `copy`),
with the same rules: names are matched in lower case, a name holding a control character (or, in
a tarball, an absolute or `..` path) is never looked at, and a file to copy must be a regular file
(a symbolic link is refused, so nothing outside the source is reached through one).

A directory is read as an ISO is: no symbolic link in it is followed, not even one to a
directory on the way to a file (each name is opened relative to its directory, without
following a link). A link that leads out of the directory is refused with its name wherever it
is met (on the way to a file, or as a file to copy): everything copied is served to anyone on
the network, and a link to /root or /etc is not something to guess about. A link inside the
directory is not followed either (to the kinds it is no directory, and a file to copy that is
one is refused, naming it): skipping it instead would leave a tree without a name a loader asks
for, found out at boot. A file that other users may not read (or one in a directory they may
not enter) is refused too: pxeprov runs as root and could read it, but whoever made it private
did not mean it to be served.
"""

from __future__ import annotations

import functools
import os
import stat
import tarfile
from pathlib import Path
from types import TracebackType

from pxeprov.errors import ImageError
from pxeprov.fsutil import new_file, os_error
from pxeprov.images.iso import copy_runs
from pxeprov.images.isofs import Entry
from pxeprov.progress import Counter

SMALL = 64 << 10
MAX_MEMBERS = 50_000  # entries of a tarball read
CHUNK = 1 << 20
_COMPRESSED = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh")


def _usable(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    )


def _parts(path: str) -> list[str]:
    return [p for p in path.lower().split("/") if p]


def is_tarball(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head.startswith(_COMPRESSED) or head[257:262] == b"ustar"


class _Base:
    path: Path

    def __enter__(self) -> _Base:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        pass

    @property
    def volume_id(self) -> str:
        return ""

    def listdir(self, path: str) -> dict[str, Entry]:
        raise NotImplementedError

    def lookup(self, path: str) -> Entry | None:
        *head, name = _parts(path) or [""]
        return self.listdir("/".join(head)).get(name) if name else None

    def file(self, path: str, *, allow_empty: bool = False) -> Entry:
        entry = self.lookup(path)
        if entry is None:
            raise ImageError(f"{path}: no such file in {self.path}")
        if entry.is_dir:
            raise ImageError(f"{path} in {self.path} is a directory, not a file")
        if entry.symlink:
            raise ImageError(f"{path} in {self.path} is a symbolic link, not a file")
        if entry.size == 0 and not allow_empty:
            raise ImageError(f"{path} in {self.path} is empty")
        return entry


class DirTree(_Base):
    """A directory on this machine: its links are not followed, and its private files are not
    copied (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._top = Path(os.path.realpath(path))  # the directory named: its own links followed
        self._names: dict[str, dict[str, str]] = {}  # dir (lower) -> {lower name: real name}
        # links into the directory met as directories on the way to something, not followed
        self.unfollowed: list[str] = []

    def _spelled(self, path: str, *, through: bool) -> list[str] | None:
        """The names of `path` as the directory spells them; None where one is missing, or
        where a directory on the way (with `through`, the last name too) is a link into the
        tree, which is not followed. A link out of the tree is an ImageError naming it."""
        parts = _parts(path)
        real = self._top
        out: list[str] = []
        for index, part in enumerate(parts):
            listing = self._listing(real)
            if part not in listing:
                return None
            real = real / listing[part]
            out.append(listing[part])
            if (through or index < len(parts) - 1) and real.is_symlink():
                self._check_link(real)
                if self._shown(real) not in self.unfollowed:
                    self.unfollowed.append(self._shown(real))
                return None
        return out

    def _real(self, path: str) -> Path | None:
        spelled = self._spelled(path, through=False)
        return None if spelled is None else self._top.joinpath(*spelled)

    def _check_link(self, link: Path) -> bool:
        """Whether the link stays inside the tree; one that leads out is an ImageError."""
        real = Path(os.path.realpath(link))
        if real == self._top or self._top in real.parents:
            return True
        raise ImageError(
            f"{self._shown(link)} in {self.path} is a symbolic link to {link.readlink()}, which "
            "leads out of the directory: pxeprov follows no link out of a source directory",
            "copy what it names into the directory instead of the link",
        )

    def _shown(self, real: Path) -> str:
        return str(real.relative_to(self._top))

    def _listing(self, directory: Path) -> dict[str, str]:
        key = str(directory)
        if key not in self._names:
            try:
                names = [p.name for p in directory.iterdir()]
            except (FileNotFoundError, NotADirectoryError):
                names = []
            except OSError as exc:
                raise os_error("read", directory, exc) from None
            self._names[key] = {n.lower(): n for n in sorted(names) if _usable(n)}
        return self._names[key]

    def listdir(self, path: str) -> dict[str, Entry]:
        spelled = self._spelled(path, through=True)
        if spelled is None:
            return {}
        real = self._top.joinpath(*spelled)
        if not real.is_dir():
            return {}
        out = {}
        for lower, name in self._listing(real).items():
            st = (real / name).lstat()
            out[lower] = Entry(
                lower,
                stat.S_ISDIR(st.st_mode),
                (),
                st.st_size,
                symlink=stat.S_ISLNK(st.st_mode),
                mode=st.st_mode,
                original=name,
            )
        return out

    def file(self, path: str, *, allow_empty: bool = False) -> Entry:
        entry = self.lookup(path)
        real = self._real(path)
        if entry is None:
            self._no_link_on_the_way(path)
        elif entry.symlink and real is not None:
            inside = self._check_link(real)  # out of the tree: refused by name
            raise ImageError(
                f"{self._shown(real)} in {self.path} is a symbolic link (to {real.readlink()}"
                f"{', inside the directory' if inside else ''}), not a file: pxeprov copies no "
                "symbolic link from a source directory",
                "name the file it leads to, or copy the file in place of the link",
            )
        entry = super().file(path, allow_empty=allow_empty)
        if entry.mode is not None and not stat.S_ISREG(entry.mode):
            raise ImageError(f"{path} in {self.path} is not a regular file")
        os.close(self._open_nofollow(path))  # every directory on the way, and its mode
        return entry

    def _no_link_on_the_way(self, path: str) -> None:
        """A directory on the way to `path` that is a link (into the tree: one out of it is
        refused where it is met) is named, rather than the file said to be missing."""
        real = self._top
        for part in _parts(path)[:-1]:
            name = self._listing(real).get(part)
            if name is None:
                return
            real = real / name
            if real.is_symlink():
                raise ImageError(
                    f"{path} in {self.path} is reached through {self._shown(real)}, a symbolic "
                    f"link (to {real.readlink()}): pxeprov follows no link in a source directory",
                    "name the path the link leads to",
                )

    def _open_nofollow(self, path: str) -> int:
        """The file opened one name at a time from the top, never through a link, checked to be
        a regular file that others may read in directories they may enter."""
        spelled = self._spelled(path, through=False)
        if spelled is None or not spelled:
            raise ImageError(f"{path}: no such file in {self.path}")
        try:
            fd = os.open(self._top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error("read", self._top, exc) from None
        try:
            for index, name in enumerate(spelled):
                last = index == len(spelled) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= os.O_NONBLOCK if last else os.O_DIRECTORY
                here = self._top.joinpath(*spelled[: index + 1])
                try:
                    opened = os.open(name, flags, dir_fd=fd)
                except OSError as exc:
                    if here.is_symlink():  # put there since it was looked at
                        self._check_link(here)
                        raise ImageError(f"{self._shown(here)} in {self.path} is a symbolic "
                                         "link: not followed") from None  # fmt: skip
                    raise os_error("read", here, exc) from None
                os.close(fd)
                fd = opened
                st = os.fstat(fd)
                if not last and not st.st_mode & stat.S_IXOTH:
                    raise ImageError(
                        f"{self._shown(here)} in {self.path} is a directory other users may "
                        f"not enter ({stat.filemode(st.st_mode)}): pxeprov serves what it "
                        "copies to anyone on the network, so it copies nothing private",
                        f"chmod o+x {here} if what is in it may be served",
                    )
                if last and not stat.S_ISREG(st.st_mode):
                    raise ImageError(f"{path} in {self.path} is not a regular file")
                if last and not st.st_mode & stat.S_IROTH:
                    raise ImageError(
                        f"{self._shown(here)} in {self.path} may be read by its owner only "
                        f"({stat.filemode(st.st_mode)}): pxeprov serves what it copies to "
                        "anyone on the network, so it copies no private file",
                        f"chmod o+r {here} if it may be served",
                    )
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open(self, path: str) -> int:
        self.file(path)
        return self._open_nofollow(path)

    def read_small(self, path: str, limit: int = SMALL) -> str | None:
        entry = self.lookup(path)
        if entry is None or entry.is_dir or entry.symlink or not 0 < entry.size <= limit:
            return None
        try:
            fd = self._open(path)
        except ImageError:
            return None  # a private file says nothing about what is served
        try:
            return os.read(fd, limit).decode("utf-8", "replace")
        finally:
            os.close(fd)

    def head(self, path: str, size: int) -> bytes:
        fd = self._open(path)
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)

    def copy(self, path: str, dest: Path, counter: Counter | None = None) -> int:
        size = self.file(path).size
        step = None if counter is None else functools.partial(counter.add, f"copy {dest.name}")
        src = self._open_nofollow(path)
        try:
            with new_file(dest) as dst:
                copy_runs(src, dst.fileno(), ((0, size),), step)
        except ImageError:
            raise ImageError(f"{path} in {self.path} became shorter while copied") from None
        finally:
            os.close(src)
        return size


class TarSource(_Base):
    """A tarball (gzip, xz or bzip2 compressed, or not), read without extracting it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"{path} is not a readable tarball ({exc})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        self._dirs: dict[str, dict[str, Entry]] = {"": {}}
        try:
            for count, member in enumerate(self._tar):
                if count >= MAX_MEMBERS:
                    raise ImageError(f"{path} holds more than {MAX_MEMBERS} entries")
                self._index(member)
        except (tarfile.TarError, OSError, EOFError) as exc:
            self.close()
            raise ImageError(f"{path} is a damaged tarball ({exc})") from None

    def _index(self, member: tarfile.TarInfo) -> None:
        raw = member.name.removeprefix("./")
        if raw.startswith("/") or not all(_usable(p) for p in raw.split("/") if p):
            return  # an absolute or `..` name, or one with a control character
        spelled = [p for p in raw.split("/") if p]
        parts = [p.lower() for p in spelled]
        if not parts:
            return
        for depth in range(len(parts)):  # the directories above it exist
            parent = "/".join(parts[:depth])
            name = parts[depth]
            here = "/".join(parts[: depth + 1])
            is_last = depth == len(parts) - 1
            listing = self._dirs.setdefault(parent, {})
            if is_last and not member.isdir():
                listing[name] = Entry(
                    name, False, (), member.size, symlink=not member.isreg(),
                    original=spelled[depth],
                )  # fmt: skip
                self._members[here] = member
            else:
                listing.setdefault(name, Entry(name, True, (), 0, original=spelled[depth]))
                self._dirs.setdefault(here, {})

    def close(self) -> None:
        tar = getattr(self, "_tar", None)
        if tar is not None:
            tar.close()

    def listdir(self, path: str) -> dict[str, Entry]:
        return dict(self._dirs.get("/".join(_parts(path)), {}))

    def _read(self, path: str, size: int | None) -> bytes:
        member = self._members["/".join(_parts(path))]
        f = self._tar.extractfile(member)
        if f is None:
            raise ImageError(f"{path} in {self.path} is not a regular file")
        with f:
            return f.read(size) if size is not None else f.read()

    def read_small(self, path: str, limit: int = SMALL) -> str | None:
        entry = self.lookup(path)
        if entry is None or entry.is_dir or entry.symlink or not 0 < entry.size <= limit:
            return None
        return self._read(path, limit).decode("utf-8", "replace")

    def head(self, path: str, size: int) -> bytes:
        self.file(path)
        return self._read(path, size)

    def copy(self, path: str, dest: Path, counter: Counter | None = None) -> int:
        entry = self.file(path)
        member = self._members["/".join(_parts(path))]
        src = self._tar.extractfile(member)
        if src is None:
            raise ImageError(f"{path} in {self.path} is not a regular file")
        try:
            with src, new_file(dest) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if counter is not None:
                        counter.add(f"copy {dest.name}", len(chunk))
        except (tarfile.TarError, EOFError) as exc:
            raise ImageError(f"{self.path} is a damaged tarball ({exc})") from None
        return entry.size
