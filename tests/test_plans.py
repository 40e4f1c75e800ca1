"""Per-machine plans: every loader's rendering of every plan kind, validation, dry runs, the
Clonezilla job's parameters, and a one-shot plan firing. (tests/e2e/test_plans_boot.py boots
them; tests/e2e/test_restore.py runs a real unattended restore.)"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pxeprov import menucheck
from pxeprov.commands import plans as plans_command
from pxeprov.commands import watch as watch_command
from pxeprov.paths import Root
from pxeprov.pipeline import Machine, load_state

from .conftest import NET, Cli, add_signed_uefi_loaders, clonezilla_http_root, snapshot
from .grubwords import words
from .isos import clonezilla_files, debian_live_files, make_iso

TFTP = "var/lib/tftpboot"
MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:12:34:57"
REPO = "smb://10.1.1.1/images/lab"
STATE = "etc/pxeprov/pxeprov.toml"


@pytest.fixture
def server(loader_root: Path, cli: Cli, tmp_path: Path) -> Path:
    """TFTP (pxelinux for BIOS) and the GRUB chain, a Clonezilla and a Debian live image."""
    add_signed_uefi_loaders(loader_root)
    r = cli(loader_root, "init", *NET, "--no-http", "--uefi-loader", "grub", "--menu-timeout", "30")
    assert r.exit_code == 0, r.stderr
    for name, files in (("cz", clonezilla_files()), ("live", debian_live_files())):
        iso = make_iso(tmp_path / f"{name}.iso", files)
        r = cli(loader_root, "add-image", str(iso), "--name", name, "--append", "console=ttyS0")
        assert r.exit_code == 0, r.stderr
    return loader_root


@pytest.fixture
def http_server(loader_root: Path, cli: Cli, tmp_path: Path) -> Path:
    """HTTP: iPXE for BIOS and UEFI."""
    return clonezilla_http_root(loader_root, cli, tmp_path)


def pxelinux_plan(root: Path, mac: str = MAC) -> menucheck.PxelinuxMenu:
    path = root / TFTP / "pxelinux.cfg" / f"01-{mac.replace(':', '-')}"
    return menucheck.parse_pxelinux(path.read_text())


def grub_plan(root: Path, mac: str) -> list[list[str]]:
    """The lines of grub.cfg's block for `mac`, as GRUB splits them into words."""
    text = (root / TFTP / "grub/grub.cfg").read_text()
    m = re.search(rf'^if \[ "\$net_default_mac" = \'{mac}\' \]; then\n(.*?)^fi$', text,
                  re.MULTILINE | re.DOTALL)  # fmt: skip
    assert m is not None, text
    return [[w.text for w in words(line)] for line in m.group(1).splitlines() if line.strip()]


def test_entry_plan_on_every_loader(server: Path, cli: Cli) -> None:
    r = cli(server, "assign", MAC, "--entry", "live")
    assert r.exit_code == 0, r.stderr
    assert f"{MAC}: Boot live" in r.stdout
    pxe = pxelinux_plan(server)
    assert pxe.default == "plan" and pxe.ui == "" and pxe.timeout is None
    label = pxe.labels[0]
    assert label.kernel == "images/live/vmlinuz" and "console=ttyS0" in label.append
    block = grub_plan(server, MAC)
    assert ["set", "timeout=0"] in block and ["set", "default=plan-525400123456"] in block
    linux = next(w for w in block if w[0] == "linux")
    assert linux[1] == "/images/live/vmlinuz" and "console=ttyS0" in linux
    subprocess.run(["grub-script-check", str(server / TFTP / "grub/grub.cfg")], check=True)
    # the menu itself is unchanged for everyone else
    default = menucheck.parse_pxelinux((server / TFTP / "pxelinux.cfg/default").read_text())
    assert default.timeout == 300 and not any(x.name.startswith("plan") for x in default.labels)


