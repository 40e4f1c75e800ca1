"""End to end: the HTTP boot path (`pxeprov init --http`) with real QEMU clients.

As test_boot.py, but the root is rendered with ``--http --http-port 8080``: namespace B runs the
rendered dnsmasq config (TFTP root rewritten) and nginx with the rendered site (``root``
rewritten; a minimal main config of the lab's own around it, access log in the lab's workdir).
BIOS clients get iPXE (undionly.kpxe; QEMU's BIOS ROM is iPXE already, so it is given the
boot.ipxe menu at once) and UEFI clients snponly.efi and boot.ipxe over TFTP; then kernel and
initrd over HTTP. From the
clients' side (namespace A), curl checks what nginx must and must not serve, and that large
TFTP transfers (past 65,535 blocks, where the 16-bit block number wraps) arrive intact.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import (
    A_ADDR,
    B_ADDR,
    BootEvidence,
    Dnsmasq,
    HttpRequest,
    NetLab,
    Nginx,
    missing_files,
    read_from,
    size_of,
)
from .pxeserver import (
    CONSOLE,
    DI,
    HTTP_BASE,
    HTTP_FETCH_URL,
    HTTP_PORT,
    ISO_NAME,
    LOADERS,
    SQUASHFS,
    TFTP_ROOT,
    UNDIONLY,
    build_root,
    check_boot,
    clonezilla_iso,
    conf_for_test,
    leases,
    pxeprov,
    site_for_test,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KERNEL = f"images/{ISO_NAME}/vmlinuz"
INITRD = f"images/{ISO_NAME}/initrd.img"
BIOS_TFTP = ("boot.ipxe",)
UEFI_TFTP = ("snponly.efi", "boot.ipxe")

# One MAC per boot, so each boot's lines can be told apart in the shared logs.
BIOS_MAC = "52:54:00:77:06:01"
UEFI_MAC = "52:54:00:77:06:02"

PROGRAMS = ("nginx", "curl", "tftp")  # tftp: tftp-hpa's client
CURL_TIMEOUT = 60  # seconds for one transfer inside the lab (the 40 MB ones take a few)

# More than 65,535 blocks of 512 bytes (81,920): the block number wraps during the transfer.
WRAP_FILE = "wrap/big.bin"
WRAP_SIZE = 40 << 20


@dataclass(frozen=True)
class HttpServer:
    """pxeprov's server rendered with --http, running in namespace B: dnsmasq and nginx."""

    root: Path
    tftp_root: Path  # where the TFTP root really is (inside root)
    conf: Path  # the dnsmasq config exactly as pxeprov rendered it
    site: Path  # the nginx site exactly as pxeprov rendered it
    proxy: Dnsmasq
    nginx: Nginx


@pytest.fixture(scope="module")
def server(lab: NetLab, make_dir: MakeDir) -> Iterator[HttpServer]:
    problems = missing_files((*LOADERS, UNDIONLY, DI / "linux", DI / "initrd.gz"))
    problems += [f"program not found on PATH: {p}" for p in PROGRAMS if shutil.which(p) is None]
    if problems:
        # Fail, never skip: a CI run that silently skips its e2e tests proves nothing.
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-http-root-")
    build_root(root, {UNDIONLY: UNDIONLY})
    init = ("init", "--no-install-packages", "--menu-timeout", "1")
    pxeprov(lab, root, *init, "--http", "--http-port", str(HTTP_PORT))
    iso = clonezilla_iso(make_dir("pxeprov-e2e-http-iso-"))
    pxeprov(lab, root, "add-image", str(iso), "--name", ISO_NAME, "--default", "--append", CONSOLE)
    conf = root / "etc/dnsmasq.d/pxeprov.conf"
    site = root / "etc/nginx/conf.d/pxeprov.conf"
    tftp_root = root / TFTP_ROOT.lstrip("/")
    test_conf = conf_for_test(conf, tftp_root, lab.workdir / "pxeprov-http-test.conf")
    test_site = site_for_test(site, tftp_root, lab.workdir / "pxeprov-http-site.conf")
    with ExitStack() as stack:
        proxy = lab.start_dnsmasq("http-proxy", lab.ns_b, test_conf)
        stack.callback(lab.stop_dnsmasq, proxy)
        nginx = lab.start_nginx("http", lab.ns_b, test_site)
        stack.callback(lab.stop_nginx, nginx)
        yield HttpServer(root, tftp_root, conf, site, proxy, nginx)


# ---------------------------------------------------------------- helpers


