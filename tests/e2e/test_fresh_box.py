"""End to end: the quick start on a fresh box without systemd.

The box (box.py) is this machine's own filesystem through an overlay, in the lab's namespace B:
no systemd runs in it, its network is the lab's, and nothing it writes reaches the host. In it:

- `./install.sh --dry-run` changes nothing and says what it would do;
- `./install.sh` (Python packages from a local wheelhouse, as on a box with a mirror, since the
  lab has no way out) installs pxeprov in /opt/pxeprov and runs `pxeprov init`, which starts
  dnsmasq itself (the daemon directly: no systemd, no init script) and nginx (its init script),
  and says that they serve;
- a QEMU client in the lab boots the Debian installer added with `pxeprov add-image`, kernel
  and initrd from the box's nginx;
- `./install.sh` again, with no package index at all, needs none and changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .box import Box
from .conftest import MakeDir
from .netlab import B_ADDR, VETH_B, NetLab
from .pxeserver import DI, leases

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WHEELS = Path("/var/cache/pxeprov-tests/wheels")
MAC = "52:54:00:77:0e:01"
CONSOLE = "console=ttyS0,115200n8"


def wheelhouse() -> Path:
    """pxeprov's dependencies and its build backend as wheels, downloaded once (PyPI is
    reachable from the host; the box is not)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = sorted([*project["project"]["dependencies"], *project["build-system"]["requires"]])
    folder = WHEELS / hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    if not (folder / ".complete").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), *wanted],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"pip download failed:\n{done.stderr}", pytrace=False)
        (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="module")
def box(lab: NetLab, make_dir: MakeDir) -> Iterator[Box]:
    with Box(make_dir("pxeprov-e2e-box-"), lab.ns_b) as b:
        yield b


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """What the box wrote between two looks, but temporary files and pip's cache."""
    return sorted(
        k for k in set(after) ^ set(before) | {k for k in after if before.get(k) != after[k]}
        if not k.startswith(("tmp", "root/.cache", "var/tmp"))
    )  # fmt: skip


def test_install_dry_run_changes_nothing(box: Box) -> None:
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse())}
    before = box.files()
    r = box.run([f"{REPO}/install.sh", "--dry-run", "--no-install-packages"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would create: /opt/pxeprov" in r.stdout
    assert "Plan (nothing is written):" in r.stdout  # init --dry-run ran, from a throw-away venv
    assert changed(before, box.files()) == []


def test_install_and_init_serve_without_systemd(lab: NetLab, box: Box) -> None:
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse())}
    r = box.run([f"{REPO}/install.sh", "--no-install-packages", "--menu-timeout", "1"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not Path("/run/systemd/system").exists()  # nor in the box: it is this machine's
    assert re.search(rf"Serving: dnsmasq \(pid \d+\) answers PXE clients on {VETH_B} "
                     rf"\({re.escape(B_ADDR)}\)", r.stdout), r.stdout  # fmt: skip
    assert re.search(rf"Serving: nginx serves the payloads on {re.escape(B_ADDR)}:\d+", r.stdout)
    assert "started directly" in r.stdout or "/etc/init.d/dnsmasq" in r.stdout, r.stdout
    assert box.path("/opt/pxeprov/bin/pxeprov").exists()
    assert box.path("/usr/local/bin/pxeprov").is_symlink()
    assert re.search(r"Serving: pxeprov-watch \(pid \d+\) follows the boots", r.stdout), r.stdout
    assert len(box.daemons()) == 3  # dnsmasq, nginx, and pxeprov's own watcher

    r = box.run(["pxeprov", "add-image", str(DI.parent.parent), "--name", "di", "--default",
                 "--append", CONSOLE])  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    ev = lab.boot("bios", MAC, box.path("/var/log/pxeprov-dnsmasq.log"), limit=150.0)
    assert "Linux version" in ev.serial, ev.summary()
    access = box.path("/var/log/nginx/access.log").read_text()
    client = leases(ev)[-1]
    for name in ("images/di/vmlinuz", "images/di/initrd.img"):
        assert re.search(rf'^{re.escape(client)} .*"GET /{name} HTTP/1\.1" 200 ', access,
                         re.MULTILINE), access  # fmt: skip


def test_reinstall_needs_no_network_and_changes_nothing(box: Box) -> None:
    r = box.run([f"{REPO}/install.sh", "--no-install-packages"], env={"PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pxeprov is installed in /opt/pxeprov from this checkout already." in r.stdout
    assert "Nothing changed: already up to date." in r.stdout
    assert "Serving: dnsmasq" in r.stdout
