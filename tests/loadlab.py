"""A room booting at once, in a private network: pxeprov's rendered dnsmasq (proxy + TFTP) and
nginx in a server namespace, N simulated clients (tests/loadgen.py) and a few real QEMU clients
in a clients namespace (vlab.PrivateLan: both namespaces are this run's, deleted afterwards).

Used by bench/load_bench.py (N = 50, 100, 200, both layouts) and tests/e2e/test_load.py (N =
50). `Room.run` returns each client's times and the server's CPU and memory over the run.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxeprov import vlab

REPO = Path(__file__).resolve().parent.parent
DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
INTERFACE = "vload0"
ADDRESS = ipaddress.IPv4Address("10.88.0.2")
SUBNET = ipaddress.IPv4Network("10.88.0.0/16")
FIRST_CLIENT = "10.88.1.1"
MAX_CLIENTS = 1000  # the simulated clients' addresses, one each from here
STATE = """\
[[images]]
name = "d-i"
label = "Debian 12 installer"
kind = "custom"
kernel = "images/d-i/linux"
initrd = "images/d-i/initrd.gz"
append = "console=ttyS0,115200n8"
default = true
"""
KERNEL, INITRD = "images/d-i/linux", "images/d-i/initrd.gz"
LOADERS = {
    "/usr/lib/PXELINUX/pxelinux.0": "usr/lib/PXELINUX/pxelinux.0",
    "/usr/lib/ipxe/undionly.kpxe": "usr/lib/ipxe/undionly.kpxe",
    "/usr/lib/ipxe/snponly.efi": "usr/lib/ipxe/snponly.efi",
    **{f"/usr/lib/syslinux/modules/bios/{m}": f"usr/lib/syslinux/modules/bios/{m}"
       for m in ("ldlinux.c32", "menu.c32", "libutil.c32", "libmenu.c32")},
}  # fmt: skip


def pxeprov(ns: str, root: Path, *args: str) -> str:
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "pxeprov", "--root",
                          str(root), *args], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    if res.returncode != 0:
        raise vlab.LabError(f"pxeprov {' '.join(args)}: {res.stderr.strip() or res.stdout}")
    return res.stdout


def build_root(root: Path) -> None:
    """A server before `pxeprov init`: the packaged loaders, the installer, the state."""
    for source, target in LOADERS.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / target)
    images = root / "var/lib/tftpboot/images/d-i"
    images.mkdir(parents=True)
    for name in ("linux", "initrd.gz"):
        shutil.copyfile(DI / name, images / name)
    (root / "etc/pxeprov").mkdir(parents=True)
    (root / "etc/pxeprov/pxeprov.toml").write_text(STATE)
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _dnsmasq_copy(
    source: Path, dest: Path, tftp_root: Path, edit: dict[str, str | None] | None
) -> Path:
    """The rendered dnsmasq config for the lab: its tftp-root moved, no log-facility (the lab
    names the log), `edit`'s settings replaced (None: removed; one the file lacks: added)."""
    edit = dict(edit or {})

    def line_of(line: str) -> str | None:
        key = line.split("=", 1)[0]
        if key in edit:
            value = edit.pop(key)
            return None if value is None else f"{key}={value}"
        if key == "log-facility":
            return None
        return f"tftp-root={tftp_root}" if key == "tftp-root" else line

    conf = vlab.live_copy(source, dest, line_of)
    with conf.open("a") as f:
        f.writelines(f"{k}={v}\n" for k, v in edit.items() if v is not None)
    return conf


def _site_copy(source: Path, dest: Path, tftp_root: Path, edit: dict[str, str] | None) -> Path:
    """The rendered nginx site for the lab: its root moved, `edit`'s lines (by their text)
    replaced, each of which must be there."""
    edit = dict(edit or {})

    def line_of(line: str) -> str:
        text = line.strip()
        if text.startswith("root "):
            return f"    root {tftp_root};"
        return f"    {edit.pop(text)}" if text in edit else line

    site = vlab.live_copy(source, dest, line_of)
    if edit:
        raise vlab.LabError(f"the rendered site has no line {next(iter(edit))!r} to replace")
    return site


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / 100  # utime, stime (clock ticks)
    return total