def test_local_plan_and_back_to_the_menu(server: Path, cli: Cli) -> None:
    assert cli(server, "assign", MAC, OTHER, "--local", "--group", "room1").exit_code == 0
    for dashes in ("52-54-00-12-34-56", "52-54-00-12-34-57"):
        pxe = menucheck.parse_pxelinux((server / TFTP / f"pxelinux.cfg/01-{dashes}").read_text())
        assert pxe.labels[0].localboot
    assert ["set", "default=local"] in grub_plan(server, OTHER)
    r = cli(server, "plans")
    assert f"{MAC} [room1]  Boot from local disk" in r.stdout
    r = cli(server, "unassign", "--group", "room1")
    assert r.exit_code == 0, r.stderr
    assert not (server / TFTP / "pxelinux.cfg/01-52-54-00-12-34-56").exists()
    assert "net_default_mac" not in (server / TFTP / "grub/grub.cfg").read_text()
    assert "No machine has a plan" in cli(server, "plans").stdout


def test_restore_plan_runs_clonezilla_unattended(server: Path, cli: Cli) -> None:
    r = cli(server, "assign", MAC, "--restore", "win11-lab", "--disk", "nvme0n1", "--repo", REPO,
            "--yes")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "nvme0n1 of 52:54:00:12:34:56 is overwritten with win11-lab" in r.stdout
    pxe = pxelinux_plan(server)
    args = pxe.labels[0].append
    assert 'ocs_live_run="ocs-sr -batch -nogui -e1 auto -e2 -j2 -scr -icds -k0 -irhr -ius -iui ' \
           '-p true restoredisk win11-lab nvme0n1"' in args  # fmt: skip
    assert "ocs_live_batch=yes ocs_final_action=reboot" in args
    # a share without an account: a read-only guest mount, not a URL mount.cifs would prompt for
    assert (
        'ocs_prerun="mount -t cifs -o guest,ro,vers=3.0 //10.1.1.1/images/lab /home/partimag"'
        in args
    )
    assert 'ocs_live_run="ocs-live-general"' not in args and "console=ttyS0" in args
    linux = next(w for w in grub_plan(server, MAC) if w[0] == "linux")
    assert 'ocs_live_run="ocs-sr' in linux and 'nvme0n1"' in linux  # GRUB re-quotes it
    subprocess.run(["grub-script-check", str(server / TFTP / "grub/grub.cfg")], check=True)
    plan = json.loads(cli(server, "plans", "--json").stdout)[0]
    assert (plan["action"], plan["image"], plan["then"], plan["now"]) == (
        "restore",
        "win11-lab",
        "local",
        "Restore win11-lab to nvme0n1 (then boot from disk)",
    )


def test_save_plan_with_an_account_uses_ocs_repository(server: Path, cli: Cli) -> None:
    r = cli(server, "assign", MAC, "--save", "golden", "--repo",
            "smb3://ocs:s3cret@10.1.1.1/images-rw/", "--then", "poweroff")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    args = pxelinux_plan(server).labels[0].append  # fmt: skip
    assert 'ocs_repository="smb3://ocs:s3cret@10.1.1.1/images-rw/"' in args
    assert "savedisk golden sda" in args and "-noabo" in args
    assert "ocs_final_action=poweroff" in args
    # the password is in a file any client can fetch: said, with what to do about it
    assert "warning: the password of ocs@10.1.1.1 is in the boot line" in r.stderr
    assert "write access to the image share only" in r.stderr
    r = cli(server, "assign", OTHER, "--restore", "golden", "--repo", REPO, "--yes")
    assert r.exit_code == 0 and "password" not in r.stderr


def test_list_shows_the_plans(server: Path, cli: Cli) -> None:
    assert cli(server, "assign", MAC, "--entry", "live", "--once").exit_code == 0
    assert cli(server, "assign", OTHER, "--local").exit_code == 0
    out = cli(server, "list").stdout
    assert f"Plans:        {MAC}  Boot live (one boot); boots now: Boot live\n" in out
    assert f"{OTHER}  Boot from local disk; boots now: its local disk" in out
    plans = json.loads(cli(server, "list", "--json").stdout)["plans"]
    assert [(p["mac"], p["one_shot"], p["fired"]) for p in plans] == [
        (MAC, True, ""),
        (OTHER, False, ""),
    ]


