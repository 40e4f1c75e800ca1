"""Does this host's firewall let PXE in? DHCP (UDP 67, and 4011 for the PXE boot-server
stage), TFTP (UDP 69, then its data from ephemeral ports), HTTP (the site's TCP port).

nftables is read as JSON (`nft -j list ruleset`; iptables-nft's rules are in it too, ufw's and
firewalld's chains included): every base chain on the input hook of the ip and inet families
must let a new packet of the port through, walked in priority order: matches on the
destination port, protocol, input interface and conntrack state are evaluated, jumps followed,
the chain's policy applied. A rule that cannot be evaluated (iptables extensions such as
multiport, addresses) and drops or rejects is reported as one that may drop. iptables-legacy
rules are invisible to nft: `iptables-legacy-save` is read for those.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pxeprov import system

Verdict = Literal["accept", "drop", "maybe-drop", "unknown"]
Json = dict[str, Any]
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Port:
    proto: Literal["udp", "tcp"]
    port: int
    what: str  # "DHCP", "TFTP", ...


@dataclass(frozen=True)
class Finding:
    port: Port
    verdict: Verdict
    where: str  # the rule or policy that decides, in words


def _value_matches(value: Any, port: Port, interface: str) -> bool | None:
    if isinstance(value, dict) and "set" in value:
        results = [_value_matches(v, port, interface) for v in value["set"]]
        return True if any(results) else (None if None in results else False)
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return bool(isinstance(low, int) and isinstance(high, int) and low <= port.port <= high)
    if isinstance(value, int):
        return value == port.port
    if isinstance(value, str):
        return value in (port.proto, interface)
    if isinstance(value, list):
        return any(_value_matches(v, port, interface) for v in value)
    return None


def _match(match: Json, port: Port, interface: str) -> bool | None:
    """A match expression for a new packet to `port` on `interface`: True, False, or None
    when it cannot be told (an address, a mark, ...)."""
    left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
    result: bool | None
    if isinstance(left, dict) and "payload" in left:
        payload = left["payload"]
        if payload.get("field") == "dport":
            if payload.get("protocol") not in (port.proto, "th"):
                result = False
            else:
                result = _value_matches(right, port, interface)
        elif payload == {"protocol": "ip", "field": "protocol"}:
            result = _value_matches(right, port, interface)
        else:
            return None
    elif isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        if key in ("l4proto", "iifname", "iif"):
            result = _value_matches(right, port, interface)
        elif key == "nfproto":
            result = _value_matches(right, port, interface) or right in ("ipv4", ["ipv4"])
        else:
            return None
    elif isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        states = right if isinstance(right, list) else [right]
        result = "new" in states  # the first packet of a flow is new
    else:
        return None
    if result is None:
        return None
    return (not result) if op == "!=" else result


class _Ruleset:
    def __init__(self, items: list[Json]) -> None:
        self.chains = [i["chain"] for i in items if "chain" in i]
        self.rules: dict[tuple[str, str, str], list[Json]] = {}
        for rule in (i["rule"] for i in items if "rule" in i):
            key = (rule["family"], rule["table"], rule["chain"])
            self.rules.setdefault(key, []).append(rule)

    def walk(self, key: tuple[str, str, str], port: Port, interface: str, depth: int = 0
             ) -> tuple[Verdict, str] | None:  # fmt: skip
        """The verdict of a chain for the packet, or None when it falls through."""
        for rule in self.rules.get(key, []):
            applies: bool | None = True
            verdict: Json | None = None
            for expr in rule.get("expr", []):
                if "match" in expr:
                    m = _match(expr["match"], port, interface)
                    if m is False or applies is False:
                        applies = False
                    elif m is None:
                        applies = None
                elif "xt" in expr and expr["xt"].get("type") == "match":
                    applies = False if applies is False else None  # opaque: multiport, ...
                elif any(k in expr for k in ("accept", "drop", "reject", "jump", "goto", "return")):
                    verdict = expr
                elif "xt" in expr and expr["xt"].get("type") == "target":
                    name = expr["xt"].get("name")
                    verdict = {"reject": None} if name in ("REJECT", "DROP") else None
            if applies is False or verdict is None:
                continue
            where = f"rule {key[0]} {key[1]} {key[2]} handle {rule.get('handle')}"
            if "accept" in verdict:
                if applies:
                    return "accept", where
            elif "drop" in verdict or "reject" in verdict:
                return ("drop", where) if applies else ("maybe-drop", where)
            elif ("jump" in verdict or "goto" in verdict) and applies and depth < _MAX_DEPTH:
                target = (verdict.get("jump") or verdict.get("goto") or {}).get("target", "")
                sub = self.walk((key[0], key[1], target), port, interface, depth + 1)
                if sub is not None:
                    return sub
                if "goto" in verdict:
                    return None
            elif "return" in verdict and applies:
                return None
        return None

    def verdict(self, port: Port, interface: str) -> tuple[Verdict, str]:
        base = [c for c in self.chains
                if c.get("hook") == "input" and c.get("family") in ("ip", "inet")]  # fmt: skip
        for chain in sorted(base, key=lambda c: int(c.get("prio", 0))):
            key = (chain["family"], chain["table"], chain["name"])
            found = self.walk(key, port, interface)
            if found is None and chain.get("policy") == "drop":
                found = ("drop", f"the policy drop of chain {' '.join(key)}")
            if found is not None and found[0] != "accept":
                return found
        return "accept", ""


_LEGACY_RULE = re.compile(r"^-A INPUT\b(?P<rest>.*)-j (?P<target>DROP|REJECT)\b")


def _legacy(text: str, port: Port) -> tuple[Verdict, str] | None:
    """iptables-legacy-save output: a policy of DROP on INPUT, or a rule dropping the port."""
    for line in text.splitlines():
        m = _LEGACY_RULE.match(line)
        if m is None:
            continue
        rest = m["rest"]
        proto = re.search(r"-p (\w+)", rest)
        if proto is not None and proto[1] != port.proto:
            continue
        ports = re.search(r"--dports? ([\d,:]+)", rest)
        if ports is None:
            return "maybe-drop", f"iptables-legacy: {line.strip()}"
        for part in ports[1].split(","):
            low, _, high = part.partition(":")
            if int(low) <= port.port <= int(high or low):
                return "drop", f"iptables-legacy: {line.strip()}"
    if re.search(r"^:INPUT DROP\b", text, re.MULTILINE):
        return "drop", "iptables-legacy: the policy of INPUT is DROP"
    return None


Runner = Callable[[Sequence[str]], str | None]


def _run(argv: Sequence[str]) -> str | None:
    """A command's output, None when it is not installed or fails."""
    if not system.have(argv[0]):
        return None
    done = system.run(argv, check=False, timeout=30)
    return done.stdout if done.returncode == 0 else None