def _peak_rss(pids: list[int]) -> int:
    """The processes' peak resident memory, bytes (VmHWM)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class Result:
    layout: str  # http, tftp
    clients: list[dict[str, Any]]
    seconds: float
    server_cpu: dict[str, float]  # dnsmasq, nginx: CPU seconds over the run
    server_rss: dict[str, int]  # peak resident bytes
    real: list[dict[str, Any]] = field(default_factory=list)  # QEMU clients: see _RealClient
    # what the first simulated client of each firmware to reach its kernel asked for
    simulated: dict[str, list[Fetch]] = field(default_factory=dict)

    @property
    def booted(self) -> list[dict[str, Any]]:
        return [c for c in self.clients if "kernel" in c["times"]]

    def percentile(self, p: float) -> float:
        times = sorted(c["times"]["kernel"] for c in self.booted)
        if not times:
            return float("nan")
        return times[min(len(times) - 1, max(0, round(p / 100 * len(times)) - 1))]

    @property
    def retries(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.clients:
            for what, n in c["retries"].items():
                out[what] = out.get(what, 0) + n
        return out

    def summary(self) -> str:
        errors = sorted({c["error"] for c in self.clients if c["error"]})
        median = statistics.median([c["times"]["kernel"] for c in self.booted] or [float("nan")])
        return (f"{self.layout}: {len(self.booted)}/{len(self.clients)} reached the kernel, "
                f"p50 {median:.1f} s, p99 {self.percentile(99):.1f} s, retries {self.retries}, "
                f"errors {errors[:3]}")  # fmt: skip


@dataclass
class Server:
    lan: vlab.PrivateLan
    root: Path
    http: bool
    dnsmasq: vlab.Daemon
    nginx: vlab.Daemon | None


@contextmanager
def server(workdir: Path, http: bool, dnsmasq_edit: dict[str, str | None] | None = None,
           site_edit: dict[str, str] | None = None) -> Iterator[Server]:  # fmt: skip
    """The private network with pxeprov's server running in it. As a reference to measure
    against, `dnsmasq_edit`: settings of the rendered dnsmasq config replaced (None: removed);
    `site_edit`: lines of the rendered nginx site replaced (the line's text: its new text)."""
    # the ordinary server offers addresses to every simulated client too (they never take
    # one): a pool of their number, so that the real clients still get theirs
    lan = vlab.PrivateLan(workdir / "lan", INTERFACE, ADDRESS, SUBNET, tag=f"load{os.getpid()}",
                          leases=MAX_CLIENTS + 16)  # fmt: skip
    lan.workdir.mkdir(parents=True)
    lan.workdir.chmod(0o755)
    root = workdir / "root"
    build_root(root)
    with lan:
        pxeprov(lan.server, root, "init", "--no-install-packages", "--interface", INTERFACE,
                "--address", str(ADDRESS), "--subnet", str(SUBNET), "--menu-timeout", "1",
                "--http" if http else "--no-http")  # fmt: skip
        tftp = root / "var/lib/tftpboot"
        conf = _dnsmasq_copy(root / "etc/dnsmasq.d/pxeprov.conf", workdir / "dnsmasq.conf",
                             tftp, dnsmasq_edit)  # fmt: skip
        lan.ordinary_dhcp()  # for the real clients' addresses
        dnsmasq = lan.dnsmasq("pxeprov", lan.server, conf)
        nginx = None
        if http:
            site = _site_copy(root / "etc/nginx/conf.d/pxeprov.conf", workdir / "site.conf", tftp,
                              site_edit)  # fmt: skip
            nginx = lan.nginx("pxeprov", site)
        yield Server(lan, root, http, dnsmasq, nginx)


def run(srv: Server, n: int, real: Sequence[vlab.Firmware] = (), spread: float = 1.0
        ) -> Result:  # fmt: skip
    """N simulated clients power on at once; with real QEMU clients of the firmwares `real`
    among them: those power on first, and the simulated room when every real one's first
    DISCOVER has reached the proxy (how much of each real client's boot the room's own then
    overlapped is in its result)."""
    lan = srv.lan
    first = ipaddress.IPv4Address(FIRST_CLIENT)
    prefix = SUBNET.prefixlen
    for i in range(n):
        vlab.run(["ip", "-n", lan.clients, "addr", "add", f"{first + i}/{prefix}", "dev",
                  vlab.BRIDGE, "nodad"])  # fmt: skip
    # `ip netns exec`, unshare and sh exec: a daemon's pid is its process's own
    pids = {"dnsmasq": [srv.dnsmasq.proc.pid], "nginx": []}
    if srv.nginx is not None:
        pids["nginx"] = [srv.nginx.proc.pid, *_children(srv.nginx.proc.pid)]
    cpu0 = {k: _cpu(v) for k, v in pids.items()}
    base = f"http://{ADDRESS}" if srv.http else None
    argv = ["ip", "netns", "exec", lan.clients, sys.executable, "-m", "tests.loadgen",
            "--clients", str(n), "--device", vlab.BRIDGE, "--addresses", FIRST_CLIENT,
            "--kernel", KERNEL, "--initrd", INITRD, "--spread", str(spread),
            *(["--http-base", base] if base else [])]  # fmt: skip
    watchers: list[_RealClient] = []
    room = (0.0, 0.0)  # the simulated room's start and end (monotonic)
    done = False
    try:
        for i, firmware in enumerate(real):
            offset = vlab.size_of(srv.dnsmasq.log)
            watchers.append(_RealClient(_qemu(lan, i, firmware), srv.dnsmasq.log, offset))
            watchers[-1].start()
        deadline = time.monotonic() + FIRST_DISCOVER_LIMIT
        while not all(w.asked is not None or w.why for w in watchers):
            if time.monotonic() > deadline:
                raise vlab.LabError(f"a real client did not ask the proxy in "
                                    f"{FIRST_DISCOVER_LIMIT:.0f} s")  # fmt: skip
            time.sleep(POLL)
        t0 = time.monotonic()
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900,
                             check=False)  # fmt: skip
        room = (t0, time.monotonic())
        done = out.returncode == 0
    finally:
        _stop_real(lan, watchers, wait=done)
    for i in range(n):
        vlab.run(["ip", "-n", lan.clients, "addr", "del", f"{first + i}/{prefix}", "dev",
                  vlab.BRIDGE])  # fmt: skip
    if out.returncode != 0 or os.environ.get("LOADGEN_DEBUG"):
        sys.stderr.write(out.stderr[-3000:])
    if out.returncode != 0:
        raise vlab.LabError(f"the load generator failed: {out.stderr[-2000:]}")
    found = json.loads(out.stdout)
    leases = _leases(lan.workdir / "ordinary-dhcp.leases")
    real_results = [w.result(leases.get(w.qemu.mac), room) for w in watchers]
    simulated = {}
    for c in found["clients"]:
        if c["firmware"] not in simulated and "kernel" in c["times"]:
            simulated[c["firmware"]] = normalized(c["asked"])
    return Result(
        "http" if srv.http else "tftp",
        found["clients"],
        found["seconds"],
        {k: _cpu(v) - cpu0[k] for k, v in pids.items()},
        {k: _peak_rss(v) for k, v in pids.items()},
        real_results,
        simulated,
    )


