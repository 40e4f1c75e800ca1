"""End to end: UEFI Secure Boot through pxeprov's proxyDHCP, as verified in shared/lab/secureboot.

Chain: OVMF with Microsoft's keys and Secure Boot enforced -> shimx64.efi (Microsoft-signed)
-> grubx64.efi (Debian 13's signed GRUB 2.12, the first that takes its server from a proxy
offer) -> grub/grub.cfg -> the Debian-signed installer kernel of the Clonezilla-shaped ISO.

Two roots are rendered by `pxeprov init` inside namespace B, both with trixie's signed shim and
GRUB at their packaged paths: ``--uefi-loader grub`` (the chain above) and ``--uefi-loader ipxe``
(unsigned snponly.efi, which Secure Boot must refuse). Namespace B runs one proxy at a time.
The ordinary DHCP server in namespace A is switched per test between dnsmasq (siaddr = itself),
ISC dhcpd W ("Windows-like": siaddr 0.0.0.0, no boot file) and Wf (a BOOTP file name in the
ACK, which makes shim ignore the proxy: the reason option 67 must stay unset).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import (
    OVMF_CODE,
    OVMF_VARS,
    SECUREBOOT_FILES,
    BootEvidence,
    Dnsmasq,
    NetLab,
    missing_files,
)
from .pxeserver import (
    CONSOLE,
    DI,
    FETCH_URL,
    ISO_NAME,
    LOADERS,
    TFTP_ROOT,
    build_root,
    check_boot,
    clonezilla_iso,
    conf_for_test,
    leases,
    pxeprov,
)
from .sbfiles import SecureBootFiles

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Where Debian's shim-signed and grub-efi-amd64-signed install them (here: trixie's, unpacked).
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")

SB_CHAIN = (
    "shimx64.efi",
    "grubx64.efi",
    "grub/grub.cfg",
    f"images/{ISO_NAME}/vmlinuz",
    f"images/{ISO_NAME}/initrd.img",
)
# The kernel's own verdict (arch/x86/kernel/setup.c), printed right after "Linux version".
SB_ENABLED = "secureboot: Secure boot enabled"
SB_DISABLED = "secureboot: Secure boot disabled"
# shim 16.1 netboot.c, when the ACK's BOOTP file field sends it to siaddr 0.0.0.0 (NOTES.txt).
SHIM_FETCH = "Fetching Netboot Image grubx64.efi"
SHIM_FETCH_FAILED = "Unable to fetch TFTP image"
# edk2's BDS when the image fails Secure Boot verification (NOTES.txt, case sb1-snponly).
ACCESS_DENIED = re.compile(
    r'BdsDxe: failed to load Boot\w+ "UEFI PXEv4 [^"]*" from \S+: Access Denied'
)

BOOT_LIMIT = 120.0  # a good boot reaches the kernel in ~25 s under TCG
# A refused boot: the evidence is on the console ~11 s after QEMU starts; then stop.
REFUSED_LIMIT = 60.0
REFUSED_GRACE = 1.0

# One MAC per test, so each boot's lines can be told apart in the shared logs.
W_MAC = "52:54:00:77:05:01"
DNSMASQ_MAC = "52:54:00:77:05:02"
WF_MAC = "52:54:00:77:05:03"
IPXE_MAC = "52:54:00:77:05:04"
NO_SB_MAC = "52:54:00:77:05:05"


@dataclass(frozen=True)
class Rendered:
    """A root pxeprov rendered, not yet served."""

    uefi_loader: str
    root: Path
    tftp_root: Path  # where the TFTP root really is (inside root)
    conf: Path  # the dnsmasq config exactly as pxeprov rendered it
    test_conf: Path  # the same with only its tftp-root line rewritten


class Proxy:
    """The proxyDHCP + TFTP dnsmasq in ns B. Only one may serve the LAN, so serving another
    root stops the current one first; each root logs to its own file."""

    def __init__(self, lab: NetLab) -> None:
        self.lab = lab
        self._running: tuple[Rendered, Dnsmasq] | None = None

    def serve(self, server: Rendered) -> Dnsmasq:
        if self._running is not None:
            current, proxy = self._running
            if current is server and proxy.proc.poll() is None:
                return proxy
            self.stop()
        name = f"sb-proxy-{server.uefi_loader}"
        proxy = self.lab.start_dnsmasq(name, self.lab.ns_b, server.test_conf)
        self._running = (server, proxy)
        return proxy

    def stop(self) -> None:
        if self._running is not None:
            self.lab.stop_dnsmasq(self._running[1])
            self._running = None


@dataclass(frozen=True)
class SecureBootServer:
    files: SecureBootFiles
    grub: Rendered  # --uefi-loader grub: shim -> GRUB 2.12
    ipxe: Rendered  # --uefi-loader ipxe: unsigned snponly.efi
    proxy: Proxy


def render(
    lab: NetLab, root: Path, iso: Path, uefi_loader: str, files: SecureBootFiles
) -> Rendered:
    build_root(root, {SHIM: files.shim, GRUB: files.grub})
    init = ("init", "--no-install-packages", "--menu-timeout", "1", "--no-http",
            "--uefi-loader", uefi_loader)  # fmt: skip
    pxeprov(lab, root, *init)
    pxeprov(lab, root, "add-image", str(iso), "--name", ISO_NAME, "--default", "--append", CONSOLE)
    conf = root / "etc/dnsmasq.d/pxeprov.conf"
    tftp_root = root / TFTP_ROOT.lstrip("/")
    test_conf = conf_for_test(conf, tftp_root, lab.workdir / f"pxeprov-sb-{uefi_loader}.conf")
    return Rendered(uefi_loader, root, tftp_root, conf, test_conf)


@pytest.fixture(scope="module")
def sb(lab: NetLab, make_dir: MakeDir, sb_files: SecureBootFiles) -> Iterator[SecureBootServer]:
    needed = (*SECUREBOOT_FILES, OVMF_CODE, OVMF_VARS, *LOADERS, DI / "linux", DI / "initrd.gz")
    problems = missing_files(needed)
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    iso = clonezilla_iso(make_dir("pxeprov-e2e-sb-iso-"))
    grub = render(lab, make_dir("pxeprov-e2e-sb-root-"), iso, "grub", sb_files)
    ipxe = render(lab, make_dir("pxeprov-e2e-sb-ipxe-root-"), iso, "ipxe", sb_files)
    proxy = Proxy(lab)
    try:
        yield SecureBootServer(files=sb_files, grub=grub, ipxe=ipxe, proxy=proxy)
    finally:
        try:
            proxy.stop()
        finally:
            # The rest of the session (test_boot.py) expects the lab's default ordinary server.
            lab.use_ordinary("dnsmasq")


def pxe_service(conf: Path, csa: str) -> list[str]:
    """Boot file names of the config's ``pxe-service`` lines for client system type ``csa``
    (tags and a menu text in quotes skipped)."""
    pattern = re.compile(
        rf'^pxe-service=(?:tag:[^,]+,)*{csa},(?:"[^"]*"|[^,]*),([^,\s]+)', re.MULTILINE
    )
    return pattern.findall(conf.read_text())


def check_secureboot(ev: BootEvidence, server: Rendered, verdict: str) -> None:
    check_boot(ev, server.tftp_root, SB_CHAIN)
    assert verdict in ev.serial, f"serial: no {verdict!r}\n\n{ev.summary()}"


def test_rendered_files(sb: SecureBootServer) -> None:
    tftp = sb.grub.tftp_root
    # Copied byte for byte: any change would break the signatures.
    assert (tftp / "shimx64.efi").read_bytes() == sb.files.shim.read_bytes()
    assert (tftp / "grubx64.efi").read_bytes() == sb.files.grub.read_bytes()
    cfg = (tftp / "grub/grub.cfg").read_text()
    assert FETCH_URL in re.findall(r"fetch=(\S+)", cfg), cfg
    conf = sb.grub.conf.read_text()
    # Firmware sends client arch 7 or 9 and dnsmasq >= 2.76 swapped their names: serve both.
    for csa in ("X86-64_EFI", "BC_EFI"):
        assert pxe_service(sb.grub.conf, csa) == ["shimx64.efi"], conf
        assert pxe_service(sb.ipxe.conf, csa)[:1] == ["snponly.efi"], sb.ipxe.conf.read_text()
    assert "shimx64.efi" not in sb.ipxe.conf.read_text()


def test_secure_boot_windows_like_dhcp(lab: NetLab, sb: SecureBootServer) -> None:
    """W: the ACK has siaddr 0.0.0.0 and no file; shim and GRUB take the proxy's offer."""
    lab.use_ordinary("W", sb.files.dhcpd)
    ev = lab.boot("uefi-sb", W_MAC, sb.proxy.serve(sb.grub), limit=BOOT_LIMIT)
    check_secureboot(ev, sb.grub, SB_ENABLED)


