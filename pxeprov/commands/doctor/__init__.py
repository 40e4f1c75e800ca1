"""`doctor`: why a machine does not boot, checked on this server and on its segment, without a
packet capture. Each check passes, warns or fails, with one line saying what is wrong and the
command that fixes it. Reads only (the probe sends DHCPDISCOVERs; no lease is taken).

    the state -> dnsmasq (installed, config, running, its ports) -> nginx (when HTTP is on)
    -> the files the menus name (there, readable by dnsmasq's user) -> real TFTP and HTTP
    fetches from this server's address -> the firewall -> an active probe of the segment
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pxeprov import (
    boot,
    dhcpprobe,
    firewall,
    fsutil,
    pipeline,
    ports,
    render,
    system,
)
from pxeprov.commands import session as sessions
from pxeprov.commands.doctor import files, imaging, segment
from pxeprov.commands.doctor.report import Check, Report, Status, restart_fix
from pxeprov.errors import PxeprovError
from pxeprov.images.kinds.clonezilla import REPORT_PORT
from pxeprov.paths import DNSMASQ_LOG, NGINX_SITE
from pxeprov.pipeline import Machine
from pxeprov.state import State

__all__ = ["Check", "Options", "Report", "doctor", "stop_hint"]

DHCP_PORTS = {67: "DHCP", 69: "TFTP", 4011: "PXE boot server"}


@dataclass(frozen=True)
class Options:
    probe: bool = True
    wait: float = dhcpprobe.DEFAULT_WAIT


# ---------------------------------------------------------------- dnsmasq and nginx


def _dnsmasq(machine: Machine, state: State) -> Iterator[Check]:
    if not system.have("dnsmasq"):
        yield Check(
            "dnsmasq.installed",
            "fail",
            "dnsmasq is not installed",
            "apt-get install dnsmasq (or run pxeprov init)",
        )
        return
    version = system.run(["dnsmasq", "--version"], check=False, timeout=10).stdout
    words = version.split()
    yield Check(
        "dnsmasq.installed", "pass", f"dnsmasq {words[2] if len(words) > 2 else '?'} installed"
    )
    conf = machine.root.path(render.dnsmasq_path(state))
    if not conf.is_file():
        yield Check("dnsmasq.config", "fail", f"{conf} is missing", "pxeprov init")
    else:
        try:
            pipeline.VALIDATORS["dnsmasq"](conf)
            yield Check("dnsmasq.config", "pass", f"{conf} passes dnsmasq --test")
        except PxeprovError as exc:
            yield Check("dnsmasq.config", "fail", exc.one_line(), "pxeprov init --force")
    yield from _whole_config(machine, "dnsmasq")
    assert state.network is not None
    address = state.network.address
    held = {port: ports.listeners(port, proto="udp") for port in DHCP_PORTS}
    ours = {port: [s for s in socks if "dnsmasq" in s.names] for port, socks in held.items()}
    if not any(ours.values()):
        yield Check(
            "dnsmasq.running",
            "fail",
            "dnsmasq is not running (nothing answers DHCP, PXE or TFTP here)",
            restart_fix(machine, "dnsmasq"),
        )
    else:
        pids = sorted({pid for socks in ours.values() for s in socks for pid, _ in s.programs})
        missing = [
            f"UDP {port} ({what})"
            for port, what in DHCP_PORTS.items()
            if not any(ports.covers(s.address, address) for s in ours[port])
        ]
        if missing:
            yield Check(
                "dnsmasq.ports",
                "fail",
                f"dnsmasq (pid {', '.join(map(str, pids))}) does not listen on "
                f"{', '.join(missing)} for {address}",
                restart_fix(machine, "dnsmasq"),
            )
        else:
            yield Check(
                "dnsmasq.running",
                "pass",
                f"dnsmasq (pid {', '.join(map(str, pids))}) listens on UDP 67, 69 and 4011",
            )
    running = sorted({pid for socks in ours.values() for s in socks for pid, _ in s.programs})
    yield from _room(machine, state, conf, running)
    for port, socks in held.items():
        for s in socks:
            if "dnsmasq" not in s.names and ports.covers(s.address, address):
                yield Check(
                    f"ports.udp{port}",
                    "fail",
                    f"{s.owner} also holds UDP {port} ({DHCP_PORTS[port]}) on "
                    f"{s.where()}: requests may go to it instead of pxeprov's dnsmasq",
                    stop_hint(s, port),
                )


def stop_hint(s: ports.Listener, port: int) -> str:
    """How to stop a program that holds a port pxeprov needs, true on this box: its systemd
    service where it runs in one, else the program by its pid, else how to find it."""
    services = sorted({u for pid, _ in s.programs if (u := system.service_of(pid))})
    if services:
        return f"stop it for good: systemctl disable --now {' '.join(services)}"
    if s.programs:
        return f"stop {s.owner}, and whatever starts it at boot"
    return f"find it (as root: ss -ulpn 'sport = :{port}'), stop it, and whatever starts it at boot"


_TFTP_MAX = re.compile(r"^\s*tftp-max\s*=\s*(\d+)\s*$", re.MULTILINE)
_OPEN_FILES = re.compile(r"^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)", re.MULTILINE)
_NGINX_SETTING = re.compile(r"^\s*(worker_processes|worker_connections)\s+(\w+)\s*;", re.MULTILINE)
DNSMASQ_FILES_SPARE = 30  # dnsmasq's own descriptors besides its TFTP transfers'


def _room(machine: Machine, state: State, conf: Path, pids: list[int]) -> Iterator[Check]:
    """Whether the limits that are live let the expected room (`--room-size`) boot at once:
    dnsmasq's TFTP transfers (its config), the files the running dnsmasq may open, and nginx's
    connections (nginx.conf's workers times connections)."""
    room = state.room_size
    text = _read(conf)
    found = _TFTP_MAX.findall(text)
    live = int(found[-1]) if found else 50  # dnsmasq's default
    fix = f"pxeprov init (it renders tftp-max={render.tftp_max(state)}), or a smaller --room-size"
    problems = []
    if live < room:
        problems.append(f"dnsmasq allows {live} TFTP transfers at once (tftp-max in {conf})")
    for pid in pids:
        limits = _read(Path(f"/proc/{pid}/limits"))
        m = _OPEN_FILES.search(limits)
        if m is not None and m[1] != "unlimited" and int(m[1]) < live + DNSMASQ_FILES_SPARE:
            problems.append(f"dnsmasq (pid {pid}) may open {m[1]} files, fewer than its "
                            f"{live} transfers need")  # fmt: skip
            fix = (f"raise dnsmasq's open files (systemd: `systemctl edit dnsmasq`, "
                   f"[Service] LimitNOFILE={live + DNSMASQ_FILES_SPARE * 4})")  # fmt: skip
    if state.http and not state.http_base_url and machine.root.is_system:
        capacity = _nginx_capacity(machine)
        if capacity is not None and capacity < room:
            problems.append(f"nginx takes {capacity} connections at once (worker_processes "
                            "times worker_connections in /etc/nginx/nginx.conf)")  # fmt: skip
            fix = "raise worker_connections in /etc/nginx/nginx.conf's events block"
    if problems:
        yield Check("room", "warn", f"a room of {room} machines booting at once (the expected "
                    f"room size) may not all boot: {'; '.join(problems)}", fix)  # fmt: skip
    else:
        yield Check("room", "pass", f"a room of {room} machines can boot at once: dnsmasq "
                    f"allows {live} TFTP transfers")  # fmt: skip


def _read(path: Path) -> str:
    try:
        raw = fsutil.read_bytes(path, limit=1 << 20)
    except PxeprovError:
        return ""
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _nginx_capacity(machine: Machine) -> int | None:
    """nginx's connections at once, from its whole configuration (`nginx -T`); None: unknown."""
    try:
        out = system.run(["nginx", "-T", "-q"], timeout=30).stdout
    except PxeprovError:
        return None
    settings = dict(_NGINX_SETTING.findall(out))
    workers = settings.get("worker_processes", "1")
    count = os.cpu_count() or 1 if workers == "auto" else int(workers) if workers.isdigit() else 1
    connections = settings.get("worker_connections", "512")
    return count * int(connections) if connections.isdigit() else None


def _whole_config(machine: Machine, program: str) -> Iterator[Check]:
    """The program's whole configuration as it starts after a reboot (the system's main file
    and every drop-in, other sites' too), checked by the program itself: pxeprov's own files
    may pass while another one keeps the server from starting again."""
    if program == "nginx":
        main = machine.root.path(PurePosixPath("/etc/nginx/nginx.conf"))
        if not main.is_file():
            return
        argv = ["nginx", "-t", "-q", "-c", str(main)]
    else:
        args = system.dnsmasq_config_args(machine.root.path(PurePosixPath("/etc")))
        if not any(a.startswith("--conf-file=") for a in args):
            args.insert(0, "--conf-file=/dev/null")  # no main file: not dnsmasq's built-in one
        argv = ["dnsmasq", "--test", *args]
    name = f"{program}.whole"
    if os.geteuid() != 0:
        yield Check(name, "info", f"{program}'s whole configuration is checked as root only")
        return
    try:
        system.run(argv, timeout=30)
    except PxeprovError as exc:
        yield Check(
            name,
            "fail",
            f"{program}'s whole configuration fails its own check, so {program} would not start "
            f"again (after a reboot, a restart): {exc.message}",
            "fix or remove the file it names (not pxeprov's: that one passes on its own)",
        )
        return
    yield Check(name, "pass", f"{program}'s whole configuration passes `{' '.join(argv[:2])}`")


def _nginx(machine: Machine, state: State) -> Iterator[Check]:
    if not state.http or state.http_base_url:
        return
    if not system.have("nginx"):
        yield Check(
            "nginx.installed",
            "fail",
            "HTTP is on but nginx is not installed",
            "apt-get install nginx (or pxeprov init --no-http for TFTP only)",
        )
        return
    site = machine.root.path(NGINX_SITE)
    try:
        pipeline.VALIDATORS["nginx"](site)
        yield Check("nginx.config", "pass", f"{site} passes nginx -t")
    except PxeprovError as exc:
        yield Check("nginx.config", "fail", exc.one_line(), "pxeprov init --force")
    yield from _whole_config(machine, "nginx")
    assert state.network is not None
    listening = [
        s
        for s in ports.listeners(state.http_port)
        if "nginx" in s.names and ports.covers(s.address, state.network.address)
    ]
    if listening:
        yield Check(
            "nginx.running", "pass", f"nginx listens on {state.network.address}:{state.http_port}"
        )
    else:
        yield Check(
            "nginx.running",
            "fail",
            f"nginx does not listen on {state.network.address}:{state.http_port}: "
            "clients get the menu but no kernel",
            restart_fix(machine, "nginx"),
        )


# ---------------------------------------------------------------- firewall


def _firewall(state: State) -> Iterator[Check]:
    assert state.network is not None
    wanted = [
        firewall.Port("udp", 67, "DHCP"),
        firewall.Port("udp", 69, "TFTP"),
        firewall.Port("udp", 4011, "PXE boot server"),
    ]
    if state.http and not state.http_base_url:
        wanted.append(firewall.Port("tcp", state.http_port, "HTTP"))
    if state.repo or any(p.imaging for p in state.plans):
        wanted.append(firewall.Port("tcp", REPORT_PORT, "imaging jobs' reports"))
    if state.repo_path:
        wanted.append(firewall.Port("tcp", 445, "the image repository (Samba)"))
    for session in sessions.active(state):
        what = f"multicast session {session.name} (udpcast; +2 for each next partition)"
        wanted += [firewall.Port("udp", session.port, what),
                   firewall.Port("udp", session.port + 1, what)]  # fmt: skip
    if not any(system.have(t) for t in ("nft", "iptables-nft-save", "iptables-legacy-save")):
        yield Check("firewall", "info", "no nft or iptables here: no firewall rules to read")
        return
    rules = firewall.read()
    findings = rules.check(wanted, state.network.interface)
    blocked = [f for f in findings if f.verdict in ("drop", "maybe-drop")]
    for f in blocked:
        status: Status = "fail" if f.verdict == "drop" else "warn"
        verb = "drops" if f.verdict == "drop" else "may drop"
        yield Check(
            f"firewall.{f.port.proto}{f.port.port}",
            status,
            f"the firewall {verb} {f.port.proto.upper()} {f.port.port} ({f.port.what}): {f.where}",
            "; ".join(firewall.open_commands([f], state.network.interface)),
        )
    ok, where = rules.tftp_replies_pass()
    if not ok:
        yield Check(
            "firewall.established",
            "fail",
            f"TFTP data would be dropped: {where} (the client's ACKs go to an ephemeral port)",
            "nft insert rule inet filter input ct state established,related accept",
        )
    if not blocked and ok:
        ports_ = ", ".join(f"{p.proto.upper()} {p.port}" for p in wanted)
        yield Check("firewall", "pass", f"the firewall lets {ports_} in")


# ---------------------------------------------------------------- all of it


def doctor(machine: Machine, options: Options = Options()) -> Report:
    try:
        state = pipeline.load_state(machine.root)
    except PxeprovError as exc:
        return Report(
            (Check("state", "fail", exc.message, exc.hint or "pxeprov init --force"),), ""
        )
    if state.network is None:
        return Report((Check("state", "fail", "pxeprov is not set up here", "pxeprov init"),), "")
    net = state.network
    header = f"pxeprov doctor: {net.interface} ({net.address}, {net.subnet}), TFTP root " + str(
        state.tftp_root
    )
    decision = boot.decide(state, machine.root, preview=True)
    checks: list[Check] = []
    checks += _dnsmasq(machine, state)
    checks += _nginx(machine, state)
    checks += files.served(machine, state, decision)
    checks += files.strays(machine, state)
    checks += files.fetches(machine, state, decision)
    checks += _firewall(state)
    checks += imaging.plans(state, machine.root.is_system)
    checks += imaging.write_share(machine, state)
    checks += imaging.multicast_sessions(machine, state)
    if options.probe:
        checks += segment.probe(state, options.wait, decision.chains(state))
    log = machine.root.path(DNSMASQ_LOG)
    if log.is_file():
        checks.append(Check("log", "info", f"dnsmasq logs to {DNSMASQ_LOG}: pxeprov watch"))
    return Report(tuple(checks), header)
