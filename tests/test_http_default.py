"""Fast by default: a new server serves payloads over HTTP, on port 80 unless another web server
has it, and Secure Boot clients (GRUB) load theirs from nginx too.

Port conflicts are real: a socket listening on port 80 in a private network namespace
(`unshare --net`, so nothing on this machine's own port 80 is touched), and nginx
configurations under the --root as Debian lays them out.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import Result

from pxeprov import ports, system
from pxeprov.errors import CommandError
from pxeprov.paths import Root
from pxeprov.system import Packages

from .conftest import GRUB_HTTP_PORT_80_ONLY, NET, Cli, add_signed_uefi_loaders, snapshot
from .grubwords import words
from .isos import clonezilla_files, make_iso

TFTP = "var/lib/tftpboot"
SITE = "etc/nginx/conf.d/pxeprov.conf"
STATE = "etc/pxeprov/pxeprov.toml"
REPO = Path(__file__).resolve().parent.parent
LOCALHOST = ipaddress.IPv4Address("127.0.0.1")

DEBIAN_NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
include /etc/nginx/modules-enabled/*.conf;
events {
\tworker_connections 768;
}
http {
\tsendfile on;
\tinclude /etc/nginx/mime.types;
\taccess_log /var/log/nginx/access.log;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
#mail {
#\tserver {
#\t\tlisten     localhost:110;
#\t}
#}
"""
DEBIAN_DEFAULT_SITE = """\
# Default server configuration
#
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\t# listen 443 ssl default_server;
\troot /var/www/html;
\tindex index.html index.htm index.nginx-debian.html;
\tserver_name _;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""


def http_state(root: Path) -> dict[str, object]:
    data = tomllib.loads((root / STATE).read_text())
    http: dict[str, object] = data["http"]
    return http


def http_warnings(stderr: str) -> list[str]:
    """The warnings but the one about Secure Boot (no signed GRUB in these roots)."""
    return [line for line in stderr.splitlines() if "UEFI clients get iPXE" not in line]


def untouched(root: Path) -> dict[str, tuple[str, int, int]]:
    """The root's files but pxeprov's lock (taken, and left, by a run that fails)."""
    return {k: v for k, v in snapshot(root).items()
            if k not in ("var", "var/lib") and not k.startswith("var/lib/pxeprov")}  # fmt: skip


def nginx_tree(root: Path, sites: dict[str, str], *, enable_default: bool = True) -> None:
    """/etc/nginx as Debian's nginx package lays it out, with these extra sites enabled."""
    etc = root / "etc/nginx"
    for d in ("conf.d", "sites-available", "sites-enabled", "modules-enabled"):
        (etc / d).mkdir(parents=True, exist_ok=True)
    (etc / "nginx.conf").write_text(DEBIAN_NGINX_CONF)
    (etc / "sites-available/default").write_text(DEBIAN_DEFAULT_SITE)
    if enable_default:
        (etc / "sites-enabled/default").symlink_to("/etc/nginx/sites-available/default")
    for name, text in sites.items():
        (etc / "sites-enabled" / name).write_text(text)


# ---------------------------------------------------------------- the default


def test_a_new_server_serves_payloads_over_http(loader_root: Path, cli: Cli) -> None:
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    assert http_warnings(r.stderr) == []  # port 80 is free in this root and on 127.0.0.1
    assert http_state(loader_root) == {
        "enabled": True, "port": 80, "fallback_port": 8069, "base_url": "",
    }  # fmt: skip
    assert "listen 127.0.0.1:80;" in (loader_root / SITE).read_text()
    assert (loader_root / TFTP / "undionly.kpxe").is_file()
    assert not (loader_root / TFTP / "pxelinux.0").exists()
    assert "Payloads (kernels, initrds, squashfs) over HTTP from http://127.0.0.1/" in r.stdout
    before = snapshot(loader_root)
    assert "Nothing changed" in cli(loader_root, "init").stdout
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before


def test_an_existing_server_keeps_tftp_until_asked(loader_root: Path, cli: Cli) -> None:
    """A state written before HTTP was the default (no [http] table) stays on TFTP."""
    state = loader_root / STATE
    state.parent.mkdir(parents=True)
    state.write_text('[network]\ninterface = "lo"\naddress = "127.0.0.1"\nsubnet = "127.0.0.0/8"\n')
    r = cli(loader_root, "init")
    assert r.exit_code == 0, r.stderr
    assert http_state(loader_root)["enabled"] is False
    assert not (loader_root / SITE).exists()
    assert (loader_root / TFTP / "pxelinux.cfg/default").is_file()
    r = cli(loader_root, "init", "--http")
    assert r.exit_code == 0, r.stderr
    assert http_state(loader_root)["enabled"] is True and (loader_root / SITE).is_file()


