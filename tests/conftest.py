"""Shared fixtures: a root directory holding copies of the boot-loader files, and the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pxeprov.boot.chains import PXELINUX_FILES, SHIM_GRUB_FILES, SNPONLY_FILES, UNDIONLY_FILES
from pxeprov.cli import app
from pxeprov.images.kinds.iso import MEMDISK

# The host's packages provide the boot loaders the test roots get copies of.
LOADER_FILES = PXELINUX_FILES + UNDIONLY_FILES + SNPONLY_FILES + (MEMDISK,)  # installed on CI
_MISSING = [str(f.sources[0]) for f in LOADER_FILES if not Path(str(f.sources[0])).is_file()]

# The tests stop `pxeprov watch` as Ctrl-C does (SIGINT). A suite started in the background of a
# non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored, and so would every program it
# starts: their Ctrl-C would do nothing. A handler of our own is reset to the default across
# exec, so the programs the tests start see SIGINT as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def loader_root(tmp_path: Path) -> Path:
    """A --root with the boot-loader files where their packages put them, and nothing else."""
    if _MISSING:
        pytest.fail(f"boot-loader files missing on this machine (run tests/run-all.sh): {_MISSING}")
    root = tmp_path / "root"
    for f in LOADER_FILES:
        target = root / str(f.sources[0]).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(f.sources[0]), target)
    return root


# What pxeprov looks for in Debian's signed GRUB (grubnetx64.efi.signed of 2.12): its http
# module's request strings, with a port in the Host header (boot/binaries.py).
GRUB_HTTP = b"\0GET \0 HTTP/1.1\r\nHost: \0:%d\0\r\nUser-Agent: GRUB 2.12\r\n\0"
GRUB_HTTP_PORT_80_ONLY = b"\0GET \0 HTTP/1.1\r\nHost: \0\r\nUser-Agent: GRUB\r\n\0"


def add_signed_uefi_loaders(
    root: Path, proxy_support: bool = True, http: bytes = GRUB_HTTP
) -> None:
    """Stand-ins for shim and Debian's signed netboot GRUB (the real ones boot in tests/e2e):
    only what pxeprov looks at, the proxyDHCP support of GRUB >= 2.12 and its http module, is
    in them."""
    shim, grub = (root / str(f.sources[0]).lstrip("/") for f in SHIM_GRUB_FILES)
    for path in (shim, grub):
        path.parent.mkdir(parents=True, exist_ok=True)
    shim.write_bytes(b"MZ stand-in for shimx64.efi.signed")
    marker = b"setting values from proxy offer" if proxy_support else b"GRUB 2.06"
    grub.write_bytes(b"MZ stand-in for grubnetx64.efi.signed " + marker + http)


Cli = Callable[..., Result]


@pytest.fixture
def cli() -> Cli:
    runner = CliRunner()

    def invoke(root: Path, *args: str) -> Result:
        return runner.invoke(app, ["--root", str(root), *args])

    return invoke


# The lo interface exists everywhere (also inside a fresh network namespace).
NET = ["--interface", "lo", "--address", "127.0.0.1", "--subnet", "127.0.0.0/8"]


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and directory under root: content hash, mode and mtime."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


def override_template(root: Path, name: str, old: str, new: str) -> None:
    """An admin's own copy of a shipped template (under /etc/pxeprov/templates), with a change."""
    shipped = Path(__file__).resolve().parent.parent / "templates" / name
    text = shipped.read_text()
    assert old in text
    target = root / "etc/pxeprov/templates" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text.replace(old, new))


def clonezilla_http_root(root: Path, cli: Cli, tmp_path: Path) -> Path:
    """`root` served over HTTP (iPXE for BIOS and UEFI, port 8080) with a Clonezilla image "cz":
    where plans and their jobs are tested."""
    from .isos import clonezilla_files, make_iso

    r = cli(root, "init", *NET, "--http", "--http-port", "8080", "--menu-timeout", "30")
    assert r.exit_code == 0, r.stderr
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(root, "add-image", str(iso), "--name", "cz").exit_code == 0
    return root
