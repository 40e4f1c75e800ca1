"""TFTP serves what nginx serves, and nothing else (issue 17).

dnsmasq's TFTP has no option to refuse a dot name or a symbolic link: it serves any file its
user can read, through links out of its root too (tested here against the real dnsmasq, in a
network namespace of the test's own with only its loopback up). So pxeprov keeps what it must
not serve where dnsmasq's user cannot read it (add-image's staging and trash directories, in a
0700 directory beside the images), never puts a dot file or a link there itself, and `init` and
`doctor` report one that someone else put there. Directory sources of add-image copy no link
and no private file (images/trees.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

from pxeprov import apply
from pxeprov.commands import doctor as doctor_module
from pxeprov.paths import Root
from pxeprov.pipeline import Machine, load_state, strays

from .conftest import NET, Cli
from .isos import clonezilla_files, make_iso

TFTP = "var/lib/tftpboot"
Fetch = Callable[[str], bytes | None]


@pytest.fixture
def public_root(loader_root: Path) -> Iterator[Path]:
    """The loader root where dnsmasq's user can reach it (pytest's directories are root's)."""
    public = Path(tempfile.mkdtemp(prefix="pxeprov-tftp-"))
    try:
        public.chmod(0o755)
        shutil.copytree(loader_root, public / "root")
        yield public / "root"
    finally:
        shutil.rmtree(public)


