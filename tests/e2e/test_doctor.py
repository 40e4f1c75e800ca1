"""End to end: `pxeprov doctor` diagnoses each broken segment and server it is meant to, and
`watch` / `status` follow a QEMU client's real boot, and its stall (a kernel the menu names is
missing).

A server rendered by a plain `pxeprov init` (HTTP on port 80) runs in namespace B (dnsmasq and
nginx as the lab runs them); `doctor` runs in B as it would on the server, with its active probe
on B's interface. One scenario per test, each put back as it was afterwards:
healthy; the ordinary DHCP server sending 66/67, or option 60, or a BOOTP file name (ISC dhcpd);
a second proxyDHCP server; no DHCP server; an nftables rule dropping UDP 69 in B; a menu
entry's kernel missing; a file only root can read; dnsmasq not running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import MakeDir
from .netlab import A_ADDR, NetLab, missing_files, stop_process
from .pxeserver import (
    DI,
    LOADERS,
    REPO,
    UNDIONLY,
    OneAtATime,
    Served,
    build_root,
    leases,
    make_default,
    pxeprov,
)
from .sbfiles import SecureBootFiles

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT = "4"  # seconds doctor's probe waits (the lab's ordinary server offers at once: no-ping)
KERNEL = "images/d-i/linux"
INITRD = "images/d-i/initrd.gz"
ROGUE = "10.77.0.9"
MACS = {"boot": "52:54:00:77:0f:01", "stall": "52:54:00:77:0f:02"}
BOOT_LIMIT = 150.0


@dataclass
class Doctor:
    code: int
    report: dict[str, Any]
    text: str

    def checks(self, status: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.report["checks"] if status is None or c["status"] == status]

    def failing(self) -> list[str]:
        return [f"{c['name']}: {c['message']}" for c in self.checks("fail")]

    def find(self, name: str, status: str) -> dict[str, Any]:
        found = [c for c in self.checks(status) if c["name"] == name]
        assert found, f"no {status} check {name}:\n{self.text}"
        return found[0]


@pytest.fixture(scope="module")
def one(lab: NetLab) -> Iterator[OneAtATime]:
    serving = OneAtATime(lab)
    try:
        yield serving
    finally:
        serving.stop()
        lab.use_ordinary("dnsmasq")


@pytest.fixture(scope="module")
def server(lab: NetLab, make_dir: MakeDir, one: OneAtATime) -> Served:
    problems = missing_files((*LOADERS, UNDIONLY, DI / "linux"))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-doctor-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1")
    make_default(lab, root, "d-i")
    return one.serve(Served.of("doctor", root))


def doctor(lab: NetLab, server: Served, wait: str = WAIT) -> Doctor:
    argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "pxeprov",
            "--root", str(server.root), "doctor", "--json", "--wait", wait]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"doctor printed no JSON (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    text = "\n".join(f"{c['status']:>5} {c['name']}: {c['message']}" for c in report["checks"])
    assert report["exit_code"] == done.returncode, text
    return Doctor(done.returncode, report, text)


# ---------------------------------------------------------------- the scenarios


def test_healthy_segment(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("dnsmasq")
    d = doctor(lab, server)
    assert d.code == 0, d.text
    assert f"DHCP server {A_ADDR} offers addresses" in d.find("probe.dhcp", "pass")["message"]
    mine = d.find("probe.pxeprov", "pass")["message"]
    assert "BIOS and UEFI x86-64 clients" in mine, mine
    assert "undionly.kpxe" in d.find("fetch.tftp", "pass")["message"]
    assert d.find("nginx.running", "pass") and d.find("fetch.http", "pass")
    assert d.find("dnsmasq.running", "pass") and d.find("files", "pass")
    assert "probe.dhcp.pace" not in d.text  # the lab's server offers at once (no-ping)


def test_dhcp_server_that_pings_each_address_before_offering_it(
    lab: NetLab, server: Served
) -> None:
    # dnsmasq's own default: some 3 s per new address, one client at a time (in a room of 50
    # a real client's firmware gave up before its offer came: tests/loadlab.py)
    lab.use_ordinary("dnsmasq", ping=True)
    try:
        d = doctor(lab, server, wait="8")  # the ping's 3 s, with room on a busy machine
    finally:
        lab.use_ordinary("dnsmasq")
    assert d.code == 1, d.text
    check = d.find("probe.dhcp.pace", "warn")
    assert f"DHCP server {A_ADDR} offered an address" in check["message"], check
    seconds = float(check["message"].split("offered an address ")[1].split(" s ")[0])
    assert 2.0 <= seconds <= 6.0, check  # dnsmasq's ping timeout, some 3 s
    assert "a room of 200" in check["message"] and "no-ping" in check["fix"]
    assert d.find("probe.dhcp", "pass") and d.find("probe.pxeprov", "pass")


@pytest.mark.parametrize(
    ("options", "sends", "ids"),
    [
        (["dhcp-option=66,10.77.0.1", "dhcp-option=67,pxelinux.0"],
         "sends option 66 (10.77.0.1), option 67 (pxelinux.0)", "66,67"),
        (["dhcp-option-force=60,PXEClient"], "sends option 60 (PXEClient)", "60"),
    ],
    ids=["options-66-67", "option-60"],
)  # fmt: skip
def test_ordinary_server_sending_pxe_options(
    lab: NetLab, server: Served, options: list[str], sends: str, ids: str
) -> None:
    lab.use_ordinary("dnsmasq", options=options)
    d = doctor(lab, server)
    assert d.code == 2, d.text
    check = d.find("probe.dhcp", "fail")
    assert f"DHCP server {A_ADDR} {sends}" in check["message"], check
    assert f"Remove-DhcpServerv4OptionValue -OptionId {ids}" in check["fix"]
    assert d.find("probe.pxeprov", "pass")  # the proxy itself is fine


def test_bootp_file_name_in_the_ordinary_answer(
    lab: NetLab, server: Served, sb_files: SecureBootFiles
) -> None:
    lab.use_ordinary("Wf", sb_files.dhcpd)
    d = doctor(lab, server)
    assert d.code == 2, d.text
    message = d.find("probe.dhcp", "fail")["message"]
    assert f"DHCP server {A_ADDR} sends a BOOTP file name (undionly.kpxe)" in message, message


def test_second_proxy_dhcp_server(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("dnsmasq")
    ns = lab.add_host("rogue", ROGUE)
    try:
        conf = lab.workdir / "rogue.conf"
        conf.write_text("port=0\ninterface=eth0\nbind-interfaces\n"
                        "dhcp-range=10.77.0.0,proxy,255.255.255.0\n"
                        'pxe-service=x86PC,"Rogue PXE",rogue.0\n'
                        'pxe-service=X86-64_EFI,"Rogue PXE",rogue.efi\n')  # fmt: skip
        lab.start_dnsmasq("rogue", ns, conf)
        d = doctor(lab, server)
    finally:
        lab.remove_host(ns)
    assert d.code == 2, d.text
    message = d.find("probe.proxy", "fail")["message"]
    assert f"another proxyDHCP server, {ROGUE}, answers PXE clients" in message, message
    assert "Rogue PXE" in message
    assert d.find("probe.pxeprov", "pass")


def test_no_dhcp_server(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("none")
    try:
        d = doctor(lab, server)
    finally:
        lab.use_ordinary("dnsmasq")
    assert d.code == 2, d.text
    assert "no DHCP server answered" in d.find("probe.dhcp", "fail")["message"]


def test_firewall_dropping_tftp(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("dnsmasq")
    nft = ["ip", "netns", "exec", lab.ns_b, "nft"]
    rules = (
        "table inet pxeprovtest {\n  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n    udp dport 69 drop\n  }\n}\n"
    )
    subprocess.run([*nft, "-f", "-"], check=True, text=True, input=rules)
    try:
        d = doctor(lab, server)
    finally:
        subprocess.run([*nft, "delete", "table", "inet", "pxeprovtest"], check=True)
    assert d.code == 2, d.text
    check = d.find("firewall.udp69", "fail")
    assert "the firewall drops UDP 69 (TFTP): rule inet pxeprovtest input" in check["message"]
    # the fix goes where the drop is: the head of that table's chain
    assert check["fix"].startswith("nft insert rule inet pxeprovtest input iifname "), check["fix"]
    assert check["fix"].endswith(" udp dport 69 accept"), check["fix"]
    assert not [c for c in d.checks("fail") if c["name"] in ("firewall.udp67", "firewall.udp4011")]


@contextmanager
def changed(path: Path, *, remove: bool = False, mode: int | None = None) -> Iterator[None]:
    stat = path.stat()
    aside = path.with_name(path.name + ".aside")
    if remove:
        path.rename(aside)
    if mode is not None:
        path.chmod(mode)
    try:
        yield
    finally:
        if remove:
            aside.rename(path)
        path.chmod(stat.st_mode & 0o7777)


def test_missing_kernel(lab: NetLab, server: Served) -> None:
    with changed(server.tftp_root / KERNEL, remove=True):
        d = doctor(lab, server)
    assert d.code == 2, d.text
    check = d.find("files.missing", "fail")
    assert check["message"] == f"/var/lib/tftpboot/{KERNEL} (kernel of image d-i) is missing"
    assert "--name d-i --replace" in check["fix"]


def test_file_only_root_can_read(lab: NetLab, server: Served) -> None:
    with changed(server.tftp_root / INITRD, mode=0o600):
        d = doctor(lab, server)
    assert d.code == 2, d.text
    check = d.find("files.readable", "fail")
    assert f"{INITRD} (initrd of image d-i) cannot be read by dnsmasq's user" in check["message"]
    assert check["fix"].startswith(f"chmod a+r /var/lib/tftpboot/{INITRD}")


def test_dnsmasq_not_running(lab: NetLab, server: Served, one: OneAtATime) -> None:
    lab.stop_dnsmasq(server.running)
    try:
        d = doctor(lab, server)
    finally:
        one.serve(server)  # its dnsmasq is gone: both servers start again
    assert d.code == 2, d.text
    assert "dnsmasq is not running" in d.find("dnsmasq.running", "fail")["message"]
    assert "pxeprov's proxy" in d.find("probe.pxeprov", "fail")["message"]


# ---------------------------------------------------------------- watch and status


@contextmanager
def watching(lab: NetLab, server: Served, *args: str) -> Iterator[Path]:
    """`pxeprov watch` in namespace B on the lab's logs of this server; its output file."""
    assert server.nginx is not None
    out = lab.workdir / f"watch-{len(list(lab.workdir.glob('watch-*')))}.out"
    argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "pxeprov", "--root",
            str(server.root), "watch", "--dnsmasq-log", str(server.running.log),
            "--nginx-log", str(server.nginx.access_log), *args]  # fmt: skip
    with out.open("wb") as f:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Watching " not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        yield out
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does: it ends quietly
        try:
            proc.wait(timeout=15)
        finally:
            stop_process(proc)
    assert proc.returncode == 0, out.read_text()


