"""End to end: what a plain `pxeprov init` (no --http, no port) gives real clients.

- A new server serves payloads over HTTP on port 80: BIOS clients (iPXE), UEFI clients (iPXE)
  and UEFI Secure Boot clients (shim -> Debian's signed GRUB 2.12, with its http module) load
  kernel and initrd from nginx (its access log) and never over TFTP.
- Another web server already holds port 80 in namespace B (the pxeprov box): `init` leaves it
  alone, serves on the fallback port 8069, says so, and a client boots from there; the other
  server still answers on port 80 afterwards.
(`--no-http` booting everything over TFTP is test_boot.py's and test_secureboot.py's case.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import (
    B_ADDR,
    OVMF_SB_CODE,
    OVMF_SB_VARS,
    BootEvidence,
    NetLab,
    missing_files,
    size_of,
    stop_process,
)
from .pxeserver import (
    CONSOLE,
    DI,
    ISO_NAME,
    LOADERS,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    clonezilla_iso,
    leases,
    pxeprov,
)
from .sbfiles import SecureBootFiles
from .test_secureboot import GRUB, SB_ENABLED, SHIM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KERNEL = f"images/{ISO_NAME}/vmlinuz"
INITRD = f"images/{ISO_NAME}/initrd.img"
BOOT_LIMIT = 150.0
MACS = {"bios": "52:54:00:77:0d:01", "uefi": "52:54:00:77:0d:02", "uefi-sb": "52:54:00:77:0d:03"}
OTHER_MARK = "the other web server on port 80\n"
START_TIMEOUT = 20.0


@dataclass
class Rendered:
    served: Served
    init_output: subprocess.CompletedProcess[str]  # what `pxeprov init` said


def _render(lab: NetLab, name: str, root: Path, iso: Path, extra: dict[Path, Path]) -> Rendered:
    build_root(root, extra)
    done = pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1")
    pxeprov(lab, root, "add-image", str(iso), "--name", ISO_NAME, "--default", "--append", CONSOLE)
    return Rendered(Served.of(name, root), done)


@pytest.fixture(scope="module")
def servers(lab: NetLab) -> Iterator[OneAtATime]:
    one = OneAtATime(lab)
    try:
        yield one
    finally:
        one.stop()


@pytest.fixture(scope="module")
def iso(make_dir: MakeDir) -> Path:
    problems = missing_files((*LOADERS, UNDIONLY, DI / "linux", OVMF_SB_CODE, OVMF_SB_VARS))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    return clonezilla_iso(make_dir("pxeprov-e2e-default-iso-"))


@pytest.fixture(scope="module")
def ipxe_root(lab: NetLab, make_dir: MakeDir, iso: Path) -> Served:
    """No signed GRUB on this box: UEFI clients get iPXE (--uefi-loader auto)."""
    root = make_dir("pxeprov-e2e-default-ipxe-")
    return _render(lab, "default-ipxe", root, iso, {UNDIONLY: UNDIONLY}).served


@pytest.fixture(scope="module")
def grub_root(lab: NetLab, make_dir: MakeDir, iso: Path, sb_files: SecureBootFiles) -> Served:
    """Debian 13's signed shim and GRUB on this box: `auto` picks the Secure Boot chain."""
    extra = {UNDIONLY: UNDIONLY, SHIM: sb_files.shim, GRUB: sb_files.grub}
    return _render(lab, "default-grub", make_dir("pxeprov-e2e-default-grub-"), iso, extra).served


def from_nginx(ev: BootEvidence, server: Served, offset: int, base: str) -> list[str]:
    """What is wrong with kernel and initrd coming from nginx to this client, whole, and
    never over TFTP; and with the squashfs URL on the command line."""
    assert server.nginx is not None
    requests = server.nginx.requests(offset)
    client = leases(ev)[-1] if leases(ev) else "?"
    problems = []
    for name in (KERNEL, INITRD):
        size = (server.tftp_root / name).stat().st_size
        if not any((r.client, r.method, r.path, r.status, r.size) ==
                   (client, "GET", f"/{name}", 200, size) for r in requests):  # fmt: skip
            problems.append(f"nginx did not send /{name} ({size} bytes) to {client}: {requests}")
        if f"/{name}" in ev.proxy_log:
            problems.append(f"{name} was asked for over TFTP")
    if "Linux version" not in ev.serial:
        problems.append("the kernel never started")
    fetch = f"fetch={base}/images/{ISO_NAME}/filesystem.squashfs"
    if not re.search(rf"Command line:.*{re.escape(fetch)}", ev.serial):
        problems.append(f"the kernel command line lacks {fetch}")
    return problems


