"""Does this host's firewall let PXE in? DHCP (UDP 67, and 4011 for the PXE boot-server
stage), TFTP (UDP 69, then its data from ephemeral ports), HTTP (the site's TCP port).

nftables is read as JSON (`nft -j list ruleset`): every base chain on the input hook of the ip
and inet families must let a new packet of the port through, walked in priority order: matches
on the destination port, protocol, input interface and conntrack state are evaluated, jumps
followed, the chain's policy applied. iptables rules (ufw's among them) are read as
`iptables-save` prints them, which says what nft's JSON cannot (`-m addrtype`, `-m multiport`):
`iptables-nft-save` for the iptables tables inside nftables (those tables are then not walked
in the JSON), and `iptables-legacy-save` for rules nft does not see. A rule that cannot be
evaluated (an address, a rate limit) and would accept, return or drop makes what follows
uncertain: a drop after it, or such a drop itself, is reported as one that may drop.
"""

from __future__ import annotations

import json
import shlex
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

    @property
    def client_port(self) -> int | None:
        """The port clients send from: 68 for DHCP and PXE; ephemeral (unknown) otherwise."""
        return 68 if self.port in (67, 4011) else None

    @property
    def dst_type(self) -> str:
        """iptables' addrtype of the packet's destination: DHCP discovers are broadcast."""
        return "BROADCAST" if self.port == 67 else "LOCAL"


Backend = Literal["nft", "iptables", "iptables-legacy", "ufw", ""]


@dataclass(frozen=True)
class Finding:
    port: Port
    verdict: Verdict
    where: str  # the rule or policy that decides, in words
    backend: Backend = ""  # whose rule it is: what opens the port
    chain: tuple[str, str, str] = ("inet", "filter", "input")  # nft: the base chain it is in


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

    def walk(self, key: tuple[str, str, str], port: Port, interface: str, depth: int = 0,
             unsure: list[bool] | None = None) -> tuple[Verdict, str] | None:  # fmt: skip
        """The verdict of a chain for the packet, or None when it falls through. `unsure[0]`
        becomes True once a rule that could not be evaluated may have ended the walk."""
        unsure = [False] if unsure is None else unsure
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
                unsure[0] = True
            elif "drop" in verdict or "reject" in verdict:
                return ("drop", where) if applies and not unsure[0] else ("maybe-drop", where)
            elif ("jump" in verdict or "goto" in verdict) and depth < _MAX_DEPTH:
                target = (verdict.get("jump") or verdict.get("goto") or {}).get("target", "")
                if applies:
                    sub = self.walk((key[0], key[1], target), port, interface, depth + 1, unsure)
                    if sub is not None:
                        return sub
                    if "goto" in verdict:
                        return None
                elif self.walk((key[0], key[1], target), port, interface, depth + 1) is not None:
                    unsure[0] = True  # a chain that decides, entered or not
            elif "return" in verdict:
                if applies:
                    return None
                unsure[0] = True
        return None

    def accepts_established(self, key: tuple[str, str, str], depth: int = 0) -> bool:
        """A rule of the chain, or of one it jumps to, accepts established packets."""
        for rule in self.rules.get(key, []):
            if _accepts_established(rule):
                return True
            for expr in rule.get("expr", []):
                target = str((expr.get("jump") or expr.get("goto") or {}).get("target") or "")
                sub = (key[0], key[1], target)
                if target and depth < _MAX_DEPTH and self.accepts_established(sub, depth + 1):
                    return True
        return False

    def verdict(
        self, port: Port, interface: str, skip: Sequence[tuple[str, str, str]] = ()
    ) -> tuple[Verdict, str, tuple[str, str, str]]:
        """The first base chain that does not accept the packet: (verdict, where, chain).
        `skip`: base chains read elsewhere (iptables-nft's INPUT, from its own listing)."""
        base = [c for c in self.chains
                if c.get("hook") == "input" and c.get("family") in ("ip", "inet")
                and (c.get("family"), c.get("table"), c.get("name")) not in skip]  # fmt: skip
        for chain in sorted(base, key=lambda c: int(c.get("prio", 0))):
            key = (chain["family"], chain["table"], chain["name"])
            unsure = [False]
            found = self.walk(key, port, interface, unsure=unsure)
            if found is None and chain.get("policy") == "drop":
                verdict: Verdict = "maybe-drop" if unsure[0] else "drop"
                found = (verdict, f"the policy drop of chain {' '.join(key)}")
            if found is not None and found[0] != "accept":
                return found[0], found[1], key
        return "accept", "", ("inet", "filter", "input")


