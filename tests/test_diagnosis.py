"""The pieces `doctor`, `watch` and `status` are made of, each against the real thing: the DHCP
codec against scapy's decoding, the firewall reader against rulesets nft itself builds in a
private network namespace, the log readers against lines dnsmasq and nginx wrote, the socket
table against sockets this test opens. (tests/e2e/test_doctor.py runs the commands on a lab.)
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from pxeprov import boot, bootlog, dhcpprobe, firewall, ports, system
from pxeprov.commands import doctor
from pxeprov.commands.watch import _Log, _marker_action, normal_mac
from pxeprov.errors import InputError
from pxeprov.paths import Root
from pxeprov.pipeline import Machine
from pxeprov.state import loads

from .conftest import NET, Cli

MAC = bytes.fromhex("525400123456")
GUID = bytes(range(16))


# ---------------------------------------------------------------- the DHCP codec


def test_discover_decodes_as_scapy_reads_it() -> None:
    raw = dhcpprobe.build_discover(MAC, 0x12345678, 7, GUID, b"iPXE")
    packet = BOOTP(raw)
    assert (packet.op, packet.xid, packet.flags) == (1, 0x12345678, 0x8000)  # broadcast flag
    assert packet.chaddr[:6] == MAC
    options = {o[0]: o[1:] for o in packet[DHCP].options if isinstance(o, tuple)}
    assert options["message-type"] == (1,)  # DISCOVER
    assert options["vendor_class_id"] == (b"PXEClient:Arch:00007:UNDI:002001",)
    assert options["pxe_client_architecture"] == (b"\x00\x07",)
    assert options["pxe_client_machine_identifier"] == (b"\x00" + GUID,)
    assert options["user_class"] == (b"iPXE",)
    assert {66, 67} <= set(options["param_req_list"][0])


def _offer(**fields: object) -> bytes:
    options = fields.pop("options")
    return bytes(BOOTP(op=2, xid=0xABCDEF01, chaddr=MAC + bytes(10), **fields)
                 / DHCP(options=[*options, "end"]))  # type: ignore[list-item]  # fmt: skip


def test_an_ordinary_offer_with_pxe_settings_as_scapy_builds_it() -> None:
    raw = _offer(yiaddr="10.0.0.50", siaddr="10.0.0.1", file=b"wds\\boot.efi",
                 options=[("message-type", "offer"), ("server_id", "10.0.0.1"),
                          ("vendor_class_id", b"PXEClient"), ("tftp_server_name", b"10.0.0.1\0"),
                          ("boot-file-name", b"boot\\x64\\wdsmgfw.efi\0")])  # fmt: skip
    reply = dhcpprobe.parse_reply(raw, "10.0.0.1")
    assert reply is not None
    assert (reply.message, reply.xid, reply.yiaddr, reply.server_id) == (
        "OFFER", 0xABCDEF01, "10.0.0.50", "10.0.0.1")  # fmt: skip
    assert not reply.is_proxy  # an address is offered: not a proxy
    assert reply.pxe_settings() == [
        "option 60 (PXEClient)", "option 66 (10.0.0.1)", "option 67 (boot\\x64\\wdsmgfw.efi)",
    ]  # fmt: skip


def test_a_bootp_file_name_alone_is_found() -> None:
    raw = _offer(yiaddr="10.0.0.51", file=b"undionly.kpxe",
                 options=[("message-type", "offer"), ("server_id", "10.0.0.1")])  # fmt: skip
    reply = dhcpprobe.parse_reply(raw, "10.0.0.1")
    assert reply is not None and reply.pxe_settings() == ["a BOOTP file name (undionly.kpxe)"]


def test_a_proxy_offer_and_its_menu() -> None:
    menu = struct.pack("!HB", 0x8000, 12) + b"pxeprov BIOS"
    pxe = bytes([6, 1, 3, 9, len(menu)]) + menu + bytes([10, 8, 0]) + b"pxeprov" + b"\xff"
    raw = _offer(options=[("message-type", "offer"), ("server_id", "10.0.0.5"),
                          ("vendor_class_id", b"PXEClient"), ("vendor_specific", pxe)])  # fmt: skip
    reply = dhcpprobe.parse_reply(raw, "10.0.0.5")
    assert reply is not None and reply.is_proxy
    assert reply.menu == ["pxeprov BIOS"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x02" * 240, _offer(options=[("message-type", "offer")])[:-30] + b"\x35\xff\x01",
     bytes(BOOTP(op=1) / DHCP(options=[("message-type", "discover"), "end"]))],
    ids=["empty", "no-cookie", "truncated-option", "a-request"],
)  # fmt: skip
def test_anything_else_is_no_reply(raw: bytes) -> None:
    reply = dhcpprobe.parse_reply(raw, "10.0.0.9")
    assert reply is None or reply.message in ("OFFER", "BOOTP")  # never an exception


def test_control_characters_in_a_reply_are_escaped() -> None:
    raw = _offer(file=b"evil\x1b[2Jname", options=[("message-type", "offer")])
    reply = dhcpprobe.parse_reply(raw, "10.0.0.9")
    assert reply is not None and reply.file == "evil\\x1b[2Jname"


# ---------------------------------------------------------------- the firewall


@pytest.fixture
def netns() -> str:
    if os.geteuid() != 0:
        pytest.fail("these tests create a network namespace: run the suite as root")
    name = f"pxeprov-fw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name  # type: ignore[misc]
    subprocess.run(["ip", "netns", "del", name], check=True)


PORTS = [firewall.Port("udp", 67, "DHCP"), firewall.Port("udp", 69, "TFTP"),
         firewall.Port("udp", 4011, "PXE"), firewall.Port("tcp", 8069, "HTTP")]  # fmt: skip


def in_netns(netns: str) -> firewall.Runner:
    """The firewall module's runner, inside the test's namespace: a command's output, or None."""

    def runner(argv: Sequence[str]) -> str | None:
        done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                              text=True, check=False)  # fmt: skip
        return done.stdout if done.returncode == 0 else None

    return runner


