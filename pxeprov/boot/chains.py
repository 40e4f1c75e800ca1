"""The boot chains: one row for each way a client boots, keyed by firmware, CPU architecture,
transport of the payloads and loader. Everything that depends on which loaders a server offers
reads this table: the dnsmasq config's `pxe-service` lines, the menus rendered, the files
copied, the packages installed, `--uefi-loader auto`, and what `init` and `list` say.

Verified in the lab (DESIGN.md, tests/e2e):
  BIOS, TFTP:   pxelinux.0 -> ldlinux.c32 -> pxelinux.cfg/default -> menu.c32 (+ libutil)
  BIOS, HTTP:   undionly.kpxe (iPXE) -> boot.ipxe; lpxelinux.0 can fetch over HTTP too, but its
                HTTP/1.0 client measured 6.7 MB/s against iPXE's 50 (bench/boot_bench.py)
  UEFI, ipxe:   snponly.efi (iPXE, unsigned) -> boot.ipxe
  UEFI, grub:   shimx64.efi (signed by Microsoft) -> grubx64.efi (Debian's signed netboot GRUB,
                >= 2.12 for proxyDHCP) -> grub/grub.cfg: boots under Secure Boot
  UEFI arm64:   shimaa64.efi -> grubaa64.efi (Debian 13's signed GRUB) -> grub/grub.cfg, or
                Debian's unsigned netboot GRUB (grub-efi-arm64-bin) alone as grubaa64.efi

The UEFI rows are built from the architectures (pxeprov.arch); a new chain is a row here plus
its loader files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pxeprov.arch import ARM64, X86_64, Architecture, ArchName

Firmware = Literal["bios", "uefi"]
Arch = ArchName
# What a UEFI client of an architecture is given: iPXE (x86-64), shim + Debian's signed GRUB,
# or Debian's unsigned netboot GRUB alone (arm64, where no signed one is installed)
UefiChain = Literal["ipxe", "grub", "grub-unsigned"]
Transport = Literal["tftp", "http"]
Loader = Literal["pxelinux", "ipxe", "grub"]  # also the format of the menu the chain reads

IPXE_SCRIPT = "boot.ipxe"
MENUS: dict[Loader, tuple[str, str]] = {  # menu format -> (path under the TFTP root, template)
    "pxelinux": ("pxelinux.cfg/default", "pxelinux.cfg/default.j2"),
    "grub": ("grub/grub.cfg", "grub/grub.cfg.j2"),
    "ipxe": (IPXE_SCRIPT, "boot.ipxe.j2"),
}
SIGNED_GRUB = X86_64.signed_grub
# Installed with every server: dnsmasq brings the service and /etc/dnsmasq.d (dnsmasq-base
# alone has only the binary); nginx when payloads go over HTTP.
SERVICE_PACKAGES: tuple[str, ...] = ("dnsmasq",)
HTTP_PACKAGES: tuple[str, ...] = ("nginx",)


@dataclass(frozen=True)
class LoaderFile:
    name: str  # path under the TFTP root
    sources: tuple[PurePosixPath, ...]  # where packages install it; the first that exists wins
    package: str


@dataclass(frozen=True)
class Chain:
    firmware: Firmware
    arch: Arch
    transport: Transport  # how the payloads (kernel, initrd, ...) are fetched
    loader: Loader  # also the menu format
    client: str  # how init and list name the clients: "BIOS", "UEFI x86-64"
    csa: tuple[str, ...]  # dnsmasq's names of the DHCP client architectures it answers
    dhcp_arch: tuple[int, ...]  # the same as DHCP option 93 values
    offer: str  # the boot file the proxy offers (PXE adds ".0" to a BIOS one without it)
    files: tuple[LoaderFile, ...]  # copied under the TFTP root
    signed: bool  # boots with Secure Boot on
    service_label: str  # the PXE service's text after the title: "BIOS", "UEFI"
    summary: str  # what init and list say after "client ->"
    comment: tuple[str, ...]  # the dnsmasq config's comment above its pxe-service lines
    extra_packages: tuple[str, ...] = ()  # besides the files' packages (validators)
    uefi: UefiChain | None = None  # UEFI rows: the chain this row is (None: BIOS)

    @property
    def key(self) -> str:
        return f"{self.firmware}-{self.arch}-{self.transport}-{self.uefi or self.loader}"

    @property
    def ipxe(self) -> bool:
        """iPXE asks the proxy again (user class iPXE) and is then offered the menu script."""
        return self.loader == "ipxe"

    @property
    def menu(self) -> tuple[str, str]:
        return MENUS[self.loader]

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(f.package for f in self.files), *self.extra_packages]))


def _one(name: str, source: str, package: str) -> LoaderFile:
    return LoaderFile(name, (PurePosixPath(source),), package)


_BIOS_MODULES = "/usr/lib/syslinux/modules/bios"
PXELINUX_FILES = (
    _one("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    # ldlinux.c32 must come from the same syslinux build as pxelinux.0: both are copied each run.
    _one("ldlinux.c32", f"{_BIOS_MODULES}/ldlinux.c32", "syslinux-common"),
    _one("menu.c32", f"{_BIOS_MODULES}/menu.c32", "syslinux-common"),
    _one("libutil.c32", f"{_BIOS_MODULES}/libutil.c32", "syslinux-common"),
    _one("libmenu.c32", f"{_BIOS_MODULES}/libmenu.c32", "syslinux-common"),
)
UNDIONLY_FILES = (_one("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe", "ipxe"),)
SNPONLY_FILES = (_one("snponly.efi", "/usr/lib/ipxe/snponly.efi", "ipxe"),)


def shim_grub_files(a: Architecture, unpacked: bool = False) -> tuple[LoaderFile, ...]:
    """shim signed by Microsoft, and Debian's signed netboot GRUB under the name shim loads
    from its own directory (grubx64.efi, grubaa64.efi); GRUB's built-in prefix is /grub.
    `unpacked`: also where another architecture's packages were unpacked (arch.UNPACKED)."""
    where = a.candidates if unpacked else (lambda *p: p)
    return (
        LoaderFile(f"shim{a.efi}.efi", where(*a.shim), "shim-signed"),
        LoaderFile(f"grub{a.efi}.efi", where(a.signed_grub), a.signed_grub_package),
    )