class _Iptables:
    """The filter table of `iptables-save`'s output: chains' policies and rules, as words."""

    def __init__(self, text: str) -> None:
        self.policies: dict[str, str] = {}
        self.rules: dict[str, list[list[str]]] = {}
        table = ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("*"):
                table = line[1:]
            elif table != "filter" or not line or line.startswith("#"):
                continue
            elif line.startswith(":"):
                name, _, rest = line[1:].partition(" ")
                self.policies[name] = rest.split(" ", 1)[0]
                self.rules.setdefault(name, [])
            elif line.startswith("-A "):
                try:
                    words = shlex.split(line)
                except ValueError:
                    words = line.split()
                self.rules.setdefault(words[1], []).append(words[2:])

    @property
    def empty(self) -> bool:
        return not any(self.rules.values()) and all(
            p in ("ACCEPT", "-") for p in self.policies.values()
        )

    @property
    def is_ufw(self) -> bool:
        return any(name.startswith("ufw-") for name in self.rules)

    def walk(self, chain: str, port: Port, interface: str, unsure: list[bool], depth: int = 0
             ) -> tuple[Verdict, str] | None:  # fmt: skip
        for words in self.rules.get(chain, []):
            applies, target, goto = _iptables_rule(words, port, interface)
            if applies is False or target is None:
                continue
            where = f"-A {chain} {' '.join(words)}"
            if target == "ACCEPT":
                if applies:
                    return "accept", where
                unsure[0] = True
            elif target in ("DROP", "REJECT"):
                return ("drop", where) if applies and not unsure[0] else ("maybe-drop", where)
            elif target == "RETURN":
                if applies:
                    return None
                unsure[0] = True
            elif target in self.rules and depth < _MAX_DEPTH:
                if applies:
                    sub = self.walk(target, port, interface, unsure, depth + 1)
                    if sub is not None:
                        return sub
                    if goto:
                        return None
                elif self.walk(target, port, interface, [False], depth + 1) is not None:
                    unsure[0] = True
        return None

    def accepts_established(self, chain: str, depth: int = 0) -> bool:
        for words in self.rules.get(chain, []):
            target = next((words[i + 1] for i, w in enumerate(words[:-1])
                           if w in ("-j", "-g", "--jump", "--goto")), None)  # fmt: skip
            states = [words[i + 1].split(",") for i, w in enumerate(words[:-1])
                      if w in ("--state", "--ctstate")]  # fmt: skip
            if target == "ACCEPT" and any("ESTABLISHED" in st for st in states):
                return True
            if (
                target in self.rules
                and depth < _MAX_DEPTH
                and self.accepts_established(target, depth + 1)
            ):
                return True
        return False

    def verdict(self, port: Port, interface: str) -> tuple[Verdict, str]:
        unsure = [False]
        found = self.walk("INPUT", port, interface, unsure)
        if found is None and self.policies.get("INPUT") == "DROP":
            found = ("maybe-drop" if unsure[0] else "drop", "the policy DROP of INPUT")
        return found or ("accept", "")


def _in_ranges(value: str, number: int | None) -> bool | None:
    """`69`, `60:70`, `67,4011` (multiport) against a port; None when the port is unknown."""
    if number is None:
        return None
    for part in value.split(","):
        low, _, high = part.partition(":")
        try:
            if int(low or 0) <= number <= int(high or low or 65535):
                return True
        except ValueError:
            return None
    return False


# options whose value iptables-save writes as one word, and that pxeprov cannot evaluate
_OPAQUE = {"-s", "--source", "-d", "--destination", "--src-type", "--limit", "--limit-burst",
           "--mark", "--uid-owner", "--set", "--name", "--rcheck", "--update", "--seconds",
           "--hitcount", "--mask", "--rsource", "--icmp-type", "--tcp-flags", "--syn",
           "--match-set", "--physdev-in", "--pkt-type", "--string", "--algo", "-f"}  # fmt: skip
_NO_VALUE = {"--syn", "-f", "--rsource", "--rcheck", "--update", "--set"}


def _iptables_rule(
    words: list[str], port: Port, interface: str
) -> tuple[bool | None, str | None, bool]:
    """(does the rule match a new packet of `port` on `interface` — None when it cannot be
    told —, its target, whether it is a goto)."""
    applies: bool | None = True
    target, goto, negate, i = None, False, False, 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else ""
        result: bool | None
        step = 2
        if word == "!":
            negate, i = True, i + 1
            continue
        if word in ("-j", "--jump", "-g", "--goto"):
            target, goto = value, word in ("-g", "--goto")
            break  # the rest are the target's options
        if word in ("-m", "--match", "--comment"):
            i += 2
            continue
        if word in ("-p", "--protocol"):
            result = value in (port.proto, "all", "0")
        elif word in ("-i", "--in-interface"):
            result = value == interface or (
                value.endswith("+") and interface.startswith(value[:-1])
            )
        elif word in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            result = _in_ranges(value, port.port)
        elif word in ("--sport", "--source-port", "--sports", "--source-ports"):
            result = _in_ranges(value, port.client_port)
        elif word in ("--state", "--ctstate"):
            result = "NEW" in value.split(",")
        elif word == "--dst-type":
            result = port.dst_type in value.split(",")
        else:
            result = None  # an address, a limit, a module pxeprov does not read
            if word in _NO_VALUE or value.startswith("-") or value == "!":
                step = 1
        if result is not None and negate:
            result = not result
        negate = False
        if result is False:
            applies = False
        elif result is None and applies is not False:
            applies = None
        i += step
    return applies, target, goto