def test_secure_boot_dnsmasq_dhcp(lab: NetLab, sb: SecureBootServer) -> None:
    """dnsmasq as the ordinary server: siaddr is its own address, the file field empty."""
    lab.use_ordinary("dnsmasq")
    ev = lab.boot("uefi-sb", DNSMASQ_MAC, sb.proxy.serve(sb.grub), limit=BOOT_LIMIT)
    check_secureboot(ev, sb.grub, SB_ENABLED)


def test_bootp_file_name_in_ack_defeats_shim(lab: NetLab, sb: SecureBootServer) -> None:
    """Wf: the ordinary ACK names a boot file. The firmware still loads shim from the proxy,
    but shim then follows the ACK (siaddr 0.0.0.0) instead of the proxy offer and cannot fetch
    grubx64.efi: why pxeprov's guidance says option 67 must be unset."""
    lab.use_ordinary("Wf", sb.files.dhcpd)
    ev = lab.boot(
        "uefi-sb",
        WF_MAC,
        sb.proxy.serve(sb.grub),
        limit=REFUSED_LIMIT,
        stop_on=SHIM_FETCH_FAILED,
        stop_grace=REFUSED_GRACE,
    )
    problems: list[str] = []
    if not leases(ev):
        problems.append(f"dhcpd never sent DHCPACK to {ev.mac}")
    if not re.search(rf"sent {re.escape(str(sb.grub.tftp_root))}/shimx64\.efi to ", ev.proxy_log):
        problems.append("proxy log: shimx64.efi was never sent (the firmware must still get it)")
    if re.search(r"sent \S*/grubx64\.efi", ev.proxy_log):
        problems.append("proxy log: grubx64.efi was sent (shim used the proxy offer after all)")
    for text in (SHIM_FETCH, SHIM_FETCH_FAILED):
        if text not in ev.serial:
            problems.append(f"serial: no {text!r}")
    if "Linux version" in ev.serial:
        problems.append("serial: a kernel started")
    summary = ["not the failure NOTES.txt describes:", *problems, "", ev.summary()]
    assert not problems, "\n".join(summary)


