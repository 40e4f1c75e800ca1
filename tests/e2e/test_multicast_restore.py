"""End to end: a room restored at once over multicast (issue 18), woken by pxeprov.

- The server as in test_restore.py: `pxeprov init`, the suite's Clonezilla-style live image
  (now with udpcast), `repo init` and its read-only share in namespace B (the clients read the
  image's small files from it), a source disk saved with Clonezilla's own `ocs-sr savedisk`.
- `pxeprov assign` of three machines (BIOS with iPXE, two UEFI with iPXE), blank disks,
  `--restore img1 --multicast --then poweroff --wake`: the magic packet of each MAC is taken on
  the lab's bridge; the session's sender (Clonezilla's feeder, udp-sender) runs in namespace B.
- The three VMs boot at once: each fires its plan by its marker, boots Clonezilla live, whose
  `ocs-sr … --mcast-port P multicast_restoredisk` receives each partition from the one stream,
  reports to the watcher and powers off. Then every disk is byte for byte the source; the
  multicast bytes out of namespace B (an nft counter there) are at most 1.2x the image; the
  session is `sent`, and every plan done by its own job's report.
(A unicast restore on the UEFI iPXE chain: test_restore.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pxeprov.paths import Root
from pxeprov.pipeline import load_state
from pxeprov.repository import REPO_ACCOUNT
from pxeprov.system import system_account
from pxeprov.vlab import Firmware
from pxeprov.wol import magic_packet

from ..test_wake import LISTENER  # UDP 9's datagrams, one JSON line each
from .conftest import MakeDir
from .disks import TOOLS, partition_hashes, partition_table, room_image
from .netlab import NetLab
from .pxeserver import pxeprov, restore_at_once, stopping_senders
from .test_restore import FAILED, root, samba, smbd  # noqa: F401  (fixtures)

# the VMs' limit below the test's: a boot that hangs ends with its serial console in the failure
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

MACHINES = (("bios", "52:54:00:77:18:01"), ("uefi", "52:54:00:77:18:02"),
            ("uefi", "52:54:00:77:18:03"))  # fmt: skip
LIMIT = 1000.0  # three TCG VMs on two cores: ~300 s each here; margin for a slower CI machine
COUNTER = """
table inet pxeprovmc {
  counter mcast {}
  chain out { type filter hook output priority 0; ip daddr 224.0.0.0/4 counter name mcast; }
}
"""


def _nft(lab: NetLab, *args: str, stdin: str | None = None) -> str:
    argv = ["ip", "netns", "exec", lab.ns_b, "nft", *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


def test_a_room_restored_at_once(lab: NetLab, make_dir: MakeDir, root: Path, samba: Path) -> None:  # noqa: F811
    missing = [t for t in (*TOOLS, "udp-sender", "nft") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"e2e preconditions not met: programs missing: {missing}", pytrace=False)
    work = make_dir("pxeprov-e2e-mcast-")
    room = room_image(samba, work, len(MACHINES), system_account(REPO_ACCOUNT))
    _nft(lab, "-f", "-", stdin=COUNTER)
    try:
        with stopping_senders(root):
            _restore_room(lab, root, room.targets, room.image_bytes)
    finally:
        subprocess.run(["ip", "netns", "exec", lab.ns_b, "nft", "delete", "table", "inet",
                        "pxeprovmc"], capture_output=True, timeout=30, check=False)  # fmt: skip
    for target in room.targets:
        assert partition_hashes(target) == room.expected
        assert partition_table(target) == room.table


def _restore_room(lab: NetLab, top: Path, targets: list[Path], image: int) -> None:
    macs = [mac for _, mac in MACHINES]
    listener = subprocess.Popen(["ip", "netns", "exec", lab.ns_a, sys.executable, "-c", LISTENER,
                                 "20"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    r = pxeprov(lab, top, "assign", *macs, "--restore", "img1", "--disk", "vda", "--then",
                "poweroff", "--multicast", "--group", "room", "--max-wait", "600",
                "--part-pause", "60", "--max-bitrate", "20m", "--yes", "--wake")  # fmt: skip
    out, _ = listener.communicate(timeout=60)
    packets = [bytes.fromhex(json.loads(line)[0]) for line in out.splitlines()]
    for mac in macs:  # the magic packets, on the lab's bridge
        assert packets.count(magic_packet(mac)) == 3, (mac, len(packets))
    assert "the sender of the session 'room' waits for its machines" in r.stdout, r.stdout

    machines: list[tuple[Firmware, str, Path]] = [
        ("bios" if firmware == "bios" else "uefi", mac, target)
        for (firmware, mac), target in zip(MACHINES, targets, strict=True)
    ]
    evidence, text = restore_at_once(lab, top, "mcast", machines, LIMIT, FAILED)
    for ev in evidence:
        print(f"\n{ev.firmware} {ev.mac}: QEMU ran {ev.seconds:.0f} s")  # noqa: T201
        assert ev.ended_by == "qemu exited (rc=0)", ev.summary()
        assert "PXEPROV-OCS-RESULT rc=0" in ev.serial, ev.summary()
        assert "multicast_restoredisk img1 vda" in ev.serial, ev.summary()
    counted = json.loads(_nft(lab, "-j", "list", "counter", "inet", "pxeprovmc", "mcast"))
    sent = next(x["counter"]["bytes"] for x in counted["nftables"] if "counter" in x)
    said = f"multicast out of the server: {sent} bytes for {len(MACHINES)} machines; "
    print(said + f"image {image} bytes ({sent / image:.2f}x)")  # noqa: T201
    state = load_state(Root.of(top))
    session = state.session("room")
    assert session is not None and session.outcome == "sent", (session, text)
    assert sent <= 1.2 * image, (sent, image, session.reason)
    for plan in state.plans:
        assert (plan.status, plan.result) == ("done", "done"), (plan, text)
    assert "session room: waiting for machines (3 joined)" in text, text
    assert "session room: sent: 2 partitions" in text, text
