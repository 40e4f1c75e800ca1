"""Network resolution: given values win, then the state's, then detection; all validated."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import ClassVar

import pytest

from pxeprov.errors import InputError
from pxeprov.network import NetworkRequest, Probe, resolve
from pxeprov.state import Network


class FakeProbe(Probe):
    """A host with eth0 (default route, two addresses) and eth1."""

    LINKS: ClassVar[dict[str, list[str]]] = {
        "eth0": ["192.168.1.10/24", "10.9.9.9/8"],
        "eth1": ["172.16.5.1/16"],
        "eth2": [],
    }

    def exists(self, interface: str) -> bool:
        return interface in self.LINKS

    def default_interface(self) -> str:
        return "eth0"

    def addresses(self, interface: str) -> list[ipaddress.IPv4Interface]:
        return [ipaddress.IPv4Interface(a) for a in self.LINKS[interface]]


def net(interface: str, address: str, subnet: str) -> Network:
    return Network(interface, ipaddress.IPv4Address(address), ipaddress.IPv4Network(subnet))


@pytest.mark.parametrize(
    ("request_", "previous", "expected"),
    [
        (NetworkRequest(), None, net("eth0", "192.168.1.10", "192.168.1.0/24")),
        (NetworkRequest("eth1"), None, net("eth1", "172.16.5.1", "172.16.0.0/16")),
        (NetworkRequest(address="10.9.9.9"), None, net("eth0", "10.9.9.9", "10.0.0.0/8")),
        (NetworkRequest(subnet="192.168.1.0"), None, net("eth0", "192.168.1.10", "192.168.1.0/24")),
        # the state's network is kept when nothing is given ...
        (NetworkRequest(), net("eth1", "172.16.9.9", "172.16.0.0/16"),
         net("eth1", "172.16.9.9", "172.16.0.0/16")),
        # ... and forgotten for another interface
        (NetworkRequest("eth0"), net("eth1", "172.16.9.9", "172.16.0.0/16"),
         net("eth0", "192.168.1.10", "192.168.1.0/24")),
        (NetworkRequest("eth2", "10.1.1.1", "10.1.0.0/16"), None,
         net("eth2", "10.1.1.1", "10.1.0.0/16")),
    ],
)  # fmt: skip
def test_resolve(request_: NetworkRequest, previous: Network | None, expected: Network) -> None:
    got, _warnings = resolve(request_, previous, FakeProbe())
    assert got == expected


def test_address_not_on_the_interface_is_a_warning() -> None:
    got, warnings = resolve(NetworkRequest("eth2", "10.1.1.1", "10.1.0.0/16"), None, FakeProbe())
    assert got.address == ipaddress.IPv4Address("10.1.1.1")
    assert warnings and "not configured on eth2" in warnings[0]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (NetworkRequest("wlan7"), "'wlan7' does not exist"),
        (NetworkRequest("eth2"), "has no IPv4 address"),
        (NetworkRequest("eth0", "10.1.1.1"), "subnet is unknown"),
        (NetworkRequest("eth0", "192.168.1.10", "10.0.0.0/8"), "not inside subnet"),
        (NetworkRequest("eth0", "192.168.1.999"), "not an IPv4 address"),
        (NetworkRequest("eth0", subnet="192.168.1.0/33"), "not a valid subnet"),
    ],
)
def test_resolve_errors(request_: NetworkRequest, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve(request_, None, FakeProbe())


def test_real_probe_reads_the_loopback_interface() -> None:
    probe = Probe()
    assert probe.exists("lo") and not probe.exists("no-such-if") and not probe.exists("../lo")
    assert ipaddress.IPv4Interface("127.0.0.1/8") in probe.addresses("lo")
    # the default route, as `ip` itself reports it
    routes = json.loads(
        subprocess.run(["ip", "-json", "-4", "route", "show", "default"],
                       capture_output=True, text=True, check=True).stdout or "[]"
    )  # fmt: skip
    if routes:
        assert probe.default_interface() == routes[0]["dev"]
    else:
        with pytest.raises(InputError, match="no IPv4 default route"):
            probe.default_interface()