SHIM_GRUB_FILES = shim_grub_files(X86_64)
# Without a signed GRUB: Debian's unsigned netboot image, offered itself (no shim)
UNSIGNED_GRUB_ARM64 = (
    LoaderFile(
        f"grub{ARM64.efi}.efi", ARM64.candidates(ARM64.unsigned_grub), ARM64.unsigned_grub_package
    ),
)


def _bios(
    transport: Transport, loader: Loader, offer: str, files: tuple[LoaderFile, ...], summary: str,
    comment: str,
) -> Chain:  # fmt: skip
    return Chain(
        firmware="bios",
        arch="x86-64",
        transport=transport,
        loader=loader,
        client="BIOS",
        csa=("x86PC",),
        dhcp_arch=(0,),
        offer=offer,
        files=files,
        signed=False,
        service_label="BIOS",
        summary=summary,
        comment=(comment,),
    )


_FIRMWARE_7_OR_9 = (
    "architecture 7 or 9, and dnsmasq >= 2.76 swapped the names of the two, so both are served."
)


def _uefi(transport: Transport, loader: Literal["ipxe", "grub"]) -> Chain:
    """x86-64's UEFI rows: iPXE, or shim + signed GRUB."""
    a = X86_64
    ipxe = loader == "ipxe"
    return Chain(
        firmware="uefi",
        arch=a.name,
        transport=transport,
        loader=loader,
        client=a.uefi_client,
        csa=a.csa_uefi,
        dhcp_arch=a.dhcp_uefi,
        offer="snponly.efi" if ipxe else f"shim{a.efi}.efi",
        files=SNPONLY_FILES if ipxe else SHIM_GRUB_FILES,
        signed=not ipxe,
        service_label="UEFI",
        summary=(
            "snponly.efi (iPXE, not signed: no Secure Boot; menu boot.ipxe)"
            if ipxe
            else f"shim{a.efi}.efi -> grub{a.efi}.efi (signed: Secure Boot works; menu "
            "grub/grub.cfg)"
        ),
        comment=(
            (
                "UEFI x86-64 clients: iPXE's snponly.efi, then the boot.ipxe menu. Firmware "
                "reports",
                _FIRMWARE_7_OR_9,
            )
            if ipxe
            else (
                "UEFI x86-64 clients: shim (signed by Microsoft) loads Debian's signed GRUB, which "
                "reads",
                "grub/grub.cfg from this server: this chain boots with Secure Boot on. Firmware "
                "reports",
                _FIRMWARE_7_OR_9,
            )
        ),
        # grub-common brings grub-script-check, which validates grub.cfg before it goes live.
        extra_packages=() if ipxe else ("grub-common",),
        uefi=loader,
    )


