"""The boot-chain table (pxeprov/boot/chains.py) is what rendering, packages and summaries read."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

import pytest

from pxeprov import boot, render
from pxeprov.boot.chains import CHAINS, Chain, LoaderFile
from pxeprov.render import Kind
from pxeprov.state import Network, State

NET = Network("eth0", ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Network("10.0.0.0/24"))


@pytest.mark.parametrize(
    ("http", "uefi", "keys"),
    [
        (False, "ipxe", ["bios-x86-64-tftp-pxelinux", "uefi-x86-64-tftp-ipxe"]),
        (False, "grub", ["bios-x86-64-tftp-pxelinux", "uefi-x86-64-tftp-grub"]),
        (True, "ipxe", ["bios-x86-64-http-ipxe", "uefi-x86-64-http-ipxe"]),
        (True, "grub", ["bios-x86-64-http-ipxe", "uefi-x86-64-http-grub"]),
    ],
)
def test_one_row_per_firmware(http: bool, uefi: boot.UefiChain, keys: list[str]) -> None:
    state = State(network=NET, http=http)
    assert [c.key for c in boot.served(state, uefi)] == keys


def test_rows_are_unique_and_complete() -> None:
    assert len({c.key for c in CHAINS}) == len(CHAINS)
    for c in CHAINS:
        assert c.offer.removesuffix(".0") in {f.name.removesuffix(".0") for f in c.files}
        assert c.csa and c.dhcp_arch and c.packages


def test_packages_come_from_the_rows() -> None:
    assert boot.packages(State(network=NET)) == ("dnsmasq", "pxelinux", "syslinux-common", "ipxe")
    assert boot.packages(State(network=NET, uefi_loader="grub", http=True)) == (
        "dnsmasq", "pxelinux", "syslinux-common", "ipxe", "shim-signed",
        "grub-efi-amd64-signed", "grub-common", "nginx",
    )  # fmt: skip


def test_a_new_row_is_served_rendered_and_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """arm64 next: a row and its loader file are all it takes."""
    arm = Chain(
        firmware="uefi", arch="arm64", transport="tftp", loader="ipxe", client="UEFI arm64",
        csa=("ARM64_EFI",), dhcp_arch=(11,), offer="snponly-arm64.efi",
        files=(LoaderFile("snponly-arm64.efi",
                          (PurePosixPath("/usr/lib/ipxe/arm64-efi/snponly.efi"),), "ipxe"),),
        signed=False, service_label="UEFI", summary="snponly-arm64.efi (iPXE)",
        comment=("UEFI arm64 clients: iPXE.",),
    )  # fmt: skip
    monkeypatch.setattr(boot, "CHAINS", (*CHAINS, arm))
    files = render.render(State(network=NET), decision=boot.Decision("ipxe"))
    conf = next(f for f in files if f.syntax == "dnsmasq")
    assert conf.content is not None
    text = conf.content.decode()
    assert 'pxe-service=tag:!ipxe,ARM64_EFI,"pxeprov network boot (UEFI)",snponly-arm64.efi' in text
    assert "# UEFI arm64 clients: iPXE." in text
    copies = [str(f.path) for f in files if f.kind is Kind.COPY]
    assert "/var/lib/tftpboot/snponly-arm64.efi" in copies