def _stop_real(lan: vlab.PrivateLan, watchers: list[_RealClient], wait: bool) -> None:
    """The real clients' end: with `wait` (the room went as planned) each has until its limit
    to reach its kernel; then, or at once, QEMU is stopped, its wire recorder (which writes
    what it saw as it ends), and its tap deleted. Every step is tried; the first error is
    raised."""
    errors: list[BaseException] = []
    for w in watchers:
        w.join(REAL_LIMIT + 10 if wait else 0)
    steps = [functools.partial(vlab.stop_process, w.qemu.proc) for w in watchers]
    steps += [functools.partial(vlab.stop_process, w.qemu.wire) for w in watchers]
    steps += [functools.partial(vlab.run, ["ip", "-n", lan.clients, "link", "del", w.qemu.tap])
              for w in watchers]  # fmt: skip
    for step in steps:
        try:
            step()
        except BaseException as exc:  # raised below, after the rest
            errors.append(exc)
    for w in watchers:
        w.join(POLL * 5)
    if errors:
        raise errors[0]


FIRST_DISCOVER_LIMIT = 60.0  # QEMU's start and its firmware's, to its first DISCOVER
REAL_LIMIT = 300.0  # a real client's power-on to its kernel, in the room
POLL = 0.2
MENUS = ("boot.ipxe", "ldlinux.c32")  # the first file a loader asks for once it runs

Fetch = tuple[str, str, str]  # (tftp | http, path, a read request's options): tests/wire.py


def normalized(asked: Sequence[Sequence[str]]) -> list[Fetch]:
    """Requests with the names that differ per client (pxelinux's config looked for by UUID,
    MAC and address in hex) as one placeholder, and without TFTP's windowsize option (OVMF
    asks for it, dnsmasq does not take it up, the simulator does not ask)."""
    out: list[Fetch] = []
    for what, path, options in asked:
        if path.startswith("pxelinux.cfg/") and path != "pxelinux.cfg/default":
            path = "pxelinux.cfg/<this client>"
        words = [w for w in options.split() if not w.startswith("windowsize=")]
        out.append((what, path, " ".join(words)))
    return out


def from_menu(fetches: list[Fetch]) -> list[Fetch]:
    """What a client asked for from its loader's first file on (iPXE's script, pxelinux's
    ldlinux.c32): the part a real BIOS client here shares with a PXE ROM's, QEMU's ROM being
    iPXE already."""
    for i, (_what, path, _options) in enumerate(fetches):
        if path in MENUS:
            return fetches[i:]
    return []