def test_a_plain_init_chose_http_on_port_80(ipxe_root: Served, grub_root: Served) -> None:
    for served in (ipxe_root, grub_root):
        state = (served.root / "etc/pxeprov/pxeprov.toml").read_text()
        assert "[http]\nenabled = true\nport = 80\n" in state, state
        site = (served.root / "etc/nginx/conf.d/pxeprov.conf").read_text()
        assert f"listen {B_ADDR}:80;" in site
    grub_cfg = (grub_root.tftp_root / "grub/grub.cfg").read_text()
    assert f"linux (http,{B_ADDR})/{KERNEL} " in grub_cfg, grub_cfg
    assert f"initrd (http,{B_ADDR})/{INITRD}\n" in grub_cfg, grub_cfg


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_bios_and_uefi_load_payloads_from_nginx(
    lab: NetLab, servers: OneAtATime, ipxe_root: Served, firmware: str
) -> None:
    server = servers.serve(ipxe_root)
    assert server.nginx is not None
    offset = size_of(server.nginx.access_log)
    ev = lab.boot(firmware, MACS[firmware], server.running, limit=BOOT_LIMIT)  # type: ignore[arg-type]
    problems = from_nginx(ev, server, offset, f"http://{B_ADDR}")
    assert not problems, "\n".join([*problems, ev.summary()])


def test_secure_boot_loads_payloads_from_nginx_through_grub(
    lab: NetLab, servers: OneAtATime, grub_root: Served
) -> None:
    server = servers.serve(grub_root)
    assert server.nginx is not None
    offset = size_of(server.nginx.access_log)
    ev = lab.boot("uefi-sb", MACS["uefi-sb"], server.running, limit=BOOT_LIMIT)
    problems = from_nginx(ev, server, offset, f"http://{B_ADDR}")
    if SB_ENABLED not in ev.serial:
        problems.append(f"serial: no {SB_ENABLED!r}: Secure Boot was not on")
    if not re.search(r"sent \S+/grub/grub\.cfg to ", ev.proxy_log):
        problems.append("GRUB never read grub/grub.cfg over TFTP")
    assert not problems, "\n".join([*problems, ev.summary()])


@dataclass
class Other:
    proc: subprocess.Popen[bytes]
    folder: Path


@pytest.fixture
def other_web_server(lab: NetLab, make_dir: MakeDir, servers: OneAtATime) -> Iterator[Other]:
    """Python's http.server on 0.0.0.0:80 in namespace B, as if Apache were there."""
    servers.stop()  # pxeprov's earlier sites hold B's port 80
    folder = make_dir("pxeprov-e2e-other-www-")
    (folder / "index.html").write_text(OTHER_MARK)
    (folder / "index.html").chmod(0o644)
    argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "http.server", "80",
            "--bind", "0.0.0.0", "--directory", str(folder)]  # fmt: skip
    log = lab.workdir / "other-web-server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while other_answers(lab) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the other web server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield Other(proc, folder)
    finally:
        stop_process(proc)


def other_answers(lab: NetLab) -> str | None:
    """The page on port 80 of the pxeprov box, fetched from the clients' namespace."""
    res = subprocess.run(["ip", "netns", "exec", lab.ns_a, "curl", "-sS", "--max-time", "5",
                          f"http://{B_ADDR}:80/"],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    return res.stdout if res.returncode == 0 else None


def test_port_80_taken_gets_the_fallback_port_and_leaves_the_other_alone(
    lab: NetLab, servers: OneAtATime, make_dir: MakeDir, iso: Path, other_web_server: Other
) -> None:
    root = make_dir("pxeprov-e2e-default-fallback-")
    rendered = _render(lab, "default-fallback", root, iso, {UNDIONLY: UNDIONLY})
    warning = rendered.init_output.stderr
    assert "port 80 is in use (python" in warning and "listens on 0.0.0.0:80" in warning, warning
    assert "serves on port 8069 instead" in warning
    site = (root / "etc/nginx/conf.d/pxeprov.conf").read_text()
    assert f"listen {B_ADDR}:8069;" in site
    server = servers.serve(rendered.served)
    assert server.nginx is not None
    offset = size_of(server.nginx.access_log)
    ev = lab.boot("bios", MACS["bios"], server.running, limit=BOOT_LIMIT)
    problems = from_nginx(ev, server, offset, f"http://{B_ADDR}:8069")
    assert not problems, "\n".join([*problems, ev.summary()])
    assert other_answers(lab) == OTHER_MARK  # still there, still answering
