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
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pxeprov import (
    arch,
    boot,
    dhcpprobe,
    firewall,
    fsutil,
    multicast,
    pipeline,
    ports,
    render,
    repository,
    system,
)
from pxeprov import state as state_mod
from pxeprov.commands import session as sessions
from pxeprov.errors import PxeprovError
from pxeprov.images.kinds.clonezilla import REPORT_PORT
from pxeprov.paths import DNSMASQ_LOG, NGINX_SITE
from pxeprov.pipeline import Machine
from pxeprov.state import State

Status = Literal["pass", "warn", "fail", "info"]
EXIT = {"pass": 0, "info": 0, "warn": 1, "fail": 2}
DHCP_PORTS = {67: "DHCP", 69: "TFTP", 4011: "PXE boot server"}
WINDOWS_FIX = (
    "on a Windows DHCP server: Remove-DhcpServerv4OptionValue -OptionId {ids} (server level; "
    "add -ScopeId <scope> for a scope); dnsmasq: remove dhcp-boot=/dhcp-option=60,66,67; "
    "ISC dhcpd: remove filename/next-server/option vendor-class-identifier"
)
FETCH_TIMEOUT = 10


@dataclass(frozen=True)
class Check:
    name: str  # a stable key, for --json: "dnsmasq.running"
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    header: str

    @property
    def exit_code(self) -> int:
        return max((EXIT[c.status] for c in self.checks), default=0)

    def as_json(self) -> dict[str, Any]:
        worst = {0: "pass", 1: "warn", 2: "fail"}[self.exit_code]
        return {
            "status": worst,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass(frozen=True)
class Options:
    probe: bool = True
    wait: float = dhcpprobe.DEFAULT_WAIT


def _restart(machine: Machine, service: str) -> str:
    unit = machine.services.get(service)
    if unit is not None and unit.systemd_running():
        return f"systemctl restart {service}"
    return "pxeprov init (starts it without systemd too)"


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
            _restart(machine, "dnsmasq"),
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
                _restart(machine, "dnsmasq"),
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
            _restart(machine, "nginx"),
        )


# ---------------------------------------------------------------- the files


def _served_files(state: State, decision: boot.Decision) -> dict[str, str]:
    """Every file a client may ask for, relative to the TFTP root -> what it is."""
    files: dict[str, str] = {}
    for c in decision.chains(state):
        for f in c.files:
            files[f.name] = f"boot loader for {c.client} clients"
        name, _template = c.menu
        files[name] = f"menu of {c.client} clients"
    for image in state.images:
        files[image.kernel] = f"kernel of image {image.name}"
        if image.initrd:
            files[image.initrd] = f"initrd of image {image.name}"
        if image.rootfs:
            files[image.rootfs] = f"root filesystem of image {image.name}"
        for extra in image.files:  # a tree ("…/") is looked at as its directory
            files[extra.rstrip("/")] = f"{'tree' if extra.endswith('/') else 'file'} of image " + (
                image.name
            )
    return files


