"""add-image / remove-image with ISOs the tests build, run through the CLI in a --root."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxeprov.errors import FilesystemError
from pxeprov.fsutil import FULL_HINT
from pxeprov.images import kinds
from pxeprov.images.iso import Iso
from pxeprov.progress import Counter

from .conftest import NET, Cli, snapshot
from .httpserver import Fault, FileServer, serve
from .isos import clonezilla_files, debian_live_files, gparted_files, make_iso

TFTP = "var/lib/tftpboot"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(loader_root: Path, cli: Cli) -> Path:
    """A root where `pxeprov init --no-http` has run (serving on lo, 127.0.0.1, over TFTP: the
    tests read pxelinux's menu)."""
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    return loader_root


@pytest.fixture
def cz_iso(tmp_path: Path) -> Path:
    return make_iso(tmp_path / "clonezilla-live-3.1.2-22-amd64.iso", clonezilla_files(),
                    volume_id="Clonezilla live")  # fmt: skip


def menus(root: Path) -> tuple[str, str]:
    return (
        (root / TFTP / "pxelinux.cfg/default").read_text(),
        (root / TFTP / "boot.ipxe").read_text(),
    )


def unlocked(snap: dict[str, tuple[str, int, int]]) -> dict[str, tuple[str, int, int]]:
    snap.pop("var/lib/pxeprov/lock", None)
    return snap


def test_add_clonezilla_iso(server: Path, cli: Cli, cz_iso: Path) -> None:
    r = cli(server, "add-image", str(cz_iso))
    assert r.exit_code == 0, r.stderr
    name = "clonezilla-live-3.1.2-22-amd64"
    folder = server / TFTP / "images" / name
    # only what the menu needs, byte for byte, world-readable
    assert sorted(p.name for p in folder.iterdir()) == [
        "filesystem.squashfs",
        "initrd.img",
        "vmlinuz",
    ]
    src = cz_iso.with_suffix(".src")
    for n in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        assert (folder / n).read_bytes() == (src / "live" / n).read_bytes()
        assert (folder / n).stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
    assert not [p for p in (server / TFTP / "images").iterdir() if p.name.startswith(".")]
    pxe, ipxe = menus(server)
    fetch = f"fetch=tftp://127.0.0.1/images/{name}/filesystem.squashfs"
    for menu in (pxe, ipxe):
        assert fetch in menu
        assert "locales=en_US.UTF-8 keyboard-layouts=us" in menu and "lacales" not in menu
        assert 'ocs_live_run="ocs-live-general"' in menu and "boot=live" in menu
    assert f"KERNEL images/{name}/vmlinuz\n  INITRD images/{name}/initrd.img\n" in pxe
    assert f"kernel images/{name}/vmlinuz initrd=initrd.img boot=live" in ipxe
    # not the default: local disk stays the default
    assert "--default local " in ipxe
    # no dnsmasq restart for an image
    assert "restart dnsmasq" not in r.stdout and "dnsmasq needs no restart" in r.stdout
    assert "check that dnsmasq runs (--root is not /)" in r.stdout
    entry = json.loads(cli(server, "list", "--json").stdout)["entries"][1]
    assert entry["name"] == name and entry["kind"] == "clonezilla"
    assert entry["size"] == 3000 + 5000 + 7000
    assert entry["source"] == str(cz_iso) and entry["version"] == "clonezilla-live-3.1.2-22-amd64"


@pytest.mark.parametrize(
    ("files", "opts", "kind"),
    [
        (gparted_files(), {}, "gparted"),
        (debian_live_files(), {}, "debian-live"),
        (clonezilla_files(), {"rock_ridge": False}, "clonezilla"),  # Joliet only
        (clonezilla_files(), {"rock_ridge": False, "joliet": False}, "clonezilla"),  # ISO 9660
    ],
)
def test_layouts_are_recognized(
    tmp_path: Path, files: dict[str, bytes | int], opts: dict[str, bool], kind: str
) -> None:
    iso_path = make_iso(tmp_path / "x.iso", files, **opts)  # type: ignore[arg-type]
    with Iso(iso_path) as iso:
        layout = kinds.detect(iso)
        assert layout.kind == kind
        target = tmp_path / "kernel"
        iso.copy(layout.kernel, target)
        original = next(p for p in files if p.startswith("live/vmlinuz"))
        assert target.read_bytes() == (tmp_path / "x.src" / original).read_bytes()
        if "Clonezilla-Live-Version" in files:
            assert layout.version == "clonezilla-live-3.1.2-22-amd64"
    expected = "rock-ridge" if opts.get("rock_ridge", True) else "joliet"
    assert iso.namespace == (expected if opts.get("joliet", True) else "iso9660")


def test_debian_live_versioned_names_and_args(server: Path, cli: Cli, tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "debian-live-12.iso", debian_live_files())
    r = cli(server, "add-image", str(iso), "--name", "deb", "--locale", "de_DE.UTF-8",
            "--keyboard", "de", "--append", "quiet splash", "--default")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    pxe, ipxe = menus(server)
    # copied under fixed names, whatever the ISO calls them
    assert "KERNEL images/deb/vmlinuz\n  INITRD images/deb/initrd.img\n" in pxe
    assert sorted(p.name for p in (server / TFTP / "images/deb").iterdir()) == [
        "filesystem.squashfs", "initrd.img", "vmlinuz"]  # fmt: skip
    args = (
        "boot=live components locales=de_DE.UTF-8 keyboard-layouts=de "
        "fetch=tftp://127.0.0.1/images/deb/filesystem.squashfs quiet splash"
    )
    assert args in pxe
    assert "--default img-deb " in ipxe
    assert pxe.split("LABEL deb", 1)[1].count("MENU DEFAULT") == 1


def test_custom_kind(server: Path, cli: Cli, tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "tools.iso", {"boot/bzImage": 4000, "boot/core.gz": 6000})
    r = cli(server, "add-image", str(iso))
    assert r.exit_code == 10
    assert "--kind custom --kernel PATH --initrd PATH" in r.stderr
    assert "/boot/" in r.stderr  # what was found (at the top) is listed
    r = cli(server, "add-image", str(iso), "--kind", "custom", "--kernel", "boot/bzImage",
            "--initrd", "/boot/core.gz", "--append", "loglevel=3",
            "--label", "Tiny tools")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    pxe, _ = menus(server)
    assert (
        "KERNEL images/tools/vmlinuz\n  INITRD images/tools/initrd.img\n  APPEND loglevel=3\n"
        in pxe
    )
    assert "MENU LABEL Tiny tools" in pxe


def test_default_moves_and_remove_restores_local(server: Path, cli: Cli, tmp_path: Path) -> None:
    a = make_iso(tmp_path / "a.iso", clonezilla_files())
    b = make_iso(tmp_path / "b.iso", gparted_files())
    assert cli(server, "add-image", str(a), "--default").exit_code == 0
    assert cli(server, "add-image", str(b), "--default").exit_code == 0
    entries = json.loads(cli(server, "list", "--json").stdout)["entries"]
    assert [(e["name"], e["default"]) for e in entries] == [
        ("local", False), ("a", False), ("b", True)]  # fmt: skip
    r = cli(server, "remove-image", "b")
    assert r.exit_code == 0, r.stderr
    assert not (server / TFTP / "images/b").exists()
    pxe, ipxe = menus(server)
    assert "LABEL b" not in pxe and "img-b" not in ipxe
    assert "--default local " in ipxe
    r = cli(server, "remove-image", "b")
    assert r.exit_code == 10 and "no image named 'b' (images: a)" in r.stderr


def test_remove_dry_run_changes_nothing(server: Path, cli: Cli, cz_iso: Path) -> None:
    assert cli(server, "add-image", str(cz_iso), "--name", "cz").exit_code == 0
    before = unlocked(snapshot(server))
    r = cli(server, "remove-image", "cz", "--dry-run")
    assert r.exit_code == 0 and "would remove cz" in r.stdout and "-LABEL cz" in r.stdout
    assert unlocked(snapshot(server)) == before


def test_add_dry_run_changes_nothing(server: Path, cli: Cli, cz_iso: Path) -> None:
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", str(cz_iso), "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "would copy images/clonezilla-live-3.1.2-22-amd64/filesystem.squashfs" in r.stdout
    assert "+LABEL clonezilla-live-3.1.2-22-amd64" in r.stdout
    assert unlocked(snapshot(server)) == before


def test_replace(server: Path, cli: Cli, tmp_path: Path) -> None:
    old = make_iso(tmp_path / "old.iso", clonezilla_files(kernel=b"old kernel"))
    new = make_iso(tmp_path / "new.iso", clonezilla_files(kernel=b"new kernel"))
    assert cli(server, "add-image", str(old), "--name", "cz").exit_code == 0
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", str(new), "--name", "cz")
    assert r.exit_code == 10
    assert "already taken" in r.stderr and "--replace" in r.stderr
    assert unlocked(snapshot(server)) == before
    r = cli(server, "add-image", str(new), "--name", "cz", "--replace")
    assert r.exit_code == 0, r.stderr
    assert (server / TFTP / "images/cz/vmlinuz").read_bytes() == b"new kernel"
    assert sorted(p.name for p in (server / TFTP / "images").iterdir()) == ["cz"]
    assert len(json.loads(cli(server, "list", "--json").stdout)["entries"]) == 2


def test_local_checksum(server: Path, cli: Cli, cz_iso: Path) -> None:
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", str(cz_iso), "--sha256", "ab" * 32)
    assert r.exit_code == 9 and "expected abab" in r.stderr and "nothing was changed" in r.stderr
    assert unlocked(snapshot(server)) == before
    digest = hashlib.sha256(cz_iso.read_bytes()).hexdigest()
    r = cli(server, "add-image", str(cz_iso), "--sha256", digest.upper())
    assert r.exit_code == 0, r.stderr
    assert json.loads(cli(server, "list", "--json").stdout)["entries"][1]["sha256"] == digest


def _bad_sources(tmp: Path, cz_iso: Path) -> dict[str, tuple[str, str]]:
    text = tmp / "notes.txt"
    text.write_text("this is not an ISO\n" * 100)
    empty = tmp / "empty.iso"
    empty.touch()
    noise = tmp / "noise.iso"
    noise.write_bytes(os.urandom(300_000))
    truncated = tmp / "truncated.iso"
    data = cz_iso.read_bytes()
    with Iso(cz_iso) as iso:  # cut in the middle of the squashfs, as an interrupted download
        (offset, _length), *_ = iso.file("/live/filesystem.squashfs").extents
    truncated.write_bytes(data[: offset + 100])
    header_only = tmp / "header-only.iso"
    header_only.write_bytes(data[:40_000])
    (tmp / "adir.iso").mkdir()
    unknown = make_iso(tmp / "unknown.iso", {"README.TXT": b"hello\n", "tools/x": 10})
    return {
        # a text file is said to be one (not blamed on a download)
        "text file": (str(text), "is a text file, not an ISO 9660 image"),
        "empty file": (str(empty), "is empty"),
        "random bytes": (str(noise), "not a readable ISO 9660 image"),
        "truncated": (str(truncated), "is truncated"),
        "header only": (str(header_only), "ISO"),
        "missing": (str(tmp / "nope.iso"), "does not exist"),
        # a URL pxeprov does not download is not taken for a missing file
        "ftp URL": ("ftp://127.0.0.1/x.iso", "only http:// and https:// URLs"),
        "file URL": ("file:///etc/hostname", "only http:// and https:// URLs"),
        # a directory is a source (an installed package's files), here one with nothing in it
        "directory": (str(tmp / "adir.iso"), "layout is not one pxeprov knows"),
        "unknown layout": (str(unknown), "layout is not one pxeprov knows"),
    }


def test_bad_sources_change_nothing(server: Path, cli: Cli, cz_iso: Path, tmp_path: Path) -> None:
    before = unlocked(snapshot(server))
    for what, (source, words) in _bad_sources(tmp_path, cz_iso).items():
        r = cli(server, "add-image", source)
        lines = r.stderr.splitlines()
        assert r.exit_code != 0, what
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, r.stderr)
        assert words in lines[0], (what, lines[0])
        assert "Traceback" not in r.stderr
        assert unlocked(snapshot(server)) == before, what


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../etc", "must match"),
        ("a/b", "must match"),
        ("..", "must match"),
        ("UPPER", "must match"),
    ],
)
def test_bad_names(server: Path, cli: Cli, cz_iso: Path, name: str, words: str) -> None:
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", str(cz_iso), "--name", name)
    assert r.exit_code == 2 and words in r.stderr
    assert unlocked(snapshot(server)) == before
    assert not (server / "etc" / "vmlinuz").exists()


