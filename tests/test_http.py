"""The HTTP path: nginx's site, HTTP URLs in every menu, and nginx itself serving the root."""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NET, Cli, override_template, snapshot
from .e2e.netlab import stop_process
from .isos import clonezilla_files, make_iso

TFTP = "var/lib/tftpboot"
SITE = "etc/nginx/conf.d/pxeprov.conf"
DROP_IN = "etc/dnsmasq.d/pxeprov.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_http_init_and_image(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    r = cli(loader_root, "init", *NET, "--http", "--http-port", "8080")
    assert r.exit_code == 0, r.stderr
    assert "Payloads (kernels, initrds, squashfs) over HTTP from http://127.0.0.1:8080/" in r.stdout
    site = (loader_root / SITE).read_text()
    assert "listen 127.0.0.1:8080;" in site and "root /var/lib/tftpboot;" in site
    assert "autoindex off;" in site and "disable_symlinks on from=$document_root;" in site
    conf = (loader_root / DROP_IN).read_text()
    # BIOS clients get iPXE, then the same iPXE menu as UEFI clients
    assert 'pxe-service=tag:!ipxe,x86PC,"pxeprov network boot (BIOS)",undionly.kpxe' in conf
    assert 'pxe-service=tag:ipxe,x86PC,"pxeprov network boot (iPXE menu)",boot.ipxe' in conf
    assert conf.count("dhcp-userclass=set:ipxe,iPXE") == 1
    assert (loader_root / TFTP / "undionly.kpxe").is_file()
    assert "BIOS -> undionly.kpxe (iPXE, menu boot.ipxe)" in r.stdout
    assert not (loader_root / TFTP / "pxelinux.0").exists()
    assert not (loader_root / TFTP / "pxelinux.cfg/default").exists()
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(loader_root, "add-image", str(iso)).exit_code == 0
    ipxe = (loader_root / TFTP / "boot.ipxe").read_text()
    base = "http://127.0.0.1:8080/images/cz"
    assert f"kernel {base}/vmlinuz initrd=initrd.img " in ipxe
    assert f"initrd {base}/initrd.img\n" in ipxe
    assert f"fetch={base}/filesystem.squashfs" in ipxe
    # back to TFTP: nginx's site and undionly.kpxe go, pxelinux comes back
    r = cli(loader_root, "init", "--no-http")
    assert r.exit_code == 0, r.stderr
    assert not (loader_root / SITE).exists()
    assert not (loader_root / TFTP / "undionly.kpxe").exists()
    pxe = (loader_root / TFTP / "pxelinux.cfg/default").read_text()
    assert "fetch=tftp://127.0.0.1/images/cz/filesystem.squashfs" in pxe
    assert "KERNEL images/cz/vmlinuz" in pxe


def test_http_base_url(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    r = cli(loader_root, "init", *NET, "--http-base-url", "http://cdn.example.org/pxe/")
    assert r.exit_code == 0, r.stderr
    assert not (loader_root / SITE).exists()  # no local web server wanted
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(loader_root, "add-image", str(iso)).exit_code == 0
    ipxe = (loader_root / TFTP / "boot.ipxe").read_text()
    assert "kernel http://cdn.example.org/pxe/images/cz/vmlinuz" in ipxe
    assert "fetch=http://cdn.example.org/pxe/images/cz/filesystem.squashfs" in ipxe
    # the loaders themselves still come over TFTP from this server
    conf = (loader_root / DROP_IN).read_text()
    assert "enable-tftp" in conf and "undionly.kpxe" in conf


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--http-port", "0"], "--http-port 0"),
        (["--http-port", "70000"], "--http-port 70000"),
        (["--http-base-url", "ftp://x/y"], "must be like http://"),
        (["--http-base-url", "http://a b/"], "must be like http://"),
    ],
)
def test_bad_http_options(loader_root: Path, cli: Cli, args: list[str], words: str) -> None:
    r = cli(loader_root, "init", *NET, *args)
    assert r.exit_code == 2 and words in r.stderr
    assert not (loader_root / "etc").exists()


