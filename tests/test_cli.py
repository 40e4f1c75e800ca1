"""The commands through typer's runner, run for real inside a --root temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pxeprov.cli.app import print_plan
from pxeprov.commands.init import InitOptions, init
from pxeprov.errors import LockedError
from pxeprov.fsutil import locked
from pxeprov.network import NetworkRequest
from pxeprov.paths import LOCK_FILE, Root
from pxeprov.pipeline import Machine
from pxeprov.system import Packages

from .conftest import NET, Cli, override_template, snapshot

TFTP = "var/lib/tftpboot"
# Most tests here read pxelinux's menu, so they serve over TFTP (--no-http); a new server's
# default, HTTP, is tested in test_http.py.
SERVED = [
    "pxelinux.0",
    "ldlinux.c32",
    "menu.c32",
    "libutil.c32",
    "libmenu.c32",
    "snponly.efi",
    "pxelinux.cfg/default",
    "boot.ipxe",
]
DROP_IN = "etc/dnsmasq.d/pxeprov.conf"


def test_init_creates_a_working_server_tree(loader_root: Path, cli: Cli) -> None:
    r = cli(loader_root, "init", *NET, "--no-http", "--menu-timeout", "4", "--title", "Lab boot")
    assert r.exit_code == 0, r.stderr
    for name in SERVED:
        p = loader_root / TFTP / name
        assert p.is_file(), name
        assert p.stat().st_mode & 0o444 == 0o444, f"{name} is not world-readable"
        assert f"created    /var/lib/tftpboot/{name}" in r.stdout
    for d in [loader_root / TFTP, loader_root / TFTP / "pxelinux.cfg"]:
        assert d.stat().st_mode & 0o555 == 0o555
    for name in SERVED[:6]:  # boot loaders are byte-for-byte the packages' files
        assert (loader_root / TFTP / name).read_bytes() == next(
            (loader_root / "usr/lib").rglob(name)
        ).read_bytes()
    conf = (loader_root / DROP_IN).read_text()
    assert "interface=lo\n" in conf and "dhcp-range=127.0.0.0,proxy,255.0.0.0\n" in conf
    assert "TIMEOUT 40" in (loader_root / TFTP / "pxelinux.cfg/default").read_text()
    state = (loader_root / "etc/pxeprov/pxeprov.toml").read_text()
    assert 'title = "Lab boot"' in state and "timeout = 4" in state
    assert 'DNSMASQ_EXCEPT="lo"' in (loader_root / "etc/default/dnsmasq").read_text()
    # system actions are shown as skipped, and the DHCP-server guidance follows
    assert "skipped    package installation (--root is not /)" in r.stdout
    assert "skipped    restart dnsmasq (--root is not /)" in r.stdout
    assert "Remove-DhcpServerv4OptionValue -OptionId 66,67" in r.stdout
    assert "option 60" in r.stdout and "relay" in r.stdout
    assert "Changes applied." in r.stdout


def test_rerun_changes_nothing_and_says_so(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    before = snapshot(loader_root)
    r = cli(loader_root, "init", *NET)
    assert r.exit_code == 0, r.stderr
    assert "Nothing changed: already up to date." in r.stdout
    assert "created" not in r.stdout and "updated" not in r.stdout
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before
    # the state remembers the network: no arguments needed the second time
    r = cli(loader_root, "init")
    assert "Nothing changed" in r.stdout, r.stdout + r.stderr


def test_changed_option_updates_only_what_it_touches(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    conf_before = (loader_root / DROP_IN).read_bytes()
    r = cli(loader_root, "init", "--menu-timeout", "2")
    assert r.exit_code == 0, r.stderr
    assert "updated    /var/lib/tftpboot/pxelinux.cfg/default" in r.stdout
    assert "updated    /var/lib/tftpboot/boot.ipxe" in r.stdout
    assert "unchanged  /etc/dnsmasq.d/pxeprov.conf" in r.stdout
    assert (loader_root / DROP_IN).read_bytes() == conf_before
    # dnsmasq's config did not change, so there is nothing to restart
    assert "restart dnsmasq" not in r.stdout


def test_dry_run_writes_nothing(loader_root: Path, cli: Cli) -> None:
    before = snapshot(loader_root)
    r = cli(loader_root, "init", *NET, "--no-http", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert snapshot(loader_root) == before  # not even the lock file
    assert "Plan (nothing is written):" in r.stdout
    assert "would create           /etc/dnsmasq.d/pxeprov.conf" in r.stdout
    assert "+++ /etc/dnsmasq.d/pxeprov.conf (rendered)" in r.stdout
    assert "+port=0" in r.stdout
    assert "Binary /var/lib/tftpboot/pxelinux.0: 0 -> " in r.stdout


def test_dry_run_after_init_shows_only_the_change(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--title", "New title", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert snapshot(loader_root) == before
    assert "-MENU TITLE pxeprov network boot" in r.stdout
    assert "+MENU TITLE New title" in r.stdout
    assert "unchanged              /var/lib/tftpboot/pxelinux.0" in r.stdout


def test_render_prints_every_file_and_diff(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "render")
    assert r.exit_code == 0, r.stderr
    for name in ["/etc/dnsmasq.d/pxeprov.conf", "/var/lib/tftpboot/boot.ipxe"]:
        assert f"==> {name} <==" in r.stdout
    assert "#!ipxe" in r.stdout and "pxe-service=x86PC" in r.stdout
    r = cli(loader_root, "render", "--diff")
    assert r.exit_code == 0 and "---" not in r.stdout  # nothing differs
    state = loader_root / "etc/pxeprov/pxeprov.toml"
    state.write_text(state.read_text().replace("timeout = 10", "timeout = 3"))
    r = cli(loader_root, "render", "--diff")
    assert "-TIMEOUT 100\n+TIMEOUT 30" in r.stdout


def test_dry_run_works_before_the_packages_are_installed(tmp_path: Path, cli: Cli) -> None:
    """No boot loaders under this root yet: the dry run shows the plan, the real run refuses."""
    r = cli(tmp_path, "init", *NET, "--no-http", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert (
        "would create after install /var/lib/tftpboot/pxelinux.0  "
        "(/usr/lib/PXELINUX/pxelinux.0 is missing: install the package pxelinux)"
    ) in r.stdout
    assert "+port=0" in r.stdout
    assert list(tmp_path.iterdir()) == []
    r = cli(tmp_path, "init", *NET, "--no-http")
    _assert_clean_error(
        r, 4, "/usr/lib/PXELINUX/pxelinux.0 is missing (install the package pxelinux"
    )


def test_dry_run_on_a_fresh_system_would_install(capsys: pytest.CaptureFixture[str]) -> None:
    """Root `/` read-only: nothing installed (as the fake package database says) -> 'would
    install'; no file of the real system is written. The plan printed lists every change the
    run makes: the packages, the files, nginx's default site disabled, the services started."""

    class NothingInstalled(Packages):
        def missing(self, names: Sequence[str]) -> list[str]:
            return list(names)

        def install(self, names: Sequence[str]) -> None:
            raise AssertionError("a dry run must not install")

    machine = Machine(root=Root.of("/"), packages=NothingInstalled())
    options = InitOptions(network=NetworkRequest("lo", "127.0.0.1", "127.0.0.0/8"))
    result = init(machine, options, dry_run=True)
    # a new server serves payloads over HTTP: nginx comes too
    assert result.install_note == "install: dnsmasq pxelinux syslinux-common ipxe nginx"
    assert result.outcome is None
    assert any(a.path.name == "pxeprov.conf" for a in result.plan.files)
    print_plan(result.plan, result.install_note, is_system=True)
    shown = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "would install dnsmasq pxelinux syslinux-common ipxe nginx" in shown, shown
    assert "would disable nginx's default site /etc/nginx/sites-enabled/default (enabled by " \
        "the package)" in shown, shown  # fmt: skip
    for service in ("dnsmasq", "nginx", "pxeprov-watch"):
        assert f"would restart {service}" in shown, shown


