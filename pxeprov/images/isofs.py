"""A lazy ISO 9660 reader: only the directories on the paths asked for are read.

pycdlib (the test suite's oracle) parses every directory record of every namespace when it opens
an image: 364 MB of memory and 6 s for an ISO of 100,000 small files (bench/iso_bench.py), and
an ISO is hostile input until checked. This reader parses the volume descriptors, then one
directory at a time, on demand, with hard limits on every length an image declares.

Names come from Rock Ridge (NM entries, when the root's "." record has a SUSP "SP" entry), else
Joliet (UCS-2), else plain ISO 9660 (`VMLINUZ.;1` is `vmlinuz`); all are matched in lower case.
Rock Ridge symbolic links (SL), relocated directories (RE/CL) and zisofs-compressed files (ZF)
are recognised so that a link or a compressed file is never copied as if it were the file.
Entries whose name holds a NUL, a `/`, a control character, or is `.`/`..` are skipped: they can
never be asked for.

ECMA-119 layout used here: a directory record is [len, ext-attr len, extent (LE u32 @2), data
length (LE u32 @10), ..., flags @25, ..., name length @32, name @33, padding to even, system
use]; records never cross a 2048-byte sector (a zero length byte means "next sector"); a file
larger than 4 GiB is several records of the same name, all but the last flagged multi-extent.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

SECTOR = 2048
MAX_DIRECTORY = 4 << 20  # bytes of records in one directory (tens of thousands of entries)
MAX_ENTRIES = 100_000  # records read over the life of one Volume
MAX_CE = 32  # continuation areas followed for one record
MAX_DEPTH = 64  # path components
_FLAG_DIR = 0x02
_FLAG_MULTI = 0x80
_RRIP_IDS = (b"RRIP_1991A", b"IEEE_P1282", b"IEEE_1282")


class IsoFormatError(Exception):
    """The image is damaged or declares something out of bounds (message says what)."""


@dataclass(frozen=True)
class Entry:
    name: str  # lower case, as looked up
    is_dir: bool
    extents: tuple[tuple[int, int], ...]  # (byte offset, length) runs of the data, in order
    size: int
    symlink: bool = False  # Rock Ridge SL: a symbolic link, not the file it names
    compressed: bool = False  # Rock Ridge ZF: zisofs data, not the file's bytes
    mode: int | None = None  # Rock Ridge PX file mode
    original: str = ""  # the name as the image spells it (case kept), for copies of trees

    @property
    def spelled(self) -> str:
        return self.original or self.name


@dataclass
class _Record:
    ident: bytes
    extent: int
    length: int
    flags: int
    system_use: bytes


def _u32(data: bytes, at: int) -> int:
    value: int = struct.unpack_from("<I", data, at)[0]
    return value


class Volume:
    """An open ISO image (a file object the caller keeps open)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size
        self._read_entries = 0
        self._dirs: dict[int, dict[str, Entry]] = {}
        pvd, joliet = self._descriptors()
        self.volume_id = pvd[40:72].decode("ascii", "replace").strip()
        self.declared_size = _u32(pvd, 80) * SECTOR  # volume space size x 2048
        root = self._root_record(pvd)
        self._skip = 0
        self.namespace = "iso9660"
        self._root = root
        sp = self._sp_entry(root)
        if sp is not None:
            self.namespace, self._skip = "rock-ridge", sp
        elif joliet is not None:
            self.namespace, self._root = "joliet", self._root_record(joliet)

    # ------------------------------------------------------------------ descriptors

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IsoFormatError(f"a structure at byte {offset} runs past the end of the image")
        data = os.pread(self._f.fileno(), length, offset)
        if len(data) != length:
            raise IsoFormatError(f"short read at byte {offset}")
        return data

    def _descriptors(self) -> tuple[bytes, bytes | None]:
        pvd: bytes | None = None
        joliet: bytes | None = None
        for sector in range(16, 16 + 64):  # a terminator comes long before this
            vd = self._read(sector * SECTOR, SECTOR)
            kind, ident = vd[0], vd[1:6]
            if ident != b"CD001":
                raise IsoFormatError("no ISO 9660 volume descriptor (not an ISO image)")
            if kind == 255:
                break
            if kind == 1 and pvd is None:
                pvd = vd
            elif kind == 2 and vd[88:91] in (b"%/@", b"%/C", b"%/E") and joliet is None:
                joliet = vd
        else:
            raise IsoFormatError("the volume descriptor set has no terminator")
        if pvd is None:
            raise IsoFormatError("no primary volume descriptor")
        if struct.unpack_from("<H", pvd, 128)[0] != SECTOR:
            raise IsoFormatError("logical block size is not 2048")
        return pvd, joliet

    def _root_record(self, vd: bytes) -> _Record:
        record = self._parse_records(vd[156:190], limit=1)
        if not record:
            raise IsoFormatError("damaged root directory record")
        return record[0]

    # ------------------------------------------------------------------ records

    def _parse_records(self, data: bytes, limit: int | None = None) -> list[_Record]:
        out: list[_Record] = []
        pos = 0
        while pos < len(data):
            length = data[pos]
            if length == 0:  # the rest of this sector is padding
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            if length < 34 or pos + length > len(data):
                raise IsoFormatError("damaged directory record")
            rec = data[pos : pos + length]
            name_len = rec[32]
            if 33 + name_len > length:
                raise IsoFormatError("damaged directory record (name longer than the record)")
            su_start = 33 + name_len + (1 - name_len % 2)
            out.append(
                _Record(
                    ident=rec[33 : 33 + name_len],
                    extent=_u32(rec, 2),
                    length=_u32(rec, 10),
                    flags=rec[25],
                    system_use=rec[su_start:] if su_start < length else b"",
                )
            )
            pos += length
            if limit is not None and len(out) >= limit:
                break
        return out

    def _directory_data(self, record: _Record) -> bytes:
        if record.length > MAX_DIRECTORY:
            raise IsoFormatError(
                f"a directory declares {record.length} bytes of records (more than {MAX_DIRECTORY})"
            )
        return self._read(record.extent * SECTOR, record.length)

    def _susp(self, record: _Record, skip: int) -> list[tuple[bytes, bytes]]:
        """(signature, data) of the record's SUSP entries, continuation areas followed."""
        entries: list[tuple[bytes, bytes]] = []
        area = record.system_use[skip:]
        seen: set[tuple[int, int]] = set()
        while True:
            ce: tuple[int, int, int] | None = None
            pos = 0
            while pos + 4 <= len(area):
                sig, length = area[pos : pos + 2], area[pos + 2]
                if length < 4 or pos + length > len(area):
                    break
                body = area[pos + 4 : pos + length]
                if sig == b"ST":
                    break
                if sig == b"CE" and len(body) >= 24:
                    ce = (_u32(body, 0), _u32(body, 8), _u32(body, 16))
                else:
                    entries.append((sig, body))
                pos += length
            if ce is None:
                return entries
            block, offset, length = ce
            if (block, offset) in seen or len(seen) >= MAX_CE or length > SECTOR * 4:
                raise IsoFormatError("a Rock Ridge continuation chain loops or is too long")
            seen.add((block, offset))
            area = self._read(block * SECTOR + offset, length)

    def _sp_entry(self, root: _Record) -> int | None:
        """SUSP's skip length when the root's "." record starts with an SP entry (Rock Ridge)."""
        data = self._read(root.extent * SECTOR, min(root.length, SECTOR))
        dot = self._parse_records(data, limit=1)
        if not dot:
            return None
        su = dot[0].system_use
        if len(su) >= 7 and su[:2] == b"SP" and su[4:6] == b"\xbe\xef":
            entries = self._susp(dot[0], 0)
            rrip = any(sig == b"ER" and any(i in body for i in _RRIP_IDS) for sig, body in entries)
            named = any(sig in (b"PX", b"NM", b"RR") for sig, _ in entries)
            if rrip or named:
                return su[6]
        return None

    # ------------------------------------------------------------------ names

    def _name(self, record: _Record) -> tuple[str | None, dict[bytes, bytes]]:
        """(the name, or None when it must be skipped; Rock Ridge entries by signature)."""
        rr: dict[bytes, bytes] = {}
        name: str | None
        if self.namespace == "rock-ridge":
            nm = b""
            for sig, body in self._susp(record, self._skip):
                if sig == b"NM" and body:
                    if body[0] & 0x06:  # CURRENT / PARENT: "." and ".."
                        return None, rr
                    nm += body[1:]
                elif sig not in rr:
                    rr[sig] = body
            name = nm.decode("utf-8", "replace") if nm else None
            if name is None:
                name = _plain(record.ident)
        elif self.namespace == "joliet":
            try:
                name = record.ident.decode("utf-16-be").split(";", 1)[0]
            except UnicodeDecodeError:
                return None, rr
        else:
            name = _plain(record.ident)
        if name is None or not _usable(name):
            return None, rr
        return name, rr

    # ------------------------------------------------------------------ directories

    def _listing(self, record: _Record) -> dict[str, Entry]:
        cached = self._dirs.get(record.extent)
        if cached is not None:
            return cached
        out: dict[str, Entry] = {}
        pending: tuple[str, list[tuple[int, int]], int] | None = None
        records = self._parse_records(self._directory_data(record))
        self._read_entries += len(records)
        if self._read_entries > MAX_ENTRIES:
            raise IsoFormatError(f"more than {MAX_ENTRIES} directory records read")
        for rec in records:
            if rec.ident in (b"\x00", b"\x01"):
                continue
            spelled, rr = self._name(rec)
            name = spelled.lower() if spelled is not None else None
            if pending is not None and (name is None or name != pending[0]):
                pending = None  # a multi-extent file whose last record is missing: dropped
            if name is None:
                continue
            if b"RE" in rr:  # the relocated copy; it is reached through its CL entry
                continue
            is_dir = bool(rec.flags & _FLAG_DIR)
            extent = rec.extent
            if b"CL" in rr and len(rr[b"CL"]) >= 4:
                is_dir, extent = True, _u32(rr[b"CL"], 0)
            run = (extent * SECTOR, rec.length)
            assert spelled is not None
            if is_dir:
                out[name] = Entry(name, True, (run,), rec.length, original=spelled)
                continue
            runs = [*(pending[1] if pending else []), run]
            if rec.flags & _FLAG_MULTI:
                pending = (name, runs, 0)
                continue
            pending = None
            if name in out and out[name].is_dir:
                # Plain ISO 9660 may hold a file NAME;1 beside a directory NAME (xorriso maps
                # `-` to `_`): by name, the directory is what paths go through.
                continue
            mode = None
            if b"PX" in rr and len(rr[b"PX"]) >= 4:
                mode = _u32(rr[b"PX"], 0)
            out[name] = Entry(
                name,
                False,
                tuple(runs),
                sum(n for _, n in runs),
                symlink=b"SL" in rr,
                compressed=b"ZF" in rr,
                mode=mode,
                original=spelled,
            )
        self._dirs[record.extent] = out
        return out

    @property
    def records_read(self) -> int:
        return self._read_entries

    def _dir_record(self, entry: Entry) -> _Record:
        offset, length = entry.extents[0]
        return _Record(b"", offset // SECTOR, length, _FLAG_DIR, b"")

    def listdir(self, path: str) -> dict[str, Entry] | None:
        """The entries of directory `path` (absolute, any case), or None when there is none."""
        parts = [p for p in path.lower().split("/") if p]
        if len(parts) > MAX_DEPTH:
            return None
        record = self._root
        for part in parts:
            entry = self._listing(record).get(part)
            if entry is None or not entry.is_dir:
                return None
            record = self._dir_record(entry)
        return self._listing(record)

    def lookup(self, path: str) -> Entry | None:
        """The entry at `path` (absolute, any case), or None."""
        head, _, name = path.lower().rstrip("/").rpartition("/")
        if not name:
            return None
        listing = self.listdir(head or "/")
        return None if listing is None else listing.get(name)


def _plain(ident: bytes) -> str | None:
    """ISO 9660 `NAME.EXT;1` -> `name.ext`; `NAME.;1` -> `name`."""
    try:
        text = ident.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text.split(";", 1)[0].removesuffix(".")


def _usable(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and len(name) <= 255
        and not any(c == "/" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    )
