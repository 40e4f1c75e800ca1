"""doctor's active probe of the segment: DHCPDISCOVERs as each kind of client served sends
them, and every answer: the ordinary DHCP server (its PXE options, its pace), other
proxyDHCP servers, pxeprov's own offer."""

from __future__ import annotations

from collections.abc import Iterator

from pxeprov import (
    arch,
    boot,
    dhcpprobe,
)
from pxeprov.commands.doctor.report import Check
from pxeprov.state import State

WINDOWS_FIX = (
    "on a Windows DHCP server: Remove-DhcpServerv4OptionValue -OptionId {ids} (server level; "
    "add -ScopeId <scope> for a scope); dnsmasq: remove dhcp-boot=/dhcp-option=60,66,67; "
    "ISC dhcpd: remove filename/next-server/option vendor-class-identifier"
)

# ---------------------------------------------------------------- the segment


def probe(state: State, wait: float, chains: tuple[boot.Chain, ...] = ()) -> Iterator[Check]:
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
        yield from dhcp_pace(server, min(r.after for r in theirs), state.room_size)
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


def dhcp_pace(server: str, after: float, room: int) -> Iterator[Check]:
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
