"""Network-namespace PXE lab for the end-to-end tests (a Python port of shared/lab/lab.sh).

Topology (lab.sh ``TOPO=two``; a single namespace hides real proxyDHCP failures because the
ordinary server and the proxy would then share one address):

    ns A "ordinary LAN":  br0 10.77.0.1/24 + fd77::1/64, tap0 (QEMU), vpxe0 (veth)
                          ordinary DHCP server (leases only), one at a time (``use_ordinary``):
                            dnsmasq (default) + IPv6 RAs; dnsmasq always sets siaddr = itself
                            W   ISC dhcpd, "Windows-like": siaddr 0.0.0.0, no boot file name
                            Wf  ISC dhcpd + ``filename``: the ACK carries a BOOTP file name
    ns B "pxeprov box":   vpxe1 10.77.0.2/24, default route via 10.77.0.1
                          dnsmasq = proxyDHCP + TFTP, started from a given config
                          nginx (``start_nginx``) with a given site, for the HTTP boot path

Safety: nothing here touches the host's own interfaces. Every ``ip`` command names one of the
namespaces this object created (``ip -n NS ...``), every server and VM runs under
``ip netns exec NS``, every process is stopped through its own Popen object, and every wait has
a deadline. ``down()`` removes whatever ``up()`` managed to create, even after a partial failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

# The process primitives, QEMU's command line and the firmware files are pxeprov verify's own
# (pxeprov/vlab.py): the product's private network and this lab share them.
from pxeprov.vlab import (
    OVMF_CODE,
    OVMF_SB_CODE,
    OVMF_SB_VARS,
    OVMF_VARS,
    QEMU,
    Firmware,
    LabError,
    qemu_argv,
    read_from,
    run,
    size_of,
    stop_process,
    vars_template,
    wait_started,
)
from pxeprov.vlab import traversable_tempdir as traversable_tempdir  # the tests' too

# The ordinary DHCP server (lab/secureboot/NOTES.txt: A = dnsmasq, W, Wf = ISC dhcpd).
Ordinary = Literal["dnsmasq", "W", "Wf", "none"]

A_ADDR = "10.77.0.1"
B_ADDR = "10.77.0.2"
PREFIX = 24
A_ADDR6 = "fd77::1/64"
LEASE_RANGE = ("10.77.0.100", "10.77.0.150")
PIN_FIRST = 200  # NetLab.pinned_address hands out 10.77.0.200 and up, outside LEASE_RANGE
BRIDGE = "br0"
TAP = "tap0"
VETH_A = "vpxe0"
VETH_B = "vpxe1"

SECUREBOOT_FILES = (OVMF_SB_CODE, OVMF_SB_VARS)

# Programs the lab runs; checked up front so a missing package fails with a clear message.
REQUIRED_PROGRAMS = ("ip", "dnsmasq", QEMU, "timeout")
REQUIRED_FILES = (OVMF_CODE, OVMF_VARS, Path("/dev/net/tun"))

POLL = 0.2  # seconds between looks at a log file
DNSMASQ_START_TIMEOUT = 10.0
DHCPD_START_TIMEOUT = 10.0
NGINX_START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0  # SIGTERM -> wait this long -> SIGKILL
CMD_TIMEOUT = 30.0  # any single `ip` command
KERNEL_GRACE = 2.0  # keep the VM running this long after "Linux version" (command line etc.)
HARD_STOP_SLACK = 30  # `timeout` kills QEMU this long after the boot's own limit

KERNEL_MARK = b"Linux version"
DHCPD_READY = "Server starting service."  # the last start-up line of `dhcpd -d`

# nginx's access log: "combined" without referer and user agent, plus $msec (when the response
# was complete, epoch seconds with ms) and $request_time (seconds it took): transfer times to
# the millisecond, where dnsmasq's log has whole seconds.
NGINX_LOG_FORMAT = (
    '$remote_addr [$time_local] "$request" $status $body_bytes_sent $msec $request_time'
)
_ACCESS_RE = re.compile(
    r'^(?P<client>\S+) \[[^\]]*\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+) '
    r"(?P<done>\d+\.\d+) (?P<seconds>\d+\.\d+)$"
)


def missing_files(files: Sequence[Path]) -> list[str]:
    """One readable sentence per file that does not exist."""
    return [f"file missing: {f}" for f in files if not f.exists()]


def missing_preconditions() -> list[str]:
    """Everything that prevents the lab from running, as readable sentences (empty: all good)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, tap devices, dnsmasq on port 67)")
    problems += [
        f"program not found on PATH: {p}" for p in REQUIRED_PROGRAMS if shutil.which(p) is None
    ]
    return problems + missing_files(REQUIRED_FILES)