def _verdicts(netns: str, rules: str) -> dict[int, tuple[str, str]]:
    nft = ["ip", "netns", "exec", netns, "nft"]
    subprocess.run([*nft, "-f", "-"], input=rules, text=True, check=True)

    runner = in_netns(netns)
    found = firewall.check(PORTS, "eth0", runner)
    return {f.port.port: (f.verdict, f.where) for f in found}


def _table(family: str, *rules: str, policy: str = "accept", chains: str = "") -> str:
    body = "\n".join(f"    {r}" for r in rules)
    hook = f"    type filter hook input priority 0; policy {policy};"
    return f"table {family} filter {{\n{chains}  chain input {{\n{hook}\n{body}\n  }}\n}}\n"


RULESETS = {
    "empty": ("", {67: "accept", 69: "accept", 4011: "accept", 8069: "accept"}),
    "drop-69": (_table("inet", "udp dport 69 drop"),
                {67: "accept", 69: "drop", 4011: "accept", 8069: "accept"}),
    "policy-drop-with-jump": (
        _table("inet", "ct state established,related accept", 'iifname "eth0" jump pxe',
               policy="drop",
               chains="  chain pxe {\n    udp dport { 67, 4011 } accept\n"
                      "    tcp dport 8069 accept\n  }\n"),
        {67: "accept", 69: "drop", 4011: "accept", 8069: "accept"},
    ),
    "range-reject": (_table("ip", "udp dport 60-70 reject"),
                     {67: "drop", 69: "drop", 4011: "accept", 8069: "accept"}),
    "other-interface": (_table("inet", 'iifname "wlan0" udp dport 69 drop'), {69: "accept"}),
    "by-address": (_table("inet", "ip saddr 192.0.2.0/24 udp dport 69 drop"),
                   {69: "maybe-drop"}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RULESETS))
def test_firewall_verdicts_on_rulesets_nft_built(netns: str, name: str) -> None:
    rules, expected = RULESETS[name]
    verdicts = _verdicts(netns, rules)
    assert {p: verdicts[p][0] for p in expected} == expected, verdicts