def test_ipxe_sends_the_machine_to_its_plan(http_server: Path, cli: Cli) -> None:
    assert (
        cli(http_server, "assign", MAC, "--restore", "img", "--repo", REPO, "--yes").exit_code == 0
    )
    assert cli(http_server, "assign", OTHER, "--local").exit_code == 0
    text = (http_server / TFTP / "boot.ipxe").read_text()
    menu = menucheck.parse_ipxe(text)
    assert menu.plans == [MAC, OTHER]
    assert f"iseq ${{mac}} {MAC} && goto plan-525400123456 ||" in text
    plan = menu.entries["plan-525400123456"]
    assert plan.kernel == "http://127.0.0.1:8080/images/cz/vmlinuz"
    assert "ocs_final_action=reboot" in plan.args
    assert re.search(r"^:plan-525400123457\ngoto local$", text, re.MULTILINE)
    assert not (http_server / TFTP / "pxelinux.cfg").exists()  # iPXE for BIOS too


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["52:54:00:zz:34:56", "--local"], "is not a MAC address"),
        (["01:00:5e:00:00:01", "--local"], "multicast"),
        ([MAC, "--entry", "nope"], "--entry 'nope' is not an entry of the menus"),
        ([MAC, "--restore", "img", "--repo", REPO], "overwrites sda of 52:54:00:12:34:56"),
        ([MAC, "--restore", "img", "--yes"], "no image repository"),
        ([MAC, "--restore", "im g", "--repo", REPO, "--yes"], "plans.image"),
        ([MAC, "--save", "img", "--repo", "smb://u:p,w@h/s/"], "--repo"),
        ([MAC, "--save", "img", "--repo", REPO, "--disk", "sda1"], "plans.disk"),
        ([MAC, "--save", "img", "--repo", REPO, "--disk", "$(reboot)"], "plans.disk"),
        ([MAC, "--local", "--menu"], "give one of"),
        ([MAC, MAC.upper(), "--local"], "given twice"),
        ([MAC, "--restore", "img", "--repo", REPO, "--yes", "--then", "later"], "--then 'later'"),
        ([MAC, "--entry", "live", "--then", "poweroff"], "--then are for --restore and --save"),
        ([MAC, "--local", "--disk", "sdb"], "--disk and --then are for --restore and --save"),
    ],
)  # fmt: skip
def test_bad_plans_are_refused_and_change_nothing(
    server: Path, cli: Cli, args: list[str], words: str
) -> None:
    before = snapshot(server)
    r = cli(server, "assign", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert words in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")
    after = snapshot(server)
    before.pop("var/lib/pxeprov/lock", None), after.pop("var/lib/pxeprov/lock", None)
    assert after == before


def test_dry_run_shows_the_full_kernel_line(server: Path, cli: Cli) -> None:
    before = snapshot(server)
    r = cli(server, "assign", MAC, "--restore", "img", "--repo", REPO, "--dry-run")
    assert r.exit_code == 0, r.stderr  # a dry run needs no --yes: it erases nothing
    assert "+++ /var/lib/tftpboot/pxelinux.cfg/01-52-54-00-12-34-56" in r.stdout
    assert re.search(r'^\+  APPEND .*ocs_live_run="ocs-sr .* restoredisk img sda"', r.stdout,
                     re.MULTILINE), r.stdout  # fmt: skip
    after = snapshot(server)
    before.pop("var/lib/pxeprov/lock", None), after.pop("var/lib/pxeprov/lock", None)
    assert after == before


def test_a_plan_keeps_the_image_it_boots(server: Path, cli: Cli) -> None:
    assert cli(server, "assign", MAC, "--entry", "live").exit_code == 0
    r = cli(server, "remove-image", "live")
    assert r.exit_code == 2 and "the plan of 52:54:00:12:34:56 names the image 'live'" in r.stderr


def test_a_fired_one_shot_plan_boots_the_disk_or_the_menu(server: Path, cli: Cli) -> None:
    assert cli(server, "assign", MAC, "--restore", "img", "--repo", REPO, "--yes").exit_code == 0
    assert cli(server, "assign", OTHER, "--entry", "live", "--once").exit_code == 0
    machine = Machine(root=Root.of(server))
    tokens = {p.mac: p.token for p in load_state(Root.of(server)).plans}
    assert all(len(t) == 16 for t in tokens.values()) and tokens[MAC] != tokens[OTHER]
    # another plan's token (an older one, another machine's) fires nothing
    assert plans_command.fire(machine, MAC, tokens[OTHER]) == []
    assert plans_command.fire(machine, MAC, "0" * 16) == []
    fired = plans_command.fire(machine, MAC, tokens[MAC]) + plans_command.fire(
        machine, OTHER, tokens[OTHER]
    )
    assert {p.mac for p in fired} == {MAC, OTHER}
    state = load_state(Root.of(server))
    assert {p.mac: p.now for p in state.plans} == {MAC: "local", OTHER: "menu"}
    pxe = pxelinux_plan(server)
    assert pxe.labels[0].localboot  # the restore is done: the disk from now on
    assert not (server / TFTP / "pxelinux.cfg/01-52-54-00-12-34-57").exists()  # the menu
    out = cli(server, "plans").stdout
    assert "boots now: its local disk" in out and "fired 20" in out
    assert "its job runs: no report yet" in out
    assert plans_command.fire(machine, MAC, tokens[MAC]) == []  # once only
    # the markers are gone with the plans they named
    assert not list((server / TFTP / "plans").glob("*"))


def _boot_lines(mac: str, at: float, marker: str = "") -> tuple[str, str]:
    """dnsmasq's and nginx's lines of one iPXE boot of `mac` at `at` (a UEFI client); with
    `marker`, the boot fetches that plan's marker before its kernel."""

    def t(offset: float) -> str:
        return time.strftime("%b %e %H:%M:%S", time.localtime(at + offset))

    ip, root = "127.0.0.9", "/var/lib/tftpboot"
    dnsmasq = (
        f"{t(0)} dnsmasq-dhcp[7]: 1 vendor class: PXEClient:Arch:00007:UNDI:003000\n"
        f"{t(0)} dnsmasq-dhcp[7]: 1 PXE(lo) {mac} proxy\n"
        f"{t(1)} dnsmasq-tftp[7]: sent {root}/snponly.efi to {ip}\n"
        f"{t(2)} dnsmasq-tftp[7]: sent {root}/boot.ipxe to {ip}\n"
    )
    if marker:
        dnsmasq += f"{t(2)} dnsmasq-tftp[7]: sent {root}/{marker} to {ip}\n"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(at + 3))
    nginx = f'{ip} - - [{stamp}] "GET /images/cz/vmlinuz HTTP/1.1" 200 5 "-" "iPXE/1.0"\n'
    return dnsmasq, nginx


