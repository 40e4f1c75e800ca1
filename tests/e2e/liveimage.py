"""The test suite's live system (build-live-image.sh), built once and cached.

The cache is keyed by the build script's content: a change to the script builds a new image;
images of older scripts are removed. A build goes into a temporary sibling directory renamed
into place when complete, under a lock, so an interrupted build never leaves a half image and two
runs never build at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path("/var/cache/pxeprov-tests/live")
SCRIPT = Path(__file__).with_name("build-live-image.sh")
BUILD_TIMEOUT = 2400.0
FILES = ("clonezilla-live.iso", "debian-live.iso", "vmlinuz", "filesystem.squashfs",
         "livenet-initrd.img", "MANIFEST")  # fmt: skip
TOOLS = {"mmdebstrap": "mmdebstrap", "mksquashfs": "squashfs-tools", "xorriso": "xorriso"}


class LiveImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class LiveImage:
    folder: Path

    @property
    def clonezilla_iso(self) -> Path:
        return self.folder / "clonezilla-live.iso"

    @property
    def debian_iso(self) -> Path:
        return self.folder / "debian-live.iso"

    @property
    def vmlinuz(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def squashfs(self) -> Path:
        return self.folder / "filesystem.squashfs"

    @property
    def livenet_initrd(self) -> Path:
        return self.folder / "livenet-initrd.img"

    @property
    def manifest(self) -> str:
        return (self.folder / "MANIFEST").read_text()


def _key() -> str:
    return hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def live_image() -> LiveImage:
    """The image of the current build script, built first when the cache has none."""
    missing = [f"{tool} (package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if missing:
        raise LiveImageError(f"missing: {', '.join(missing)} (tests/run-all.sh installs them)")
    folder = CACHE / _key()
    with _locked():
        if _complete(folder):
            return LiveImage(folder)
        for old in CACHE.iterdir():  # images of other scripts, and half builds of killed runs
            if old.name != ".lock" and old != folder:
                shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".build-{folder.name}-"))
        try:
            res = subprocess.run(["bash", str(SCRIPT), str(tmp)], capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
            if res.returncode != 0 or not _complete(tmp):
                tail = "\n".join(res.stderr.splitlines()[-40:])
                raise LiveImageError(f"build-live-image.sh failed (exit {res.returncode}):\n{tail}")
            tmp.chmod(0o755)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return LiveImage(folder)