def _unreadable(tftp_root: Path, path: Path) -> str:
    """Why dnsmasq's user (not root, not the owner) cannot read `path`, or ""."""
    try:
        st = path.stat()
    except OSError as exc:
        return exc.strerror or "cannot be read"
    if not st.st_mode & stat.S_IROTH:
        return f"mode {stat.filemode(st.st_mode)}: only its owner can read it"
    for parent in [p for p in path.parents if p == tftp_root or tftp_root in p.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return f"its directory {parent} is not searchable by others"
    return ""


def _files(machine: Machine, state: State, decision: boot.Decision) -> Iterator[Check]:
    tftp_root = machine.root.path(state.tftp_root)
    problems = 0
    files = _served_files(state, decision)
    for rel, what in sorted(files.items()):
        path = tftp_root / rel
        shown = state.tftp_root / rel
        if not (path.is_dir() if what.startswith("tree") else path.is_file()):
            problems += 1
            image = what.rsplit(" ", 1)[-1]
            fix = (
                f"pxeprov add-image <its ISO> --name {image} --replace"
                if "image" in what
                else "pxeprov init"
            )
            yield Check("files.missing", "fail", f"{shown} ({what}) is missing", fix)
            continue
        why = _unreadable(tftp_root, path)
        if why:
            problems += 1
            yield Check(
                "files.readable",
                "fail",
                f"{shown} ({what}) cannot be read by dnsmasq's user: {why}",
                f"chmod a+r {shown}; chmod a+rx $(dirname {shown})",
            )
    if not problems:
        yield Check(
            "files", "pass", f"the {len(files)} files the menus name are there and readable"
        )


def _strays(machine: Machine, state: State) -> Iterator[Check]:
    """What TFTP would serve that HTTP refuses: links (dnsmasq follows them, out of the root
    too) and dot names (staging and hidden files)."""
    found = pipeline.strays(machine.root, state.tftp_root)
    if not found:
        yield Check(
            "files.served",
            "pass",
            f"nothing under {state.tftp_root} that TFTP would serve and HTTP refuses (no dot "
            "file, no symbolic link)",
        )
        return
    for stray in found[:10]:
        yield Check(
            "files.link-out" if stray.leaves else "files.hidden",
            "fail" if stray.leaves else "warn",
            f"{stray.path} is {stray.what}",
            f"rm -r {stray.path}" if "dot directory" in stray.what else f"rm {stray.path}",
        )
    if len(found) > 10:
        yield Check("files.hidden", "warn", f"and {len(found) - 10} more such files")


def _curl(url: str, *extra: str) -> tuple[int, str]:
    """(curl's exit code, what -w printed)."""
    done = system.run(
        [
            "curl",
            "-sS",
            "--max-time",
            str(FETCH_TIMEOUT),
            "-o",
            os.devnull,
            "-w",
            "%{http_code} %{size_download}",
            *extra,
            url,
        ],
        check=False,
        timeout=FETCH_TIMEOUT + 10,
    )
    return done.returncode, done.stdout.strip()


_CURL_TFTP = {
    68: "file not found",
    69: "permission denied",
    28: "no answer (timeout)",
    7: "connection refused",
}


def _fetches(machine: Machine, state: State, decision: boot.Decision) -> Iterator[Check]:
    if not system.have("curl"):
        yield Check(
            "fetch",
            "warn",
            "curl is not installed: no real TFTP/HTTP fetch was tried",
            "apt-get install curl",
        )
        return
    assert state.network is not None
    address = state.network.address
    tftp_root = machine.root.path(state.tftp_root)
    loaders = [f.name for c in decision.chains(state) for f in c.files]
    menus = [c.menu[0] for c in decision.chains(state)]
    bad = 0
    names = list(dict.fromkeys([*loaders, *menus]))
    for index, name in enumerate(names):
        rc, out = _curl(f"tftp://{address}/{name}", "--tftp-blksize", "1428")
        size = (tftp_root / name).stat().st_size if (tftp_root / name).is_file() else -1
        got = int(out.split()[-1]) if out.split() else -1
        if rc != 0 or got != size:
            bad += 1
            why = _CURL_TFTP.get(rc, f"curl exit {rc}") if rc else f"{got} of {size} bytes"
            yield Check(
                "fetch.tftp",
                "fail",
                f"TFTP fetch of {name} from {address}: {why}",
                _restart(machine, "dnsmasq")
                if rc == 28
                else "pxeprov doctor's other findings say why",
            )
            if rc == 28 and index + 1 < len(names):  # no answer: the others would wait too
                yield Check(
                    "fetch.tftp",
                    "info",
                    f"not tried, as nothing answers TFTP: {', '.join(names[index + 1 :])}",
                )
                break
    if not bad:
        yield Check(
            "fetch.tftp",
            "pass",
            f"TFTP from {address}: {', '.join(dict.fromkeys([*loaders, *menus]))}",
        )
    base = state.payload_base
    if base is None:
        return
    http_bad = 0
    for image in state.images:
        for rel in (image.kernel, image.initrd):
            if not rel:
                continue
            rc, out = _curl(f"{base}/{rel}", "--head")
            code = out.split()[0] if out else ""
            if rc != 0 or code != "200":
                http_bad += 1
                why = f"HTTP {code}" if rc == 0 else f"curl exit {rc}"
                yield Check(
                    "fetch.http", "fail", f"HEAD {base}/{rel}: {why}", _restart(machine, "nginx")
                )
    if not http_bad and state.images:
        yield Check("fetch.http", "pass", f"kernels and initrds answer over HTTP from {base}/")


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


# ---------------------------------------------------------------- the segment


def _probe(state: State, wait: float, chains: tuple[boot.Chain, ...] = ()) -> Iterator[Check]:
    assert state.network is not None
    interface, address = state.network.interface, str(state.network.address)
    try:
        # a DISCOVER as each kind of client served sends it: BIOS, UEFI x86-64, UEFI arm64
        wanted = tuple(dict.fromkeys(c.dhcp_arch[0] for c in chains)) or (0, 7)
        replies = dhcpprobe.probe(interface, wanted, wait)
    except dhcpprobe.ProbeError as exc:
        yield Check("probe", "warn", f"the DHCP probe could not run: {exc}")
        return
    ordinary = [r for r in replies if not r.is_proxy]
    proxies = [r for r in replies if r.is_proxy]
    servers = sorted({r.server_id for r in ordinary})
    if not servers:
        yield Check(
            "probe.dhcp",
            "fail",
            f"no DHCP server answered a PXE DHCPDISCOVER on {interface} within {wait:.0f} s:"
            " clients get no address (is the DHCP server up and on this segment, or does "
            "a relay need `ip helper-address`?)",
        )
    for server in servers:
        theirs = [r for r in ordinary if r.server_id == server]
        settings = list(dict.fromkeys(s for r in theirs for s in r.pxe_settings()))
        if settings:
            ids = [
                i
                for i, key in ((60, "option 60"), (66, "option 66"), (67, "option 67"))
                if any(s.startswith(key) for s in settings)
            ] or [67]
            why = (
                "PXE clients take it for the PXE server and skip pxeprov's proxy (UEFI clients "
                "first)"
                if any(s.startswith("option 60") for s in settings)
                else "PXE clients (and shim) follow it instead of pxeprov's proxy"
            )
            yield Check(
                "probe.dhcp",
                "fail",
                f"DHCP server {server} sends {', '.join(settings)}: {why}",
                WINDOWS_FIX.format(ids=",".join(map(str, ids))),
            )
        else:
            offered = sorted({r.yiaddr for r in theirs})
            yield Check(
                "probe.dhcp",
                "pass",
                f"DHCP server {server} offers addresses ({', '.join(offered)}) and no PXE options",
            )
        yield from _dhcp_pace(server, min(r.after for r in theirs), state.room_size)
    mine = [r for r in proxies if r.server_id == address or r.source == address]
    others = sorted({r.server_id for r in proxies} - {address})
    for other in others:
        menu = sorted({m for r in proxies if r.server_id == other for m in r.menu})
        yield Check(
            "probe.proxy",
            "fail",
            f"another proxyDHCP server, {other}, answers PXE clients"
            + (f" (menu: {', '.join(menu)})" if menu else "")
            + ": clients may boot from it instead",
            f"stop the PXE service on {other} (only one proxyDHCP per segment)",
        )
    if not mine:
        yield Check(
            "probe.pxeprov",
            "fail",
            f"pxeprov's proxy ({address}) did not answer the PXE probe on {interface}",
            "the dnsmasq and firewall findings above say why",
        )
    else:
        arches = sorted({arch.client_name(r.arch) for r in mine})
        menu = sorted({m for r in mine for m in r.menu})
        yield Check(
            "probe.pxeprov",
            "pass",
            f"pxeprov's proxy answers {' and '.join(arches)} clients"
            + (f" (BIOS menu: {', '.join(menu)})" if menu else ""),
        )
        silent = sorted({arch.client_name(a) for a in wanted} - set(arches))
        if silent:
            yield Check(
                "probe.pxeprov.arch",
                "warn",
                f"pxeprov's proxy did not answer the probe of {' and '.join(silent)} clients, "
                "which it serves",
                "the dnsmasq findings above say why; `pxeprov init` renders its pxe-service lines",
            )


SLOW_OFFER = 1.0  # seconds: an answer this late waited for a ping (timeouts are 1 to 3 s)
CONFLICT_FIX = (
    "turn the check off: Windows DHCP: Set-DhcpServerSetting -ConflictDetectionAttempts 0; "
    "dnsmasq: no-ping; ISC dhcpd: ping-check false"
)


def _dhcp_pace(server: str, after: float, room: int) -> Iterator[Check]:
    """An ordinary server this slow to offer checks the address first (a ping: conflict
    detection). dnsmasq holds every other client meanwhile, some 3 s per address and up to 6
    addresses in 30 s: in a lab room of 50, a real client's iPXE (which gives up on DHCP after
    some 15 s) got its offer too late (tests/loadlab.py). A server that checks without holding
    the others up only delays each client. The server skips the check for an address it
    checked in the last 30 s or so, so a second doctor soon after may not see it."""
    if after < SLOW_OFFER or room < 2:
        return
    yield Check(
        "probe.dhcp.pace",
        "warn",
        f"DHCP server {server} offered an address {after:.1f} s after the DISCOVER: it likely "
        "checks each address with a ping before it offers it (conflict detection). A server "
        "that holds the other clients meanwhile, as dnsmasq does (some 3 s per address, up to "
        f"6 in 30 s), keeps a room of {room} powered on at once waiting for addresses, and "
        "firmware may give up first (iPXE after some 15 s)",
        CONFLICT_FIX,
    )


# ---------------------------------------------------------------- plans


STALE_JOB = 6 * 3600  # seconds a taken imaging plan may wait for its job's report


def _plans(state: State, root_is_system: bool, now: float | None = None) -> Iterator[Check]:
    """One-shot plans need pxeprov-watch: it fires them and takes their jobs' reports on TCP
    6461. A job taken long ago without a report, and a failed one, are said."""
    now = time.time() if now is None else now
    waiting = [p for p in state.plans if p.status in ("armed", "started")]
    if waiting and root_is_system and state.network is not None:
        address = state.network.address
        port = REPORT_PORT
        found = [x for x in ports.listeners(port) if ports.covers(x.address, address)]
        if not found:
            yield Check(
                "plans.watch",
                "fail",
                f"{len(waiting)} one-shot plan(s) wait, and nothing takes the jobs' reports on "
                f"{address}:{port}: pxeprov-watch is not running",
                "pxeprov init (it starts pxeprov-watch), or run `pxeprov watch --fire`",
            )
        elif not any("python" in n or "pxeprov" in n for x in found for n in x.names):
            yield Check(
                "plans.watch",
                "warn",
                f"{found[0].owner} listens on {address}:{port}, where pxeprov-watch takes the "
                "jobs' reports",
                "stop it (Clonezilla SE's ocsmgrd uses that port too), then pxeprov init",
            )
    for p in state.plans:
        fired = state_mod.stamp_epoch(p.fired)
        if p.status == "started" and fired is not None and now - fired > STALE_JOB:
            yield Check(
                "plans.report",
                "warn",
                f"the job of {p.mac} was taken at {p.fired} and never reported how it ended"
                + ("; the write share takes its password until then" if p.action == "save" else ""),
                f"look at the machine; `pxeprov assign {p.mac} …` again to run it again, or "
                f"`pxeprov unassign {p.mac}`",
            )
        elif p.status == "failed":
            yield Check(
                "plans.report",
                "warn",
                f"the job of {p.mac} failed at {p.reported}: {p.reason}",
                f"`pxeprov assign {p.mac} …` again to run it again",
            )


def write_share(machine: Machine, state: State) -> Iterator[Check]:
    """Samba takes a password for the repository's account only while a save plan is armed or
    its job runs (pipeline.sync_write_access): anything else is a share open to an old
    password, or a save that cannot write."""
    samba = machine.passwords()
    if not state.repo_path or samba is None:
        return
    enabled = samba.enabled(repository.REPO_ACCOUNT)
    saving = bool(repository.write_password(state))
    share = repository.WRITE_SHARE
    if enabled and not saving:
        yield Check(
            "repo.write",
            "fail",
            f"the write share {share} takes a password, and no save plan is armed or running: "
            "a password read from an old boot line writes the repository",
            "pxeprov repo init (it closes the share)",
        )
    elif saving and not enabled:
        yield Check(
            "repo.write",
            "fail",
            f"a save plan is armed or running, and the write share {share} takes no password: "
            "its job cannot write",
            "pxeprov repo init (it opens the share to the save plans)",
        )
    elif saving:
        yield Check("repo.write", "info", f"the write share {share} is open to the save plans")
    else:
        yield Check("repo.write", "pass", f"the write share {share} takes no password")


def _multicast(machine: Machine, state: State) -> Iterator[Check]:
    """What multicast sessions need: a sender for each session that has not ended, none for
    sessions gone, an interface that can multicast, udp-sender and Clonezilla's feeder."""
    assert state.network is not None
    running = sessions.active(state)
    notes = sessions.check_senders(machine, act=False)
    for note in notes:
        fix = "pxeprov plans (it stops a leftover sender, resumes or ends a session)"
        yield Check("multicast.sender", "fail", note, fix)
    if not running:
        return
    for name in sorted({s.interface or state.network.interface for s in running}):
        flag = multicast.interface_multicast(name)
        if flag is None:
            yield Check("multicast.interface", "fail", f"the interface {name} is missing",
                        "unassign the session, and assign it with --mcast-interface")  # fmt: skip
        elif not flag:
            yield Check("multicast.interface", "fail",
                        f"the interface {name} has no MULTICAST flag: the session's packets "
                        "are not sent", f"ip link set {name} multicast on")  # fmt: skip
        else:
            yield Check("multicast.interface", "pass", f"{name} can multicast")
    missing = [t for t in ("udp-sender",) if not system.have(t)]
    if missing or not multicast.FUNCTIONS.is_file():
        yield Check("multicast.tools", "fail",
                    "udp-sender or Clonezilla's feeder (drbl's ocs-functions) is missing",
                    f"apt-get install {' '.join(multicast.PACKAGES)}")  # fmt: skip
    elif not notes:
        names = ", ".join(s.name for s in running)
        yield Check("multicast.sender", "pass", f"the senders of {names} run")


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
    checks += _files(machine, state, decision)
    checks += _strays(machine, state)
    checks += _fetches(machine, state, decision)
    checks += _firewall(state)
    checks += _plans(state, machine.root.is_system)
    checks += write_share(machine, state)
    checks += _multicast(machine, state)
    if options.probe:
        checks += _probe(state, options.wait, decision.chains(state))
    log = machine.root.path(DNSMASQ_LOG)
    if log.is_file():
        checks.append(Check("log", "info", f"dnsmasq logs to {DNSMASQ_LOG}: pxeprov watch"))
    return Report(tuple(checks), header)
