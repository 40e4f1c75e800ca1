"""A room booting at once: the expected room size (`init --room-size`) sets dnsmasq's TFTP
limit, and `doctor` warns when the live limits would not let that many machines boot at once.
(tests/e2e/test_load.py boots a simulated room; bench/load_bench.py measures 50 to 200.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pxeprov.commands.doctor import segment
from pxeprov.paths import Root
from pxeprov.pipeline import load_state

from .conftest import NET, Cli, override_template

DROP_IN = "etc/dnsmasq.d/pxeprov.conf"


def tftp_max(root: Path) -> int:
    found = re.findall(r"^tftp-max=(\d+)$", (root / DROP_IN).read_text(), re.MULTILINE)
    assert len(found) == 1
    return int(found[0])


def room_check(root: Path, cli: Cli) -> dict[str, str]:
    r = cli(root, "doctor", "--json", "--no-probe")
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    found: dict[str, str] = checks["room"]
    return found


def test_the_room_size_sets_the_tftp_limit(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    assert load_state(Root.of(loader_root)).room_size == 200 and tftp_max(loader_root) == 400
    assert "room_size" not in (loader_root / "etc/pxeprov/pxeprov.toml").read_text()
    r = cli(loader_root, "init", *NET, "--no-http", "--room-size", "600")
    assert r.exit_code == 0, r.output
    assert tftp_max(loader_root) == 1200
    assert "room_size = 600" in (loader_root / "etc/pxeprov/pxeprov.toml").read_text()
    r = cli(loader_root, "init", *NET, "--no-http", "--room-size", "10")
    assert r.exit_code == 0 and tftp_max(loader_root) == 50  # never below dnsmasq's default
    for bad in ("0", "-5", "9000"):
        r = cli(loader_root, "init", *NET, "--room-size", bad)
        assert r.exit_code == 2 and "--room-size" in r.stderr and "Traceback" not in r.output


def test_doctor_warns_when_the_live_limit_is_below_the_room(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http", "--room-size", "120").exit_code == 0
    check = room_check(loader_root, cli)
    assert check["status"] == "pass" and "allows 240 TFTP transfers" in check["message"], check
    # an admin's own template without the limit: dnsmasq's default of 50 is what is live
    override_template(loader_root, "dnsmasq.conf.j2", "tftp-max={{ tftp_max }}\n", "")
    assert cli(loader_root, "init", *NET, "--no-http", "--room-size", "120").exit_code == 0
    check = room_check(loader_root, cli)
    assert check["status"] == "warn", check
    assert "a room of 120 machines" in check["message"]
    assert "dnsmasq allows 50 TFTP transfers at once" in check["message"], check
    assert "tftp-max=240" in check["fix"]


def test_doctor_warns_when_the_dhcp_server_is_too_slow_to_offer_for_the_room() -> None:
    # an offer 3 s after the DISCOVER: dnsmasq's ping before it offers (tests/e2e/test_doctor.py
    # measures it against a real one)
    (check,) = segment.dhcp_pace("10.0.0.1", 3.0, 200)
    assert check.name == "probe.dhcp.pace" and check.status == "warn"
    assert "10.0.0.1 offered an address 3.0 s after" in check.message
    assert "a room of 200" in check.message
    assert "-ConflictDetectionAttempts 0" in check.fix and "no-ping" in check.fix
    assert list(segment.dhcp_pace("10.0.0.1", 0.02, 200)) == []  # an ordinary server's pace
    assert list(segment.dhcp_pace("10.0.0.1", 0.9, 200)) == []  # a slow link, not a ping
    assert len(list(segment.dhcp_pace("10.0.0.1", 1.0, 2))) == 1
    assert list(segment.dhcp_pace("10.0.0.1", 3.0, 1)) == []  # no room: one machine waits