def test_no_http_is_remembered(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "init")
    assert "Nothing changed" in r.stdout, r.stdout + r.stderr
    assert not (loader_root / SITE).exists()


def test_a_base_url_needs_no_nginx(loader_root: Path, cli: Cli) -> None:
    r = cli(loader_root, "init", *NET, "--http-base-url", "http://cdn.example.org/pxe")
    assert r.exit_code == 0, r.stderr
    assert not (loader_root / SITE).exists()


def _path_without_nginx(tmp_path: Path) -> str:
    """A PATH with every program of this machine's PATH but nginx."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not Path(d).is_dir():
            continue
        for p in Path(d).iterdir():
            if p.name != "nginx" and not (bin_dir / p.name).exists():
                (bin_dir / p.name).symlink_to(p)
    return str(bin_dir)


def test_without_nginx_a_new_server_keeps_working_over_tftp(
    loader_root: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_without_nginx(tmp_path))
    monkeypatch.setattr(system, "SBIN", ())  # nor in the sbin directories searched after PATH
    assert shutil.which("nginx") is None
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.startswith("warning: payloads go over TFTP: nginx is not installed"), r.stderr
    assert "pxeprov init --http" in r.stderr
    assert http_state(loader_root)["enabled"] is False
    assert (loader_root / TFTP / "pxelinux.cfg/default").is_file()
    assert not (loader_root / SITE).exists()


def test_an_explicit_http_without_nginx_is_an_error(
    loader_root: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_without_nginx(tmp_path))
    monkeypatch.setattr(system, "SBIN", ())  # nor in the sbin directories searched after PATH
    r = cli(loader_root, "init", *NET, "--http")
    assert r.exit_code != 0
    assert "nginx is not installed" in r.stderr
    assert not (loader_root / STATE).exists()


def test_a_failed_nginx_install_falls_back_to_tftp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt-get cannot install nginx (no such package in the mirror, say): the failure is kept,
    and the next look at the state, after the install, gives TFTP with a warning."""
    from pxeprov.commands.init import InitOptions, desired_state
    from pxeprov.network import NetworkRequest
    from pxeprov.pipeline import Machine
    from pxeprov.state import State

    def runner(argv: object, *, env: object = None) -> None:
        if "install" in list(argv):  # type: ignore[call-overload]
            raise CommandError("`apt-get install -y nginx` failed (exit 100): Unable to locate")

    packages = Packages(policy_rc_d=tmp_path / "policy-rc.d", runner=runner)
    assert packages.try_install(["nginx"]) is not None and packages.failed == {"nginx"}
    monkeypatch.setenv("PATH", _path_without_nginx(tmp_path))
    monkeypatch.setattr(system, "SBIN", ())  # nor in the sbin directories searched after PATH
    machine = Machine(root=Root.of("/"), packages=packages)
    options = InitOptions(network=NetworkRequest("lo", "127.0.0.1", "127.0.0.0/8"))
    state, warnings = desired_state(machine, options, State())  # reads only
    assert state.http is False
    assert warnings == [
        "payloads go over TFTP: nginx could not be installed. HTTP is several times faster for "
        "large images: install nginx, then run `pxeprov init --http`"
    ]


# ---------------------------------------------------------------- port 80 taken


def test_nginx_default_site_gets_the_fallback_port(loader_root: Path, cli: Cli) -> None:
    nginx_tree(loader_root, {})
    default = loader_root / "etc/nginx/sites-available/default"
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    assert http_warnings(r.stderr) == [
        "warning: port 80 is in use (nginx's site /etc/nginx/sites-enabled/default (line 4: "
        "listen 80 default_server)): pxeprov's site serves on port 8069 instead and leaves that "
        "one alone (--http-port N to choose)"
    ]
    assert http_state(loader_root)["port"] == 8069
    assert "listen 127.0.0.1:8069;" in (loader_root / SITE).read_text()
    assert "http://127.0.0.1:8069/" in r.stdout
    assert default.read_text() == DEBIAN_DEFAULT_SITE  # untouched, and still enabled
    assert (loader_root / "etc/nginx/sites-enabled/default").is_symlink()
    # the choice sticks: a re-run changes nothing and says nothing
    r = cli(loader_root, "init")
    assert "Nothing changed" in r.stdout and http_warnings(r.stderr) == []