def test_list(loader_root: Path, cli: Cli) -> None:
    state = loader_root / "etc/pxeprov/pxeprov.toml"
    state.parent.mkdir(parents=True)
    state.write_text(
        '[[images]]\nname = "cz"\nlabel = "Clonezilla"\nkind = "clonezilla"\n'
        'kernel = "images/cz/vmlinuz"\ninitrd = "images/cz/initrd.img"\ndefault = true\n'
    )
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "list")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "pxeprov network boot (timeout 10 s; * = default)"
    assert lines[1].split() == ["local", "local", "-", "Boot", "from", "local", "disk"]
    assert lines[2].split()[:3] == ["*", "cz", "clonezilla"]
    data = json.loads(cli(loader_root, "list", "--json").stdout)
    assert [(e["name"], e["default"]) for e in data["entries"]] == [("local", False), ("cz", True)]
    assert "LABEL cz" in (loader_root / TFTP / "pxelinux.cfg/default").read_text()


# ---------------------------------------------------------------- bad input


def _assert_clean_error(r: object, code: int, words: str) -> None:
    stderr: str = r.stderr  # type: ignore[attr-defined]  # typer's Result
    assert r.exit_code == code, (r.exit_code, stderr)  # type: ignore[attr-defined]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert words in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--address", "192.168.1.300"], 2, "is not an IPv4 address"),
        (["--address", "127.0.0.1", "--subnet", "127.0.0.0/40"], 2, "not a valid subnet"),
        (["--address", "127.0.0.1", "--subnet", "10.0.0.0/8"], 2, "not inside subnet"),
        (["--interface", "nosuchif0"], 2, "'nosuchif0' does not exist"),
        (["--interface", "../lo"], 2, "--interface '../lo' must be 1-15 characters"),
        (["--menu-timeout", "-5"], 2, "--menu-timeout -5"),
        (["--tftp-root", "tftp"], 2, "must be an absolute path"),
        (["--title", 'a "quoted" title'], 2, "title"),
        (["--dnsmasq-config", "both"], 2, "--dnsmasq-config must be one of"),
    ],
)
def test_bad_input_changes_nothing(
    loader_root: Path, cli: Cli, args: list[str], code: int, words: str
) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    before = snapshot(loader_root)
    base = ["--interface", "lo"] if "--interface" not in args else []
    r = cli(loader_root, "init", *base, *args)
    _assert_clean_error(r, code, words)
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before