def curl(lab: NetLab, out: Path, *args: str) -> tuple[int, bytes]:
    """curl from the clients' namespace: (HTTP status, body). Fails the test if curl fails."""
    argv = [
        "ip", "netns", "exec", lab.ns_a,
        "curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-o", str(out), "-w", "%{http_code}",
        *args,
    ]  # fmt: skip
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=CURL_TIMEOUT + 30, check=False
    )
    if res.returncode != 0:
        pytest.fail(f"curl failed (exit {res.returncode}): {' '.join(argv)}\n{res.stderr}")
    return int(res.stdout or "0"), out.read_bytes() if out.exists() else b""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_http_boot(
    ev: BootEvidence, server: HttpServer, tftp: tuple[str, ...], access_offset: int
) -> None:
    """The loaders and menus came over TFTP (pxeserver.check_boot, fetch= on HTTP), kernel and
    initrd over HTTP from nginx to the leased address, and never over TFTP. ``access_offset``:
    the size of nginx's access log before the boot."""
    check_boot(ev, server.tftp_root, tftp, fetch_url=HTTP_FETCH_URL)
    access = read_from(server.nginx.access_log, access_offset)
    requests = server.nginx.requests(access_offset)
    client = leases(ev)[-1]  # check_boot made sure there is one
    problems: list[str] = []
    for name in (KERNEL, INITRD):
        size = (server.tftp_root / name).stat().st_size
        if not served(requests, client, f"/{name}", size):
            asked = [r for r in requests if r.path == f"/{name}"]
            problems.append(
                f"nginx: no 'GET /{name}' answered 200 with its {size} bytes to {client}"
                f" (requests for it: {asked})"
            )
        # Neither sent nor even asked for over TFTP.
        if f"/{name}" in ev.proxy_log:
            problems.append(f"proxy log mentions {name}: it was asked for over TFTP")
    detail = ["", "--- nginx access log (this boot)", access, ev.summary()]
    assert not problems, "\n".join(["HTTP boot failed:", *problems, *detail])


def served(requests: list[HttpRequest], client: str, path: str, size: int) -> bool:
    """Whether nginx answered a GET of ``path`` from ``client`` with 200 and all ``size`` bytes."""
    return any(
        (r.client, r.method, r.path, r.status, r.size) == (client, "GET", path, 200, size)
        for r in requests
    )


# ---------------------------------------------------------------- tests


def test_rendered_http_files(server: HttpServer) -> None:
    """What the boots below rely on, checked first so a rendering bug is reported as such."""
    conf = server.conf.read_text()
    assert re.search(r"^pxe-service=tag:!ipxe,x86PC,.*,undionly.kpxe$", conf, re.MULTILINE), conf
    assert re.search(r"^pxe-service=tag:ipxe,x86PC,.*,boot.ipxe$", conf, re.MULTILINE), conf
    assert (server.tftp_root / "undionly.kpxe").read_bytes() == UNDIONLY.read_bytes()
    site = server.site.read_text()
    assert f"listen {B_ADDR}:{HTTP_PORT};" in site, site
    ipxe = (server.tftp_root / "boot.ipxe").read_text()
    assert f"kernel {HTTP_BASE}/{KERNEL} " in ipxe and f"initrd {HTTP_BASE}/{INITRD}\n" in ipxe
    urls = re.findall(r"fetch=(\S+)", ipxe)
    assert urls and urls[-1] == HTTP_FETCH_URL, (urls, ipxe)


def test_bios_boots_over_http(lab: NetLab, server: HttpServer) -> None:
    offset = size_of(server.nginx.access_log)
    ev = lab.boot("bios", BIOS_MAC, server.proxy)
    check_http_boot(ev, server, BIOS_TFTP, offset)


def test_uefi_boots_over_http(lab: NetLab, server: HttpServer) -> None:
    offset = size_of(server.nginx.access_log)
    ev = lab.boot("uefi", UEFI_MAC, server.proxy)
    check_http_boot(ev, server, UEFI_TFTP, offset)


def test_fetch_url_over_http(lab: NetLab, server: HttpServer, make_dir: MakeDir) -> None:
    """live-boot's fetch= URL, fetched from the clients' side, is the squashfs byte for byte."""
    offset = size_of(server.nginx.access_log)
    status, body = curl(lab, make_dir("pxeprov-e2e-http-fetch-") / "squashfs", HTTP_FETCH_URL)
    assert status == 200
    assert body == SQUASHFS
    got = server.nginx.requests(offset)
    assert served(got, A_ADDR, HTTP_FETCH_URL.removeprefix(HTTP_BASE), len(SQUASHFS)), got