@pytest.mark.parametrize(
    ("site", "taken"),
    [
        ("server {\n  listen 127.0.0.1:80;\n}\n", True),
        ("server {\n  listen 127.0.0.2:80;\n}\n", False),  # another address
        ("server {\n  listen [::]:80;\n}\n", False),  # IPv6 only (nginx's ipv6only=on)
        ("server {\n  listen 8080;\n}\n", False),
        ("server {\n  server_name example.org;\n}\n", True),  # no listen: *:80
        ("server {\n  listen localhost:80;\n}\n", True),  # a name: it may be this address
        ("server {\n  listen unix:/run/app.sock;\n}\n", False),
        ("# server {\n#  listen 80;\n# }\n", False),
        ('server {\n  listen "*:80" ; # quoted\n}\n', True),
        ("server {\n  include snippets/listen80.conf;\n}\n", True),  # an included listen
    ],
)
def test_other_nginx_sites_on_port_80(tmp_path: Path, site: str, taken: bool) -> None:
    root = tmp_path / "root"
    nginx_tree(root, {"app": site}, enable_default=False)
    (root / "etc/nginx/snippets").mkdir()
    (root / "etc/nginx/snippets/listen80.conf").write_text("listen 80;\n")
    held = ports.holders(Root.of(root), LOCALHOST, 80, proc=tmp_path / "no-proc")
    assert bool(held) is taken, held
    if taken:
        assert held[0].startswith("nginx's site /etc/nginx/")


@pytest.mark.parametrize("nginx_runs", [True, False])
def test_a_listener_whose_process_cannot_be_seen(tmp_path: Path, nginx_runs: bool) -> None:
    """Without root, /proc/PID/fd is not readable and a socket's process is unknown: while an
    nginx process runs, the unknown listener on port 80 is taken for it (pxeprov's own nginx
    was reported as "a process listens"); with no nginx it is still a conflict."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    # 127.0.0.1:80, LISTEN (0A), inode 4242 (the tenth field)
    listen = "   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 0 0 0 4242\n"
    (proc / "net/tcp").write_text(header + listen)
    (proc / "77").mkdir()
    (proc / "77/comm").write_text("nginx\n" if nginx_runs else "python3\n")
    root = tmp_path / "root"
    root.mkdir()
    held = ports.holders(Root.of(root), LOCALHOST, 80, proc=proc)
    assert held == ([] if nginx_runs else ["a process listens on 127.0.0.1:80"]), held


def test_pxeprovs_own_site_is_not_a_conflict(loader_root: Path, cli: Cli) -> None:
    nginx_tree(loader_root, {}, enable_default=False)
    assert cli(loader_root, "init", *NET).exit_code == 0
    assert (loader_root / SITE).is_file() and http_state(loader_root)["port"] == 80
    assert ports.holders(Root.of(loader_root), LOCALHOST, 80, proc=loader_root / "x") == []


def test_the_default_site_link_is_removed_only_when_it_is_the_packages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    nginx_tree(root, {})
    notes = ports.disable_default_site(Root.of(root))
    assert notes and "disabled nginx's default site" in notes[0]
    assert not (root / "etc/nginx/sites-enabled/default").exists()
    assert (root / "etc/nginx/sites-available/default").read_text() == DEBIAN_DEFAULT_SITE
    # an admin's own file named default stays
    (root / "etc/nginx/sites-enabled/default").write_text("server { listen 80; }\n")
    assert ports.disable_default_site(Root.of(root)) == []
    assert (root / "etc/nginx/sites-enabled/default").is_file()


def _in_private_network(
    root: Path, listen: list[int], *args: str
) -> subprocess.CompletedProcess[str]:
    """`pxeprov --root ROOT init ARGS` in a new network namespace where a Python process
    listens on each port of `listen` (0.0.0.0); the listeners are still answering afterwards
    (else the exit code is 99)."""
    script = f"""
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
socks = []
for port in {listen!r}:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    socks.append(s)
r = subprocess.run([sys.executable, "-m", "pxeprov", "--root", {str(root)!r}, "init", *{args!r}],
                   capture_output=True, text=True)
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr)
for s in socks:  # still listening: connect and accept
    c = socket.create_connection(("127.0.0.1", s.getsockname()[1]), timeout=5)
    s.settimeout(5)
    s.accept()[0].close()
    c.close()