DATA = Path(__file__).with_name("data")
# A box whose admin opened TFTP and HTTP with ufw (`ufw allow in on eth0 to any port 69 proto
# udp`, `ufw allow 8069/tcp`): the ruleset ufw 0.36 made, as `iptables-save` printed it.
UFW = (DATA / "ufw-allow-69-8069.rules").read_text()
LEGACY_OPEN = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:pxe - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -j DROP
-A INPUT -i eth0 -j pxe
-A pxe -p udp -m multiport --dports 67,69 -j ACCEPT
-A pxe -p tcp -m tcp --dport 8069 -m comment --comment "pxeprov's web server" -j ACCEPT
-A pxe -j RETURN
COMMIT
"""


@pytest.mark.parametrize("tool", ["iptables-nft-restore", "iptables-legacy-restore"])
@pytest.mark.parametrize(
    ("name", "rules", "expected"),
    [
        ("ufw", UFW, {67: ("drop", "ufw"), 69: ("accept", ""), 4011: ("drop", "ufw"),
                      8069: ("accept", "")}),
        # an address rule before the accepts: pxeprov cannot tell whether clients are in it
        ("policy-drop-with-accepts", LEGACY_OPEN,
         {67: ("maybe-drop", "iptables"), 69: ("maybe-drop", "iptables"),
          4011: ("maybe-drop", "iptables"), 8069: ("maybe-drop", "iptables")}),
        ("accepts", LEGACY_OPEN.replace("-A INPUT -s 192.0.2.0/24 -j DROP\n", ""),
         {67: ("accept", ""), 69: ("accept", ""), 4011: ("drop", "iptables"),
          8069: ("accept", "")}),
    ],
)  # fmt: skip
def test_firewall_verdicts_on_iptables_rulesets(
    netns: str, tool: str, name: str, rules: str, expected: dict[int, tuple[str, str]]
) -> None:
    """iptables rules, ufw's among them, loaded for real (nft-backed and legacy), read from
    what iptables-save prints: accepts after a DROP policy count, ufw's chains are followed, and
    the fix is the command of the firewall that drops."""
    subprocess.run(["ip", "netns", "exec", netns, tool], input=rules, text=True, check=True)

    runner = in_netns(netns)
    found = {f.port.port: f for f in firewall.check(PORTS, "eth0", runner)}
    legacy = tool == "iptables-legacy-restore"
    for port, (verdict, backend) in expected.items():
        f = found[port]
        if backend == "iptables" and legacy:
            backend = "iptables-legacy"
        assert (f.verdict, f.backend if verdict != "accept" else "") == (verdict, backend), f
    assert firewall.tftp_replies_pass(runner)[0]  # all accept them
    tftp = firewall.open_commands([found[4011]], "eth0")
    assert tftp == (["ufw allow in on eth0 to any port 4011 proto udp"] if name == "ufw"
                    else [f"{'iptables-legacy' if legacy else 'iptables'} -I INPUT -i eth0 -p udp "
                          "--dport 4011 -j ACCEPT"])  # fmt: skip


def test_tftp_replies_need_established_under_a_drop_policy(netns: str) -> None:
    rules = _table("inet", "udp dport 69 accept", policy="drop")
    nft = ["ip", "netns", "exec", netns, "nft"]
    subprocess.run([*nft, "-f", "-"], input=rules, text=True, check=True)

    runner = in_netns(netns)
    ok, why = firewall.tftp_replies_pass(runner)
    assert not ok and "accepts no established" in why
    subprocess.run([*nft, "insert", "rule", "inet", "filter", "input", "ct", "state",
                    "established,related", "accept"], check=True)  # fmt: skip
    assert firewall.tftp_replies_pass(runner)[0]


def test_open_commands_are_those_of_the_firewall_that_drops() -> None:
    tftp, http = PORTS[1], PORTS[3]
    findings = [
        firewall.Finding(tftp, "drop", "-", "nft", ("ip", "filter", "INPUT")),
        firewall.Finding(http, "drop", "-", "ufw"),
        firewall.Finding(tftp, "drop", "-", "iptables-legacy"),
        firewall.Finding(http, "maybe-drop", "-", "iptables"),
    ]
    assert firewall.open_commands(findings, "eth0") == [
        'nft insert rule ip filter INPUT iifname "eth0" udp dport 69 accept',
        "ufw allow in on eth0 to any port 8069 proto tcp",
        "iptables-legacy -I INPUT -i eth0 -p udp --dport 69 -j ACCEPT",
        "iptables -I INPUT -i eth0 -p tcp --dport 8069 -j ACCEPT",
    ]


# ---------------------------------------------------------------- sockets


def test_udp_sockets_and_their_owner() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        found = ports.listeners(port, proto="udp")
        assert [(str(x.address), x.proto) for x in found] == [("127.0.0.1", "udp")]
        assert (os.getpid(), "python") in found[0].programs or found[0].names
    assert ports.listeners(port, proto="udp") == []


def test_the_hint_for_a_foreign_program_on_a_port_is_true_on_this_box() -> None:
    """doctor's fix for another program on UDP 67/69/4011: its systemd service where it runs in
    one (its cgroup), else the program by name and pid (this box has no systemd: no
    `systemctl disable --now python3`), else how to find it (no programs could be read)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        (listener,) = ports.listeners(port, proto="udp")
        hint = doctor.stop_hint(listener, 67)
    service = system.service_of(os.getpid())
    if service is None:
        assert f"pid {os.getpid()}" in hint and "systemctl" not in hint, hint
    else:  # the suite itself run inside a service
        assert hint == f"stop it for good: systemctl disable --now {service}"
    unread = ports.Listener(listener.address, 67, (), "udp")
    assert "ss -ulpn 'sport = :67'" in doctor.stop_hint(unread, 67)