def _leases(path: Path) -> dict[str, str]:
    """MAC -> address, from dnsmasq's lease file (expiry mac address name client-id)."""
    found = {}
    for line in vlab.read_from(path, 0).splitlines():
        fields = line.split()
        if len(fields) >= 3:
            found[fields[1].lower()] = fields[2]
    return found


@dataclass
class _Qemu:
    mac: str
    firmware: vlab.Firmware
    proc: subprocess.Popen[bytes]
    serial: Path
    tap: str
    wire: subprocess.Popen[bytes]  # tests/wire.py on its tap
    asked: Path  # what wire.py saw it ask for


def _qemu(lan: vlab.PrivateLan, i: int, firmware: vlab.Firmware) -> _Qemu:
    """A real client among the simulated ones (BIOS: SeaBIOS and its NIC's iPXE ROM; UEFI:
    OVMF's own PXE client) on a tap of its own on the clients' bridge."""
    tap = f"tapq{i}"
    vlab.run(["ip", "-n", lan.clients, "tuntap", "add", "dev", tap, "mode", "tap"])
    vlab.run(["ip", "-n", lan.clients, "link", "set", tap, "master", vlab.BRIDGE])
    vlab.run(["ip", "-n", lan.clients, "link", "set", tap, "up"])
    mac = f"52:54:00:88:00:{i + 1:02x}"
    serial = lan.workdir / f"serial-real-{i}.log"
    variables = lan.workdir / f"vars-{i}.fd"
    template = vlab.vars_template(firmware)
    if template is not None:
        shutil.copyfile(template, variables)
    asked = lan.workdir / f"asked-real-{i}.json"
    wire = subprocess.Popen(["ip", "netns", "exec", lan.clients, sys.executable, "-m",
                             "tests.wire", tap, str(asked)], cwd=REPO,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    argv = vlab.qemu_argv(firmware, mac, serial, variables, 512, tap)
    limit = str(int(REAL_LIMIT + FIRST_DISCOVER_LIMIT))
    try:
        why = vlab.wait_started(wire, asked.exists, vlab.START_TIMEOUT)  # listening
        if why:
            raise vlab.LabError(f"the wire recorder on {tap} did not start ({why})")
        proc = lan.client(["timeout", "-k", "5", limit, *argv], lan.workdir / f"qemu-real-{i}.out")
    except BaseException:
        vlab.stop_process(wire)
        raise
    return _Qemu(mac, firmware, proc, serial, tap, wire, asked)


class _RealClient(threading.Thread):
    """Watches one real client while the room boots: when its first DISCOVER reached the proxy
    (the proxy's log after `offset` names its MAC), when its kernel started (its console says
    "Linux version": kernel and initrd loaded, the kernel running); both after QEMU started."""

    def __init__(self, qemu: _Qemu, proxy_log: Path, offset: int) -> None:
        super().__init__(daemon=True)
        self.qemu, self.proxy_log, self.offset = qemu, proxy_log, offset
        self.t0 = time.monotonic()
        self.asked: float | None = None
        self.kernel: float | None = None
        self.why = ""

    def run(self) -> None:
        while (now := time.monotonic() - self.t0) < REAL_LIMIT:
            if self.asked is None:  # the log's new whole lines only, once each
                text = vlab.read_from(self.proxy_log, self.offset)
                text = text[: text.rfind("\n") + 1]
                self.offset += len(text.encode())
                if f" {self.qemu.mac} " in text:
                    self.asked = now
            if "Linux version" in vlab.read_from(self.qemu.serial, 0):
                self.kernel = now
                return
            if self.qemu.proc.poll() is not None:
                self.why = f"QEMU ended ({self.qemu.proc.returncode})"
                return
            time.sleep(POLL)
        self.why = f"no kernel within {REAL_LIMIT:.0f} s"

    def result(self, ip: str | None, room: tuple[float, float]) -> dict[str, Any]:
        """Call after its wire.py ended (it writes what the client asked for then). `overlap`:
        the share of its time from DISCOVER to kernel during which the simulated room ran."""
        asked = json.loads(vlab.read_from(self.qemu.asked, 0) or "[]")
        overlap = None
        if self.asked is not None and self.kernel is not None and self.kernel > self.asked:
            start, end = self.t0 + self.asked, self.t0 + self.kernel
            both = max(0.0, min(end, room[1]) - max(start, room[0]))
            overlap = both / (end - start)
        return {"mac": self.qemu.mac, "firmware": self.qemu.firmware, "ip": ip,
                "asked_after": self.asked, "kernel_after": self.kernel, "why": self.why,
                "overlap": overlap, "fetches": normalized(asked)}  # fmt: skip
