"""A private network for multicast sessions (tests/test_multicast.py, bench/multicast_bench.py):
a server namespace whose bridge is the serving interface, and one namespace per client on that
bridge. Nothing leaves it; `down()` ends every process of its namespaces and removes them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

# Clonezilla's client, partition by partition (ocs-functions: do_multicast_udpcast_restore):
# udp-receiver on the port base, two higher for the next partition, a pause between. OUT "-":
# the data goes nowhere (/dev/null), else partition i goes to OUT.i
RECEIVER = """
port=$1; out=$2; n=$3
for i in $(seq 1 $n); do
  to=/dev/null; [ "$out" = - ] || to=$out.$i
  udp-receiver --nokbd --mcast-all-addr 224.0.0.1 --portbase $port --ttl 1 -f $to 2>/dev/null \\
    || exit 1
  sleep 3
  port=$((port+2))
done
"""


class Room:
    """`clients` namespaces on the bridge `interface` of the server's, addresses
    `prefix`.2 (the server) and `prefix`.11, .12, … (the clients, with `macs` when given)."""

    def __init__(
        self, tag: str, interface: str, prefix: str, clients: int, macs: Sequence[str] = ()
    ) -> None:
        self.interface = interface
        self.prefix = prefix
        self.macs = list(macs)
        self.server = f"{tag}-s"
        self.receivers = [f"{tag}-r{i}" for i in range(clients)]
        self.made: list[str] = []

    @property
    def address(self) -> str:
        return f"{self.prefix}.2"

    def ip(self, ns: str, *args: str) -> None:
        assert ns in self.made, ns  # only namespaces made here
        subprocess.run(["ip", "-n", ns, *args], check=True, timeout=30)

    def up(self) -> None:
        for ns in (self.server, *self.receivers):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
            self.made.append(ns)
            self.ip(ns, "link", "set", "lo", "up")
        self.ip(self.server, "link", "add", self.interface, "type", "bridge", "stp_state", "0")
        self.ip(self.server, "addr", "add", f"{self.address}/24", "dev", self.interface)
        self.ip(self.server, "link", "set", self.interface, "up")
        for i, ns in enumerate(self.receivers):
            self.ip(self.server, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                    "netns", ns)  # fmt: skip
            self.ip(self.server, "link", "set", f"v{i}", "master", self.interface, "up")
            if i < len(self.macs):
                self.ip(ns, "link", "set", "eth0", "address", self.macs[i])
            self.ip(ns, "addr", "add", f"{self.prefix}.{11 + i}/24", "dev", "eth0")
            self.ip(ns, "link", "set", "eth0", "up")

    def _kill_all(self, ns: str) -> None:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=30).stdout.split()  # fmt: skip
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def kill(self, index: int) -> None:
        """Client `index` dies: every process of its namespace."""
        self._kill_all(self.receivers[index])

    def down(self) -> None:
        for ns in self.made:
            self._kill_all(ns)
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)

    def shape(self, mbit: int) -> None:
        """What leaves the server's bridge is shaped to `mbit` Mbit/s (tbf), as a real server's
        one port is."""
        self.ip(self.server, "link", "set", self.interface, "txqueuelen", "1000")
        subprocess.run(["ip", "netns", "exec", self.server, "tc", "qdisc", "add", "dev",
                        self.interface, "root", "tbf", "rate", f"{mbit}mbit", "burst", "256kb",
                        "latency", "100ms"], check=True, timeout=30)  # fmt: skip

    def tx_bytes(self) -> int:
        out = subprocess.run(["ip", "netns", "exec", self.server, "cat",
                              f"/sys/class/net/{self.interface}/statistics/tx_bytes"],
                             capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        return int(out.stdout)

    def receive(
        self, index: int, port: int, parts: int, out: str, limit: float
    ) -> subprocess.Popen[bytes]:
        """Client `index` receives `parts` partitions from the port base `port` (RECEIVER)."""
        return subprocess.Popen(["ip", "netns", "exec", self.receivers[index], "timeout",
                                 str(int(limit)), "bash", "-c", RECEIVER, "recv", str(port), out,
                                 str(parts)])  # fmt: skip
