"""End to end: a real unattended restore, as `pxeprov assign --restore` plans it.

- The server: `pxeprov init`, the suite's Clonezilla-style live image (Debian's clonezilla,
  drbl and partclone on live-boot, built and cached by liveimage.py) added with `add-image`,
  and `pxeprov repo init`, whose Samba shares run in the lab's namespace B (smbd with the
  rendered shares, its own state directories).
- A source disk (GPT: ext4 and FAT, with files) is made here and saved with Clonezilla's own
  `ocs-sr savedisk` into the repository; `pxeprov assign MAC --restore img1 --disk vda --then
  poweroff --yes` plans its restore from the read-only guest share; `pxeprov watch --fire`
  follows the logs and takes the job's reports.
- A QEMU client with that MAC and a blank disk boots with no key press: its plan, Clonezilla
  live, mounts the share, restores the image and powers off. The restored partitions are then
  byte for byte the source's, the partition table the same; the plan fired when the machine
  fetched its marker, and is done because the job said so (its ocs_postrun, run by the live
  system after ocs-sr, sends `pxeprov:<token>:done` with Clonezilla's ocs-socket to the
  watcher's port over the lab's network): the next network boot gets the menu.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov import fsutil
from pxeprov.paths import DEFAULT_REPO_PATH, Root
from pxeprov.pipeline import load_state
from pxeprov.repository import REPO_ACCOUNT, REPO_MODE
from pxeprov.system import system_account

from ..sambalab import private_binds, smb_conf
from .conftest import MakeDir
from .disks import TOOLS, make_source_disk, partition_hashes, partition_table, save_image
from .liveimage import LiveImage
from .netlab import B_ADDR, NetLab, missing_files, stop_process
from .pxeserver import LOADERS, UNDIONLY, OneAtATime, Served, build_root, pxeprov, watching

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAC = "52:54:00:77:10:01"
RESTORE_LIMIT = 1200.0  # ~5 min under TCG here; margin for a loaded CI machine
CONSOLE = "console=ttyS0,115200n8"
FAILED = r"PXEPROV-OCS-RESULT (?!rc=0\b)|Kernel panic"


@pytest.fixture(scope="module")
def root(lab: NetLab, make_dir: MakeDir, live_image: LiveImage) -> Path:
    """The server: HTTP on port 80 in namespace B, the Clonezilla live image, and the image
    repository `pxeprov repo init` sets up (the share, the state's default repository)."""
    problems = missing_files((*LOADERS, UNDIONLY))
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    root = make_dir("pxeprov-e2e-restore-root-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "60")
    pxeprov(lab, root, "add-image", str(live_image.clonezilla_iso), "--name", "cz",
            "--append", CONSOLE)  # fmt: skip
    pxeprov(lab, root, "repo", "init")
    return root


def samba_conf(base: Path, root: Path) -> Path:
    """smbd for the lab: this address only, its state in the test's directory, and pxeprov's
    shares as `repo init` rendered them (their path pointed at the test's root)."""
    rendered = (root / "etc/samba/pxeprov.conf").read_text()
    line = f"path = {DEFAULT_REPO_PATH}"
    assert rendered.count(line) == 2, rendered
    shares = rendered.replace(line, f"path = {root}{DEFAULT_REPO_PATH}")
    return smb_conf(base, f"{B_ADDR}/24", shares, "server min protocol = SMB2_10")


@pytest.fixture(scope="module")
def samba(lab: NetLab, make_dir: MakeDir, root: Path) -> Iterator[Path]:
    """The repository directory, shared by smbd in namespace B as //10.77.0.2/pxeprov-images.
    The shares act as the account pxeprov-imaging (never root): it must exist on this machine,
    and own the directory, as `repo init` makes it on a real system (under --root it touches
    neither)."""
    uid, gid = system_account(REPO_ACCOUNT)  # made with useradd --system when it is missing
    fsutil.hand_over(
        root / DEFAULT_REPO_PATH.lstrip("/"), uid, gid, REPO_MODE, keep=("README.txt",)
    )
    base = make_dir("pxeprov-e2e-samba-")
    conf = samba_conf(base, root)
    smbd = f"exec smbd --foreground --no-process-group --debug-stdout -s {conf}"
    script = " && ".join([*private_binds(base), smbd])
    out = base / "smbd.out"
    with out.open("wb") as f:
        # its own session: smbd signals its process group on exit
        proc = subprocess.Popen(["ip", "netns", "exec", lab.ns_b, "unshare", "--mount",
                                 "--propagation", "private", "sh", "-c", script],
                                stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while ":445 " not in subprocess.run(["ip", "netns", "exec", lab.ns_b, "ss", "-Hltn"],
                                            capture_output=True, text=True).stdout:  # fmt: skip
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"smbd did not start:\n{out.read_text()}", pytrace=False)
            time.sleep(0.2)
        yield root / DEFAULT_REPO_PATH.lstrip("/")
    finally:
        stop_process(proc)


def test_unattended_restore(lab: NetLab, make_dir: MakeDir, root: Path, samba: Path) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"e2e preconditions not met: programs missing: {missing}", pytrace=False)
    work = make_dir("pxeprov-e2e-restore-")
    source, target = work / "source.img", work / "target.img"
    make_source_disk(source, work)
    save_image(source, samba, "img1", work)
    saved = samba / "img1"
    # saved here as root; a save through the write share leaves the account's files (0600)
    uid, gid = system_account(REPO_ACCOUNT)
    fsutil.hand_over(samba, uid, gid, REPO_MODE, keep=("README.txt",))
    assert len((saved / "parts").read_text().split()) == 2, sorted(p.name for p in saved.iterdir())
    assert len(list(saved.glob("*-ptcl-img.gz"))) == 2
    expected, table = partition_hashes(source), partition_table(source)
    with target.open("wb") as f:
        f.truncate(source.stat().st_size)  # blank: zeros
    # no --repo: the state's, which `repo init` set (the read-only guest share)
    r = pxeprov(lab, root, "assign", MAC, "--restore", "img1", "--disk", "vda", "--then",
                "poweroff", "--yes")  # fmt: skip
    assert f"vda of {MAC} is overwritten with img1" in r.stdout

    one = OneAtATime(lab)
    served = one.serve(Served.of("restore", root))
    assert served.nginx is not None
    out = lab.workdir / "restore-watch.out"
    try:
        with watching(lab, root, served, out):
            # Success is QEMU powering itself off; a failed job or a panic ends the boot at once.
            ev = lab.boot("bios", MAC, served.running, limit=RESTORE_LIMIT, memory_mb=2048,
                          stop_on=FAILED, stop_grace=2.0,
                          qemu_extra=["-drive", f"file={target},if=virtio,format=raw"])  # fmt: skip
            deadline = time.monotonic() + 30  # the report came before the power-off; its line
            while "job done" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.3)
    finally:
        one.stop()
    serial = ev.serial
    print(f"\nrestore: QEMU ran {ev.seconds:.0f} s, kernel at {ev.kernel_after or 0:.0f} s")  # noqa: T201
    assert ev.ended_by == "qemu exited (rc=0)", ev.summary()  # it powered itself off
    assert "PXEPROV-OCS-RESULT rc=0" in serial, ev.summary()
    assert re.search(r"restoredisk img1 vda", serial), ev.summary()
    assert partition_hashes(target) == expected
    assert partition_table(target) == table
    text = out.read_text()
    fired = f"{MAC}  plan fired (Restore img1 to vda (then power off)): from now on it boots "
    assert fired + "the menu" in text, text
    assert f"{MAC}  job done (Restore img1 to vda (then power off)): Clonezilla reached its " \
        "end and logged no failed partition" in text, text  # fmt: skip
    assert "ocs_server" not in serial  # (it would refuse a disk of another name than saved)
    plan = load_state(Root.of(root)).plans[0]
    assert plan.fired and plan.now == "menu"
    assert (plan.status, plan.result) == ("done", "done"), plan