def _arm64(transport: Transport, signed: bool) -> Chain:
    """arm64's UEFI rows: shim + Debian's signed GRUB, or its unsigned netboot GRUB alone.
    Both read grub/grub.cfg, whose entries for arm64 clients test $grub_cpu."""
    a = ARM64
    grub = f"grub{a.efi}.efi"
    return Chain(
        firmware="uefi",
        arch=a.name,
        transport=transport,
        loader="grub",
        client=a.uefi_client,
        csa=a.csa_uefi,
        dhcp_arch=a.dhcp_uefi,
        offer=f"shim{a.efi}.efi" if signed else grub,
        files=shim_grub_files(a, unpacked=True) if signed else UNSIGNED_GRUB_ARM64,
        signed=signed,
        service_label="UEFI arm64",
        summary=(
            f"shim{a.efi}.efi -> {grub} (signed: Secure Boot works; menu grub/grub.cfg)"
            if signed
            else f"{grub} (GRUB, not signed: no Secure Boot; menu grub/grub.cfg)"
        ),
        comment=(
            (
                "UEFI arm64 clients (architecture 11): shim (signed by Microsoft) loads Debian's",
                "signed GRUB, which reads grub/grub.cfg from this server (Secure Boot works).",
            )
            if signed
            else (
                "UEFI arm64 clients (architecture 11): Debian's netboot GRUB, not signed (no",
                "Secure Boot), reads grub/grub.cfg from this server.",
            )
        ),
        extra_packages=("grub-common",),
        uefi="grub" if signed else "grub-unsigned",
    )


# The table. With HTTP, GRUB loads kernels and initrds from nginx when the signed GRUB has its
# http module (boot.grub_over_http), else over TFTP as without HTTP.
CHAINS: tuple[Chain, ...] = (
    _bios(
        "tftp",
        "pxelinux",
        "pxelinux",
        PXELINUX_FILES,
        "pxelinux.0 (menu pxelinux.cfg/default)",
        'BIOS clients: pxelinux (PXE adds the ".0").',
    ),
    _bios(
        "http",
        "ipxe",
        "undionly.kpxe",
        UNDIONLY_FILES,
        "undionly.kpxe (iPXE, menu boot.ipxe)",
        "BIOS clients: iPXE (undionly.kpxe), then the boot.ipxe menu; kernels come over HTTP.",
    ),
    _uefi("tftp", "ipxe"),
    _uefi("http", "ipxe"),
    _uefi("tftp", "grub"),
    _uefi("http", "grub"),
    _arm64("tftp", signed=True),
    _arm64("http", signed=True),
    _arm64("tftp", signed=False),
    _arm64("http", signed=False),
)