def _served(root: Path, cli: Cli, tmp_path: Path) -> Path:
    r = cli(root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    r = cli(root, "add-image", str(iso), "--name", "cz")
    assert r.exit_code == 0, r.stderr
    return root / TFTP


@pytest.fixture
def tftp(public_root: Path) -> Iterator[Fetch]:
    """dnsmasq's TFTP server on the loopback of a namespace of its own, serving the root's
    TFTP root (created before it starts); a function that fetches a path (None: refused)."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a network namespace: run the suite as root")
    tftp_root = public_root / TFTP
    tftp_root.mkdir(parents=True, exist_ok=True)
    tftp_root.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix="pxeprov-tftp-run-"))
    ns = f"pxeprov-tftp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True,
                       timeout=10)  # fmt: skip
        log = work / "dnsmasq.log"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
             "--port=0", "--enable-tftp", f"--tftp-root={tftp_root}", "--bind-interfaces",
             "--listen-address=127.0.0.1", f"--log-facility={log}", f"--pid-file={work}/pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "TFTP root is" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dnsmasq did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)

        def fetch(path: str) -> bytes | None:
            out = work / "fetched"
            out.unlink(missing_ok=True)
            done = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "5",
                                   "-o", str(out), f"tftp://127.0.0.1/{path}"],
                                  capture_output=True, timeout=15, check=False)  # fmt: skip
            return out.read_bytes() if done.returncode == 0 else None

        yield fetch
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def test_staging_is_never_served_by_tftp(
    public_root: Path, tftp: Fetch, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While add-image fills its staging directory, dnsmasq cannot read it (nor a replaced
    image's trash): they are in images/.pxeprov-work, 0700; the image is served once it is in."""
    tftp_root = _served(public_root, cli, tmp_path)
    assert tftp("images/cz/vmlinuz") == (tftp_root / "images/cz/vmlinuz").read_bytes()
    seen: list[tuple[str, bytes, bytes | None]] = []
    sync = apply._sync_tree

    def during_the_copy(path: Path) -> None:  # the staging directory is full here
        for name in ("vmlinuz", "initrd.img"):
            rel = str((path / name).relative_to(tftp_root))
            seen.append((rel, (path / name).read_bytes(), tftp(rel)))
        work = path.parent
        assert work.name == ".pxeprov-work" and work.stat().st_mode & 0o777 == 0o700
        work.chmod(0o755)  # the control: its mode alone keeps dnsmasq out (not the dot names)
        try:
            rel = str((path / "vmlinuz").relative_to(tftp_root))
            seen.append(("control", (path / "vmlinuz").read_bytes(), tftp(rel)))
        finally:
            work.chmod(0o700)
        sync(path)

    monkeypatch.setattr(apply, "_sync_tree", during_the_copy)
    iso = make_iso(tmp_path / "cz2.iso", clonezilla_files(kernel=b"new kernel" * 100))
    r = cli(public_root, "add-image", str(iso), "--name", "cz", "--replace")
    assert r.exit_code == 0, r.stderr
    control = seen.pop()
    assert control[0] == "control" and control[2] == control[1] == b"new kernel" * 100
    assert [s[0].split("/")[:2] for s in seen] == [["images", ".pxeprov-work"]] * 2
    for rel, content, fetched in seen:
        assert content and fetched is None, rel  # there, readable by root, not by TFTP
    assert tftp("images/cz/vmlinuz") == b"new kernel" * 100
    assert sorted(p.name for p in (tftp_root / "images").iterdir()) == ["cz"]  # nothing left


def test_what_tftp_would_serve_beyond_http_is_reported(
    public_root: Path, tftp: Fetch, cli: Cli, tmp_path: Path
) -> None:
    """dnsmasq serves a dot file and a file through a link out of its root (the reason pxeprov
    reports them: it cannot be told not to); init warns, doctor fails on a link out."""
    tftp_root = _served(public_root, cli, tmp_path)
    secret = public_root.parent / "secret.txt"
    secret.write_text("outside the root")
    secret.chmod(0o644)
    (tftp_root / ".hidden").write_text("a dot file")
    (tftp_root / "images/cz/escape.txt").symlink_to(secret)
    (tftp_root / "images/cz/alias").symlink_to("vmlinuz")
    (tftp_root / "images/.old").mkdir()
    (tftp_root / "images/.old/x").write_text("x")
    assert tftp(".hidden") == b"a dot file"
    assert tftp("images/cz/escape.txt") == b"outside the root"
    apply.work_dir(tftp_root / "images/.pxeprov-work")  # a run's own: not served, not reported
    (tftp_root / "images/.pxeprov-work/half").write_text("half")
    (tftp_root / "images/.pxeprov-work/half").chmod(0o644)
    assert tftp("images/.pxeprov-work/half") is None

    found_strays = strays(Root.of(public_root), PurePosixPath("/var/lib/tftpboot"))
    found = {str(s.path): (s.what, s.leaves) for s in found_strays}
    assert found == {
        "/var/lib/tftpboot/.hidden": ("a dot file: TFTP serves it, HTTP does not", False),
        "/var/lib/tftpboot/images/.old": ("a dot directory: TFTP serves it, HTTP does not", False),
        "/var/lib/tftpboot/images/cz/alias": (
            "a symbolic link to vmlinuz: TFTP follows it, HTTP does not", False),
        "/var/lib/tftpboot/images/cz/escape.txt": (
            f"a symbolic link to {secret}, out of the TFTP root: TFTP serves it", True),
    }  # fmt: skip
    state = load_state(Root.of(public_root))
    checks = list(doctor_module.files.strays(Machine(Root.of(public_root)), state))
    assert [(c.name, c.status) for c in checks if "escape" in c.message] == [
        ("files.link-out", "fail")]  # fmt: skip
    assert ("files.hidden", "warn", "rm -r /var/lib/tftpboot/images/.old") in [
        (c.name, c.status, c.fix) for c in checks]  # fmt: skip
    r = cli(public_root, "init")
    assert r.exit_code == 0, r.stderr
    assert f"/var/lib/tftpboot/images/cz/escape.txt is a symbolic link to {secret}" in r.stderr
    assert "/var/lib/tftpboot/.hidden is a dot file" in r.stderr
    # the run removed its own leftovers; what pxeprov writes has no stray of its own
    assert not (tftp_root / "images/.pxeprov-work").exists()
    for p in (".hidden", "images/cz/escape.txt", "images/cz/alias"):
        (tftp_root / p).unlink()
    shutil.rmtree(tftp_root / "images/.old")
    assert strays(Root.of(public_root), PurePosixPath("/var/lib/tftpboot")) == []
    assert [c.name for c in doctor_module.files.strays(Machine(Root.of(public_root)), state)] == [
        "files.served"]  # fmt: skip


def test_an_installer_trees_dot_files_are_no_strays(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = root / TFTP / "images/rocky"
    tree.mkdir(parents=True)
    (tree / ".treeinfo").write_text("[general]\n")
    (tree / ".discinfo").write_text("x\n")
    (tree / ".treeinfo.pxeprov-1.tmp").write_text("")  # another dot name: reported
    found = [str(s.path) for s in strays(Root.of(root), PurePosixPath("/var/lib/tftpboot"))]
    assert found == ["/var/lib/tftpboot/images/rocky/.treeinfo.pxeprov-1.tmp"]


def test_a_crash_leaves_no_served_staging(public_root: Path, cli: Cli, tmp_path: Path) -> None:
    """What a killed run left in the work directory goes with the next run (the directory too),
    also from where earlier versions kept it (images/.staging-*)."""
    tftp_root = _served(public_root, cli, tmp_path)
    apply.work_dir(tftp_root / "images/.pxeprov-work")
    (tftp_root / "images/.pxeprov-work/.staging-cz-123").mkdir()
    (tftp_root / "images/.pxeprov-work/.staging-cz-123/vmlinuz").write_text("half")
    (tftp_root / "images/.staging-old-1").mkdir()
    r = cli(public_root, "init")
    assert r.exit_code == 0, r.stderr
    assert "removed .staging-cz-123, left by an interrupted run" in r.stdout + r.stderr
    assert "removed .staging-old-1, left by an interrupted run" in r.stdout + r.stderr
    assert sorted(p.name for p in (tftp_root / "images").iterdir()) == ["cz"]
    (tftp_root / "images/.pxeprov-work").symlink_to("/etc")  # planted: the link goes, not /etc
    r = cli(public_root, "init")
    assert r.exit_code == 0, r.stderr
    assert not (tftp_root / "images/.pxeprov-work").exists() and Path("/etc/hostname").exists()
