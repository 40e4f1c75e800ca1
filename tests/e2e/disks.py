"""Small disks for the imaging tests: a source disk made here (GPT, an ext4 and a FAT partition
with files), saved with Clonezilla's own `ocs-sr savedisk` on this machine into a repository
directory, and the partitions of any disk image hashed to compare a restore with its source.

Loop devices are this machine's: each is detached in a `finally`. Whether the kernel reads a
loop device's partition table by itself, and when, differs between machines of the same kind
(here `losetup -P` gives no partitions; on CI they were there before `partx -a`, which then
fails): `partx -u` adds what is missing and keeps what is there, and the partitions' nodes are
waited for. ocs-sr runs in a private mount namespace whose /var/log, /var/lib/clonezilla and
/tmp are the test's own directories, so nothing it writes stays on the host; the repository is
bound at /mnt there first (it may itself live under /tmp).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pxeprov import fsutil
from pxeprov.repository import REPO_MODE

SIZE_MB = 200
TOOLS = ("ocs-sr", "partclone.ext4", "partclone.vfat", "sgdisk", "partx", "mkfs.ext4",
         "mkfs.vfat", "mcopy")  # fmt: skip


def sh(*argv: str, timeout: float = 600, **kw: object) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)  # type: ignore[call-overload]  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    out: str = done.stdout
    return out


def _partitions(image: Path) -> int:
    """How many partitions the image's table holds (sgdisk's listing)."""
    listing = sh("sgdisk", "-p", str(image)).splitlines()
    return sum(1 for line in listing if line[:6].strip().isdigit())


@contextmanager
def attached(image: Path) -> Iterator[str]:
    """The disk image as a loop device with its partitions (/dev/loopNpM)."""
    count = _partitions(image)
    device = sh("losetup", "--find", "--show", "--partscan", str(image)).strip()
    try:
        sh("partx", "-u", device)
        nodes = [Path(f"{device}p{n}") for n in range(1, count + 1)]
        deadline = time.monotonic() + 30
        while not all(n.is_block_device() for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{device}: partition nodes missing: {[str(n) for n in nodes]}")
            time.sleep(0.1)
        yield device
    finally:
        subprocess.run(["partx", "-d", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def make_source_disk(image: Path, work: Path) -> None:
    """GPT: partition 1 ext4 (80 MiB) with some files, partition 2 FAT (60 MiB) with one."""
    with image.open("wb") as f:
        f.truncate(SIZE_MB << 20)  # sparse: free blocks are zero, so restores compare byte-wise
    sh("sgdisk", "-n", "1:2048:+80M", "-t", "1:8300", "-n", "2:0:+60M", "-t", "2:ef00",
       str(image))  # fmt: skip
    payload = work / "payload"
    payload.mkdir()
    for i in range(5):
        (payload / f"file-{i}.bin").write_bytes(os.urandom(1 << 20))
    (payload / "hello.txt").write_text("restored by pxeprov\n")
    with attached(image) as device:
        sh("mkfs.ext4", "-q", "-d", str(payload), "-L", "pxeprov-src", f"{device}p1")
        sh("mkfs.vfat", "-n", "PXEPROVFAT", f"{device}p2")
        sh("mcopy", "-i", f"{device}p2", str(payload / "hello.txt"), "::hello.txt")


def save_image(image: Path, repository: Path, name: str, work: Path) -> str:
    """`ocs-sr savedisk` of the disk image into `repository`/`name`; its output."""
    private = work / "ocs-private"
    for d in ("log", "lib", "tmp", "home"):
        (private / d).mkdir(parents=True, exist_ok=True)
    with attached(image) as device:
        disk = Path(device).name
        script = (
            f"mount --bind {private}/log /var/log && "
            f"mkdir -p /var/lib/clonezilla && mount --bind {private}/lib /var/lib/clonezilla && "
            f"mount --bind {repository} /mnt && "
            f"mount --bind {private}/tmp /tmp && "
            f"ocs-sr -batch -nogui -or /mnt -q2 -j2 -z1p -i 0 -sfsck -scs -senc -noabo "
            f"-p true savedisk {name} {disk}"
        )
        return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                  timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip


def partition_hashes(image: Path) -> list[str]:
    """SHA-256 of each partition of the disk image, in order."""
    with attached(image) as device:
        parts = sorted(Path("/dev").glob(f"{Path(device).name}p*"), key=lambda p: p.name)
        out = []
        for part in parts:
            h = hashlib.sha256()
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out.append(h.hexdigest())
        return out


def partition_table(image: Path) -> str:
    """The GPT as sgdisk prints it, without the disk GUID line (the same table restored)."""
    text = sh("sgdisk", "-p", str(image))
    return "\n".join(line for line in text.splitlines() if not line.startswith("Disk "))


@dataclass(frozen=True)
class RoomImage:
    """A source disk saved as `img1` for a room of `vda` disks, and their blank disks."""

    expected: list[str]  # the source's partition hashes
    table: str  # its partition table
    targets: list[Path]  # blank disks, one per machine
    image_bytes: int  # the saved partitions' files


def room_image(repository: Path, work: Path, machines: int, owner: tuple[int, int]) -> RoomImage:
    """make_source_disk, saved with `ocs-sr savedisk` as img1, its disk renamed to vda with
    Clonezilla's cnvt-ocs-dev (saved from a loop device: Clonezilla's multicast client writes
    only a disk of the name saved), the repository handed to `owner` (uid, gid) as `repo init`
    leaves it, and `machines` blank disks of the source's size."""
    source = work / "source.img"
    make_source_disk(source, work)
    save_image(source, repository, "img1", work)
    saved = (repository / "img1" / "disk").read_text().split()[0]
    cnvt = ["cnvt-ocs-dev", "-b", "-d", str(repository), "img1", saved, "vda"]
    subprocess.run(cnvt, check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert (repository / "img1" / "disk").read_text().split() == ["vda"]
    fsutil.hand_over(repository, *owner, REPO_MODE, keep=("README.txt",))
    size = sum(f.stat().st_size for f in (repository / "img1").glob("*-ptcl-img.gz*"))
    targets = []
    for i in range(machines):
        target = work / f"target{i}.img"
        with target.open("wb") as f:
            f.truncate(source.stat().st_size)
        targets.append(target)
    return RoomImage(partition_hashes(source), partition_table(source), targets, size)
