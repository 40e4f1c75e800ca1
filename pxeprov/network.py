"""Which interface, address and subnet to serve on: detected, or given and checked.

Detection reads the live network of the host (or of the network namespace pxeprov runs in) with
`ip -json`, whatever `--root` is: the network is not a file under the root.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxeprov import system
from pxeprov.errors import CommandError, InputError
from pxeprov.state import Network, parse_address, parse_subnet


@dataclass(frozen=True)
class NetworkRequest:
    """What the user asked for on the command line (None = not given)."""

    interface: str | None = None
    address: str | None = None
    subnet: str | None = None


class Probe:
    """The live network, read with `ip -json`."""

    def __init__(self, sys_class_net: Path = Path("/sys/class/net")) -> None:
        self._sys_class_net = sys_class_net

    def _ip_json(self, *args: str) -> list[dict[str, Any]]:
        done = system.run(["ip", "-json", *args], timeout=10)
        try:
            data = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            raise CommandError(
                f"`ip -json {' '.join(args)}` printed something unexpected"
            ) from None
        return [entry for entry in data if isinstance(entry, dict)]

    def exists(self, interface: str) -> bool:
        return "/" not in interface and (self._sys_class_net / interface).exists()

    def default_interface(self) -> str:
        routes = self._ip_json("-4", "route", "show", "default")
        for route in routes:
            if isinstance(route.get("dev"), str):
                return str(route["dev"])
        raise InputError(
            "no IPv4 default route, so the interface cannot be detected",
            "give --interface, --address and --subnet",
        )

    def addresses(self, interface: str) -> list[ipaddress.IPv4Interface]:
        out = []
        for link in self._ip_json("-4", "address", "show", "dev", interface):
            for info in link.get("addr_info", []):
                if info.get("family") == "inet" and "local" in info and "prefixlen" in info:
                    out.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
        return out


def resolve(
    request: NetworkRequest, previous: Network | None, probe: Probe
) -> tuple[Network, list[str]]:
    """The network to serve on, and warnings.

    Values given win; then the state's (when it is about the same interface); then detection.
    """
    warnings: list[str] = []
    interface = request.interface
    if interface is None:
        interface = previous.interface if previous is not None else probe.default_interface()
    if not probe.exists(interface):
        raise InputError(f"network interface {interface!r} does not exist")
    keep = previous if previous is not None and previous.interface == interface else None

    configured = probe.addresses(interface)
    address = parse_address(request.address) if request.address is not None else None
    if address is None and keep is not None and request.subnet is None:
        address = keep.address
    if address is None:
        if not configured:
            raise InputError(
                f"interface {interface} has no IPv4 address", "give --address and --subnet"
            )
        address = configured[0].ip  # the primary address comes first
    on_interface = next((c for c in configured if c.ip == address), None)

    if request.subnet is not None:
        hint = on_interface.network.prefixlen if on_interface is not None else None
        subnet = parse_subnet(request.subnet, hint)
    elif keep is not None and keep.address == address:
        subnet = keep.subnet
    elif on_interface is not None:
        subnet = on_interface.network
    else:
        raise InputError(
            f"address {address} is not configured on {interface}, so its subnet is unknown",
            "give --subnet",
        )
    if on_interface is None:
        warnings.append(
            f"{address} is not configured on {interface}: clients will be told to fetch "
            "their boot files from an address this server does not have"
        )
    return Network(interface=interface, address=address, subnet=subnet), warnings


def neighbour(ip: str) -> str | None:
    """The MAC of `ip` in this host's (or network namespace's) neighbour table."""
    if not system.have("ip"):
        return None
    done = system.run(["ip", "-j", "neigh", "show", "to", ip], check=False, timeout=10)
    try:
        entries = json.loads(done.stdout or "[]")
    except ValueError:
        return None
    for entry in entries:
        mac = entry.get("lladdr")
        if isinstance(mac, str):
            return mac.lower()
    return None