def test_servers_in_sbin_are_found_with_a_path_that_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An account's PATH without root often lacks /usr/sbin, where dnsmasq and nginx are:
    doctor said they were not installed, and `dnsmasq --test` could not be run."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for program in ("dnsmasq", "nginx"):
        assert system.have(program), program
        assert system.which(program) == f"/usr/sbin/{program}"
    assert system.run(["dnsmasq", "--version"]).stdout.startswith("Dnsmasq version")
    assert not system.have("no-such-program-pxeprov")


def test_the_reason_of_a_failed_program_is_its_first_error_line() -> None:
    nginx = [
        'nginx: [alert] could not open error log file: open() "/var/log/nginx/error.log" '
        "failed (13: Permission denied)",
        "2026/12/05 10:00:00 [emerg] 77#77: bind() to 10.0.0.9:80 failed (99: Cannot assign "
        "requested address)",
        "nginx: configuration file /etc/nginx/nginx.conf test failed",
    ]
    assert system.reason(nginx) == (
        "nginx: [emerg] bind() to 10.0.0.9:80 failed (99: Cannot assign requested address)"
    )
    apt = ["Reading package lists...", "Building dependency tree...", "E: Unable to locate "
           "package nginx-nope", "E: Couldn't find any package"]  # fmt: skip
    assert system.reason(apt) == "E: Unable to locate package nginx-nope"
    assert system.reason(["starting", "", "done: 3 of 4"]) == "done: 3 of 4"  # no error line
    assert system.reason([" ", ""]) == ""


def test_the_service_of_a_process_is_read_from_its_cgroup() -> None:
    unit = system.service_in_cgroup
    assert unit("0::/system.slice/isc-dhcp-server.service\n") == "isc-dhcp-server.service"
    assert unit("0::/system.slice/system-getty.slice/getty@tty1.service\n") == "getty@tty1.service"
    assert unit("0::/user.slice/user-1000.slice/session-2.scope\n") is None
    assert unit("0::/\n") is None
    assert unit("12:pids:/system.slice/dnsmasq.service\n1:name=systemd:/\n") == "dnsmasq.service"
    assert unit("0::/system.slice/evil service$(x).service\n") is None


# ---------------------------------------------------------------- the logs