def test_the_watcher_fires_a_plan_assigned_while_it_runs(
    http_server: Path, cli: Cli, tmp_path: Path
) -> None:
    """pxeprov-watch runs for days: a plan assigned after it started fires when its machine
    fetches the plan's own marker, and only then: the machine's boot before the plan, and a boot
    that fetches the kernel without the marker, fire nothing."""
    dnsmasq_log, nginx_log = tmp_path / "dnsmasq.log", tmp_path / "access.log"
    dnsmasq_log.write_text("")
    nginx_log.write_text("")
    machine = Machine(root=Root.of(http_server))
    options = watch_command.WatchOptions(
        dnsmasq_log=dnsmasq_log, nginx_log=nginx_log, fire=True, report_port=None,
        reports_log=tmp_path / "reports.log", watch_state=tmp_path / "watch.json",
    )  # fmt: skip
    said: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_command.watch, args=(machine, options, said.append, lambda: not stop.is_set())
    )
    thread.start()

    def wait_for(words: str) -> None:
        deadline = time.monotonic() + 20
        while not any(words in line for line in said):
            assert thread.is_alive() and time.monotonic() < deadline, said
            time.sleep(0.1)

    def boot(at: float, marker: str = "") -> None:
        d, n = _boot_lines(MAC, at, marker)
        with dnsmasq_log.open("a") as f:
            f.write(d)
        with nginx_log.open("a") as f:
            f.write(n)

    try:
        wait_for("Watching ")
        boot(time.time() - 60)  # before the plan
        wait_for("kernel")
        assert cli(http_server, "assign", MAC, "--entry", "cz", "--once").exit_code == 0
        plan = load_state(Root.of(http_server)).plans[0]
        assert plan.marker and (http_server / TFTP / plan.marker).is_file()
        assert (
            f"imgfetch --name pxeprov-plan {plan.marker} || goto failed"
            in (http_server / TFTP / "boot.ipxe").read_text()
        )
        boot(time.time())  # the kernel, without the plan's marker: not evidence
        time.sleep(1.5)
        assert not load_state(Root.of(http_server)).plans[0].fired
        boot(time.time(), plan.marker)
        wait_for("plan fired")
    finally:
        stop.set()
        thread.join(timeout=10)
    plan = load_state(Root.of(http_server)).plans[0]
    assert plan.fired and plan.now == "menu"
    assert "plan-525400123456" not in (http_server / TFTP / "boot.ipxe").read_text()


