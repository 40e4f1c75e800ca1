"""A private network for `pxeprov verify`: never the LAN.

Two network namespaces of its own, joined by a veth pair:
- the clients' side: a bridge, a tap for the QEMU client, and an ordinary DHCP server (dnsmasq,
  leases only, as a Windows DHCP server would be) on the server's own subnet;
- the server's side: an interface with the server's own name and address, where pxeprov's
  rendered dnsmasq config and nginx site run as they are, serving the real TFTP root.
Everything is started here, stopped by PID, and the namespaces deleted at the end, whatever
happens. The process primitives are shared with the test suite's lab (tests/e2e/netlab.py).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from pxeprov import system
from pxeprov.arch import ARM64, X86_64
from pxeprov.errors import CommandError, LabError

Firmware = Literal["bios", "uefi", "uefi-sb", "arm64", "arm64-sb"]
FIRMWARES: dict[str, Firmware] = {
    "bios": "bios", "uefi": "uefi", "uefi-sb": "uefi-sb", "arm64": "arm64", "arm64-sb": "arm64-sb"
}  # fmt: skip
QEMU = X86_64.qemu
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The secboot build and a variable store with Microsoft's keys enrolled and Secure Boot on.
OVMF_SB_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_SB_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
# arm64 (package qemu-efi-aarch64): one code image; Microsoft's keys and Secure Boot on are in
# the variable store alone (the `virt` machine needs no SMM)
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
AAVMF_SB_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.ms.fd")
BRIDGE, TAP = "br0", "tap0"
STOP_TIMEOUT = 10.0
CMD_TIMEOUT = 30.0
START_TIMEOUT = 10.0
LEASES = 16


# ---------------------------------------------------------------- process primitives


def run(argv: Sequence[str], timeout: float = CMD_TIMEOUT) -> str:
    """Run a short command (pxeprov's one runner, system.run); its stdout, or LabError naming
    the command and why it failed."""
    try:
        return system.run(argv, timeout=timeout).stdout
    except CommandError as exc:
        raise LabError(exc.message, exc.hint) from None


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> str:
    """Wait until `ready()` (a server's own sign of life); "" then, else why it never came."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return f"exited rc={proc.returncode}"
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(0.05)
    return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop one process we started: SIGTERM, bounded wait, then SIGKILL (by PID only; to its
    process group when it leads one, as `timeout` does)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    try:  # still unreaped, so the PID (and the group ID equal to it) cannot have been reused
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


def read_from(path: Path, offset: int) -> str:
    """Text appended to a log since byte `offset` ("" if the file does not exist yet)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def live_copy(source: Path, dest: Path, edit: Callable[[str], str | None]) -> Path:
    """A server's live config for a lab: the file, line by line through `edit` (None drops a
    line), readable by the lab's daemons."""
    lines = [edit(line) for line in source.read_text().splitlines()]
    dest.write_text("\n".join(line for line in lines if line is not None) + "\n")
    dest.chmod(0o644)
    return dest


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def traversable_tempdir(prefix: str) -> Path:
    """A new temp dir any user may traverse (0755): dnsmasq drops root before serving."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def machine_uuid(mac: str) -> str:
    """The VM's SMBIOS system UUID: one of its own, the same for the same MAC."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"pxeprov-vm:{mac.lower()}"))


def qemu_argv(
    firmware: Firmware,
    mac: str,
    serial: Path,
    vars_copy: Path,
    memory_mb: int,
    tap: str = TAP,
    accel: Sequence[str] = ("tcg",),
) -> list[str]:
    """A PXE-booting VM: SeaBIOS with its NIC's iPXE ROM (BIOS), or OVMF's own PXE client
    (UEFI; with Secure Boot: q35 with SMM and Microsoft's keys enrolled)."""
    net = ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    common = [
        # a system UUID of its own, as every real machine has (QEMU's default is all zeros for
        # every VM; OVMF's PXE client sends it to the DHCP servers, option 97)
        "-uuid",
        machine_uuid(mac),
        "-m",
        str(memory_mb),
        "-nographic",
        "-serial",
        f"file:{serial}",
        "-monitor",
        "none",
        "-parallel",
        "none",
        "-no-reboot",
    ]
    accels = [a for name in accel for a in ("-accel", name)]
    if firmware in ("arm64", "arm64-sb"):
        return [
            ARM64.qemu,
            "-machine",
            "virt",
            "-cpu",
            "max",
            *common,
            *accels,
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
            *net,
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile=",
            "-device",
            "virtio-rng-pci",
        ]
    if firmware == "uefi-sb":
        return [
            QEMU,
            "-machine",
            "q35,smm=on",
            *common,
            *accels,
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SB_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
            *net,
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile=",
        ]
    argv = [QEMU, *common, *accels, *net]
    if firmware == "bios":
        # QEMU's `pc` brings an empty floppy drive (and CD drive) by default, which no machine
        # of today has: each look at the disks by the booted system (blkid, Clonezilla's scans)
        # then waits on fd0's read errors, a minute and more of a Clonezilla job under TCG.
        # -nodefaults leaves them out (and the VGA, given back; serial, monitor and NIC are
        # given explicitly).
        return [*argv, "-nodefaults", "-vga", "std", "-device",
                f"e1000,netdev=n0,mac={mac},bootindex=1", "-boot", "n"]  # fmt: skip
    return [
        *argv,
        "-device",
        f"virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile=",
        "-drive",
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,file={vars_copy}",
    ]


# ---------------------------------------------------------------- the private network


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class PrivateLan:
    """The two namespaces; `up()` builds them, `down()` removes every trace."""

    workdir: Path
    interface: str  # the server's interface name, recreated on the server's side
    address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    tag: str = field(default_factory=lambda: str(os.getpid()))
    leases: int = LEASES  # the addresses the ordinary DHCP server leases
    clients: str = field(init=False)
    server: str = field(init=False)
    daemons: list[Daemon] = field(default_factory=list, init=False)
    _namespaces: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.clients = f"pxeprov-verify-{self.tag}-c"
        self.server = f"pxeprov-verify-{self.tag}-s"

    def __enter__(self) -> PrivateLan:
        self.up()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.down()

    def plan(self) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address]]:
        """The ordinary DHCP server's address and the addresses it leases: the subnet's first
        free host, then the last ones, never the server's."""
        hosts = [h for h in self.subnet.hosts() if h != self.address]
        if len(hosts) < 3:
            raise LabError(
                f"subnet {self.subnet} is too small to stand a client beside {self.address}"
            )
        dhcp = hosts[0]
        return dhcp, hosts[-min(self.leases, len(hosts) - 1) :]

    def _ip(self, ns: str, *args: str) -> str:
        if ns not in self._namespaces:
            raise LabError(f"refusing to touch namespace {ns!r}: not created here")
        return run(["ip", "-n", ns, *args])

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        for ns in (self.clients, self.server):
            if ns in run(["ip", "netns", "list"]).split():
                raise LabError(f"namespace {ns} exists already; not reusing what is not ours")
            run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            self._ip(ns, "link", "set", "lo", "up")
        c, s = self.clients, self.server
        prefix = self.subnet.prefixlen
        dhcp, _leases = self.plan()
        self._ip(c, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self._ip(c, "addr", "add", f"{dhcp}/{prefix}", "dev", BRIDGE)
        self._ip(c, "addr", "add", "fd00:77::1/64", "dev", BRIDGE, "nodad")  # for RAs (iPXE)
        self._ip(c, "tuntap", "add", "dev", TAP, "mode", "tap")
        self._ip(c, "link", "set", TAP, "master", BRIDGE)
        self._ip(c, "link", "set", TAP, "up")
        self._ip(
            c, "link", "add", "uplink", "type", "veth", "peer", "name", self.interface, "netns", s
        )
        self._ip(c, "link", "set", "uplink", "master", BRIDGE)
        self._ip(c, "link", "set", "uplink", "up")
        self._ip(c, "link", "set", BRIDGE, "up")
        self._ip(s, "addr", "add", f"{self.address}/{prefix}", "dev", self.interface)
        self._ip(s, "link", "set", self.interface, "up")
        deadline = time.monotonic() + 10
        while "state UP" not in self._ip(s, "link", "show", self.interface):
            if time.monotonic() > deadline:
                raise LabError(f"{self.interface} did not come up in {s}")
            time.sleep(0.1)

    def ordinary_dhcp(self) -> Daemon:
        """dnsmasq as a plain DHCP server: addresses only, no PXE options (and IPv6 router
        advertisements, without which iPXE waits some 13 s for IPv6). `no-ping`, as Windows DHCP
        (conflict detection is off by default there): dnsmasq's check that an address is free
        waits 3 s for an echo that never comes, and holds every other client up meanwhile, so
        in a room of 50 a real client's DISCOVERs were answered only after its firmware had
        given up on IPv4."""
        _dhcp, leases = self.plan()
        conf = self.workdir / "ordinary-dhcp.conf"
        conf.write_text(
            "# pxeprov verify: the ordinary DHCP server of the private network\n"
            f"port=0\ninterface={BRIDGE}\nbind-interfaces\nlog-dhcp\nno-ping\n"
            f"dhcp-range={leases[0]},{leases[-1]},{self.subnet.netmask},10m\n"
            f"enable-ra\ndhcp-range=::,constructor:{BRIDGE},ra-only\n"
        )
        return self.dnsmasq("ordinary-dhcp", self.clients, conf)

    def dnsmasq(
        self, name: str, ns: str, conf: Path, binds: Sequence[tuple[Path, Path]] = ()
    ) -> Daemon:
        """dnsmasq in the foreground in `ns` with `conf` (its log, pid and lease files given on
        the command line); `binds`: files mounted over others for it alone (a private mount
        namespace). Returns once it logged its start."""
        log = self.workdir / f"{name}.log"
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={conf}",
            f"--log-facility={log}",
            f"--pid-file={self.workdir / f'{name}.pid'}",
            f"--dhcp-leasefile={self.workdir / f'{name}.leases'}",
        ]
        proc = self._spawn(name, ns, argv, binds)
        daemon = Daemon(name, proc, log)
        self.daemons.append(daemon)
        why = wait_started(proc, lambda: "started, version" in read_from(log, 0), START_TIMEOUT)
        if why:
            raise LabError(
                f"dnsmasq {name} did not start ({why}): "
                f"{read_from(self.workdir / f'{name}.out', 0).strip()}"
            )
        return daemon

    def nginx(self, name: str, site: Path, binds: Sequence[tuple[Path, Path]] = ()) -> Daemon:
        """nginx in the foreground on the server's side around `site`, every file it writes in
        the workdir."""
        prefix = self.workdir / f"nginx-{name}"
        prefix.mkdir()
        prefix.chmod(0o755)
        pid, access, error = prefix / "nginx.pid", prefix / "access.log", prefix / "error.log"
        main = prefix / "nginx.conf"
        main.write_text(
            f"daemon off;\npid {pid};\nerror_log {error};\nevents {{}}\nhttp {{\n"
            f"  access_log {access};\n  include {site};\n}}\n"
        )
        proc = self._spawn(
            f"nginx-{name}", self.server, ["nginx", "-p", str(prefix), "-c", str(main)], binds
        )
        daemon = Daemon(name, proc, access)
        self.daemons.append(daemon)
        why = wait_started(proc, lambda: read_from(pid, 0).strip() == str(proc.pid), START_TIMEOUT)
        if why:
            raise LabError(f"nginx did not start ({why}): {read_from(error, 0).strip()}")
        return daemon

    def _spawn(
        self, name: str, ns: str, argv: list[str], binds: Sequence[tuple[Path, Path]]
    ) -> subprocess.Popen[bytes]:
        if ns not in self._namespaces:
            raise LabError(f"refusing to run {argv[0]} in {ns!r}: not created here")
        # ip netns exec, unshare (no --fork) and sh all exec: the pid is the daemon's own.
        mounts = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in binds)
        script = f'{mounts} && exec "$@"' if mounts else 'exec "$@"'
        full = [
            "ip",
            "netns",
            "exec",
            ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
        ]
        with (self.workdir / f"{name}.out").open("ab") as out:
            return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def client(self, argv: list[str], output: Path) -> subprocess.Popen[bytes]:
        """A virtual client (QEMU under `timeout`) on the clients' side, in a session of its
        own: stop_process then reaches QEMU through its process group."""
        full = ["ip", "netns", "exec", self.clients, *argv]
        with output.open("ab") as out:
            return subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    def down(self) -> None:
        """Stop every daemon and delete the namespaces; keeps going after an error."""
        errors: list[BaseException] = []
        for daemon in reversed(self.daemons):
            try:
                stop_process(daemon.proc)
            except BaseException as exc:  # re-raised below, after the rest
                errors.append(exc)
        self.daemons.clear()
        for ns in reversed(list(self._namespaces)):
            try:
                run(["ip", "netns", "del", ns])
                self._namespaces.remove(ns)
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def vars_template(firmware: Firmware) -> Path | None:
    """The variable store a VM of that firmware starts from (a copy: firmware writes it)."""
    return {"uefi": OVMF_VARS, "uefi-sb": OVMF_SB_VARS, "arm64": AAVMF_VARS,
            "arm64-sb": AAVMF_SB_VARS}.get(firmware)  # fmt: skip


def missing_arm64() -> list[str]:
    """What booting arm64 clients needs besides `missing()`, in words."""
    problems = []
    if shutil.which(ARM64.qemu) is None:
        problems.append(f"{ARM64.qemu} (package {ARM64.qemu_package})")
    for f in (AAVMF_CODE, AAVMF_VARS):
        if not f.is_file():
            problems.append(f"{f} (package qemu-efi-aarch64)")
    return problems


def missing() -> list[str]:
    """What `verify` needs and this machine lacks, in words."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (it creates network namespaces)")
    for program, package in (
        (QEMU, X86_64.qemu_package),
        ("dnsmasq", "dnsmasq"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(program) is None:
            problems.append(f"{program} (package {package})")
    for f in (OVMF_CODE, OVMF_VARS):
        if not f.is_file():
            problems.append(f"{f} (package ovmf)")
    if not Path("/dev/net/tun").exists():
        problems.append("/dev/net/tun")
    return problems