def check(ports: Sequence[Port], interface: str, runner: Runner = _run) -> list[Finding]:
    """What the firewall does to a new packet of each port on `interface`."""
    text = runner(["nft", "-j", "list", "ruleset"])
    items: list[Json] = []
    if text:
        try:
            items = json.loads(text).get("nftables", [])
        except ValueError:
            items = []
    ruleset = _Ruleset(items)
    legacy = runner(["iptables-legacy-save"]) or ""
    out = []
    for port in ports:
        verdict, where = ruleset.verdict(port, interface)
        if verdict == "accept":
            verdict, where = _legacy(legacy, port) or ("accept", "")
        out.append(Finding(port, verdict, where))
    return out


def tftp_replies_pass(runner: Runner = _run) -> tuple[bool, str]:
    """Whether the client's ACKs reach dnsmasq's TFTP data port (an ephemeral one): every input
    base chain whose policy is drop must accept established/related packets."""
    text = runner(["nft", "-j", "list", "ruleset"])
    try:
        items = json.loads(text).get("nftables", []) if text else []
    except ValueError:
        items = []
    ruleset = _Ruleset(items)
    for chain in ruleset.chains:
        if chain.get("hook") != "input" or chain.get("policy") != "drop":
            continue
        key = (chain["family"], chain["table"], chain["name"])
        if not any(_accepts_established(rule) for rule in ruleset.rules.get(key, [])):
            return False, f"chain {' '.join(key)} drops by policy and accepts no established"
    return True, ""


def _accepts_established(rule: Json) -> bool:
    exprs = rule.get("expr", [])
    state = any(
        "match" in e
        and isinstance(e["match"].get("left"), dict)
        and e["match"]["left"].get("ct", {}).get("key") == "state"
        and "established" in json.dumps(e["match"].get("right"))
        for e in exprs
    )
    return state and any("accept" in e for e in exprs)


def open_commands(ports: Sequence[Port], interface: str) -> list[str]:
    """The commands that let the ports in (nftables, as Debian sets it up)."""
    by_proto: dict[str, list[str]] = {}
    for port in ports:
        by_proto.setdefault(port.proto, []).append(str(port.port))
    return [
        f'nft insert rule inet filter input iifname "{interface}" {proto} dport '
        f"{{ {', '.join(numbers)} }} accept"
        for proto, numbers in by_proto.items()
    ]
