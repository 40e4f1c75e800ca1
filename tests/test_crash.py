"""A command killed between any two of its writes never strands the next command.

Every durable write pxeprov makes ends in an fsync (of the file, then of its directory after the
rename), and the image copies in fdatasyncs. strace's fault injection kills the command at its
Nth call of either (`-e inject=fsync:signal=KILL:when=N`), for every N up to the number the
command makes when it runs through: that is a kill between every pair of its writes, and in the
middle of each (the file written, not yet renamed into place). Then the next command runs
(`pxeprov init`, which changes nothing of its own here) and must succeed with no false "changed
by hand", complete or undo the interrupted run (journal.py), and leave no temporary file,
staging directory or journal behind; the state, the menus and the image directories must agree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import NET, Cli
from .isos import clonezilla_files, make_iso

REPO = Path(__file__).resolve().parent.parent
TFTP = "var/lib/tftpboot"
SYNCS = ("fsync", "fdatasync")
TIMEOUT = 120


def pxeprov(
    root: Path, *args: str, strace: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [*(strace or []), sys.executable, "-m", "pxeprov", "--root", str(root), *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)  # fmt: skip


def count_syncs(root: Path, args: list[str], log: Path) -> dict[str, int]:
    """How many times the command calls fsync and fdatasync when nothing stops it."""
    r = pxeprov(
        root, *args, strace=["strace", "-qq", "-o", str(log), "-e", "trace=fsync,fdatasync"]
    )
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    return {name: len(re.findall(rf"^{name}\(", calls, re.M)) for name in SYNCS}


def leftovers(root: Path) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if re.fullmatch(r"\..+\.pxeprov-\d+\.tmp", p.name) or p.name.startswith(
            (".staging-", ".trash-")
        ):
            found.append(str(p.relative_to(root)))
    if (root / "var/lib/pxeprov/journal.json").exists():
        found.append("journal.json")
    return found


def consistent(root: Path) -> None:
    """The state, the menus and the image directories say the same."""
    r = pxeprov(root, "render", "--diff")
    assert r.returncode == 0, r.stderr
    assert "would" not in r.stdout and "CONFLICT" not in r.stdout, r.stdout  # nothing to change
    listing = json.loads(pxeprov(root, "list", "--json").stdout)
    names = {e["name"] for e in listing["entries"][1:]}
    images = root / TFTP / "images"
    on_disk = {p.name for p in images.iterdir()} if images.is_dir() else set()
    assert on_disk == names
    for name in names:
        assert sorted(p.name for p in (images / name).iterdir()) == [
            "filesystem.squashfs", "initrd.img", "vmlinuz"]  # fmt: skip


Setup = Callable[[Path, Path], list[str]]  # (root, tmp) -> the command's arguments


def _fresh(root: Path, tmp: Path) -> list[str]:
    return ["init", *NET]


def _change(root: Path, tmp: Path) -> list[str]:
    assert pxeprov(root, "init", *NET).returncode == 0
    return ["init", "--title", "After the crash", "--menu-timeout", "3"]


def _add(root: Path, tmp: Path) -> list[str]:
    assert pxeprov(root, "init", *NET).returncode == 0
    iso = make_iso(tmp / "cz.iso", clonezilla_files(squashfs=200_000))
    return ["add-image", str(iso), "--name", "cz", "--default"]


def _replace(root: Path, tmp: Path) -> list[str]:
    args = _add(root, tmp)
    assert pxeprov(root, *args).returncode == 0
    iso = make_iso(tmp / "cz2.iso", clonezilla_files(kernel=b"a new kernel"))
    return ["add-image", str(iso), "--name", "cz", "--replace"]


def _remove(root: Path, tmp: Path) -> list[str]:
    assert pxeprov(root, *_add(root, tmp)).returncode == 0
    return ["remove-image", "cz"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "setup",
    [_fresh, _change, _add, _replace, _remove],
    ids=["init-fresh", "init-change", "add-image", "add-image-replace", "remove-image"],
)
def test_a_kill_at_any_write_never_strands_the_next_command(
    loader_root: Path, tmp_path: Path, setup: Setup
) -> None:
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (tests/run-all.sh installs it)")
    base = tmp_path / "base"
    shutil.copytree(loader_root, base, symlinks=True)
    args = setup(base, tmp_path)
    counts = count_syncs(_copy(base, tmp_path / "count"), args, tmp_path / "syncs.log")
    assert counts["fsync"] >= 4  # the journal, at least one file, the manifest
    tried = 0
    for syscall in SYNCS:
        for n in range(1, counts[syscall] + 1):
            root = _copy(base, tmp_path / f"{syscall}-{n}")
            inject = ["strace", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                      "-e", f"inject={syscall}:signal=KILL:when={n}"]  # fmt: skip
            killed = pxeprov(root, *args, strace=inject)
            assert killed.returncode in (137, -9), (syscall, n, killed.returncode, killed.stderr)
            after = pxeprov(root, "init", "--no-install-packages")
            where = f"killed at {syscall} #{n} of {args}"
            assert after.returncode == 0, f"{where}: {after.stderr}"
            assert "changed by hand" not in after.stdout + after.stderr, where
            assert leftovers(root) == [], where
            consistent(root)
            shutil.rmtree(root)
            tried += 1
    assert tried == sum(counts.values())


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to, symlinks=True)
    return to


def test_journal_is_completed_and_reported(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    """A kill right after the journal was committed: the next command says it finished it."""
    assert pxeprov(loader_root, "init", *NET).returncode == 0
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    # fsync #1: the staging directory, after the copy; #2: the journal, before its rename;
    # #3: the journal's directory, after the rename: committed, nothing else changed yet.
    inject = ["strace", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
              "-e", "inject=fsync:signal=KILL:when=3"]  # fmt: skip
    assert pxeprov(loader_root, "add-image", str(iso), strace=inject).returncode in (137, -9)
    assert (loader_root / "var/lib/pxeprov/journal.json").exists()
    r = cli(loader_root, "list")
    assert r.exit_code == 0
    r = cli(loader_root, "init")
    assert r.exit_code == 0, r.stderr
    assert "completed the changes of an interrupted run" in r.stderr
    assert "cz" in cli(loader_root, "list").stdout


def test_a_write_that_fails_midway_puts_the_old_set_back(loader_root: Path, cli: Cli) -> None:
    """The menus and the state are written, then dnsmasq's config cannot be (its directory made
    immutable): exit 7, and the undo puts the menus and the state back. The file that could not
    be written still holds its old bytes, so putting it back writes nothing (writing it would
    fail the same way and stop the undo half way, leaving new menus beside the old config)."""
    assert cli(loader_root, "init", *NET).exit_code == 0
    watched = ("var/lib/tftpboot/boot.ipxe", "etc/pxeprov/pxeprov.toml",
               "etc/dnsmasq.d/pxeprov.conf", "var/lib/pxeprov/manifest.json")  # fmt: skip
    before = {p: (loader_root / p).read_bytes() for p in watched}
    frozen = loader_root / "etc/dnsmasq.d"
    done = subprocess.run(["chattr", "+i", str(frozen)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"chattr +i is needed here (ext4 or xfs /tmp): {done.stderr!r}")
    try:
        r = cli(loader_root, "init", "--title", "New title", "--subnet", "127.0.0.0/16")
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert r.exit_code == 7, r.stderr
    assert "pxeprov.conf" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p: (loader_root / p).read_bytes() for p in watched} == before
    assert leftovers(loader_root) == []
    r = cli(loader_root, "init", "--title", "New title", "--subnet", "127.0.0.0/16")
    assert r.exit_code == 0, r.stderr
    assert "changed by hand" not in r.stdout + r.stderr
    assert "New title" in (loader_root / "var/lib/tftpboot/boot.ipxe").read_text()