def wait_for(out: Path, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, out.read_text(), re.MULTILINE):
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{out.read_text()}"
        time.sleep(0.3)
    return out.read_text()


def test_watch_follows_a_boot_and_status_sums_it_up(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("dnsmasq")
    mac = MACS["boot"]
    with watching(lab, server, "--stall", "30") as out:
        ev = lab.boot("bios", mac, server.running, limit=BOOT_LIMIT)
        assert "Linux version" in ev.serial, ev.summary()
        text = wait_for(out, rf"{mac} .* initrd  {re.escape(INITRD)} \(http\)$")
    client = leases(ev)[-1]
    # QEMU's BIOS NIC ROM is iPXE already: it is given boot.ipxe at once (no boot loader stage)
    for ip, stage, what in (("-", "proxy offer", ""), (client, "menu", "  boot.ipxe (tftp)"),
                            (client, "kernel", f"  {KERNEL} (http)"),
                            (client, "initrd", f"  {INITRD} (http)")):  # fmt: skip
        line = rf"^\d\d:\d\d:\d\d  {mac}  BIOS  {re.escape(ip)}\s+{stage}{re.escape(what)}$"
        assert re.search(line, text, re.MULTILINE), f"no {line!r} in:\n{text}"
    assert "stalled" not in text

    argv = ["--root", str(server.root), "status", "--since", "15m", "--mac", mac,
            "--dnsmasq-log", str(server.running.log)]  # fmt: skip
    assert server.nginx is not None
    argv += ["--nginx-log", str(server.nginx.access_log)]
    done = subprocess.run(["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "pxeprov",
                           *argv], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.match(
        rf"{mac}  BIOS  {re.escape(client)}\s+proxy offer 0 s -> menu \d+ s -> kernel \d+ s "
        rf"-> initrd \d+ s$",
        done.stdout,
    ), done.stdout


def test_watch_reports_the_stall_when_the_kernel_is_missing(lab: NetLab, server: Served) -> None:
    lab.use_ordinary("dnsmasq")
    mac = MACS["stall"]
    with changed(server.tftp_root / KERNEL, remove=True), watching(lab, server) as out:
        # iPXE gets 404 for the kernel and goes back to its menu; the VM never boots
        lab.boot("bios", mac, server.running, limit=40)
        text = wait_for(out, rf"{mac}  stalled after menu: ")
    assert f"{mac}  stalled after menu: {KERNEL} is not on the server (asked for over HTTP, " \
           "answer 404)" in text, text  # fmt: skip