sys.exit(r.returncode)
"""
    if os.geteuid() != 0:
        pytest.fail("these tests create network namespaces: run the suite as root")
    return subprocess.run(
        ["unshare", "--net", sys.executable, "-c", script],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_another_web_server_on_port_80_gets_the_fallback_port(loader_root: Path) -> None:
    r = _in_private_network(loader_root, [80], *NET)
    assert r.returncode == 0, r.stderr
    assert "port 80 is in use (python" in r.stderr and "listens on 0.0.0.0:80" in r.stderr
    assert "serves on port 8069 instead" in r.stderr
    assert http_state(loader_root)["port"] == 8069
    assert "listen 127.0.0.1:8069;" in (loader_root / SITE).read_text()


def test_the_fallback_port_is_configurable(loader_root: Path) -> None:
    r = _in_private_network(loader_root, [80], *NET, "--http-fallback-port", "8181")
    assert r.returncode == 0, r.stderr
    assert http_state(loader_root)["port"] == 8181


def test_both_ports_taken_is_a_clear_error(loader_root: Path) -> None:
    before = untouched(loader_root)
    r = _in_private_network(loader_root, [80, 8069], *NET)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: port 80 is in use (python"), r.stderr
    assert "and so is the fallback port 8069" in lines[0]
    assert "choose a free port with --http-port N, or --no-http" in lines[0]
    assert untouched(loader_root) == before


def test_an_explicit_port_that_is_taken_is_refused(loader_root: Path) -> None:
    before = untouched(loader_root)
    r = _in_private_network(loader_root, [8080], *NET, "--http-port", "8080")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --http-port 8080: python"), r.stderr
    assert untouched(loader_root) == before


def test_an_existing_site_keeps_its_port_and_is_warned(loader_root: Path) -> None:
    r = _in_private_network(loader_root, [], *NET)
    assert r.returncode == 0 and http_state(loader_root)["port"] == 80, r.stderr
    nginx_tree(loader_root, {}, enable_default=True)  # someone enables a site on port 80
    r = _in_private_network(loader_root, [])
    assert r.returncode == 0, r.stderr
    assert "port 80 of pxeprov's site is also served by nginx's site" in r.stderr
    assert http_state(loader_root)["port"] == 80


# ---------------------------------------------------------------- GRUB over HTTP


def grub_linux_initrd(root: Path) -> list[list[str]]:
    lines = (root / TFTP / "grub/grub.cfg").read_text().splitlines()
    found = [[w.text for w in words(line)] for line in lines]
    return [w for w in found if w and w[0] in ("linux", "initrd")]


def _grub_server(root: Path, cli: Cli, tmp_path: Path, *args: str) -> Result:
    r = cli(root, "init", *NET, "--uefi-loader", "grub", *args)
    assert r.exit_code == 0, r.stderr
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(root, "add-image", str(iso), "--name", "cz").exit_code == 0
    return r


def test_grub_loads_kernel_and_initrd_over_http(
    loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    add_signed_uefi_loaders(loader_root)
    r = _grub_server(loader_root, cli, tmp_path, "--http-port", "8080")
    assert "TFTP" not in r.stderr
    linux, initrd = grub_linux_initrd(loader_root)
    assert linux[1] == "(http,127.0.0.1:8080)/images/cz/vmlinuz"
    assert "fetch=http://127.0.0.1:8080/images/cz/filesystem.squashfs" in linux
    assert initrd == ["initrd", "(http,127.0.0.1:8080)/images/cz/initrd.img"]
    # on port 80, GRUB's device names no port
    assert cli(loader_root, "init", "--http-port", "80").exit_code == 0
    assert grub_linux_initrd(loader_root)[0][1] == "(http,127.0.0.1)/images/cz/vmlinuz"


def test_grub_without_http_loads_over_tftp_and_says_so(
    loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    add_signed_uefi_loaders(loader_root, http=b"")
    r = _grub_server(loader_root, cli, tmp_path, "--http-port", "8080")
    assert (
        "Secure Boot clients (GRUB) load kernels and initrds over TFTP: the signed GRUB" in r.stderr
    )
    linux, initrd = grub_linux_initrd(loader_root)
    assert linux[1] == "/images/cz/vmlinuz" and initrd[1] == "/images/cz/initrd.img"
    # the squashfs still comes over HTTP: live-boot fetches it, not GRUB
    assert "fetch=http://127.0.0.1:8080/images/cz/filesystem.squashfs" in linux


def test_grub_that_only_talks_to_port_80(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    add_signed_uefi_loaders(loader_root, http=GRUB_HTTP_PORT_80_ONLY)
    r = _grub_server(loader_root, cli, tmp_path, "--http-port", "8080")
    assert "from port 80 only, and payloads are on port 8080" in r.stderr
    assert grub_linux_initrd(loader_root)[0][1] == "/images/cz/vmlinuz"
    assert cli(loader_root, "init", "--http-port", "80").exit_code == 0
    assert grub_linux_initrd(loader_root)[0][1] == "(http,127.0.0.1)/images/cz/vmlinuz"


def test_grub_and_an_http_base_url(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    add_signed_uefi_loaders(loader_root)
    _grub_server(loader_root, cli, tmp_path, "--http-base-url", "http://cdn.example.org:81/pxe/")
    linux, initrd = grub_linux_initrd(loader_root)
    assert linux[1] == "(http,cdn.example.org:81)/pxe/images/cz/vmlinuz"
    assert initrd[1] == "(http,cdn.example.org:81)/pxe/images/cz/initrd.img"
