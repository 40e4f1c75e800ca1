"""CPU architectures: the one place that knows what an architecture is called where (DHCP
option 93, dnsmasq, EFI file names, GRUB and iPXE platforms, Debian, kernels, QEMU).

Every other module asks this one: the boot-chain table builds its UEFI rows from it, the logs'
readers name a client's firmware with it, the kinds look for an architecture's directories with
it, and an image's kernel says which architecture it is for (`kernel_arch`), so that a client is
offered only what it can boot.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pxeprov.errors import InputError

ArchName = Literal["x86-64", "arm64"]
# Another architecture's loader packages, unpacked by the admin (`dpkg-deb -x PKG.deb
# /var/lib/pxeprov/loaders/arm64`): an x86-64 server serves arm64 clients without installing
# arm64 packages (whose scripts would act on the server's own boot loader).
UNPACKED = PurePosixPath("/var/lib/pxeprov/loaders")


@dataclass(frozen=True)
class Architecture:
    name: ArchName  # as the state, `list` and `add-image --arch` write it
    debian: str  # Debian's architecture: debian-installer/<debian>/, -<debian>.iso
    machine: str  # the kernel's and Fedora's name (uname -m): images-<machine>, boot/<machine>
    dhcp_bios: tuple[int, ...]  # option 93 values of its BIOS firmware (none on arm64)
    dhcp_uefi: tuple[int, ...]  # option 93 values of its UEFI firmware (RFC 4578, IANA)
    csa_uefi: tuple[str, ...]  # dnsmasq's names of those values (pxe-service's CSA)
    efi: str  # the EFI file names' suffix: BOOT<EFI>.EFI, shim<efi>.efi, grub<efi>.efi
    grub_platform: str  # GRUB's: /usr/lib/grub/<platform>/
    grub_cpu: str  # GRUB's $grub_cpu at run time
    ipxe_arch: str  # iPXE's ${buildarch}
    pe_machine: int  # the PE/COFF machine of its EFI images (and EFI-stub kernels)
    qemu: str  # the QEMU system emulator, and its Debian package
    qemu_package: str
    uefi_client: str  # how init, list and watch name its UEFI clients

    def candidates(self, *paths: PurePosixPath) -> tuple[PurePosixPath, ...]:
        """Where loader files of this architecture may be: where their packages install them,
        then under UNPACKED/<debian>/ (the first that exists is used)."""
        return (*paths, *(UNPACKED / self.debian / p.relative_to("/") for p in paths))

    @property
    def signed_grub(self) -> PurePosixPath:
        """Debian's signed netboot GRUB (grub-efi-<debian>-signed)."""
        return PurePosixPath(
            f"/usr/lib/grub/{self.grub_platform}-signed/grubnet{self.efi}.efi.signed"
        )

    @property
    def signed_grub_package(self) -> str:
        return f"grub-efi-{self.debian}-signed"

    @property
    def unsigned_grub(self) -> PurePosixPath:
        """Debian's unsigned netboot GRUB (grub-efi-<debian>-bin's monolithic image)."""
        return PurePosixPath(f"/usr/lib/grub/{self.grub_platform}/monolithic/grubnet{self.efi}.efi")

    @property
    def unsigned_grub_package(self) -> str:
        return f"grub-efi-{self.debian}-bin"

    @property
    def shim(self) -> tuple[PurePosixPath, ...]:
        """shim signed by Microsoft: Debian's name, then Ubuntu's (.latest)."""
        base = f"/usr/lib/shim/shim{self.efi}.efi.signed"
        return (PurePosixPath(base), PurePosixPath(f"{base}.latest"))


