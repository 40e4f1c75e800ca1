"""A fresh box for the tests: this machine's own root filesystem seen through an overlay whose
writes land in a tmpfs of the test's, chrooted, in a private mount namespace, inside a network
namespace of the lab. Nothing the box does reaches the host's files, and its network is the
lab's: a real `./install.sh` and `pxeprov init` on `/` can run in it, start daemons without
systemd, and serve the lab's QEMU clients.

One anchor process (`sleep`, chrooted into the overlay) holds the mount namespace; commands run
in it through `nsenter`. Daemons the box starts are found by their pid files (in the overlay's
upper directory) and stopped by PID; then the anchor; then the tmpfs is unmounted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .netlab import LabError, run, stop_process

ANCHOR_SECONDS = 7200
DAEMON_PID_FILES = ("run/dnsmasq/dnsmasq.pid", "run/nginx.pid", "run/pxeprov-watch.pid")


class Box:
    def __init__(self, workdir: Path, netns: str) -> None:
        self.base = workdir / "box"
        self.netns = netns
        self.upper = self.base / "upper"
        self._anchor: subprocess.Popen[bytes] | None = None
        self._mounted = False

    def __enter__(self) -> Box:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "pxeprov-box", str(self.base)])
        self._mounted = True
        merged, work = self.base / "merged", self.base / "work"
        for d in (self.upper, work, merged):
            d.mkdir()
        script = (
            f"mount -t overlay overlay -o lowerdir=/,upperdir={self.upper},workdir={work} "
            f"{merged} && mount -t proc proc {merged}/proc && mount --rbind /dev {merged}/dev "
            f"&& mount --rbind /sys {merged}/sys && exec chroot {merged} sleep {ANCHOR_SECONDS}"
        )
        # ip netns exec, unshare (no --fork), sh and chroot all exec: the pid is sleep's own.
        self._anchor = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
             "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._in_box():
            if self._anchor.poll() is not None or time.monotonic() > deadline:
                self.down()
                raise LabError("the box did not come up")
            time.sleep(0.1)

    def _in_box(self) -> bool:
        """The anchor has become `sleep`: the overlay is mounted and it is chrooted into it."""
        assert self._anchor is not None
        try:
            return Path(f"/proc/{self._anchor.pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
        cwd: str = "/",
    ) -> subprocess.CompletedProcess[str]:
        """`argv` inside the box (as root, its cwd `cwd`), its output captured."""
        assert self._anchor is not None, "box is not up"
        full = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}  # fmt: skip
        return subprocess.run(
            # nsenter's own --wd leaves a working directory getcwd() cannot name: env -C.
            ["nsenter", "-t", str(self._anchor.pid), "-m", "-n", "-r",
             "env", "-i", "-C", cwd, *(f"{k}={v}" for k, v in full.items()), *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def path(self, inside: str) -> Path:
        """Where a file the box wrote is, seen from the host (the overlay's upper directory)."""
        return self.upper / inside.lstrip("/")

    def files(self) -> dict[str, tuple[int, int]]:
        """What the box has written so far: path -> (size, mode)."""
        out: dict[str, tuple[int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.upper):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p.relative_to(self.upper))] = (st.st_size, st.st_mode)
        return out

    def daemons(self) -> list[int]:
        """The pids in the daemons' pid files the box wrote, of processes that live."""
        pids = []
        for rel in DAEMON_PID_FILES:
            try:
                pid = int(self.path(rel).read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError, IndexError):
                continue
            pids.append(pid)
        return pids

    def down(self) -> None:
        for pid in self.daemons():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        while self.daemons() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.daemons():
            os.kill(pid, signal.SIGKILL)
        if self._anchor is not None:
            stop_process(self._anchor)
            self._anchor = None
        if self._mounted:
            deadline = time.monotonic() + 10
            while True:  # the mount namespace goes with its last process
                done = subprocess.run(["umount", str(self.base)], capture_output=True, check=False)
                if done.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self._mounted = False
