"""A pxeprov server for the end-to-end tests: a temporary root with the packaged boot loaders,
`pxeprov` run inside namespace B against it, a Clonezilla-shaped ISO, and the checks a good
proxyDHCP boot must pass. Shared by test_boot.py (BIOS, UEFI with iPXE),
test_secureboot.py (UEFI through shim and GRUB), test_http_boot.py (payloads over HTTP) and
bench/boot_bench.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pxeprov import multicast
from pxeprov import state as state_mod
from pxeprov.errors import LabError
from pxeprov.paths import Root
from pxeprov.vlab import Firmware

from ..isos import clonezilla_files, make_iso
from .netlab import (
    A_ADDR,
    B_ADDR,
    LEASE_RANGE,
    VETH_B,
    BootEvidence,
    Dnsmasq,
    NetLab,
    Nginx,
    stop_process,
)

REPO = Path(__file__).resolve().parents[2]
DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
BIOS_MODULES = Path("/usr/lib/syslinux/modules/bios")

# Boot loaders pxeprov copies from their system paths, which under --root R are R/<path>.
LOADERS = (
    Path("/usr/lib/PXELINUX/pxelinux.0"),
    *(BIOS_MODULES / f"{m}.c32" for m in ("ldlinux", "menu", "libutil", "libmenu")),
    Path("/usr/lib/ipxe/snponly.efi"),
)
# `init --http` gives BIOS clients iPXE instead of pxelinux (pass it to build_root's ``extra``).
UNDIONLY = Path("/usr/lib/ipxe/undionly.kpxe")
TFTP_ROOT = "/var/lib/tftpboot"  # as on a real server; rewritten for the test only
IMAGE_DIR = "images/d-i"
APPEND = "console=ttyS0,115200n8 priority=critical"
STATE = f"""\
[[images]]
name = "d-i"
label = "Debian 12 installer"
kind = "custom"
kernel = "{IMAGE_DIR}/linux"
initrd = "{IMAGE_DIR}/initrd.gz"
append = "{APPEND}"
"""
ISO_NAME = "cz"  # the Clonezilla-shaped image, the menu default
CONSOLE = "console=ttyS0,115200n8"
SQUASHFS = os.urandom(3 << 20)
FETCH_URL = f"tftp://{B_ADDR}/images/{ISO_NAME}/filesystem.squashfs"
HTTP_PORT = 8080  # `init --http --http-port 8080`
HTTP_BASE = f"http://{B_ADDR}:{HTTP_PORT}"
HTTP_FETCH_URL = f"{HTTP_BASE}/images/{ISO_NAME}/filesystem.squashfs"
INIT_TIMEOUT = 120.0


def build_root(root: Path, extra: Mapping[Path, Path] | None = None) -> None:
    """What a real server has before `pxeprov init`: packaged loaders, an image, the state.

    ``extra``: more packaged files, system path -> the file to copy there (packages that are
    not installed on this machine, such as trixie's signed shim and GRUB).
    """
    files = {src: src for src in LOADERS} | dict(extra or {})
    for system_path, src in files.items():
        dst = root / system_path.relative_to("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    image = root / TFTP_ROOT.lstrip("/") / IMAGE_DIR
    image.mkdir(parents=True)
    for name in ("linux", "initrd.gz"):
        shutil.copyfile(DI / name, image / name)
    state = root / "etc/pxeprov/pxeprov.toml"
    state.parent.mkdir(parents=True)
    state.write_text(STATE)
    # copyfile/mkdir follow the umask; dnsmasq serves files as user dnsmasq.
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def pxeprov(lab: NetLab, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Inside B, so pxeprov's network detection sees vpxe1 / 10.77.0.2 / 10.77.0.0/24 behind the
    # default route, exactly as on a real server. cwd = repo root: the package is not installed.
    argv = [
        "ip", "netns", "exec", lab.ns_b,
        sys.executable, "-m", "pxeprov", "--root", str(root), *args,
    ]  # fmt: skip
    res = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=INIT_TIMEOUT, check=False
    )
    if res.returncode != 0:
        pytest.fail(
            f"pxeprov {' '.join(args)} exited {res.returncode}\n--- stdout\n{res.stdout}"
            f"--- stderr\n{res.stderr}",
            pytrace=False,
        )
    return res


def clonezilla_iso(directory: Path) -> Path:
    """Laid out as Clonezilla's ISO (xorriso, El Torito, Rock Ridge + Joliet)."""
    files = clonezilla_files(
        kernel=(DI / "linux").read_bytes(),
        initrd=(DI / "initrd.gz").read_bytes(),
        squashfs=SQUASHFS,
    )
    return make_iso(directory / "clonezilla-live-test.iso", files, volume_id="Clonezilla live")


def conf_for_test(conf: Path, tftp_root: Path, dest: Path) -> Path:
    """The rendered config with only its tftp-root line pointed at the test's root, and without
    its log-facility line (the lab's command line names the log, and a config file's option
    would win over it)."""
    text = conf.read_text()
    line = f"tftp-root={TFTP_ROOT}"
    count = text.splitlines().count(line)
    assert count == 1, f"expected exactly one line {line!r} in {conf}, found {count}:\n{text}"
    lines = [f"tftp-root={tftp_root}" if s == line else s for s in text.splitlines()]
    dest.write_text("\n".join(s for s in lines if not s.startswith("log-facility=")) + "\n")
    dest.chmod(0o644)
    return dest


def site_for_test(site: Path, tftp_root: Path, dest: Path, web_dir: Path | None = None) -> Path:
    """The rendered nginx site with only its ``root`` line pointed at the test's TFTP root (and
    the status page's ``alias`` at ``web_dir``, the served root's)."""
    text = site.read_text()
    line = f"root {TFTP_ROOT};"
    count = [s.strip() for s in text.splitlines()].count(line)
    assert count == 1, f"expected exactly one line {line!r} in {site}, found {count}:\n{text}"
    page = "alias /var/lib/pxeprov/web/;"
    moved = {line: f"root {tftp_root};"} | ({page: f"alias {web_dir}/;"} if web_dir else {})
    dest.write_text(
        "\n".join(
            s.replace(s.strip(), moved[s.strip()]) if s.strip() in moved else s
            for s in text.splitlines()
        )
        + "\n"
    )
    dest.chmod(0o644)
    return dest


def leases(ev: BootEvidence) -> list[str]:
    """Addresses the ordinary DHCP server acknowledged to this boot's MAC, in order."""
    mac = re.escape(ev.mac)
    if ev.ordinary == "dnsmasq":
        pattern = rf"DHCPACK\(br0\) (10\.77\.0\.\d+) {mac}"
    else:  # ISC dhcpd -d
        pattern = rf"DHCPACK on (10\.77\.0\.\d+) to {mac} via br0"
    return re.findall(pattern, ev.dhcp_log)


def check_boot(
    ev: BootEvidence, tftp_root: Path, served: tuple[str, ...], fetch_url: str = FETCH_URL
) -> None:
    """Every piece of evidence a good proxyDHCP boot leaves; all failures reported at once.

    ``served``: the files that must have come over TFTP; ``fetch_url``: the squashfs URL the
    kernel command line must carry (HTTP_FETCH_URL when the server was rendered with --http).
    """
    problems: list[str] = []
    # The ordinary server (A) leased the address ...
    acks = leases(ev)
    first, last = (IPv4Address(a) for a in LEASE_RANGE)
    if not acks:
        problems.append(f"ordinary DHCP server ({A_ADDR}) never sent DHCPACK to {ev.mac}")
    elif not all(first <= IPv4Address(a) <= last for a in acks):
        problems.append(f"leased address(es) {acks} outside {LEASE_RANGE}")
    # Without a lease, still check the files went to some lab address.
    client, shown = (re.escape(acks[-1]), acks[-1]) if acks else (r"10\.77\.0\.\d+", "the client")
    # ... the proxy only answered as a proxy, and never leased.
    if not re.search(rf"PXE\({VETH_B}\) {re.escape(ev.mac)} proxy\b", ev.proxy_log):
        problems.append(f"proxy log: no 'PXE({VETH_B}) {ev.mac} proxy'")
    if "DHCPACK" in ev.proxy_log:
        problems.append("proxy log has DHCPACK: the proxy leased an address")
    # Every file came from pxeprov's TFTP root to the leased client.
    for name in served:
        path = re.escape(f"{tftp_root}/{name}")
        if not re.search(rf"sent {path} to {client}\b", ev.proxy_log):
            problems.append(f"proxy log: no 'sent {tftp_root}/{name} to {shown}'")
    if "Linux version" not in ev.serial:
        problems.append("serial: no 'Linux version' (kernel never started)")
    for arg in ("boot=live", "locales=en_US.UTF-8", f"fetch={fetch_url}", CONSOLE):
        if not re.search(rf"Command line:.*{re.escape(arg)}", ev.serial):
            problems.append(f"serial: kernel command line lacks {arg!r}")
    assert not problems, "\n".join(["boot failed:", *problems, "", ev.summary()])


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def console(serial: str) -> str:
    """The serial console with terminal control sequences removed."""
    return _ESCAPES.sub("", serial)


def make_default(lab: NetLab, root: Path, name: str) -> None:
    """The image becomes the menus' default: the state file edited, `pxeprov init` run."""
    path = root / "etc/pxeprov/pxeprov.toml"
    current = state_mod.loads(path.read_text())
    images = tuple(replace(i, default=i.name == name) for i in current.images)
    path.write_text(state_mod.dumps(current.with_changes(images=images)))
    pxeprov(lab, root, "init", "--no-install-packages")


@dataclass
class Served:
    """A rendered root as the lab serves it: its dnsmasq config (and nginx site, when it has
    one) run in namespace B by `OneAtATime`."""

    name: str  # names the servers' logs and test configs
    root: Path
    tftp_root: Path
    proxy: Dnsmasq | None = None
    nginx: Nginx | None = None

    @classmethod
    def of(cls, name: str, root: Path) -> Served:
        return cls(name, root, root / TFTP_ROOT.lstrip("/"))

    @property
    def running(self) -> Dnsmasq:
        assert self.proxy is not None, f"{self.name} is not being served"
        return self.proxy


class OneAtATime:
    """Serves one root at a time: two proxies on one segment would answer the same clients,
    and roots' nginx sites want the same address and port."""

    def __init__(self, lab: NetLab) -> None:
        self.lab = lab
        self.current: Served | None = None

    def serve(self, served: Served) -> Served:
        if self.current is served and served.running.proc.poll() is None:
            return served
        self.stop()
        work = self.lab.workdir
        conf = conf_for_test(served.root / "etc/dnsmasq.d/pxeprov.conf", served.tftp_root,
                             work / f"{served.name}.conf")  # fmt: skip
        served.proxy = self.lab.start_dnsmasq(served.name, self.lab.ns_b, conf)
        self.current = served
        site = served.root / "etc/nginx/conf.d/pxeprov.conf"
        if site.is_file():
            test_site = site_for_test(site, served.tftp_root, work / f"{served.name}-site.conf",
                                      served.root / "var/lib/pxeprov/web")  # fmt: skip
            served.nginx = self.lab.start_nginx(served.name, self.lab.ns_b, test_site)
        return served

    def stop(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        if current.proxy is not None:
            self.lab.stop_dnsmasq(current.proxy)
        if current.nginx is not None:
            self.lab.stop_nginx(current.nginx)
        current.proxy = current.nginx = None


@contextlib.contextmanager
def watching(
    lab: NetLab, root: Path, served: Served, out: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`pxeprov watch --fire` in namespace B on the served root's logs, its output in `out`:
    yields once it watches; stopped (SIGINT, then by its pid) afterwards."""
    assert served.nginx is not None
    argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "pxeprov", "--root", str(root),
            "watch", "--fire", "--dnsmasq-log", str(served.running.log), "--nginx-log",
            str(served.nginx.access_log)]  # fmt: skip
    with out.open("wb") as f:
        watcher = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Watching " not in out.read_text():
            assert watcher.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        yield watcher
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            watcher.wait(timeout=15)
        finally:
            stop_process(watcher)


@contextlib.contextmanager
def stopping_senders(root: Path) -> Iterator[None]:
    """The multicast senders the root's sessions started stop afterwards, whatever happened:
    a sender waits for its first machine without end, and deleting the lab's namespaces does
    not end it (by its pid file, then what a killed one left)."""
    try:
        yield
    finally:
        top = Root.of(root)
        for name in multicast.senders(top):
            multicast.stop(top, name)
            multicast.kill_feeder(top, name)


STAGGER = 2.0  # seconds between the machines' power-on in restore_at_once


def restore_at_once(
    lab: NetLab,
    root: Path,
    name: str,
    machines: Sequence[tuple[Firmware, str, Path]],
    limit: float,
    stop_on: str,
) -> tuple[list[BootEvidence], str]:
    """Serve the root (OneAtATime, as `name`) and boot the machines (firmware, MAC, disk image)
    at once, each on a tap of its own, while `pxeprov watch --fire` follows it; returns when
    every QEMU ended and every job's report was taken (or 30 s after): the boots' evidence and
    the watcher's output.

    Each machine gets an address of its own from the ordinary server (dhcp-host, outside its
    range, never another MAC's: NetLab.pinned_address): dnsmasq reserves no address it offers,
    and after the suite's earlier boots (an hour's leases in a row from .100 up) machines that
    ask in the same seconds walk to the same first free address; all but the first then got a
    NAK, and OVMF gives up its network boot for good (PXE-E07). Windows DHCP, which this server
    stands in for, reserves an offered address. A machine that did not get its own address fails
    the call (LabError): its boot would prove nothing about pxeprov. The machines also power on a
    second or two apart, as people and wake-up packets do."""
    taps = ["tap0", *(lab.add_tap(f"tap{i}") for i in range(1, len(machines)))]
    pins = [f"dhcp-host={mac},{lab.pinned_address(mac)}" for _, mac, _ in machines]
    lab.use_ordinary("dnsmasq", options=pins)
    one = OneAtATime(lab)
    log = lab.workdir / f"{name}-watch.out"

    def boot(i: int) -> BootEvidence:
        firmware, mac, target = machines[i]
        time.sleep(STAGGER * i)
        disk = ["-drive", f"file={target},if=virtio,format=raw"]
        return lab.boot(firmware, mac, served.running, limit=limit, memory_mb=2048,
                        stop_on=stop_on, stop_grace=2.0, tap=taps[i], qemu_extra=disk)  # fmt: skip

    try:
        served = one.serve(Served.of(name, root))
        with watching(lab, root, served, log), ThreadPoolExecutor(len(machines)) as pool:
            evidence = list(pool.map(boot, range(len(machines))))
            # the reports came before the power-offs; their lines (the caller checks the boots
            # first: a boot that failed says more than a report that never came)
            deadline = time.monotonic() + 30
            while log.read_text().count("job done") < len(machines):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
    finally:
        one.stop()
        lab.use_ordinary("dnsmasq")  # the lab's ordinary server as the other tests know it
    for ev in evidence:  # the lab kept its word, or the boots prove nothing about pxeprov
        pin = lab.pinned_address(ev.mac)
        if f"DHCPACK(br0) {pin} {ev.mac}" not in ev.dhcp_log:
            raise LabError(f"the ordinary server never gave {ev.mac} {pin}\n{ev.summary()}")
    return evidence, log.read_text()