STATE = loads(
    '[network]\ninterface = "eth0"\naddress = "10.77.0.2"\nsubnet = "10.77.0.0/24"\n'
    '[[images]]\nname = "cz"\nlabel = "Clonezilla"\nkind = "clonezilla"\n'
    'kernel = "images/cz/vmlinuz"\ninitrd = "images/cz/initrd.img"\n'
    'rootfs = "images/cz/filesystem.squashfs"\n'
)
ROOT = "/var/lib/tftpboot"
# What dnsmasq 2.90 wrote for a UEFI client (lab logs), then nginx for its payloads
DNSMASQ = f"""\
Nov 28 13:50:35 dnsmasq-dhcp[23414]: DHCP, proxy on subnet 10.77.0.0
Nov 28 13:50:38 dnsmasq-dhcp[23414]: 3085728430 vendor class: PXEClient:Arch:00007:UNDI:003000
Nov 28 13:50:38 dnsmasq-dhcp[23414]: 3085728430 PXE(vpxe1) 52:54:00:79:00:02 proxy
Nov 28 13:50:38 dnsmasq-dhcp[23414]: 3085728430 next server: 10.77.0.2
Nov 28 13:50:40 dnsmasq-tftp[23414]: error 8 User aborted the transfer received from 10.77.0.131
Nov 28 13:50:40 dnsmasq-tftp[23414]: sent {ROOT}/snponly.efi to 10.77.0.131
Nov 28 13:50:41 dnsmasq-tftp[23414]: sent {ROOT}/snponly.efi to 10.77.0.131
Nov 28 13:50:43 dnsmasq-tftp[23414]: sent {ROOT}/boot.ipxe to 10.77.0.131
Nov 28 13:50:44 dnsmasq-tftp[23414]: file {ROOT}/pxelinux.cfg/01-52-54-00-79-00-02 not found \
for 10.77.0.131
"""  # fmt: skip
NGINX = (
    '10.77.0.131 - - [28/Nov/2026:13:50:45 +0000] "GET /images/cz/vmlinuz HTTP/1.1" 200 8222656 '
    '"-" "iPXE/1.21.1"\n'
    '10.77.0.131 - - [28/Nov/2026:13:50:49 +0000] "GET /images/cz/initrd.img HTTP/1.1" 200 '
    '40810276 "-" "iPXE/1.21.1"\n'
)


def _track(dnsmasq: str, nginx: str, chain: boot.UefiChain = "ipxe") -> bootlog.Tracker:
    now = time.mktime(time.strptime("2026 Nov 28 14:00:00", "%Y %b %d %H:%M:%S"))
    events = bootlog.parse_dnsmasq(dnsmasq.splitlines(), ROOT, now)
    events += bootlog.parse_nginx(nginx.splitlines())
    tracker = bootlog.Tracker(bootlog.stage_of_files(STATE, boot.Decision(chain)))
    for event in sorted(events, key=lambda e: e.time):
        tracker.feed(event)
    return tracker


def test_stages_of_a_uefi_boot_from_the_logs() -> None:
    client = _track(DNSMASQ, NGINX).clients["52:54:00:79:00:02"]
    assert (client.firmware, client.ip, client.stage) == ("UEFI", "10.77.0.131", "initrd")
    assert list(client.reached) == ["offer", "loader", "menu", "kernel", "initrd"]
    assert client.how["kernel"] == "images/cz/vmlinuz (http)"
    assert client.problem == ""  # pxelinux's per-client config is looked for and may be missing
    assert bootlog.expected_next(client, has_rootfs=True) == "rootfs"
    assert "root filesystem was never asked for" in bootlog.stall_cause(client)
    line = bootlog.summary_line(client)
    assert line.startswith("52:54:00:79:00:02  UEFI  10.77.0.131 ")
    assert line.endswith("proxy offer 0 s -> boot loader 2 s -> menu 5 s -> kernel 7 s -> "
                         "initrd 11 s")  # fmt: skip


def test_a_missing_kernel_and_a_file_dnsmasq_cannot_read() -> None:
    dnsmasq = DNSMASQ + (
        f"Nov 28 13:50:45 dnsmasq-tftp[23414]: file {ROOT}/images/cz/vmlinuz not found for "
        "10.77.0.131\n"
    )
    client = _track(dnsmasq, "").clients["52:54:00:79:00:02"]
    assert client.stage == "menu"
    assert bootlog.stall_cause(client) == (
        "images/cz/vmlinuz is not on the server (asked for over TFTP)"
    )
    denied = DNSMASQ + (
        f"Nov 28 13:50:45 dnsmasq-tftp[23414]: cannot access {ROOT}/images/cz/vmlinuz: "
        "Permission denied\n"
    )
    client = _track(denied, "").clients["52:54:00:79:00:02"]
    assert client.problem == "images/cz/vmlinuz cannot be read by dnsmasq (Permission denied)"


