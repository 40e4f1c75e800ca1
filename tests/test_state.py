from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

import pytest

from pxeprov import state
from pxeprov.errors import InputError
from pxeprov.state import Image, Network, State

NETWORK = Network(
    "eth0", ipaddress.IPv4Address("192.168.1.10"), ipaddress.IPv4Network("192.168.1.0/24")
)
IMAGE = Image(
    name="clonezilla",
    label="Clonezilla live",
    kind="clonezilla",
    kernel="images/clonezilla/vmlinuz",
    initrd="images/clonezilla/initrd.img",
    append="boot=live locales=en_US.UTF-8",
    default=True,
)


def test_round_trip() -> None:
    s = State(
        network=NETWORK,
        tftp_root=PurePosixPath("/srv/tftp"),
        dnsmasq_config="main",
        title="Lab boot",
        menu_timeout=5,
        images=(IMAGE, Image("memtest", "Memtest86+", "custom", "m/k", "m/i")),
    )
    text = state.dumps(s)
    assert text.startswith("# pxeprov state")
    assert state.loads(text) == s
    assert state.dumps(state.loads(text)) == text


def test_empty_state_has_defaults() -> None:
    s = state.loads("")
    assert s.network is None
    assert s.tftp_root == PurePosixPath("/var/lib/tftpboot")
    assert s.default_image is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "unknown key colour"),
        ("[network]\ninterface='eth0'\naddress='10.0.0.1'\nsubnet='10.0.0.0/8'\nmtu=9000", "mtu"),
        ("[menu]\ntimeout='5'", "timeout must be a int"),
        ("[menu]\ntimeout=true", "timeout must be a int"),
        ("[menu]\ntimeout=-1", "between 0 and"),
        ("[menu]\ntitle='a $x'", "title"),
        ("[server]\ntftp_root='relative/dir'", "absolute"),
        ("[server]\ntftp_root='/'", "server.tftp_root '/' must be an absolute path"),
        ("[server]\ndnsmasq_config='both'", "dnsmasq_config"),
        ("[network]\ninterface='eth0'", "network.address is missing"),
        ("[network]\ninterface='e'\naddress='10.0.0.300'\nsubnet='10.0.0.0/8'", "not an IPv4"),
        ("[network]\ninterface='e'\naddress='10.1.0.1'\nsubnet='10.0.0.0/16'", "not inside"),
        ("[[images]]\nname='Bad/Name'\nkernel='k'\ninitrd='i'", "must match"),
        (
            "[[images]]\nname='x'\nkernel='../etc/shadow'\ninitrd='i'",
            "kernel '../etc/shadow' must be a relative path",
        ),
        ("[[images]]\nname='x'\nkernel='/boot/vmlinuz'\ninitrd='i'", "relative path"),
        ("[[images]]\nname='x'\nkernel='k'\ninitrd='i'\ncolour=3", "images.colour"),
        ("[[images]]\nname='x'\nkernel='k'\ninitrd='i'\nsize='3'", "size must be a int"),
        (
            "[[images]]\nname='x'\nkernel='k'\ninitrd='i'\n[[images]]\nname='x'\nkernel='k'\n"
            "initrd='i'",
            "used twice",
        ),
        (
            "[[images]]\nname='x'\nkernel='k'\ninitrd='i'\ndefault=true\n[[images]]\nname='y'\n"
            "kernel='k'\ninitrd='i'\ndefault=true",
            "more than one image",
        ),
        ("[menu\n", "not valid TOML"),
    ],
)
def test_bad_state_is_rejected(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("$", r"\$")):
        state.loads(text)


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ("192.168.1.0/24", None, "192.168.1.0/24"),
        ("172.16.1.0", 24, "172.16.1.0/24"),
        ("10.0.0.0", 8, "10.0.0.0/8"),
    ],
)
def test_parse_subnet(value: str, hint: int | None, expected: str) -> None:
    assert state.parse_subnet(value, hint) == ipaddress.IPv4Network(expected)


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        ("192.168.1.5/24", None, "not a valid subnet"),
        ("192.168.1.0/33", None, "not a valid subnet"),
        ("banana", None, "not a valid subnet"),
        ("172.16.1.0", None, "no prefix length"),
        ("172.16.1.0", 16, "not the network address"),
    ],
)
def test_parse_subnet_errors(value: str, hint: int | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        state.parse_subnet(value, hint)