X86_64 = Architecture(
    name="x86-64",
    debian="amd64",
    machine="x86_64",
    dhcp_bios=(0,),
    # Firmware reports architecture 7 or 9 (both are x86-64 UEFI in practice), and dnsmasq >= 2.76
    # swapped the names of the two, so both are served.
    dhcp_uefi=(7, 9),
    csa_uefi=("X86-64_EFI", "BC_EFI"),
    efi="x64",
    grub_platform="x86_64-efi",
    grub_cpu="x86_64",
    ipxe_arch="x86_64",
    pe_machine=0x8664,
    qemu="qemu-system-x86_64",
    qemu_package="qemu-system-x86",
    uefi_client="UEFI x86-64",
)
ARM64 = Architecture(
    name="arm64",
    debian="arm64",
    machine="aarch64",
    dhcp_bios=(),
    dhcp_uefi=(11,),
    csa_uefi=("ARM64_EFI",),
    efi="aa64",
    grub_platform="arm64-efi",
    grub_cpu="arm64",
    ipxe_arch="arm64",
    pe_machine=0xAA64,
    qemu="qemu-system-aarch64",
    qemu_package="qemu-system-arm",
    uefi_client="UEFI arm64",
)
ARCHITECTURES: tuple[Architecture, ...] = (X86_64, ARM64)
NAMES: tuple[ArchName, ...] = tuple(a.name for a in ARCHITECTURES)

# option 93 values that are no architecture pxeprov serves, named for the logs
_OTHER_DHCP = {
    6: "UEFI x86 (32-bit)",
    10: "UEFI arm32",
    16: "UEFI HTTP x86-64",
    19: "UEFI HTTP arm64",
}


def named(name: str, what: str = "arch") -> Architecture:
    """The architecture called `name` (as the state and --arch write it), checked."""
    for a in ARCHITECTURES:
        if a.name == name:
            return a
    raise InputError(f"{what} {name!r} must be one of {', '.join(NAMES)}")


def of_dhcp(value: int) -> Architecture | None:
    """The architecture of a DHCP client that sent option 93 = `value`."""
    return next((a for a in ARCHITECTURES if value in (*a.dhcp_bios, *a.dhcp_uefi)), None)


def firmware_name(value: int) -> str:
    """How the logs' readers name a client by its option 93: BIOS, UEFI, UEFI arm64."""
    found = of_dhcp(value)
    if found is None:
        return _OTHER_DHCP.get(value, f"arch {value}")
    if value in found.dhcp_bios:
        return "BIOS"
    return "UEFI" if found is X86_64 else found.uefi_client


def client_name(value: int) -> str:
    """How doctor names a client by its option 93: BIOS, UEFI x86-64, UEFI arm64."""
    found = of_dhcp(value)
    if found is None:
        return _OTHER_DHCP.get(value, f"arch {value}")
    return "BIOS" if value in found.dhcp_bios else found.uefi_client


# ---------------------------------------------------------------- kernels

KERNEL_HEAD = 4096  # bytes of a kernel that say its architecture
_ARM64_MAGIC = b"ARM\x64"  # arm64's Image header, at 0x38 (Documentation/arch/arm64/booting)
_X86_SETUP = b"HdrS"  # x86's boot protocol header, at 0x202 (Documentation/arch/x86/boot)


def _pe_machine(head: bytes) -> int | None:
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None
    (pe,) = struct.unpack_from("<I", head, 0x3C)
    if pe + 6 > len(head) or head[pe : pe + 4] != b"PE\0\0":
        return None
    machine: int = struct.unpack_from("<H", head, pe + 4)[0]
    return machine


def kernel_arch(head: bytes) -> Architecture | None:
    """The architecture a kernel is for, from its first bytes (KERNEL_HEAD): x86's bzImage
    (its setup header), arm64's Image (its magic), either as a PE image (an EFI stub, an EFI
    zboot image: the PE machine), or arm64's Image compressed with gzip (Debian's vmlinuz).
    None: none of these (a kernel pxeprov cannot place, or no kernel at all)."""
    machine = _pe_machine(head)
    if machine is not None:
        return next((a for a in ARCHITECTURES if a.pe_machine == machine), None)
    if head[0x202:0x206] == _X86_SETUP:
        return X86_64
    if head[0x38:0x3C] == _ARM64_MAGIC:
        return ARM64
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 0x400)
        except zlib.error:
            return None
        return None if inner[:2] == b"\x1f\x8b" else kernel_arch(inner)
    return None