def test_shim_without_grub_points_at_the_bootp_file_name() -> None:
    lines = DNSMASQ.replace("snponly.efi", "shimx64.efi").split("\n")
    client = _track("\n".join(lines[:7]), "", "grub").clients["52:54:00:79:00:02"]
    assert client.stage == "loader"
    assert "boot file name in the ordinary DHCP server's answer" in bootlog.stall_cause(client)


SECOND_BOOT = f"""\
Nov 28 13:55:10 dnsmasq-dhcp[23414]: 3085728431 PXE(vpxe1) 52:54:00:79:00:02 proxy
Nov 28 13:55:12 dnsmasq-tftp[23414]: sent {ROOT}/snponly.efi to 10.77.0.131
Nov 28 13:55:14 dnsmasq-tftp[23414]: sent {ROOT}/boot.ipxe to 10.77.0.131
"""  # fmt: skip
SECOND_KERNEL = (
    '10.77.0.131 - - [28/Nov/2026:13:55:16 +0000] "GET /images/cz/vmlinuz HTTP/1.1" 200 8222656 '
    '"-" "iPXE/1.21.1"\n'
)


def _at(clock: str) -> float:
    return time.mktime(time.strptime(f"2026 Nov 28 {clock}", "%Y %b %d %H:%M:%S"))


def test_a_machine_that_boots_again_starts_its_stages_afresh() -> None:
    """A proxy offer after the menu is a new boot (a restore's reboot, the next day's boot);
    the offers loaders ask for before their menu (iPXE after the firmware) are the same boot."""
    tracker = _track(DNSMASQ + SECOND_BOOT, NGINX)
    client = tracker.clients["52:54:00:79:00:02"]
    assert list(client.reached) == ["offer", "loader", "menu"]
    assert client.reached["offer"] == _at("13:55:10") and client.kernel == ""
    client = _track(DNSMASQ + SECOND_BOOT, NGINX + SECOND_KERNEL).clients["52:54:00:79:00:02"]
    assert client.reached["kernel"] == _at("13:55:16")


def test_only_a_plan_marker_is_evidence_that_a_plan_was_taken() -> None:
    """Boots in the logs (kernel and menu fetches, before or after a plan) fire nothing: only
    the fetch of a plan's own marker does, and it names the machine and the plan's token by
    itself, whatever address fetched it. Names that only look like one are nothing."""
    mac = "52:54:00:79:00:02"
    events = bootlog.parse_dnsmasq((DNSMASQ + SECOND_BOOT).splitlines(), ROOT, _at("14:00:00"))
    events += bootlog.parse_nginx((NGINX + SECOND_KERNEL).splitlines())
    assert any(e.path == "images/cz/vmlinuz" for e in events)
    assert [a for a in map(_marker_action, events) if a is not None] == []
    token = "0123456789abcdef"
    marker = f"plans/{mac.replace(':', '-')}-{token}"
    line = f"Nov 28 13:56:00 dnsmasq-tftp[1]: sent {ROOT}/{marker} to 10.0.0.99\n"
    (event,) = bootlog.parse_dnsmasq(line.splitlines(), ROOT, _at("14:00:00"))
    action = _marker_action(event)
    assert action is not None and (action.kind, action.mac, action.token) == ("fire", mac, token)
    for path in (f"{marker}x", f"plans/{mac}-{token}", f"images/{marker}", "plans/x-y"):
        odd = f"Nov 28 13:56:00 dnsmasq-tftp[1]: sent {ROOT}/{path} to 10.0.0.99\n"
        assert [_marker_action(e) for e in bootlog.parse_dnsmasq([odd], ROOT)] == [None]
    missing = f"Nov 28 13:56:00 dnsmasq-tftp[1]: file {ROOT}/{marker} not found for 10.0.0.9"
    assert [_marker_action(e) for e in bootlog.parse_dnsmasq([missing], ROOT)] == [None]