@dataclass
class Dnsmasq:
    """One dnsmasq running in the foreground inside a namespace, with its own files."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    output: Path  # stdout+stderr: where dnsmasq reports a config it cannot load
    ns: str = ""

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Dhcpd:
    """ISC dhcpd (``-f -d``) running in the foreground inside a namespace, with its own files.

    ``log`` is its stdout+stderr: with ``-d`` dhcpd writes a line per DHCP message there
    (``DHCPACK on 10.77.0.150 to 52:54:00:... via br0``), the evidence dnsmasq's log gives.
    """

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    leases: Path

    def stop(self) -> None:
        stop_process(self.proc)


DhcpServer = Dnsmasq | Dhcpd


@dataclass(frozen=True)
class HttpRequest:
    """One line of the access log of an nginx started by ``NetLab.start_nginx``."""

    client: str
    method: str  # "" when nginx could not parse the request line
    path: str  # as the client sent it, before nginx normalized it
    status: int
    size: int  # body bytes sent
    done: float  # epoch seconds when the response was complete
    seconds: float  # how long the request took


@dataclass
class Nginx:
    """nginx (``daemon off;``) running in the foreground inside a namespace, with a minimal main
    config of its own around a site (as pxeprov's ``nginx -t`` check runs it); every file it
    writes is in its own ``prefix`` directory."""

    name: str
    proc: subprocess.Popen[bytes]
    prefix: Path
    access_log: Path
    error_log: Path

    def stop(self) -> None:
        stop_process(self.proc)

    def requests(self, offset: int = 0) -> list[HttpRequest]:
        """The access log's requests from byte ``offset`` on (see ``size_of``)."""
        found: list[HttpRequest] = []
        for line in read_from(self.access_log, offset).splitlines():
            m = _ACCESS_RE.match(line)
            if m is None:
                raise LabError(f"unexpected line in {self.access_log}: {line!r}")
            parts = m["request"].split(" ")
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", m["request"])
            found.append(
                HttpRequest(
                    client=m["client"],
                    method=method,
                    path=path,
                    status=int(m["status"]),
                    size=int(m["size"]),
                    done=float(m["done"]),
                    seconds=float(m["seconds"]),
                )
            )
        return found


Server = Dnsmasq | Dhcpd | Nginx


@dataclass(frozen=True)
class BootEvidence:
    """What one VM boot left behind: the serial console and the servers' log lines."""

    firmware: Firmware
    mac: str
    serial: str
    proxy_log: str  # proxy dnsmasq lines written during this boot
    dhcp_log: str  # ordinary DHCP server lines written during this boot
    qemu_output: str
    seconds: float  # wall time of the whole boot
    kernel_after: float | None  # seconds from QEMU start to "Linux version" on the serial port
    ended_by: str  # "kernel", "matched <regex>", "qemu exited (rc=N)" or "time limit"
    ordinary: Ordinary = "dnsmasq"  # the ordinary DHCP server during this boot
    stop_after: float | None = None  # seconds from QEMU start to the stop_on match
    # boot(marks=...): seconds from QEMU start to the first match of each mark (absent: none)
    marks: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Everything needed to debug a failed boot, for assertion messages."""
        kernel = f"{self.kernel_after:.1f}s" if self.kernel_after is not None else "never"
        # CI keeps the head and the tail of a long message: the ordinary server's word on this
        # MAC (an offer, a NAK) comes first, the serial console last
        mine = "".join(
            line for line in self.dhcp_log.splitlines(keepends=True) if self.mac in line.lower()
        )
        return (
            f"{self.firmware} boot of {self.mac}: ended by {self.ended_by} after "
            f"{self.seconds:.1f}s, kernel {kernel}\n"
            f"--- this MAC at the ordinary dhcp server ({self.ordinary})\n{mine}"
            f"--- proxy dnsmasq log (this boot)\n{self.proxy_log}"
            f"--- ordinary dhcp log ({self.ordinary}, this boot)\n{self.dhcp_log}"
            f"--- qemu output\n{self.qemu_output}"
            f"--- serial console (last 3000 chars)\n{self.serial[-3000:]}"
        )


@dataclass
class NetLab:
    """Two namespaces joined by a bridge, an ordinary DHCP server, and QEMU boots.

    ``workdir`` holds every file the lab writes (configs, logs, leases, VM state). dnsmasq opens
    its log, pid and lease files as root, so the workdir itself may be private; a TFTP root, by
    contrast, must be traversable by user ``dnsmasq`` (0755 all the way down), because dnsmasq
    drops root before it serves TFTP.
    """

    workdir: Path
    tag: str = field(default_factory=lambda: str(os.getpid()))
    ns_a: str = field(init=False)
    ns_b: str = field(init=False)
    _namespaces: list[str] = field(init=False, default_factory=list)
    _servers: list[Server] = field(init=False, default_factory=list)
    _dhcp: DhcpServer | None = field(init=False, default=None)
    _ordinary: Ordinary = field(init=False, default="dnsmasq")
    _ordinary_options: tuple[str, ...] = field(init=False, default=())
    _ordinary_ping: bool = field(init=False, default=False)
    _boots: int = field(init=False, default=0)
    _count: threading.Lock = field(init=False, default_factory=threading.Lock)
    _taps: list[str] = field(init=False, default_factory=list)
    _pins: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # PID suffix: leftovers of a crashed run can never collide with (or be deleted by) this one.
        self.ns_a = f"pxeprov-e2e-lan-{self.tag}"
        self.ns_b = f"pxeprov-e2e-pxe-{self.tag}"

    # ------------------------------------------------------------------ topology
    def __enter__(self) -> NetLab:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def _ip(self, ns: str, *args: str) -> str:
        # Only ever inside a namespace this lab created: never the host's own network.
        if ns not in self._namespaces:
            raise LabError(f"refusing to touch namespace {ns!r}: not created by this lab")
        return run(["ip", "-n", ns, *args])

    def _add_namespace(self, ns: str) -> None:
        if ns in run(["ip", "netns", "list"]).split():
            raise LabError(f"namespace {ns} already exists; not reusing something not ours")
        run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        self._ip(ns, "link", "set", "lo", "up")

    def up(self) -> None:
        """Create both namespaces and start the ordinary DHCP server. Cleans up on failure."""
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        a, b = self.ns_a, self.ns_b
        self._add_namespace(a)
        self._add_namespace(b)
        # STP off and no forward delay: ports forward at once, so the first DHCPDISCOVER counts.
        self._ip(a, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self._ip(a, "addr", "add", f"{A_ADDR}/{PREFIX}", "dev", BRIDGE)
        # nodad: the address is usable at once, and dnsmasq's RA code needs one on br0.
        self._ip(a, "addr", "add", A_ADDR6, "dev", BRIDGE, "nodad")
        self._ip(a, "tuntap", "add", "dev", TAP, "mode", "tap")
        self._ip(a, "link", "set", TAP, "master", BRIDGE)
        self._ip(a, "link", "set", TAP, "up")
        self._ip(a, "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns", b)
        self._ip(a, "link", "set", VETH_A, "master", BRIDGE)
        self._ip(a, "link", "set", VETH_A, "up")
        self._ip(a, "link", "set", BRIDGE, "up")
        self._ip(b, "addr", "add", f"{B_ADDR}/{PREFIX}", "dev", VETH_B)
        self._ip(b, "link", "set", VETH_B, "up")
        # pxeprov detects its network from the default route's interface, as on a real server.
        # The gateway is ns A's bridge, which has no way out: nothing can leave the lab.
        self._ip(b, "route", "add", "default", "via", A_ADDR, "dev", VETH_B)
        self._wait_link_up(b, VETH_B)
        self._dhcp = self.start_dnsmasq("dhcp", self.ns_a, self._write_dhcp_conf())
        self._ordinary = "dnsmasq"

    def add_host(self, name: str, address: str) -> str:
        """One more namespace on the lab's LAN (a veth into br0) with ``address``/24; its name.
        Deleted with the lab (or by ``remove_host``)."""
        ns = f"pxeprov-e2e-{name}-{self.tag}"
        self._add_namespace(ns)
        near, far = f"h-{name}"[:15], "eth0"
        self._ip(self.ns_a, "link", "add", near, "type", "veth", "peer", "name", far, "netns", ns)
        self._ip(self.ns_a, "link", "set", near, "master", BRIDGE)
        self._ip(self.ns_a, "link", "set", near, "up")
        self._ip(ns, "addr", "add", f"{address}/{PREFIX}", "dev", far)
        self._ip(ns, "link", "set", far, "up")
        self._wait_link_up(ns, far)
        return ns

    def add_tap(self, name: str) -> str:
        """One more tap on the lab's bridge, for a VM booting beside the one on tap0 (one made
        before by another test is used again)."""
        if not name.startswith("tap") or name == TAP:
            raise LabError(f"refusing tap name {name!r}")
        if name in self._taps:
            return name
        self._taps.append(name)
        self._ip(self.ns_a, "tuntap", "add", "dev", name, "mode", "tap")
        self._ip(self.ns_a, "link", "set", name, "master", BRIDGE)
        self._ip(self.ns_a, "link", "set", name, "up")
        return name

    def remove_host(self, ns: str) -> None:
        if ns in (self.ns_a, self.ns_b) or ns not in self._namespaces:
            raise LabError(f"refusing to remove {ns!r}")
        for server in [x for x in self._servers if isinstance(x, Dnsmasq) and x.ns == ns]:
            self._stop_server(server)
        run(["ip", "netns", "del", ns])  # its veth end goes with it, and the other end too
        self._namespaces.remove(ns)

    def _wait_link_up(self, ns: str, ifname: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "state UP" in self._ip(ns, "link", "show", ifname):
                return
            time.sleep(0.1)
        raise LabError(f"{ifname} in {ns} not up after {timeout}s:\n{self._ip(ns, 'link')}")

    def _write_dhcp_conf(self, options: Sequence[str] = (), ping: bool = False) -> Path:
        """The lab's A-ra.conf: leases only (no PXE options, no DNS) plus IPv6 RAs, and
        ``options`` (dnsmasq lines: what a misconfigured DHCP server sends).

        Without router advertisements iPXE waits ~13 s for IPv6 autoconfiguration. Without
        ``no-ping`` dnsmasq waits some 3 s for an echo before it offers an address.
        """
        conf = self.workdir / "dhcp.conf"
        lines = [
            "# e2e lab: the ordinary DHCP server (leases only, no PXE options, no DNS)",
            "port=0",
            f"interface={BRIDGE}",
            "bind-interfaces",
            f"dhcp-range={LEASE_RANGE[0]},{LEASE_RANGE[1]},255.255.255.0,1h",
            "log-dhcp",
            "enable-ra",
            f"dhcp-range=::,constructor:{BRIDGE},ra-only",
            *([] if ping else ["no-ping"]),
            *options,
        ]
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o644)
        return conf

    def _write_dhcpd_conf(self, kind: Literal["W", "Wf"]) -> Path:
        """lab/secureboot's W.conf / Wf.conf on this lab's subnet.

        No ``next-server``: dhcpd then sends siaddr 0.0.0.0, as Windows DHCP does. Wf adds a
        ``filename``, which dhcpd puts in the BOOTP file field of its ACK.
        """
        net = A_ADDR.rsplit(".", 1)[0] + ".0"
        lines = [
            f"# e2e lab: the ordinary DHCP server, ISC dhcpd as lab/secureboot's {kind}.conf",
            "ddns-update-style none;",
            "authoritative;",
            # Without this dhcpd pings each address before offering it: a second per lease.
            "ping-check false;",
            "default-lease-time 3600;",
            "max-lease-time 3600;",
            f"subnet {net} netmask 255.255.255.0 {{",
            f"  range {LEASE_RANGE[0]} {LEASE_RANGE[1]};",
            *(['  filename "undionly.kpxe";'] if kind == "Wf" else []),
            "  option subnet-mask 255.255.255.0;",
            "}",
        ]
        conf = self.workdir / f"dhcpd-{kind}.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o644)
        return conf

    @property
    def ordinary(self) -> Ordinary:
        """Which ordinary DHCP server is running in ns A."""
        return self._ordinary

    def pinned_address(self, mac: str) -> str:
        """An address outside the lease range for ``mac`` alone, the same for the lab's life
        (give it to the ordinary server as ``dhcp-host=MAC,ADDRESS``).

        One per MAC for the lab's life because the lease file outlives a server's options:
        dnsmasq skips a configured address that a lease (an hour long) still gives another MAC
        and falls back to its range, where machines asking in the same seconds are offered the
        same address and all but one get a NAK.
        """
        mac = mac.lower()
        if mac not in self._pins:
            last = PIN_FIRST + len(self._pins)
            if last > 254:
                raise LabError(f"no address left to pin for {mac}: {len(self._pins)} pinned")
            self._pins[mac] = f"{A_ADDR.rsplit('.', 1)[0]}.{last}"
        return self._pins[mac]

    def use_ordinary(
        self,
        kind: Ordinary,
        dhcpd: Path | None = None,
        options: Sequence[str] = (),
        ping: bool = False,
    ) -> None:
        """Make ``kind`` the ordinary DHCP server in ns A (stopping the current one first);
        nothing happens if it already is and still runs. ``dhcpd``: the ISC dhcpd binary,
        needed for W and Wf; ``options``: more dnsmasq lines for the dnsmasq one; ``ping``:
        the dnsmasq one checks each address with a ping before it offers it (dnsmasq's own
        default; off otherwise, as Windows DHCP's conflict detection is); "none": no DHCP
        server at all.

        Only one DHCP server may answer on br0, so the old one is stopped before the new one
        starts; on failure no ordinary server runs and LabError says why.
        """
        if self.ns_a not in self._namespaces:
            raise LabError("lab is not up")
        current = self._dhcp
        same = (self._ordinary == kind and tuple(options) == self._ordinary_options
                and ping == self._ordinary_ping)  # fmt: skip
        if same and (kind == "none" or (current is not None and current.proc.poll() is None)):
            return
        if kind in ("W", "Wf") and dhcpd is None:
            raise LabError(f"ordinary server {kind} needs the dhcpd binary")
        if current is not None:
            self._stop_server(current)
            self._dhcp = None
        self._ordinary_options, self._ordinary_ping = tuple(options), ping
        if kind == "none":
            pass
        elif kind == "dnsmasq":
            conf = self._write_dhcp_conf(options, ping)
            self._dhcp = self.start_dnsmasq("dhcp", self.ns_a, conf)
        else:
            assert dhcpd is not None  # checked above
            self._dhcp = self.start_dhcpd(kind, dhcpd, self._write_dhcpd_conf(kind))
        self._ordinary = kind

    def start_dhcpd(self, name: str, dhcpd: Path, conf: Path) -> Dhcpd:
        """Start ISC dhcpd in the foreground in ns A on br0; return once it serves.

        As lab/secureboot/sb.sh runs it: its own lease and pid files, ``-f -d`` (foreground,
        log to stderr). It stays root (no ``-user``), which only matters on a real system.
        """
        ns = self.ns_a
        if ns not in self._namespaces:
            raise LabError(f"refusing to run dhcpd in {ns!r}: not created by this lab")
        log = self.workdir / f"dhcpd-{name}.log"
        # One lease file for every dhcpd of this lab (dhcpd refuses to start without one): a
        # restarted dhcpd remembers its leases, so two VMs never get the same address, which
        # ns B's ARP cache could still map to the first VM's MAC.
        leases = self.workdir / "dhcpd.leases"
        leases.touch()
        offset = size_of(log)
        argv = [
            "ip", "netns", "exec", ns,
            str(dhcpd), "-4", "-f", "-d",
            "-cf", str(conf), "-lf", str(leases),
            "-pf", str(self.workdir / f"dhcpd-{name}.pid"),
            BRIDGE,
        ]  # fmt: skip
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        server = Dhcpd(name=name, proc=proc, log=log, leases=leases)
        self._servers.append(server)
        deadline = time.monotonic() + DHCPD_START_TIMEOUT
        while DHCPD_READY not in read_from(log, offset):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited rc={proc.returncode}" if proc.poll() is not None else "timed out"
                self._stop_server(server)
                raise LabError(
                    f"dhcpd {name} did not start ({state}) with {conf}\n"
                    f"--- output\n{read_from(log, offset)}"
                )
            time.sleep(0.1)
        return server

    def _stop_server(self, server: Server) -> None:
        server.stop()
        if server in self._servers:
            self._servers.remove(server)

    def down(self) -> None:
        """Stop every process and delete every namespace this lab created; idempotent.

        Keeps going after an error so one stuck piece does not leave the rest behind, then
        raises the first error.
        """
        errors: list[BaseException] = []
        for server in reversed(self._servers):
            try:
                server.stop()
            except BaseException as exc:  # keep tearing down; re-raised below
                errors.append(exc)
        self._servers.clear()
        self._dhcp = None
        for ns in reversed(list(self._namespaces)):
            try:
                # Deleting the namespace destroys br0, tap0 and both veth ends with it.
                run(["ip", "netns", "del", ns])
                self._namespaces.remove(ns)
            except BaseException as exc:  # keep tearing down; re-raised below
                errors.append(exc)
        try:
            left = {self.ns_a, self.ns_b} & set(run(["ip", "netns", "list"]).split())
            if left:
                errors.append(LabError(f"namespaces still present after teardown: {left}"))
        except LabError as exc:
            errors.append(exc)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ dnsmasq
    def start_dnsmasq(self, name: str, ns: str, conf: Path) -> Dnsmasq:
        """Start ``dnsmasq --keep-in-foreground`` in ``ns``; return once it logged its start.

        Log, pid and lease files go to the workdir via the command line, so ``conf`` can be a
        production config used verbatim. Raises LabError with dnsmasq's own output if it died.
        """
        if ns not in self._namespaces:
            raise LabError(f"refusing to run dnsmasq in {ns!r}: not created by this lab")
        log = self.workdir / f"{name}.log"
        output = self.workdir / f"{name}.out"
        offset = size_of(log)
        argv = [
            "ip", "netns", "exec", ns,
            "dnsmasq", "--keep-in-foreground",
            f"--conf-file={conf}",
            f"--log-facility={log}",
            f"--pid-file={self.workdir / f'{name}.pid'}",
            f"--dhcp-leasefile={self.workdir / f'{name}.leases'}",
        ]  # fmt: skip
        with output.open("ab") as out:
            # `ip netns exec` execs dnsmasq, so proc.pid is dnsmasq's own PID.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        server = Dnsmasq(name=name, proc=proc, log=log, output=output, ns=ns)
        self._servers.append(server)
        state = wait_started(
            proc, lambda: "started, version" in read_from(log, offset), DNSMASQ_START_TIMEOUT
        )
        if state:
            self.stop_dnsmasq(server)
            raise LabError(
                f"dnsmasq {name} did not start ({state}) with {conf}\n"
                f"--- output\n{output.read_text(errors='replace')}"
                f"--- log\n{read_from(log, offset)}"
            )
        return server

    def stop_dnsmasq(self, server: Dnsmasq) -> None:
        self._stop_server(server)

    # ------------------------------------------------------------------ nginx
    def start_nginx(self, name: str, ns: str, site: Path) -> Nginx:
        """Start nginx in the foreground in ``ns`` with ``site`` (a server block, included
        verbatim); return once it listens. Its pid, logs and temp directories go to
        ``<workdir>/nginx-<name>/``. Its workers run as nobody: whatever the site serves must
        be world-readable along its whole path.
        """
        if ns not in self._namespaces:
            raise LabError(f"refusing to run nginx in {ns!r}: not created by this lab")
        prefix = self.workdir / f"nginx-{name}"
        prefix.mkdir(exist_ok=True)
        prefix.chmod(0o755)  # its temp directories must be reachable by the workers
        pid, access, error = prefix / "nginx.pid", prefix / "access.log", prefix / "error.log"
        pid.unlink(missing_ok=True)  # a stale one would look like a started server
        main = prefix / "nginx.conf"
        main.write_text(
            "# e2e lab: nginx in the foreground around one site, every file in this directory\n"
            f"daemon off;\npid {pid};\nerror_log {error};\nevents {{}}\n"
            f"http {{\n  log_format lab '{NGINX_LOG_FORMAT}';\n"
            f"  access_log {access} lab;\n  include {site};\n}}\n"
        )
        output = prefix / "nginx.out"
        argv = ["ip", "netns", "exec", ns, "nginx", "-p", str(prefix), "-c", str(main)]
        with output.open("ab") as out:
            # `ip netns exec` execs nginx, so proc.pid is the master's own PID.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        server = Nginx(name=name, proc=proc, prefix=prefix, access_log=access, error_log=error)
        self._servers.append(server)
        # The master writes its pid file after it has opened the listening sockets.
        state = wait_started(
            proc, lambda: read_from(pid, 0).strip() == str(proc.pid), NGINX_START_TIMEOUT
        )
        if state:
            self._stop_server(server)
            raise LabError(
                f"nginx {name} did not start ({state}) with {main}\n"
                f"--- output\n{read_from(output, 0)}--- error log\n{read_from(error, 0)}"
            )
        return server

    def stop_nginx(self, server: Nginx) -> None:
        self._stop_server(server)

    @property
    def dhcp_log(self) -> Path:
        if self._dhcp is None:
            if self._ordinary == "none":
                return self.workdir / "no-dhcp-server.log"  # never written
            raise LabError("no ordinary DHCP server running (lab not up, or a switch failed)")
        return self._dhcp.log

    # ------------------------------------------------------------------ VM boot
    def qemu_argv(
        self,
        firmware: Firmware,
        mac: str,
        serial: Path,
        vars_copy: Path,
        memory_mb: int | None = None,
        tap: str = TAP,
    ) -> list[str]:
        """QEMU as lab.sh (uefi-sb: lab/secureboot/sb.sh) runs it, through pxeprov verify's own
        builder (TCG: /dev/kvm is unusable on these machines). ``memory_mb``: instead of lab.sh's
        size (a loader holds the whole initrd in memory: a big one needs more); Secure Boot's is
        sb.sh's: shim + GRUB + the installer's initrd in 512 MB is tight."""
        default = {"uefi-sb": 768, "arm64": 1024, "arm64-sb": 1024}.get(firmware, 512)
        return qemu_argv(firmware, mac, serial, vars_copy, memory_mb or default, tap)

    def boot(
        self,
        firmware: Firmware,
        mac: str,
        proxy: Dnsmasq | Path,
        limit: float = 120.0,
        stop_on: str | None = None,
        stop_grace: float = KERNEL_GRACE,
        memory_mb: int | None = None,
        marks: Mapping[str, tuple[Path, str]] | None = None,
        qemu_extra: Sequence[str] = (),
        tap: str = TAP,
    ) -> BootEvidence:
        """PXE-boot one VM on tap0 until the kernel prints (plus a grace period) or ``limit``.

        ``stop_on``: a regex (the kernel then no longer ends the boot); once it matches the serial
        console the VM runs ``stop_grace`` seconds more and is stopped, so a boot expected to
        fail ends as soon as the failure is on record instead of at ``limit``. ``memory_mb``: see
        ``qemu_argv``. ``marks``: name -> (log file, regex); the evidence's ``marks`` say when
        (seconds after QEMU start, to the polling interval) each regex first matched what this
        boot appended to its log file. ``qemu_extra``: more QEMU arguments (a disk, ...).
        """
        if self.ns_a not in self._namespaces:
            raise LabError("lab is not up")
        with self._count:
            self._boots += 1
            case = f"{self._boots:02d}-{firmware}"
        serial = self.workdir / f"serial-{case}.log"
        qemu_out = self.workdir / f"qemu-{case}.out"
        vars_copy = self.workdir / f"vars-{case}.fd"
        template = vars_template(firmware)
        if template is not None:
            # OVMF writes its variable store: each VM gets a fresh copy, never the system file.
            shutil.copyfile(template, vars_copy)
        stop_re = re.compile(stop_on.encode()) if stop_on is not None else None
        proxy_log = proxy if isinstance(proxy, Path) else proxy.log  # a Path: the proxy's log
        proxy_off, dhcp_off = size_of(proxy_log), size_of(self.dhcp_log)
        watched = {
            name: (log, size_of(log), re.compile(rx)) for name, (log, rx) in (marks or {}).items()
        }
        seen: dict[str, float] = {}
        # `timeout` is the hard stop should this process die before stopping QEMU itself.
        argv = [
            "timeout", "-k", "5", str(int(limit) + HARD_STOP_SLACK),
            "ip", "netns", "exec", self.ns_a,
            *self.qemu_argv(firmware, mac, serial, vars_copy, memory_mb, tap),
            *qemu_extra,
        ]  # fmt: skip
        (self.workdir / f"qemu-{case}.cmd").write_text(" ".join(argv) + "\n")
        t0 = time.monotonic()
        with qemu_out.open("wb") as out:
            # New session: the group `timeout` leads is ours alone (see stop_process).
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        kernel_after: float | None = None
        stop_after: float | None = None
        ended_by = "time limit"
        try:
            while True:
                now = time.monotonic() - t0
                console = _read_bytes(serial)
                if kernel_after is None and KERNEL_MARK in console:
                    kernel_after = now
                for name, (log, offset, rx) in watched.items():
                    if name not in seen and rx.search(read_from(log, offset)):
                        seen[name] = now
                at_kernel = kernel_after is not None and now - kernel_after >= KERNEL_GRACE
                if stop_re is None and at_kernel:
                    ended_by = "kernel"
                    break
                if stop_re is not None and stop_after is None and stop_re.search(console):
                    stop_after = now
                if stop_after is not None and now - stop_after >= stop_grace:
                    ended_by = f"matched {stop_on!r}"
                    break
                if proc.poll() is not None:
                    ended_by = f"qemu exited (rc={proc.returncode})"
                    break
                if now > limit:
                    break
                time.sleep(POLL)
        finally:
            stop_process(proc)
        seconds = time.monotonic() - t0
        return BootEvidence(
            firmware=firmware,
            mac=mac,
            serial=_read_bytes(serial).decode("utf-8", errors="replace"),
            proxy_log=read_from(proxy_log, proxy_off),
            dhcp_log=read_from(self.dhcp_log, dhcp_off),
            qemu_output=qemu_out.read_text(errors="replace"),
            seconds=seconds,
            kernel_after=kernel_after,
            ended_by=ended_by,
            ordinary=self._ordinary,
            stop_after=stop_after,
            marks=seen,
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