def test_secure_boot_refuses_unsigned_ipxe(lab: NetLab, sb: SecureBootServer) -> None:
    """Secure Boot is really enforced: the same client is refused iPXE's unsigned snponly.efi."""
    lab.use_ordinary("dnsmasq")
    ev = lab.boot(
        "uefi-sb",
        IPXE_MAC,
        sb.proxy.serve(sb.ipxe),
        limit=REFUSED_LIMIT,
        stop_on="Access Denied",
        stop_grace=REFUSED_GRACE,
    )
    problems: list[str] = []
    if not re.search(rf"sent {re.escape(str(sb.ipxe.tftp_root))}/snponly\.efi to ", ev.proxy_log):
        problems.append("proxy log: snponly.efi was never sent")
    if not ACCESS_DENIED.search(ev.serial):
        problems.append(f"serial: no firmware refusal matching {ACCESS_DENIED.pattern!r}")
    if "boot.ipxe" in ev.proxy_log:
        problems.append("proxy log: boot.ipxe requested (iPXE ran)")
    if "Linux version" in ev.serial:
        problems.append("serial: a kernel started")
    assert not problems, "\n".join(["unsigned iPXE not refused:", *problems, "", ev.summary()])


def test_shim_and_grub_without_secure_boot(lab: NetLab, sb: SecureBootServer) -> None:
    """A UEFI client without Secure Boot (plain OVMF) boots the same shim -> GRUB chain."""
    lab.use_ordinary("dnsmasq")
    ev = lab.boot("uefi", NO_SB_MAC, sb.proxy.serve(sb.grub), limit=BOOT_LIMIT)
    check_secureboot(ev, sb.grub, SB_DISABLED)
