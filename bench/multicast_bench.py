#!/usr/bin/env python3
"""A room restored at once: multicast (pxeprov's session sender) against unicast from Samba,
the same image, N = 1, 2, 3 … clients, in one run.

Run by hand, as root, from the repository (after tests/run-all.sh made .venv and installed
udpcast, clonezilla/drbl and samba):

    .venv/bin/python bench/multicast_bench.py [--clients 1,2,3,4,6] [--size-mb 256]

A private network of namespaces made here (nothing leaves it): the server's, whose bridge is
the serving interface, and one namespace per client on that bridge. The image is a Clonezilla
disk image directory (`disk`, `parts`, two partclone files of random bytes, --size-mb in all).

- multicast: the sender pxeprov runs for a session (multicast.feed_argv: Clonezilla's feeder,
  drbl's feed_multicast_restoreparts, udp-sender), waiting for the N clients; each client does
  what Clonezilla's `ocs-sr … multicast_restoredisk` does for each partition (udp-receiver on
  the port base, two higher for the next, a pause of 3 s between).
- unicast: smbd in the server's namespace shares the image directory as a read-only guest
  share, as `pxeprov repo init` does; each client reads every partition file with smbclient,
  all clients at once (what N unicast restores read from the share).

The clients write to /dev/null: the disks are not what is measured, the server's link is.
Printed for each N and mode: the wall time from the start to the last client's end, and the
bytes out of the server's interface per client; then the ratios against the goals: N clients
in <= 1.2x the time of one, server bytes per client ~ 1/N of the image (multicast), against
unicast's 1x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pxeprov import multicast
from pxeprov.state import Session
from tests.mcastlab import Room
from tests.sambalab import private_binds, smb_conf

IFACE = "mcb0"
LIMIT = 600.0


def make_image(repo: Path, size: int) -> list[str]:
    image = repo / "img1"
    image.mkdir(parents=True)
    (image / "disk").write_text("sda\n")
    (image / "parts").write_text("sda1 sda2\n")
    names = ["sda1.ext4-ptcl-img.gz", "sda2.vfat-ptcl-img.gz"]
    for name, part in zip(names, (size * 2 // 3, size - size * 2 // 3), strict=True):
        with (image / name).open("wb") as f:
            for _ in range(part >> 20):
                f.write(os.urandom(1 << 20))
    return names


def run_multicast(net: Room, repo: Path, n: int, logdir: Path) -> tuple[float, int]:
    session = Session(name="bench", image="img1", clients=n, max_wait=120, part_pause=30)
    argv = multicast.feed_argv(session, repo, IFACE, logdir)
    before = net.tx_bytes()
    t0 = time.monotonic()
    sender = subprocess.Popen(
        ["ip", "netns", "exec", net.server, "timeout", str(int(LIMIT)), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receivers = [net.receive(i, session.port, 2, "-", LIMIT) for i in range(n)]
    for proc in receivers:
        if proc.wait(timeout=LIMIT + 30) != 0:
            raise SystemExit("a multicast receiver failed")
    took = time.monotonic() - t0 - 3.0  # the client's last pause is not the transfer's
    sender.wait(timeout=60)
    return took, net.tx_bytes() - before


def run_unicast(net: Room, repo: Path, names: list[str], n: int) -> tuple[float, int]:
    before = net.tx_bytes()
    t0 = time.monotonic()
    gets = "; ".join(f"get img1/{name} /dev/null" for name in names)
    clients = [subprocess.Popen(["ip", "netns", "exec", ns, "timeout", str(int(LIMIT)),
                                 "smbclient", f"//{net.address}/images", "-N", "-m", "SMB3", "-c",
                                 gets], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for ns in net.receivers[:n]]  # fmt: skip
    for proc in clients:
        if proc.wait(timeout=LIMIT + 30) != 0:
            raise SystemExit("a unicast client failed")
    return time.monotonic() - t0, net.tx_bytes() - before


def start_smbd(net: Room, work: Path, repo: Path) -> subprocess.Popen[bytes]:
    shares = (f"[images]\n  path = {repo}\n  read only = yes\n  guest ok = yes\n"
              "  guest only = yes\n")  # fmt: skip
    conf = smb_conf(work / "samba", f"{net.address}/24", shares, "server min protocol = SMB2_10")
    script = " && ".join([*private_binds(work / "samba"),
                          f"exec smbd --foreground --no-process-group -s {conf}"])  # fmt: skip
    proc = subprocess.Popen(["ip", "netns", "exec", net.server, "unshare", "--mount",
                             "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while ":445 " not in subprocess.run(["ip", "netns", "exec", net.server, "ss", "-Hltn"],
                                        capture_output=True, text=True).stdout:  # fmt: skip
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("smbd did not start")
        time.sleep(0.2)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,2,3", help="the values of N, comma-separated")
    parser.add_argument("--size-mb", type=int, default=256, help="the image's size")
    parser.add_argument("--link-mbit", type=int, default=1000,
                        help="the server's link speed (0: unshaped, memory speed)")  # fmt: skip
    args = parser.parse_args()
    counts = sorted({int(x) for x in args.clients.split(",")})
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds network namespaces")
    for tool in ("udp-sender", "udp-receiver", "smbd", "smbclient"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (tests/run-all.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="pxeprov-mcast-bench-"))
    work.chmod(0o755)
    net = Room(f"mcb{os.getpid() % 100000}", IFACE, "10.91.0", max(counts))
    try:
        net.up()
        if args.link_mbit:
            net.shape(args.link_mbit)
        repo = work / "repo"
        names = make_image(repo, args.size_mb << 20)
        image = sum((repo / "img1" / n).stat().st_size for n in names)
        smbd = start_smbd(net, work, repo)
        rows = []
        for n in counts:
            for mode in ("multicast", "unicast"):
                if mode == "multicast":
                    took, sent = run_multicast(net, repo, n, work)
                else:
                    took, sent = run_unicast(net, repo, names, n)
                rows.append((n, mode, took, sent))
                print(
                    f"N={n} {mode:<9} {took:7.1f} s  {sent / 1e6:8.1f} MB out  "
                    f"{sent / n / image:5.2f}x the image per client",
                    flush=True,
                )
        smbd.send_signal(signal.SIGTERM)
        link = f"{args.link_mbit} Mbit/s" if args.link_mbit else "unshaped"
        print(f"\nimage {image / 1e6:.0f} MB, server link {link}; ratios against N=1 of the "
              "same mode\n")  # fmt: skip
        print("| N | mode | wall time | time vs N=1 | server bytes per client (x image) |")
        print("|---|---|---|---|---|")
        first = {mode: took for n, mode, took, _ in rows if n == counts[0]}
        for n, mode, took, sent in rows:
            print(
                f"| {n} | {mode} | {took:.1f} s | {took / first[mode]:.2f}x | "
                f"{sent / n / image:.2f} |"
            )
    finally:
        net.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