def test_missing_boot_loader_names_its_package(loader_root: Path, cli: Cli) -> None:
    (loader_root / "usr/lib/ipxe/snponly.efi").unlink()
    r = cli(loader_root, "init", *NET)
    _assert_clean_error(r, 4, "/usr/lib/ipxe/snponly.efi is missing (install the package ipxe")
    assert not (loader_root / "var").exists() or not (loader_root / TFTP).exists()
    assert not (loader_root / "etc").exists()


def test_bad_state_file_is_a_clean_error(loader_root: Path, cli: Cli) -> None:
    state = loader_root / "etc/pxeprov/pxeprov.toml"
    state.parent.mkdir(parents=True)
    state.write_text("[menu]\ntimeout = 'soon'\n")
    _assert_clean_error(cli(loader_root, "init", *NET), 2, "timeout must be a int")
    _assert_clean_error(cli(loader_root, "list"), 2, "timeout must be a int")


def test_unwritable_root(loader_root: Path, cli: Cli) -> None:
    """A read-only filesystem (root can write anywhere else): error, nothing half-written."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a read-only filesystem: run the suite as root")
    assert cli(loader_root, "init", *NET).exit_code == 0
    before = snapshot(loader_root)
    subprocess.run(["mount", "--bind", str(loader_root), str(loader_root)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(loader_root)], check=True)
        r = cli(loader_root, "init", "--menu-timeout", "3")
    finally:
        subprocess.run(["umount", str(loader_root)], check=True)
    _assert_clean_error(r, 7, "Read-only file system")
    after = snapshot(loader_root)
    assert after == before


def test_hand_edited_file_is_kept_until_force(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    menu = loader_root / TFTP / "pxelinux.cfg/default"
    edited = menu.read_text().replace("PROMPT 0", "PROMPT 1")
    menu.write_text(edited)
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--menu-timeout", "3")
    _assert_clean_error(r, 3, "pxelinux.cfg/default changed by hand since pxeprov wrote it")
    assert "-PROMPT 1" in r.stdout and "+PROMPT 0" in r.stdout  # the diff is shown
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before

    r = cli(loader_root, "init", "--menu-timeout", "3", "--force")
    assert r.exit_code == 0, r.stderr
    assert "PROMPT 0" in menu.read_text() and "TIMEOUT 30" in menu.read_text()
    backups = list((loader_root / "var/lib/pxeprov/backups").rglob("default"))
    assert [b.read_text() for b in backups] == [edited]
    assert cli(loader_root, "init").stdout.count("Nothing changed") == 1


def test_existing_unmanaged_menu_is_not_overwritten(loader_root: Path, cli: Cli) -> None:
    """A menu written by hand before pxeprov (the blog-post setup) is a conflict, not lost."""
    menu = loader_root / TFTP / "pxelinux.cfg/default"
    menu.parent.mkdir(parents=True)
    menu.write_text("DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n")
    r = cli(loader_root, "init", *NET, "--no-http")
    _assert_clean_error(r, 3, "exists and was not written by pxeprov")
    assert menu.read_text() == "DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n"
    assert not (loader_root / DROP_IN).exists()


def test_broken_template_never_replaces_the_live_config(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    live = (loader_root / DROP_IN).read_bytes()
    override_template(loader_root, "dnsmasq.conf.j2", "dhcp-range=", "dhcp-rnage=")
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--menu-timeout", "5")
    _assert_clean_error(r, 5, "rejected by dnsmasq, nothing was changed")
    assert "bad option at line" in r.stderr
    assert (loader_root / DROP_IN).read_bytes() == live
    after = snapshot(loader_root)
    before.pop("var/lib/pxeprov/lock"), after.pop("var/lib/pxeprov/lock")
    assert after == before  # the menus were not updated either


def test_leftover_drop_in_that_dnsmasq_would_refuse(loader_root: Path, cli: Cli) -> None:
    """A blog-post `port=0` left in /etc/dnsmasq.d makes dnsmasq refuse to start: caught."""
    other = loader_root / "etc/dnsmasq.d/pxe.conf"
    other.parent.mkdir(parents=True)
    other.write_text("port=0\nenable-tftp\n")
    (loader_root / "etc/dnsmasq.d/.hidden.conf").write_text("port=0\n")  # dnsmasq skips these
    (loader_root / "etc/dnsmasq.d/x.conf.dpkg-old").write_text("port=0\n")
    r = cli(loader_root, "init", *NET)
    _assert_clean_error(r, 5, "conflicts with /etc/dnsmasq.d/pxe.conf")
    assert "repeated keyword" in r.stderr
    assert not (loader_root / DROP_IN).exists()
    other.unlink()
    assert cli(loader_root, "init", *NET).exit_code == 0


def test_main_config_mode_keeps_the_original(loader_root: Path, cli: Cli) -> None:
    main = loader_root / "etc/dnsmasq.conf"
    main.parent.mkdir(parents=True)
    original = "# Configuration file for dnsmasq.\n#port=5353\n"
    main.write_text(original)
    r = cli(loader_root, "init", *NET, "--dnsmasq-config", "main")
    assert r.exit_code == 0, r.stderr
    assert (loader_root / "etc/dnsmasq.conf.pxeprov-orig").read_text() == original
    assert "port=0" in main.read_text() and not (loader_root / DROP_IN).exists()
    assert "Nothing changed" in cli(loader_root, "init").stdout
    # back to the drop-in: pxeprov's main config goes, the original comes back
    r = cli(loader_root, "init", "--dnsmasq-config", "drop-in")
    assert r.exit_code == 0, r.stderr
    assert main.read_text() == original
    assert not (loader_root / "etc/dnsmasq.conf.pxeprov-orig").exists()
    assert (loader_root / DROP_IN).is_file()


def test_concurrent_runs_are_serialized(loader_root: Path) -> None:
    machine = Machine(root=Root.of(loader_root), lock_timeout=0.3)
    options = InitOptions(network=NetworkRequest("lo", "127.0.0.1", "127.0.0.0/8"))
    with locked(Root.of(loader_root).path(LOCK_FILE), 1), pytest.raises(LockedError):
        init(machine, options)
    assert not (loader_root / DROP_IN).exists()
    assert init(machine, options).outcome is not None


def test_debug_shows_the_traceback(tmp_path: Path, cli: Cli) -> None:
    r = cli(tmp_path, "--debug", "init", "--interface", "nosuchif0")
    assert r.exit_code != 0 and r.exception is not None
    assert type(r.exception).__name__ == "InputError"


def test_served_tree_is_readable_whatever_the_umask(loader_root: Path, cli: Cli) -> None:
    """A hardened umask (077) must not lock dnsmasq's unprivileged user out of the TFTP root."""
    old = os.umask(0o077)
    try:
        assert cli(loader_root, "init", *NET).exit_code == 0
    finally:
        os.umask(old)
    tftp = loader_root / TFTP
    for path in [tftp, *tftp.rglob("*")]:
        wanted = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & 0o777 == wanted, path
    for parent in tftp.relative_to(loader_root).parents:
        if str(parent) != ".":
            assert (loader_root / parent).stat().st_mode & 0o005 == 0o005, parent


def test_a_file_this_account_may_not_read_is_one_line_not_an_internal_error(
    loader_root: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without root, files pxeprov reads are not all readable (dnsmasq's log is root's, 0600):
    the command says that it needs root in one line, exit 7, where it said "internal error:
    PermissionError" (`status` as nobody, by hand). The error is raised here as the kernel
    raises it for such an account: this suite runs as root, which reads every file."""
    assert cli(loader_root, "init", *NET).exit_code == 0
    state = loader_root / "etc/pxeprov/pxeprov.toml"

    def denied(*_args: object, **_kw: object) -> object:
        raise PermissionError(13, "Permission denied", str(state))

    monkeypatch.setattr("pxeprov.pipeline.load_state", denied)
    said = {
        1000: f"error: permission denied: {state} (this command needs root: run it with sudo)",
        0: f"error: permission denied: {state} (Permission denied)",
    }
    for uid, line in said.items():
        monkeypatch.setattr(os, "geteuid", lambda uid=uid: uid)
        for args in (["status"], ["plans"], ["list"]):
            r = cli(loader_root, *args)
            assert r.exit_code == 7, (args, r.stderr)
            assert r.stderr.splitlines() == [line], (args, r.stderr)