Runner = Callable[[Sequence[str]], str | None]


def _run(argv: Sequence[str]) -> str | None:
    """A command's output, None when it is not installed or fails."""
    if not system.have(argv[0]):
        return None
    done = system.run(argv, check=False, timeout=30)
    return done.stdout if done.returncode == 0 else None


_RANK = {"accept": 0, "unknown": 1, "maybe-drop": 2, "drop": 3}


@dataclass(frozen=True)
class Rules:
    """This host's rules, read once: nftables' JSON and both iptables listings."""

    nft: _Ruleset
    iptables: tuple[tuple[_Iptables, Backend, str], ...]  # (rules, whose, the command read)
    skip: tuple[tuple[str, str, str], ...]  # nft base chains read from iptables-nft's listing

    def check(self, ports: Sequence[Port], interface: str) -> list[Finding]:
        """What the firewall does to a new packet of each port on `interface`: a packet must
        pass nftables' own chains, iptables-nft's and iptables-legacy's; the worst verdict
        counts."""
        out = []
        for port in ports:
            verdict, where, chain = self.nft.verdict(port, interface, self.skip)
            finding = Finding(port, verdict, where, "nft" if where else "", chain)
            for parsed, backend, source in self.iptables:
                if parsed.empty:
                    continue
                v, w = parsed.verdict(port, interface)
                if _RANK[v] > _RANK[finding.verdict]:
                    finding = Finding(port, v, f"{source}: {w}", backend)
            out.append(finding)
        return out

    def tftp_replies_pass(self) -> tuple[bool, str]:
        """Whether the client's ACKs reach dnsmasq's TFTP data port (an ephemeral one): every
        input base chain whose policy is drop must accept established/related packets, in
        itself or in a chain it jumps to (ufw's ufw-before-input)."""
        for parsed, _backend, source in self.iptables:
            if parsed.policies.get("INPUT") == "DROP" and not parsed.accepts_established("INPUT"):
                return False, f"{source}: INPUT drops by policy and accepts no established"
        for chain in self.nft.chains:
            if chain.get("hook") != "input" or chain.get("policy") != "drop":
                continue
            key = (chain["family"], chain["table"], chain["name"])
            if key not in self.skip and not self.nft.accepts_established(key):
                return False, f"chain {' '.join(key)} drops by policy and accepts no established"
        return True, ""


def read(runner: Runner = _run) -> Rules:
    """Run `nft -j list ruleset`, `iptables-nft-save` and `iptables-legacy-save` once each."""
    text = runner(["nft", "-j", "list", "ruleset"])
    items: list[Json] = []
    if text:
        try:
            items = json.loads(text).get("nftables", [])
        except ValueError:
            items = []
    tables: list[tuple[_Iptables, Backend, str]] = []
    skip: list[tuple[str, str, str]] = []
    for tool, backend in (("iptables-nft-save", "iptables"),
                          ("iptables-legacy-save", "iptables-legacy")):  # fmt: skip
        listing = runner([tool])
        if not listing:
            continue
        parsed = _Iptables(listing)
        if backend == "iptables" and "INPUT" in parsed.policies:
            skip.append(("ip", "filter", "INPUT"))  # walked here, with what nft's JSON hides
        tables.append((parsed, "ufw" if parsed.is_ufw else backend, tool))  # type: ignore[arg-type]
    return Rules(_Ruleset(items), tuple(tables), tuple(skip))


def check(ports: Sequence[Port], interface: str, runner: Runner = _run) -> list[Finding]:
    return read(runner).check(ports, interface)


def tftp_replies_pass(runner: Runner = _run) -> tuple[bool, str]:
    return read(runner).tftp_replies_pass()


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


def open_commands(findings: Sequence[Finding], interface: str) -> list[str]:
    """The commands that let the ports of `findings` in, in the firewall that drops them:
    ufw's own command, iptables' (legacy or nft-backed), or a rule at the head of the nftables
    base chain that drops (nftables as Debian sets it up when none is named)."""
    out: list[str] = []
    for f in findings:
        p = f.port
        if f.backend == "ufw":
            out.append(f"ufw allow in on {interface} to any port {p.port} proto {p.proto}")
        elif f.backend in ("iptables", "iptables-legacy"):
            tool = "iptables" if f.backend == "iptables" else "iptables-legacy"
            out.append(f"{tool} -I INPUT -i {interface} -p {p.proto} --dport {p.port} -j ACCEPT")
        else:
            family, table, chain = f.chain
            out.append(f'nft insert rule {family} {table} {chain} iifname "{interface}" '
                       f"{p.proto} dport {p.port} accept")  # fmt: skip
    return out
