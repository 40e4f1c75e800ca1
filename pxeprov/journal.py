"""The journal: every change one run is about to make, written down before the first change.

A run that is killed between two of its writes leaves the journal behind. The next run, under the
lock and before it reads anything else, replays it: every step is idempotent, so doing the whole
list again finishes the interrupted run, and the files are the new set, never a mix of old and
new (a mix made the next run report a false hand edit: menus renamed into place, the manifest
not yet). The journal is written atomically (`fsutil.write_atomic`), so it is either complete
(committed) or absent; a temporary file of an uncommitted one is removed with the other stale
temporaries (`cleanup`).

`/var/lib/pxeprov/journal.json`: {"version": 1, "steps": [...], "blobs": ["<base64>", ...]}
Steps (paths are system paths, joined onto the root when carried out):
  {"do": "write", "path": P, "blob": i, "mode": m}    write blob i to P atomically
  {"do": "remove", "path": P}                         remove P if it is there
  {"do": "swap_in", "final": P, "staging": S, "trash": T}
        a new image directory: if S is there, move P (if any) to T, then S to P
  {"do": "move_out", "final": P, "trash": T}          an image directory goes: P to T
  {"do": "swap_back", "final": P, "trash": T, "discard": D, "had_old": bool}
        undo swap_in / move_out: P (the new one, if any) to D, T back to P
  {"do": "delete_tree", "path": P}                    remove a directory tree if it is there
  {"do": "restart", "service": name}                  restart a service (on a real system)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pxeprov import fsutil
from pxeprov.errors import FilesystemError, PxeprovError
from pxeprov.paths import JOURNAL, Root

MAX_JOURNAL = 256 << 20  # boot loaders included, a journal is a few MB
_TEMP_RE = re.compile(r"\..+\.pxeprov-[0-9]+\.tmp")
Restart = Callable[[str], None]


@dataclass
class Journal:
    steps: list[dict[str, Any]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)

    def write(self, path: PurePosixPath, data: bytes, mode: int = 0o644) -> None:
        self.blobs.append(data)
        self.steps.append({"do": "write", "path": str(path), "blob": len(self.blobs) - 1,
                           "mode": mode})  # fmt: skip

    def remove(self, path: PurePosixPath) -> None:
        self.steps.append({"do": "remove", "path": str(path)})

    def swap_in(self, final: PurePosixPath, staging: PurePosixPath, trash: PurePosixPath) -> None:
        self.steps.append(
            {"do": "swap_in", "final": str(final), "staging": str(staging), "trash": str(trash)}
        )

    def move_out(self, final: PurePosixPath, trash: PurePosixPath) -> None:
        self.steps.append({"do": "move_out", "final": str(final), "trash": str(trash)})

    def swap_back(
        self, final: PurePosixPath, trash: PurePosixPath, discard: PurePosixPath, had_old: bool
    ) -> None:
        self.steps.append({"do": "swap_back", "final": str(final), "trash": str(trash),
                           "discard": str(discard), "had_old": had_old})  # fmt: skip

    def delete_tree(self, path: PurePosixPath) -> None:
        self.steps.append({"do": "delete_tree", "path": str(path)})

    def restart(self, service: str) -> None:
        self.steps.append({"do": "restart", "service": service})

    def dumps(self) -> bytes:
        data = {
            "version": 1,
            "steps": self.steps,
            "blobs": [base64.b64encode(b).decode("ascii") for b in self.blobs],
        }
        return json.dumps(data).encode()

    @classmethod
    def loads(cls, raw: bytes, where: Path) -> Journal:
        damaged = FilesystemError(
            f"{where} is damaged, so an interrupted run cannot be completed",
            "check the files pxeprov manages, remove it, and run `pxeprov init`",
        )
        try:
            data = json.loads(raw)
            steps = data["steps"]
            blobs = [base64.b64decode(b, validate=True) for b in data["blobs"]]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise damaged from None
        if data.get("version") != 1 or not isinstance(steps, list):
            raise damaged
        for step in steps:
            if not isinstance(step, dict) or step.get("do") not in _STEPS:
                raise damaged
            blob = step.get("blob")
            if blob is not None and not (isinstance(blob, int) and 0 <= blob < len(blobs)):
                raise damaged
        return cls(steps, blobs)


def commit(root: Root, journal: Journal) -> None:
    """Write the journal: from here on, an interrupted run is completed by the next one."""
    fsutil.write_atomic(root.path(JOURNAL), journal.dumps(), 0o600)


def clear(root: Root) -> None:
    fsutil.remove(root.path(JOURNAL))


def pending(root: Root) -> Journal | None:
    path = root.path(JOURNAL)
    raw = fsutil.read_bytes(path, limit=MAX_JOURNAL)
    return None if raw is None else Journal.loads(raw, path)


def carry_out(
    root: Root, journal: Journal, restart: Restart | None, *, keep_going: bool = False
) -> None:
    """Every step, in order. Each one is idempotent: carrying a journal out twice is once.
    `keep_going` (an undo): a step that fails does not stop the others (each put back is one
    less file of the wrong set); the first failure is raised at the end, and the journal stays
    for the next run to complete."""
    first: PxeprovError | None = None
    for step in journal.steps:
        try:
            _STEPS[step["do"]](root, journal, step, restart)
        except PxeprovError as exc:
            if not keep_going:
                raise
            first = first or exc
    if first is not None:
        raise first


def recover(root: Root, restart: Restart | None) -> str | None:
    """Finish what an interrupted run left in its journal (the caller holds the lock)."""
    journal = pending(root)
    if journal is None:
        return None
    carry_out(root, journal, restart)
    clear(root)
    return f"completed the changes of an interrupted run ({len(journal.steps)} steps)"


def cleanup(directories: Iterable[Path]) -> list[str]:
    """Remove the temporary files (`.<name>.pxeprov-<pid>.tmp`) a killed run left behind in
    `directories` (the caller holds the lock, so no other run is writing them)."""
    removed = []
    for directory in sorted(set(directories)):
        try:
            names = [p for p in directory.iterdir() if _TEMP_RE.fullmatch(p.name)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise fsutil.os_error("read", directory, exc) from None
        for path in names:
            if path.is_file() and not path.is_symlink():
                fsutil.remove(path)
                removed.append(str(path))
    return removed


# ---------------------------------------------------------------- steps


def _path(root: Root, step: dict[str, Any], key: str) -> Path:
    value = step.get(key)
    if not isinstance(value, str):
        raise FilesystemError(f"{root.path(JOURNAL)} is damaged (a step has no {key})")
    return root.path(PurePosixPath(value))


def _write(root: Root, journal: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    mode = int(step.get("mode", 0o644))
    path, data = _path(root, step, "path"), journal.blobs[step["blob"]]
    try:
        st = path.lstat()
        same = stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
        if same and st.st_size == len(data) and path.read_bytes() == data:
            return  # already so (an undo of a write that never happened): nothing to write
    except OSError:
        pass
    fsutil.write_atomic(path, data, mode)


def _remove(root: Root, _j: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    fsutil.remove(_path(root, step, "path"))


def _rename(src: Path, dst: Path) -> None:
    try:
        src.rename(dst)
    except OSError as exc:
        raise fsutil.os_error(f"move {src} to", dst, exc) from None
    fsutil.fsync_dir(dst.parent)


def _delete(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        fsutil.remove(path)
    elif path.exists():
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise fsutil.os_error("remove", path, exc) from None


def _swap_in(root: Root, _j: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    final, staging, trash = (_path(root, step, k) for k in ("final", "staging", "trash"))
    if not staging.exists():
        return  # done before
    if final.exists():
        _delete(trash)
        _rename(final, trash)
    _rename(staging, final)


def _move_out(root: Root, _j: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    final, trash = _path(root, step, "final"), _path(root, step, "trash")
    if final.exists():
        _delete(trash)
        _rename(final, trash)


def _swap_back(root: Root, _j: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    final, trash = _path(root, step, "final"), _path(root, step, "trash")
    discard = _path(root, step, "discard")
    if step.get("had_old"):
        if not trash.exists():
            return  # done before
        if final.exists():
            _delete(discard)
            _rename(final, discard)
        _rename(trash, final)
    elif final.exists():
        _delete(discard)
        _rename(final, discard)


def _delete_tree(root: Root, _j: Journal, step: dict[str, Any], _r: Restart | None) -> None:
    _delete(_path(root, step, "path"))


def _restart(_root: Root, _j: Journal, step: dict[str, Any], restart: Restart | None) -> None:
    if restart is not None and isinstance(step.get("service"), str):
        restart(step["service"])


_STEPS: dict[str, Callable[[Root, Journal, dict[str, Any], Restart | None], None]] = {
    "write": _write,
    "remove": _remove,
    "swap_in": _swap_in,
    "move_out": _move_out,
    "swap_back": _swap_back,
    "delete_tree": _delete_tree,
    "restart": _restart,
}