def test_nginx_refuses(lab: NetLab, server: HttpServer, make_dir: MakeDir) -> None:
    """No listing, nothing outside the root (by ``..`` or by a symbolic link), GET/HEAD only."""
    work = make_dir("pxeprov-e2e-http-refused-")
    out = work / "body"
    outside = make_dir("pxeprov-e2e-http-outside-")  # 0755, like the path to the root
    secret = outside / "secret.txt"
    secret.write_bytes(b"outside the TFTP root " + os.urandom(8).hex().encode())
    secret.chmod(0o644)  # nginx's workers could read it: only the site's rules keep it out
    links = (
        server.tftp_root / f"images/{ISO_NAME}/escape.txt",  # a file link
        server.tftp_root / "images/outside",  # a directory link
    )
    links[0].symlink_to(secret)
    links[1].symlink_to(outside, target_is_directory=True)
    problems: list[str] = []
    try:
        for path in ("/", "/images/", f"/images/{ISO_NAME}/", f"/images/{ISO_NAME}"):
            status, body = curl(lab, out, f"{HTTP_BASE}{path}")
            directory = server.tftp_root / path.strip("/")
            listed = [p.name for p in directory.iterdir() if p.name.encode() in body]
            if status not in (403, 404) or listed or b"href" in body:
                problems.append(f"GET {path}: {status}, listed {listed}: {body[:300]!r}")
        for path in (
            "/../etc/passwd",
            "/images/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            f"/images/{ISO_NAME}/..%2f..%2f..%2fetc/passwd",
        ):
            # --path-as-is: curl would otherwise squash the "..", and nginx would never see it.
            status, body = curl(lab, out, "--path-as-is", f"{HTTP_BASE}{path}")
            if status not in (400, 403, 404) or b"root:" in body:
                problems.append(f"GET {path}: {status}: {body[:300]!r}")
        for path in (f"/images/{ISO_NAME}/escape.txt", "/images/outside/secret.txt"):
            status, body = curl(lab, out, f"{HTTP_BASE}{path}")
            if status not in (403, 404) or b"outside the TFTP root" in body:
                problems.append(f"GET {path} (symbolic link out of the root): {status}: {body!r}")
        kernel = (server.tftp_root / KERNEL).read_bytes()
        for method in ("POST", "PUT", "DELETE"):
            status, body = curl(
                lab, out, "-X", method, "--data-binary", "x", f"{HTTP_BASE}/{KERNEL}"
            )
            if status not in (403, 405) or body[:4096] == kernel[:4096]:
                problems.append(f"{method} /{KERNEL}: {status}: {body[:300]!r}")
        # The refusals changed nothing.
        status, body = curl(lab, out, f"{HTTP_BASE}/{KERNEL}")
        if status != 200 or body != kernel:
            problems.append(f"GET /{KERNEL} after the refused methods: {status}")
    finally:
        for link in links:
            link.unlink()
    log = read_from(server.nginx.error_log, 0)
    assert not problems, "\n".join(["nginx served what it must not:", *problems, "", log[-3000:]])


def test_large_tftp_transfers(lab: NetLab, server: HttpServer, make_dir: MakeDir) -> None:
    """A 40 MB file (81,920 blocks of 512 bytes: the 16-bit block number wraps) over dnsmasq's
    TFTP, fetched with curl at 512- and 1468-byte blocks and with tftp-hpa's client (512)."""
    src = server.tftp_root / WRAP_FILE
    src.parent.mkdir(exist_ok=True)
    src.parent.chmod(0o755)
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(WRAP_SIZE >> 20):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    src.chmod(0o644)  # dnsmasq serves TFTP unprivileged
    want = h.hexdigest()
    work = make_dir("pxeprov-e2e-tftp-wrap-")
    url = f"tftp://{B_ADDR}/{WRAP_FILE}"
    curl_tftp = ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "--tftp-blksize"]
    clients = {
        "curl-512": [*curl_tftp, "512", "-o", str(work / "curl-512"), url],
        "curl-1468": [*curl_tftp, "1468", "-o", str(work / "curl-1468"), url],
        # tftp-hpa's client asks for no block size option: RFC 1350's 512 bytes.
        "tftp-hpa": [
            "tftp",
            "-m",
            "binary",
            B_ADDR,
            "-c",
            "get",
            WRAP_FILE,
            str(work / "tftp-hpa"),
        ],
    }
    problems: list[str] = []
    try:
        for name, argv in clients.items():
            out = work / name
            offset = size_of(server.proxy.log)
            res = subprocess.run(
                ["ip", "netns", "exec", lab.ns_a, *argv],
                capture_output=True, text=True, timeout=CURL_TIMEOUT + 30, check=False,
            )  # fmt: skip
            log = read_from(server.proxy.log, offset)
            size = out.stat().st_size if out.exists() else None
            got = sha256(out) if size is not None else None
            if res.returncode != 0 or size != WRAP_SIZE or got != want:
                problems.append(
                    f"{name}: exit {res.returncode}, {size} of {WRAP_SIZE} bytes, "
                    f"sha256 {got} (want {want})\n"
                    f"  {res.stderr.strip()}\n  dnsmasq: {log.strip()}"
                )
            elif f"sent {src} to {A_ADDR}" not in log:
                problems.append(f"{name}: dnsmasq did not log 'sent {src} to {A_ADDR}': {log}")
    finally:
        src.unlink()
        src.parent.rmdir()
    assert not problems, "\n".join(["large TFTP transfers failed:", *problems])