def test_add_image_needs_init(loader_root: Path, cli: Cli, cz_iso: Path) -> None:
    r = cli(loader_root, "add-image", str(cz_iso))
    assert r.exit_code == 2 and "run `pxeprov init` first" in r.stderr


def test_full_disk(server: Path, cli: Cli, tmp_path: Path) -> None:
    """The TFTP root on a small filesystem of its own: clean error, nothing left behind."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run the suite as root")
    images = server / TFTP / "images"
    images.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(images)], check=True)
    try:
        big = make_iso(tmp_path / "big.iso", clonezilla_files(squashfs=400_000))
        before = unlocked(snapshot(server))
        r = cli(server, "add-image", str(big), "--name", "big")
        assert r.exit_code == 7, r.stderr
        assert "not enough space" in r.stderr
        assert unlocked(snapshot(server)) == before
        # past the space check, the filesystem fills up during the copy: no half file stays
        with Iso(big) as iso:
            target = images / "squashfs"
            with pytest.raises(FilesystemError, match="No space left on device") as caught:
                iso.copy("/live/filesystem.squashfs", target)
            assert caught.value.hint == FULL_HINT
            assert caught.value.one_line().count("disk full") == 1, caught.value.one_line()
            assert not target.exists()
    finally:
        subprocess.run(["umount", str(images)], check=True)


def test_kill_during_copy_leaves_no_half_image(server: Path, cli: Cli, tmp_path: Path) -> None:
    """SIGKILL in the middle of the copy: no image, no menu entry; the next run cleans up."""
    big = make_iso(tmp_path / "big.iso", clonezilla_files(squashfs=300 << 20))
    images = server / TFTP / "images"
    before = unlocked(snapshot(server))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pxeprov", "--root", str(server), "add-image", str(big)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    staging = None
    try:
        deadline = time.monotonic() + 60
        while staging is None and time.monotonic() < deadline and proc.poll() is None:
            found = (
                [p for p in images.glob(".pxeprov-work/.staging-*") if any(p.iterdir())]
                if images.is_dir()
                else []
            )
            staging = found[0] if found else None
            time.sleep(0.002)
        assert staging is not None, "never saw the copy in progress"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (images / "big").exists()
    after = unlocked(snapshot(server))
    leftovers = {k for k in after if ".staging-" in k}
    assert leftovers  # the half copy is only in the staging area ...
    files_after = {k: v for k, v in after.items() if k not in leftovers and v[0] != "dir"}
    files_before = {k: v for k, v in before.items() if v[0] != "dir"}
    assert files_after == files_before  # ... nothing else changed: no menu or state entry
    r = cli(server, "add-image", str(make_iso(tmp_path / "small.iso", clonezilla_files())))
    assert r.exit_code == 0, r.stderr
    assert "left by an interrupted run" in r.stdout
    assert sorted(p.name for p in images.iterdir()) == ["small"]
    shutil.rmtree(big.with_suffix(".src"))


# ---------------------------------------------------------------- from a URL


@pytest.fixture
def iso_server(cz_iso: Path) -> Iterator[tuple[FileServer, bytes]]:
    data = cz_iso.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    files = {
        "/isos/cz.iso": data,
        "/isos/SHA256SUMS": f"{digest}  cz.iso\n{'0' * 64}  other.iso\n".encode(),
    }
    with serve(FileServer(files=files)) as fs:
        yield fs, data


def test_a_download_that_nothing_checks_says_so(
    server: Path, cli: Cli, iso_server: tuple[FileServer, bytes]
) -> None:
    """SHA256SUMS answers 500 and no other checksum file is there: the ISO is added, and the
    output says that its SHA-256 was not checked, why, and what to do."""
    fs, data = iso_server
    fs.statuses["/isos/SHA256SUMS"] = [500] * 4
    r = cli(server, "add-image", fs.url("/isos/cz.iso"))
    assert r.exit_code == 0, r.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert f"SHA-256 {digest}, not checked (" in r.stdout, r.stdout
    assert "SHA256SUMS" in r.stdout and "500" in r.stdout, r.stdout
    assert "give --sha256" in r.stdout, r.stdout


def test_add_image_from_url(server: Path, cli: Cli, iso_server: tuple[FileServer, bytes]) -> None:
    fs, data = iso_server
    digest = hashlib.sha256(data).hexdigest()
    url = fs.url("/isos/cz.iso")
    fs.faults["/isos/cz.iso"] = Fault(after=len(data) // 2, times=1)  # the connection drops once
    r = cli(server, "add-image", url)
    assert r.exit_code == 0, r.stderr
    assert f"SHA-256 {digest}, checked against SHA256SUMS at" in r.stdout
    ranges = [s.range for s in fs.gets("/isos/cz.iso")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")  # resumed
    cached = server / "var/cache/pxeprov" / digest / "cz.iso"
    assert cached.read_bytes() == data
    entry = json.loads(cli(server, "list", "--json").stdout)["entries"][1]
    assert (entry["name"], entry["source"], entry["sha256"]) == ("cz", url, digest)
    # again, from the cache: the ISO is not downloaded a second time
    gets = len(fs.gets("/isos/cz.iso"))
    r = cli(server, "add-image", url, "--replace", "--sha256", digest)
    assert r.exit_code == 0, r.stderr
    assert "cached cz.iso" in r.stdout and len(fs.gets("/isos/cz.iso")) == gets


def test_url_errors_change_nothing(
    server: Path, cli: Cli, iso_server: tuple[FileServer, bytes]
) -> None:
    fs, _data = iso_server
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", fs.url("/isos/missing.iso"))
    assert r.exit_code == 8 and "404" in r.stderr and len(r.stderr.splitlines()) == 1
    r = cli(server, "add-image", fs.url("/isos/cz.iso"), "--sha256", "12" * 32)
    assert r.exit_code == 9 and "was deleted" in r.stderr
    files = [p for p in (server / "var/cache").rglob("*") if p.is_file()]
    after = unlocked(snapshot(server))
    assert files == []  # the deleted download leaves no file in the cache
    # every file as it was (the cache's directories may now exist)
    assert {k: v for k, v in after.items() if v[0] != "dir"} == {
        k: v for k, v in before.items() if v[0] != "dir"
    }


def test_url_dry_run(server: Path, cli: Cli, iso_server: tuple[FileServer, bytes]) -> None:
    fs, _data = iso_server
    before = unlocked(snapshot(server))
    r = cli(server, "add-image", fs.url("/isos/cz.iso"), "--dry-run")
    assert r.exit_code == 0 and "would download" in r.stdout
    assert fs.gets("/isos/cz.iso") == [] and unlocked(snapshot(server)) == before


def test_copy_falls_back_where_the_kernel_cannot_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copy_file_range refused (EXDEV: another filesystem type, older kernels), then sendfile
    refused too: the same bytes arrive through sendfile, then through plain reads."""
    iso_path = make_iso(tmp_path / "x.iso", clonezilla_files(squashfs=300_000))
    original = (tmp_path / "x.src/live/filesystem.squashfs").read_bytes()
    calls: list[str] = []

    def refuse(name: str, code: int) -> Callable[..., int]:
        def call(*_args: object, **_kwargs: object) -> int:
            calls.append(name)
            raise OSError(code, os.strerror(code))

        return call

    monkeypatch.setattr(os, "copy_file_range", refuse("copy_file_range", errno.EXDEV))
    progress: list[int] = []
    counter = Counter(lambda _what, done, _total: progress.append(done), None)
    with Iso(iso_path) as iso:
        iso.copy("/live/filesystem.squashfs", tmp_path / "via-sendfile", counter)
    assert (tmp_path / "via-sendfile").read_bytes() == original
    assert calls == ["copy_file_range"] and progress[-1] == len(original)

    monkeypatch.setattr(os, "sendfile", refuse("sendfile", errno.EINVAL))
    with Iso(iso_path) as iso:
        iso.copy("/live/filesystem.squashfs", tmp_path / "via-reads")
    assert (tmp_path / "via-reads").read_bytes() == original
    assert calls == ["copy_file_range", "copy_file_range", "sendfile"]


def test_the_first_run_ends_with_what_to_do_next(loader_root: Path, cli: Cli, cz_iso: Path) -> None:
    """A new server's menu holds only "Boot from local disk": init's last lines say how to add
    what the machines should boot; once there is an image they do not."""
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    tail = r.stdout.rstrip().splitlines()[-3:]
    assert tail[0].startswith("Next: the menu has only 'Boot from local disk'"), r.stdout
    assert "pxeprov add-image" in tail[1] and "pxeprov doctor" in tail[2], r.stdout
    assert cli(loader_root, "add-image", str(cz_iso)).exit_code == 0
    r = cli(loader_root, "init", "--menu-timeout", "3")
    assert r.exit_code == 0, r.stderr
    assert "Next:" not in r.stdout, r.stdout