def test_hostile_log_text_is_only_data() -> None:
    line = (
        "Nov 28 13:50:38 dnsmasq-dhcp[1]: 1 PXE(eth0) 52:54:00:00:00:01 proxy\n"
        f"Nov 28 13:50:39 dnsmasq-tftp[1]: sent {ROOT}/\x1b[2J;rm -rf / to 10.0.0.9\n"
    )
    events = bootlog.parse_dnsmasq(line.splitlines(), ROOT)
    assert [e.kind for e in events] == ["offer"]  # a path with a space is no "sent" line of ours


def test_since_and_mac() -> None:
    now = 1_800_000_000.0
    assert bootlog.epoch("10m", now) == now - 600
    assert bootlog.epoch("2h", now) == now - 7200
    with pytest.raises(ValueError):
        bootlog.epoch("yesterday", now)
    assert normal_mac("52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"
    with pytest.raises(InputError):
        normal_mac("52:54:00")


def test_a_followed_log_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.log"
    path.write_text("one\n")
    log = _Log(path)
    log.start_at_end()
    assert log.read() == []
    with path.open("a") as f:
        f.write("two\nthr")
    assert log.read() == ["two"]  # the unfinished line waits
    with path.open("a") as f:
        f.write("ee\n")
    assert log.read() == ["three"]
    path.rename(tmp_path / "dnsmasq.log.1")  # logrotate without copytruncate
    path.write_text("four\n")
    assert log.read() == ["four"]
    path.write_text("")  # copytruncate
    with path.open("a") as f:
        f.write("five\n")
    assert log.read() == ["five"]


# ---------------------------------------------------------------- the commands' edges


def test_doctor_on_a_box_that_is_not_set_up(tmp_path: Path, cli: Cli) -> None:
    r = cli(tmp_path, "doctor", "--json", "--no-probe")
    assert r.exit_code == 2
    report = json.loads(r.stdout)
    expected = {"name": "state", "status": "fail", "message": "pxeprov is not set up here",
                "fix": "pxeprov init"}  # fmt: skip
    assert report["checks"] == [expected]


def test_watch_without_its_log_says_where(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "status")
    assert r.exit_code == 2
    assert "dnsmasq's log" in r.stderr and "pxeprov-dnsmasq.log does not exist" in r.stderr
    r = cli(loader_root, "status", "--since", "last tuesday")
    assert r.exit_code == 2 and "--since 'last tuesday'" in r.stderr


def test_doctor_s_own_probe_is_no_client_in_status(loader_root: Path, cli: Cli) -> None:
    """doctor's DHCP probe asks with the serving interface's own MAC (lo's here: all zeros):
    status showed it as a client that stalled after the proxy offer."""
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    own = Path("/sys/class/net/lo/address").read_text().strip()
    stamp = time.strftime("%b %e %H:%M:%S")
    log = loader_root / "var/log/pxeprov-dnsmasq.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(
        f"{stamp} dnsmasq-dhcp[7]: {xid} available DHCP subnet: 127.0.0.0/255.0.0.0\n"
        f"{stamp} dnsmasq-dhcp[7]: {xid} vendor class: PXEClient:Arch:00000:UNDI:002001\n"
        f"{stamp} dnsmasq-dhcp[7]: {xid} PXE(lo) {mac} proxy\n"
        for xid, mac in ((11, own), (12, "52:54:00:12:34:56"))
    ))  # fmt: skip
    r = cli(loader_root, "status")
    assert r.exit_code == 0, r.stderr
    assert "52:54:00:12:34:56" in r.stdout, r.stdout
    assert own not in r.stdout, r.stdout


def test_verify_refuses_what_it_cannot_do(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "verify", "--image", "nope")
    assert r.exit_code == 2 and "there is no image 'nope' (images: none)" in r.stderr
    r = cli(loader_root, "verify", "--firmware", "bios,arm")
    assert r.exit_code == 2 and "--firmware 'arm'" in r.stderr
    r = cli(loader_root, "verify", "--accel", "hvf")
    assert r.exit_code == 2 and "--accel 'hvf'" in r.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(loader_root: Path, cli: Cli) -> None:
    """`pxeprov render | head`: the reader is gone before pxeprov writes (`true` reads
    nothing), so its first write fails with EPIPE; it ends quietly, with no traceback."""
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         f"{sys.executable} -m pxeprov --root {loader_root} render | true"],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode not in (0,), "the pipe did not break: nothing was tested"
    assert "Traceback" not in done.stderr and "error:" not in done.stderr, done.stderr


