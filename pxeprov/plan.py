"""Rendered files vs what is under the root -> a plan. Reads the root, writes nothing."""

from __future__ import annotations

import difflib
import enum
import json
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pxeprov.errors import FilesystemError, MissingFileError
from pxeprov.fsutil import read_bytes, sha256
from pxeprov.paths import (
    DNSMASQ_DROP_IN,
    DNSMASQ_MAIN,
    DNSMASQ_MAIN_ORIGINAL,
    MANIFEST,
    NGINX_SITE,
    Root,
)
from pxeprov.render import Kind, ManagedFile

# A managed file that is no longer rendered still needs its service restarted once it is gone.
SERVICE_OF_PATH = {DNSMASQ_MAIN: "dnsmasq", DNSMASQ_DROP_IN: "dnsmasq", NGINX_SITE: "nginx"}


class Op(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    IDENTICAL = "unchanged"
    REMOVE = "remove"
    CONFLICT = "conflict"  # changed by hand since pxeprov wrote it (or never written by it)
    PENDING = "create after install"  # its source comes with a package still to install


@dataclass(frozen=True)
class FileAction:
    op: Op
    path: PurePosixPath
    new: bytes | None
    old: bytes | None
    mode: int = 0o644
    service: str | None = None
    tracked: bool = True  # recorded in the manifest (hand edits detected)
    note: str = ""
    keep_original: PurePosixPath | None = None  # move an unmanaged file here before writing
    restore_from: PurePosixPath | None = None  # REMOVE: put this file back in its place
    restore: bytes | None = None  # REMOVE: the content of `restore_from`, read when planned
    syntax: str | None = None  # the format of `new`, validated before it replaces `old`

    @property
    def changes(self) -> bool:
        return self.op in (Op.CREATE, Op.UPDATE, Op.REMOVE, Op.CONFLICT, Op.PENDING)


class DirOp(enum.Enum):
    INSTALL = "install"  # a new image directory, filled by `populate`, replaces any old one
    DELETE = "delete"


# Fills a new, empty directory (add-image's copy out of the ISO); returns (name, size) per file.
Populate = Callable[[Path], list[tuple[str, int]]]


@dataclass(frozen=True)
class DirAction:
    """An image directory under the TFTP root: apply fills a staging directory first, then swaps
    it in with the files of the same run (journal), so a crash leaves the old set or the new."""

    op: DirOp
    path: PurePosixPath
    files: tuple[tuple[str, int], ...] = ()  # what INSTALL puts there: (name, size)
    populate: Populate | None = None

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


@dataclass(frozen=True)
class ChangeSet:
    """What a run would change on disk (files, image directories) and install. Not a machine's
    plan, which is `state.Plan`."""

    files: tuple[FileAction, ...]
    install: tuple[str, ...] = ()
    manifest: dict[str, str] = field(default_factory=dict)
    dirs: tuple[DirAction, ...] = ()

    @property
    def conflicts(self) -> list[FileAction]:
        return [a for a in self.files if a.op is Op.CONFLICT]

    @property
    def changes(self) -> bool:
        return bool(self.install or self.dirs) or any(a.changes for a in self.files)

    @property
    def restarts(self) -> list[str]:
        """Services whose config changes, in the order their files come (nginx before dnsmasq:
        payloads are served before clients are sent to them)."""
        names = [a.service for a in self.files if a.service and a.changes]
        return list(dict.fromkeys(names))

    @property
    def services(self) -> list[str]:
        """Services the rendered files are for (not those whose files are being removed)."""
        names = [a.service for a in self.files if a.service and a.new is not None]
        return list(dict.fromkeys(names))

    @property
    def restart_dnsmasq(self) -> bool:
        return "dnsmasq" in self.restarts


def load_manifest(root: Root) -> dict[str, str]:
    """{system path: sha256 of what pxeprov last wrote there}."""
    raw = read_bytes(root.path(MANIFEST))
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FilesystemError(
            f"{root.path(MANIFEST)} is damaged", "remove it to start afresh"
        ) from None
    files = data.get("files", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def manifest_bytes(manifest: dict[str, str]) -> bytes:
    return (json.dumps({"files": dict(sorted(manifest.items()))}, indent=2) + "\n").encode()


def make_plan(
    files: Sequence[ManagedFile],
    root: Root,
    to_install: Sequence[str] = (),
    *,
    preview: bool = False,
) -> ChangeSet:
    """`preview`: a missing boot loader is shown as pending instead of being an error, so a
    dry run works on a box where nothing is installed yet."""
    manifest = load_manifest(root)
    actions: list[FileAction] = []
    for f in files:
        actions.append(_action(f, root, manifest, to_install, preview))
    rendered = {str(f.path) for f in files}
    for path_text, recorded in sorted(manifest.items()):
        if path_text in rendered:
            continue
        path = PurePosixPath(path_text)
        old = read_bytes(root.path(path))
        if old is None:
            continue
        restore = None
        restore_bytes = None
        if path == DNSMASQ_MAIN:
            restore_bytes = read_bytes(root.path(DNSMASQ_MAIN_ORIGINAL))
            restore = DNSMASQ_MAIN_ORIGINAL if restore_bytes is not None else None
        service = SERVICE_OF_PATH.get(path)
        if sha256(old) == recorded:
            note = f"no longer used; {restore} is put back" if restore else "no longer used"
            actions.append(
                FileAction(
                    Op.REMOVE,
                    path,
                    None,
                    old,
                    service=service,
                    note=note,
                    restore_from=restore,
                    restore=restore_bytes,
                )
            )
        else:
            actions.append(
                FileAction(
                    Op.CONFLICT,
                    path,
                    None,
                    old,
                    service=service,
                    note="no longer used, but changed by hand",
                    restore_from=restore,
                    restore=restore_bytes,
                )
            )
    return ChangeSet(tuple(actions), tuple(to_install), manifest)


def with_dirs(plan: ChangeSet, dirs: Sequence[DirAction]) -> ChangeSet:
    return replace(plan, dirs=tuple(dirs))


def _action(
    f: ManagedFile,
    root: Root,
    manifest: dict[str, str],
    to_install: Sequence[str],
    preview: bool,
) -> FileAction:
    old = read_bytes(root.path(f.path))
    if f.kind is Kind.COPY:
        assert f.sources and f.package is not None
        source = next((s for s in f.sources if root.path(s).is_file()), f.sources[0])
        new = read_bytes(root.path(source))
        note = f"copy of {source} (package {f.package})"
        if new is None:
            if f.package in to_install or preview:
                if f.package not in to_install:
                    note = f"{source} is missing: install the package {f.package}"
                return FileAction(
                    Op.PENDING,
                    f.path,
                    None,
                    old,
                    note=note,
                    mode=f.mode,
                    service=f.service,
                )
            raise MissingFileError(
                f"boot-loader file {source} is missing",
                f"install the package {f.package}"
                + ("" if root.is_system else f" or copy it under --root {root.base}"),
            )
    elif f.kind is Kind.EDIT:
        assert f.edit is not None
        new = f.edit(old)
        note = "edited in place" if old is not None else ""
        op = _op(old, new)
        if op is Op.IDENTICAL and _mode(root.path(f.path)) not in (None, f.mode):
            op, note = Op.UPDATE, f"its mode becomes {f.mode:04o}"
        return FileAction(
            op,
            f.path,
            new,
            old,
            tracked=False,
            note=note,
            mode=f.mode,
            service=f.service,
        )
    else:
        assert f.content is not None
        new = f.content
        note = ""
    op = _op(old, new)
    keep = None
    if op is Op.UPDATE and str(f.path) not in manifest:
        if f.path == DNSMASQ_MAIN and not root.path(DNSMASQ_MAIN_ORIGINAL).exists():
            keep, note = DNSMASQ_MAIN_ORIGINAL, f"the original is kept as {DNSMASQ_MAIN_ORIGINAL}"
        elif f.kind is Kind.GENERATED:
            op, note = Op.CONFLICT, "exists and was not written by pxeprov"
    elif (
        op is Op.UPDATE
        and f.kind is Kind.GENERATED
        and old is not None
        and sha256(old) != manifest[str(f.path)]
    ):
        op, note = Op.CONFLICT, "changed by hand since pxeprov wrote it"
    return FileAction(
        op,
        f.path,
        new,
        old,
        note=note,
        keep_original=keep,
        mode=f.mode,
        service=f.service,
        syntax=f.syntax,
    )


def is_text(data: bytes) -> bool:
    return b"\0" not in data[:8192]


def diff_text(action: FileAction) -> str:
    """A unified diff of the file on disk against what pxeprov would write."""
    old, new = action.old or b"", action.new or b""
    if not (is_text(old) and is_text(new)):
        return f"Binary {action.path}: {len(old)} -> {len(new)} bytes\n"
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        new.decode(errors="replace").splitlines(keepends=True),
        fromfile=f"{action.path} (on disk)" if action.old is not None else "/dev/null",
        tofile=f"{action.path} (rendered)" if action.new is not None else "/dev/null",
    )
    return "".join(lines)


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _op(old: bytes | None, new: bytes) -> Op:
    if old is None:
        return Op.CREATE
    return Op.IDENTICAL if old == new else Op.UPDATE
