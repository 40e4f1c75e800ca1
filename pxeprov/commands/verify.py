"""`verify`: virtual BIOS and UEFI clients (QEMU) boot from this server's own rendered config
and TFTP root, on a private network of their own (vlab.py), never the LAN: the proof that the
server works before the first real machine is tried.

The live dnsmasq config and nginx site run as they are (their logs sent to a scratch
directory); only the menus are swapped, for these daemons alone (a bind mount in a private mount
namespace), for copies rendered with a one-second timeout and the image to boot as default. Each
client's stages (vlab's logs, read as `watch` reads them) are reported with their times.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pxeprov import arch, boot, bootlog, pipeline, render, vlab
from pxeprov.errors import InputError, MissingFileError
from pxeprov.paths import NGINX_SITE
from pxeprov.pipeline import Machine
from pxeprov.state import Image, State

NAMES = {"bios": "BIOS", "uefi": "UEFI", "uefi-sb": "UEFI Secure Boot", "arm64": "UEFI arm64",
         "arm64-sb": "UEFI arm64 Secure Boot"}  # fmt: skip
MEMORY_MB = 2048  # a loader holds the whole initrd, and a live kernel its squashfs
POLL = 0.3
KERNEL_WAIT = 20.0  # seconds a kernel with a serial console gets to say it started


@dataclass(frozen=True)
class VerifyOptions:
    image: str | None = None
    firmwares: tuple[vlab.Firmware, ...] = ()  # () = every one this server serves
    timeout: float = 300.0  # per boot
    stall: float = 90.0  # seconds without a new stage
    keep: bool = False  # keep the scratch directory (logs, serial consoles)
    accel: str = "tcg"  # QEMU's accelerator: tcg (emulation: slower, works everywhere) or kvm

    @classmethod
    def parse(
        cls, image: str | None, firmware: str | None, timeout: float, keep: bool, accel: str
    ) -> VerifyOptions:
        """The options as the command line gives them (`--firmware bios,uefi`), checked."""
        firmwares: tuple[vlab.Firmware, ...] = ()
        if firmware:
            names = tuple(f.strip() for f in firmware.split(","))
            bad = [n for n in names if n not in NAMES]
            if bad:
                raise InputError(f"--firmware {bad[0]!r}: one of {', '.join(NAMES)}")
            firmwares = tuple(vlab.FIRMWARES[n] for n in names)
        if not 30 <= timeout <= 3600:
            raise InputError(f"--timeout {timeout} must be between 30 and 3600 seconds")
        if accel not in ("tcg", "kvm"):
            raise InputError(f"--accel {accel!r}: tcg or kvm")
        return cls(image, firmwares, timeout, keep=keep, accel=accel)


@dataclass
class BootReport:
    firmware: vlab.Firmware
    reached: list[tuple[str, float, str]] = field(default_factory=list)  # stage, s, what
    final: str = ""  # the stage that ends a good boot
    problem: str = ""  # "" when it reached `final`
    kernel_started: bool = False  # "Linux version" on the serial console (console=ttyS0)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def name(self) -> str:
        return NAMES[self.firmware]


@dataclass
class VerifyResult:
    image: str  # "" when there is none: up to the menu only
    boots: list[BootReport]
    notes: list[str]
    scratch: Path | None = None  # kept with --keep


def _pick_image(state: State, wanted: str | None) -> tuple[Image | None, list[str]]:
    if wanted is not None:
        image = next((i for i in state.images if i.name == wanted), None)
        if image is None:
            known = ", ".join(i.name for i in state.images) or "none"
            raise InputError(f"there is no image {wanted!r} (images: {known})")
        return image, []
    image = state.default_image or (state.images[0] if state.images else None)
    if image is None:
        return None, [
            "no image in the menus: each client is followed up to its menu "
            "(`pxeprov add-image` adds one)"
        ]
    if not image.default:
        return image, [
            f"the menus' default is the local disk: booting {image.name} instead "
            "(--image NAME chooses)"
        ]
    return image, []


def _final(state: State, image: Image | None) -> str:
    if image is None or state.http_base_url:
        return "menu"
    return "rootfs" if image.rootfs or image.files else "initrd"


def _firmwares(options: VerifyOptions, decision: boot.Decision) -> tuple[vlab.Firmware, ...]:
    """Every client this server serves, as far as this machine can emulate it: arm64 ones
    (AAVMF) where qemu-system-aarch64 and qemu-efi-aarch64 are installed."""
    if options.firmwares:
        return options.firmwares
    sb = decision.uefi == "grub" and vlab.OVMF_SB_CODE.is_file() and vlab.OVMF_SB_VARS.is_file()
    found: tuple[vlab.Firmware, ...] = ("bios", "uefi", "uefi-sb") if sb else ("bios", "uefi")
    if decision.arm64 is not None and not vlab.missing_arm64():
        signed = decision.arm64 == "grub" and vlab.AAVMF_SB_VARS.is_file()
        found += ("arm64-sb",) if signed else ("arm64",)
    return found


def _arch_of(firmware: vlab.Firmware) -> arch.Architecture:
    return arch.ARM64 if firmware.startswith("arm64") else arch.X86_64


def verify(machine: Machine, options: VerifyOptions, say: Callable[[str], None]) -> VerifyResult:
    problems = vlab.missing()
    if problems:
        raise MissingFileError(
            f"verify needs {', '.join(problems)}",
            "apt-get install qemu-system-x86 ovmf (it boots virtual clients)",
        )
    state = pipeline.load_state(machine.root)
    if state.network is None:
        raise InputError("pxeprov is not set up here", "run `pxeprov init`")
    net = state.network
    decision = boot.decide(state, machine.root)
    image, notes = _pick_image(state, options.image)
    if state.http_base_url:
        notes.append(
            f"payloads come from {state.http_base_url}, which the private network "
            "cannot reach: each client is followed up to its menu"
        )
    conf_live = machine.root.path(render.dnsmasq_path(state))
    if not conf_live.is_file():
        raise InputError(f"{conf_live} is missing", "run `pxeprov init`")
    tftp_root = machine.root.path(state.tftp_root)
    scratch = vlab.traversable_tempdir("pxeprov-verify-")
    try:
        binds = _menus(machine, state, decision, image, scratch, tftp_root)

        def dnsmasq_line(line: str) -> str | None:
            if line.startswith("log-facility="):
                return None  # the private network's log, given on the command line
            if line.startswith("tftp-root=") and not machine.root.is_system:
                return f"tftp-root={tftp_root}"
            return line

        conf = vlab.live_copy(conf_live, scratch / "dnsmasq.conf", dnsmasq_line)
        site = None
        if state.http and not state.http_base_url:

            def site_line(line: str) -> str:
                if line.strip().startswith("root ") and not machine.root.is_system:
                    return f"    root {tftp_root};"
                return line

            site = vlab.live_copy(machine.root.path(NGINX_SITE), scratch / "site.conf", site_line)
        lan = vlab.PrivateLan(scratch / "lan", net.interface, net.address, net.subnet)
        lan.workdir.mkdir()
        lan.workdir.chmod(0o755)
        with lan:
            lan.ordinary_dhcp()
            proxy = lan.dnsmasq("pxeprov", lan.server, conf, binds)
            web = lan.nginx("pxeprov", site, binds) if site is not None else None
            stages = bootlog.stage_of_files(state, decision)
            roots = (str(state.tftp_root), str(tftp_root))
            boots = []
            for index, firmware in enumerate(_firmwares(options, decision)):
                say(f"{NAMES[firmware]}: booting a virtual client (QEMU) ...")
                # a client of another architecture than the image's: up to its menu
                mine = image if image is None or image.arch == _arch_of(firmware).name else None
                if image is not None and mine is None:
                    notes.append(f"{NAMES[firmware]}: {image.name} is an {image.arch} image: "
                                 "this client is followed up to its menu")  # fmt: skip
                boots.append(
                    _boot(
                        lan,
                        firmware,
                        index,
                        proxy,
                        web,
                        stages,
                        roots,
                        _final(state, mine) if mine is not None or image is None else "menu",
                        options,
                        _console(state, mine),
                    )
                )
        return VerifyResult(
            image.name if image else "", boots, notes, scratch if options.keep else None
        )
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _menus(
    machine: Machine,
    state: State,
    decision: boot.Decision,
    image: Image | None,
    scratch: Path,
    tftp_root: Path,
) -> list[tuple[Path, Path]]:
    """The menus rendered with a one-second timeout and `image` as default, and where each is
    mounted (over the live one) for verify's daemons alone."""
    images = tuple(replace(i, default=i is image) for i in state.images) if image else state.images
    quick = state.with_changes(menu_timeout=1, images=images)
    binds = []
    for f in render.render(quick, pipeline.override_dir(machine.root), decision):
        if f.syntax not in boot.MENUS or f.content is None:
            continue
        live = machine.root.path(f.path)
        if not live.is_file():
            raise InputError(f"{live} is missing", "run `pxeprov init`")
        copy = scratch / "menus" / live.relative_to(tftp_root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(f.content)
        copy.chmod(0o644)
        binds.append((copy, live))
    return binds


def _boot(
    lan: vlab.PrivateLan,
    firmware: vlab.Firmware,
    index: int,
    proxy: vlab.Daemon,
    web: vlab.Daemon | None,
    stages: dict[str, str],
    roots: tuple[str, ...],
    final: str,
    options: VerifyOptions,
    console: bool,
) -> BootReport:
    mac = f"52:54:00:7e:00:{index + 1:02x}"
    serial = lan.workdir / f"serial-{firmware}.log"
    vars_copy = lan.workdir / f"vars-{firmware}.fd"
    template = vlab.vars_template(firmware)
    if template is not None:  # firmware writes its variable store: a copy, never the system's
        shutil.copyfile(template, vars_copy)
    argv = vlab.qemu_argv(firmware, mac, serial, vars_copy, MEMORY_MB, accel=(options.accel,))
    offsets = {proxy.log: vlab.size_of(proxy.log)}
    if web is not None:
        offsets[web.log] = vlab.size_of(web.log)
    tracker = bootlog.Tracker(stages)
    report = BootReport(firmware, final=final)
    limit = int(options.timeout) + 30
    proc = lan.client(
        ["timeout", "-k", "5", str(limit), *argv], lan.workdir / f"qemu-{firmware}.out"
    )
    t0 = time.monotonic()
    progress = t0
    try:
        while True:
            now = time.monotonic()
            events = bootlog.parse_dnsmasq(
                vlab.read_from(proxy.log, offsets[proxy.log]).splitlines(), roots
            )
            offsets[proxy.log] = vlab.size_of(proxy.log)
            if web is not None:
                events += bootlog.parse_nginx(
                    vlab.read_from(web.log, offsets[web.log]).splitlines()
                )
                offsets[web.log] = vlab.size_of(web.log)
            for event in sorted(events, key=lambda e: e.time):
                tracker.feed(event)
            client = tracker.clients.get(mac)
            if client is not None:
                for stage in bootlog.STAGES:
                    if stage in client.reached and stage not in {s for s, _, _ in report.reached}:
                        what = client.how.get(stage, "")
                        report.reached.append((stage, now - t0, what))
                        progress = now
                if final in client.reached:
                    report.seconds = now - t0
                    if console:  # the kernel says so on the serial console: wait for it
                        _wait_for_kernel(serial, KERNEL_WAIT)
                    break
                if client.problem:
                    report.problem = client.problem
                    break
            if b"Linux version" in _read(serial):
                report.kernel_started = True
            if now - progress > options.stall:
                report.problem = _stalled(client, options.stall)
                break
            if now - t0 > options.timeout:
                report.problem = f"not done within {options.timeout:.0f} s: " + _stalled(
                    client, options.stall
                )
                break
            if proc.poll() is not None:
                report.problem = f"the virtual client stopped (QEMU exit {proc.returncode})"
                break
            time.sleep(POLL)
    finally:
        vlab.stop_process(proc)
    report.kernel_started = report.kernel_started or b"Linux version" in _read(serial)
    report.seconds = report.seconds or time.monotonic() - t0
    return report


def _console(state: State, image: Image | None) -> bool:
    """Whether the image's kernel writes to the serial console (console=ttyS..., arm64's
    console=ttyAMA0)."""
    if image is None or not state.network:
        return False
    args = render.menu_entry(state, image).args
    return "console=ttyS" in args or "console=ttyAMA" in args


def _wait_for_kernel(serial: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while b"Linux version" not in _read(serial) and time.monotonic() < deadline:
        time.sleep(POLL)


def _stalled(client: bootlog.Client | None, stall: float) -> str:
    if client is None or not client.reached:
        return (
            f"no PXE request reached pxeprov's dnsmasq within {stall:.0f} s (its config "
            "does not answer: `pxeprov doctor`)"
        )
    stage = bootlog.STAGE_WORDS[client.stage]
    return f"stalled after {stage}: {bootlog.stall_cause(client)}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