def test_doctor_looks_at_every_file_an_image_serves(tmp_path: Path) -> None:
    """An installer's tree and its dot files are served too: a missing one is named."""
    state = loads(
        '[network]\ninterface = "eth0"\naddress = "10.77.0.2"\nsubnet = "10.77.0.0/24"\n'
        '[[images]]\nname = "rocky"\nkind = "fedora-installer"\nkernel = "images/rocky/vmlinuz"\n'
        'initrd = "images/rocky/initrd.img"\n'
        'files = ["images/rocky/.treeinfo", "images/rocky/images/"]\n'
    )
    tftp = tmp_path / "var/lib/tftpboot/images/rocky"
    (tftp / "images").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", ".treeinfo"):
        (tftp / name).write_bytes(b"x")
    machine = Machine(root=Root.of(tmp_path))

    def image_findings() -> list[str]:
        found = doctor.files.served(machine, state, boot.Decision())
        return [c.message for c in found if "of image" in c.message]

    assert image_findings() == []  # (the loaders and menus are not there: not looked at here)
    (tftp / ".treeinfo").unlink()
    (tftp / "images").rmdir()
    assert image_findings() == [
        "/var/lib/tftpboot/images/rocky/.treeinfo (file of image rocky) is missing",
        "/var/lib/tftpboot/images/rocky/images (tree of image rocky) is missing",
    ]


def test_doctor_stops_fetching_when_nothing_answers_tftp(
    netns: str, loader_root: Path, cli: Cli
) -> None:
    """In a namespace of its own (nothing serves TFTP there), doctor's first TFTP fetch waits
    for curl's timeout; the other files are not tried (each would wait as long), and doctor
    says so."""
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "pxeprov",
                           "--root", str(loader_root), "doctor", "--no-probe", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    checks = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "fetch.tftp"]
    assert [c["status"] for c in checks] == ["fail", "info"], checks
    assert checks[0]["message"] == "TFTP fetch of pxelinux.0 from 127.0.0.1: no answer (timeout)"
    assert checks[1]["message"].startswith("not tried, as nothing answers TFTP: ldlinux.c32, ")
    assert "boot.ipxe" in checks[1]["message"]


def test_doctor_checks_the_whole_configuration_that_starts_after_a_reboot(
    loader_root: Path, cli: Cli
) -> None:
    """pxeprov's own files may pass while another site or drop-in keeps nginx or dnsmasq from
    starting again: doctor runs each program's own check of its whole configuration."""
    assert cli(loader_root, "init", *NET, "--http").exit_code == 0
    etc = loader_root / "etc"
    (etc / "nginx/nginx.conf").write_text(
        f"pid {loader_root}/nginx.pid;\nerror_log {loader_root}/nginx-error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {etc}/nginx/conf.d/*.conf;\n}}\n"
    )

    machine = Machine(root=Root.of(loader_root))
    for program in ("nginx", "dnsmasq"):
        (check,) = doctor._whole_config(machine, program)
        assert check.status == "pass", check

    (etc / "nginx/conf.d/other.conf").write_text("server {\n  listen 8099;\n  bogus on;\n}\n")
    (etc / "dnsmasq.d/other.conf").write_text("no-such-option=1\n")
    report = doctor.doctor(machine, doctor.Options(probe=False))
    after = {c.name: c for c in report.checks}
    assert after["nginx.config"].status == "pass"  # pxeprov's own site is fine
    assert after["nginx.whole"].status == "fail", after["nginx.whole"]
    assert '[emerg] unknown directive "bogus"' in after["nginx.whole"].message
    assert "would not start again" in after["nginx.whole"].message
    assert after["dnsmasq.config"].status == "pass"
    assert after["dnsmasq.whole"].status == "fail", after["dnsmasq.whole"]
    assert "other.conf" in after["dnsmasq.whole"].message, after["dnsmasq.whole"]