def test_repo_init_shares_a_directory_with_samba(server: Path, cli: Cli) -> None:
    smb = server / "etc/samba/smb.conf"
    smb.parent.mkdir(parents=True)
    smb.write_text("[global]\n   workgroup = OFFICE\n\n[homes]\n   browseable = no\n")
    r = cli(server, "repo", "init")
    assert r.exit_code == 0, r.stderr
    assert "skipped: the Samba account pxeprov-imaging (--root is not /)" in r.stderr
    assert "Restores read smb://127.0.0.1/pxeprov-images/" in r.stdout
    shares = (server / "etc/samba/pxeprov.conf").read_text()
    assert "[pxeprov-images]\n  comment = pxeprov disk images (read-only)\n" in shares
    assert shares.count("path = /srv/pxeprov/images\n") == 2
    assert "valid users = pxeprov-imaging" in shares
    done = subprocess.run(["testparm", "-s", str(server / "etc/samba/pxeprov.conf")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert "Loaded services file OK" in done.stderr, done.stderr
    text = smb.read_text()
    assert text.startswith("[global]\n   workgroup = OFFICE\n") and "[homes]" in text
    assert text.count("include = /etc/samba/pxeprov.conf") == 1
    assert (server / "srv/pxeprov/images/README.txt").is_file()
    assert load_state(Root.of(server)).repo == "smb://127.0.0.1/pxeprov-images/"
    again = cli(server, "repo", "init")
    assert again.exit_code == 0 and smb.read_text() == text
    assert "updated" not in again.stdout and "created" not in again.stdout
    # plans now restore from it, as guests: no password in any boot line
    assert cli(server, "assign", MAC, "--restore", "img", "--yes").exit_code == 0
    args = pxelinux_plan(server).labels[0].append
    assert "//127.0.0.1/pxeprov-images /home/partimag" in args and "@" not in args


def test_a_save_to_this_box_writes_through_its_write_share(server: Path, cli: Cli) -> None:
    """`assign --save` with this box's repository (`repo init`): the write share, with a
    password of its own in the boot line (no fixed one); --repo naming that share is refused."""
    assert cli(server, "repo", "init").exit_code == 0
    r = cli(server, "assign", MAC, "--save", "golden", "--disk", "vda")
    assert r.exit_code == 0, r.stderr
    assert "takes this save's password" in r.stderr
    args = pxelinux_plan(server).labels[0].append
    m = re.search(r'ocs_repository="smb://pxeprov-imaging:([^@"]+)@127\.0\.0\.1/pxeprov-images-rw/"',
                  args)  # fmt: skip
    assert m is not None, args
    (plan,) = load_state(Root.of(server)).plans
    assert plan.repo == f"smb://pxeprov-imaging:{m[1]}@127.0.0.1/pxeprov-images-rw/"
    assert not (server / "etc/pxeprov/repo-password").exists()
    for url in ("smb://127.0.0.1/pxeprov-images-rw/",
                f"smb://pxeprov-imaging:{m[1]}@127.0.0.1/pxeprov-images-rw/"):  # fmt: skip
        r = cli(server, "assign", OTHER, "--save", "x", "--repo", url)
        assert r.exit_code == 2 and "names this box's write share" in r.stderr, r.stderr
    # a restore still reads the guest share: no password
    assert cli(server, "assign", OTHER, "--restore", "golden", "--yes").exit_code == 0
    assert "@" not in pxelinux_plan(server, OTHER).labels[0].append