def test_broken_nginx_site_is_refused(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--http").exit_code == 0
    override_template(loader_root, "nginx-site.conf.j2", "autoindex off;", "autoindex maybe;")
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--title", "Changed")
    assert r.exit_code == 5 and "rejected by nginx, nothing was changed" in r.stderr
    # nginx's own reason (its [emerg] line), not its last line ("... test failed")
    assert 'nginx: [emerg] invalid value "maybe" in "autoindex" directive' in r.stderr, r.stderr
    assert "test failed" not in r.stderr, r.stderr
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before


def test_the_site_is_checked_whatever_its_address(loader_root: Path, cli: Cli) -> None:
    """nginx -t binds what a site listens on; pxeprov's check of its site does not: an address
    that is not on this box (yet) is no fault of the file (a real bind failure is nginx's to
    report when it starts)."""
    r = cli(loader_root, "init", "--interface", "lo", "--address", "10.254.254.254",
            "--subnet", "10.254.254.0/24", "--http")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "bind()" not in r.stdout + r.stderr


# ---------------------------------------------------------------- the real nginx, on loopback


@contextlib.contextmanager
def nginx(site: Path, root: Path, workdir: Path) -> Iterator[None]:
    """nginx in the foreground with pxeprov's site (its `root` pointed at the test's root)."""
    text = site.read_text()
    assert text.count("root /var/lib/tftpboot;") == 1
    test_site = workdir / "site.conf"
    test_site.write_text(text.replace("root /var/lib/tftpboot;", f"root {root};"))
    main = workdir / "nginx.conf"
    main.write_text(
        f"daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log {workdir}/access.log;\n  include {test_site};\n}}\n"
    )
    proc = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(main)])
    try:
        deadline = time.monotonic() + 10
        while not (workdir / "nginx.pid").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start: {(workdir / 'error.log').read_text()}")
            time.sleep(0.05)
        yield
    finally:
        stop_process(proc)


def request(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def served_root(loader_root: Path) -> Iterator[Path]:
    """The loader root where nginx's workers (user nobody) can read it: pytest's own temporary
    directories are private to root."""
    public = Path(tempfile.mkdtemp(prefix="pxeprov-http-"))
    try:
        public.chmod(0o755)
        shutil.copytree(loader_root, public / "root")
        yield public / "root"
    finally:
        shutil.rmtree(public)


def test_nginx_serves_the_root_read_only(served_root: Path, cli: Cli, tmp_path: Path) -> None:
    loader_root = served_root
    port = free_port()
    assert cli(loader_root, "init", *NET, "--http", "--http-port", str(port)).exit_code == 0
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files(squashfs=300_000))
    assert cli(loader_root, "add-image", str(iso)).exit_code == 0
    tftp = loader_root / TFTP
    secret = loader_root.parent / "secret.txt"  # readable by nginx's workers: only the
    secret.write_text("outside the root")  # refusal to follow symlinks keeps it out
    secret.chmod(0o644)
    (tftp / "images/cz/escape.txt").symlink_to(secret)
    (tftp / "images/.staging-x").mkdir()
    (tftp / "images/.staging-x/half").write_text("half")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    with nginx(loader_root / SITE, tftp, workdir):
        status, body = request(port, "GET", "/images/cz/filesystem.squashfs")
        assert status == 200
        assert body == (iso.with_suffix(".src") / "live/filesystem.squashfs").read_bytes()
        assert request(port, "HEAD", "/images/cz/vmlinuz")[0] == 200
        assert request(port, "GET", "/boot.ipxe")[0] == 200
        for path in ("/", "/images/", "/images/cz/", "/images/cz"):
            status, body = request(port, "GET", path)
            assert status in (403, 404), path
            assert b"vmlinuz" not in body  # never a listing
        assert request(port, "GET", "/images/cz/escape.txt")[0] in (403, 404)
        assert request(port, "GET", "/../../etc/passwd")[0] in (400, 404)
        assert request(port, "GET", "/images/.staging-x/half")[0] == 404
        for method in ("POST", "PUT", "DELETE"):
            assert request(port, method, "/images/cz/vmlinuz")[0] in (403, 405), method
    log = (workdir / "access.log").read_text()
    assert re.search(r'"GET /images/cz/filesystem.squashfs HTTP/1.1" 200 300000', log)


def test_nginx_serves_a_tftp_root_that_is_a_link(
    served_root: Path, cli: Cli, tmp_path: Path
) -> None:
    """`init` takes a TFTP root that is a link to a tree it allows (checked on disk); nginx
    serves it too (dnsmasq does), and still follows no link under it."""
    real = served_root / "var/lib/tftpboot-real"
    real.mkdir(parents=True)
    (served_root / TFTP).symlink_to("tftpboot-real")
    port = free_port()
    assert cli(served_root, "init", *NET, "--http", "--http-port", str(port)).exit_code == 0
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(served_root, "add-image", str(iso)).exit_code == 0
    (real / "images/cz/alias").symlink_to("vmlinuz")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    with nginx(served_root / SITE, served_root / TFTP, workdir):
        status, body = request(port, "GET", "/images/cz/vmlinuz")
        assert status == 200 and body == (real / "images/cz/vmlinuz").read_bytes()
        assert request(port, "GET", "/images/cz/alias")[0] in (403, 404)
