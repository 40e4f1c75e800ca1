"""End to end: a disk saved by one machine and restored onto another, as `pxeprov assign
--save` and `--restore` plan them.

- The server: `pxeprov init`, the suite's Clonezilla-style live image (Debian's clonezilla,
  drbl and partclone on live-boot, built and cached by liveimage.py) added with `add-image`,
  and `pxeprov repo init`, whose two Samba shares run in the lab's namespace B (smbd with the
  shares as rendered, its own state directories and passdb).
- A source disk (GPT: ext4 and FAT, with files) is made here. `pxeprov assign SAVER --save img2
  --disk vda --then poweroff --yes` plans its save through the write share with the plan's own
  password (which the test gives the lab's smbd, as pxeprov gives the system's); a BIOS QEMU
  client with that MAC and the source disk boots with no key press into Clonezilla live,
  saves the disk into the repository as the repository's account, reports, and powers off.
- `pxeprov assign RESTORER --restore img2 --disk vda --then poweroff --yes` plans the restore
  of that image from the read-only guest share onto a second machine, UEFI (OVMF, iPXE), with a
  blank disk. Its partitions are then byte for byte the source's, the partition table the same.
  (BIOS restores, and UEFI ones, over multicast: test_multicast_restore.py.)
- `pxeprov watch --fire` follows each boot: each plan fired when its machine fetched its marker,
  and is done because its job said so (its ocs_postrun, run by the live system after ocs-sr,
  sends `pxeprov:<token>:done` with Clonezilla's ocs-socket to the watcher's port over the
  lab's network): the next network boot gets the menu.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxeprov import fsutil
from pxeprov.paths import DEFAULT_REPO_PATH, Root
from pxeprov.pipeline import load_state
from pxeprov.repository import REPO_ACCOUNT, REPO_MODE, write_password
from pxeprov.system import SambaPasswords, system_account
from pxeprov.vlab import Firmware

from ..sambalab import private_binds, smb_conf
from .conftest import MakeDir
from .disks import TOOLS, make_source_disk, partition_hashes, partition_table
from .liveimage import LiveImage
from .netlab import B_ADDR, BootEvidence, NetLab, missing_files, stop_process
from .pxeserver import LOADERS, UNDIONLY, OneAtATime, Served, build_root, pxeprov, watching

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAVER, RESTORER = "52:54:00:77:10:01", "52:54:00:77:10:02"
JOB_LIMIT = 600.0  # one job is ~2-3 min under TCG here, alone; margin for a slower CI machine
CONSOLE = "console=ttyS0,115200n8"
# A job that failed, a live system that did not come up (live-boot's own words when it finds no
# root file system, then its initramfs shell), or a UEFI machine whose network boot failed (OVMF
# then waits at its boot manager): each ends the boot at once, with its serial console in the
# failure, rather than at the boot's limit.
FAILED = (
    r"PXEPROV-OCS-RESULT (?!rc=0\b)|Kernel panic|Unable to find a medium containing a live file "
    r"system|\(initramfs\) |No bootable option or device was found"
)


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


@dataclass(frozen=True)
class Smbd:
    repo: Path  # the repository directory, which the shares serve
    conf: Path  # smbd's config (its passdb: the write share's password)


@pytest.fixture(scope="module")
def smbd(lab: NetLab, make_dir: MakeDir, root: Path) -> Iterator[Smbd]:
    """The repository directory, shared by smbd in namespace B as //10.77.0.2/pxeprov-images
    (read-only, guest) and //10.77.0.2/pxeprov-images-rw (the account's password). The shares
    act as the account pxeprov-imaging (never root): it must exist on this machine, and own the
    directory, as `repo init` makes it on a real system (under --root it touches neither)."""
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
        yield Smbd(root / DEFAULT_REPO_PATH.lstrip("/"), conf)
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def samba(smbd: Smbd) -> Path:
    """The repository directory that smbd (its fixture) shares."""
    return smbd.repo


def test_a_saved_image_restores_onto_another_machine(
    lab: NetLab, make_dir: MakeDir, root: Path, smbd: Smbd
) -> None:
    """A machine saves its disk through the write share (`assign --save`), then a second one,
    blank, restores that image (`assign --restore`, from the read-only share)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"e2e preconditions not met: programs missing: {missing}", pytrace=False)
    work = make_dir("pxeprov-e2e-restore-")
    source, target = work / "source.img", work / "target.img"
    make_source_disk(source, work)
    expected, table = partition_hashes(source), partition_table(source)
    with target.open("wb") as f:
        f.truncate(source.stat().st_size)  # blank: zeros

    # no --repo: the state's own write share, with a password of the plan's own
    r = pxeprov(lab, root, "assign", SAVER, "--save", "img2", "--disk", "vda", "--then",
                "poweroff", "--yes")  # fmt: skip
    assert "img2" in r.stdout, r.stdout
    state = load_state(Root.of(root))
    password = write_password(state)
    assert password and password in state.plans[0].repo, state.plans[0]
    # What `assign` does to this system's Samba (pipeline.sync_write_access), done to the lab's
    # smbd (under --root pxeprov leaves Samba alone): the account takes the save plan's password.
    SambaPasswords(str(smbd.conf)).enable(REPO_ACCOUNT, password)
    saved = smbd.repo / "img2"
    ev = _job(lab, root, "save", "bios", SAVER, source)
    assert re.search(r"savedisk img2 vda", ev.serial), ev.summary()
    assert sorted((saved / "parts").read_text().split()) == ["vda1", "vda2"], _listing(saved)
    uid, _ = system_account(REPO_ACCOUNT)
    assert {p.stat().st_uid for p in saved.iterdir()} == {uid}, _listing(saved)  # the account's
    plan = load_state(Root.of(root)).plans[0]
    assert (plan.status, plan.result) == ("done", "done"), plan
    assert write_password(load_state(Root.of(root))) == ""  # no save left: the share closes

    # no --repo: the state's, which `repo init` set (the read-only guest share)
    r = pxeprov(lab, root, "assign", RESTORER, "--restore", "img2", "--disk", "vda", "--then",
                "poweroff", "--yes")  # fmt: skip
    assert f"vda of {RESTORER} is overwritten with img2" in r.stdout
    ev = _job(lab, root, "restore", "uefi", RESTORER, target)
    assert re.search(r"restoredisk img2 vda", ev.serial), ev.summary()
    assert "ocs_server" not in ev.serial  # (it would refuse a disk of another name than saved)
    assert partition_hashes(target) == expected
    assert partition_table(target) == table
    plans = {p.mac: p for p in load_state(Root.of(root)).plans}
    assert plans[RESTORER].fired and plans[RESTORER].now == "menu"
    assert (plans[RESTORER].status, plans[RESTORER].result) == ("done", "done"), plans


def _listing(directory: Path) -> list[str]:
    return sorted(f"{p.name} {p.stat().st_uid} {p.stat().st_mode:o}" for p in directory.iterdir())


def _job(
    lab: NetLab, root: Path, action: str, firmware: Firmware, mac: str, disk: Path
) -> BootEvidence:
    """Serve the root, boot the machine `mac` with `disk` while `pxeprov watch --fire` follows,
    and check that its plan fired and its job reported `done`: the boot's evidence."""
    one = OneAtATime(lab)
    served = one.serve(Served.of(action, root))
    out = lab.workdir / f"{action}-watch.out"
    try:
        with watching(lab, root, served, out):
            # Success is QEMU powering itself off; a failed job or a panic ends the boot at once.
            ev = lab.boot(firmware, mac, served.running, limit=JOB_LIMIT, memory_mb=2048,
                          stop_on=FAILED, stop_grace=2.0,
                          qemu_extra=["-drive", f"file={disk},if=virtio,format=raw"])  # fmt: skip
            deadline = time.monotonic() + 30  # the report came before the power-off; its line
            while "job done" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.3)
    finally:
        one.stop()
    print(f"\n{action}: QEMU ran {ev.seconds:.0f} s, kernel at {ev.kernel_after or 0:.0f} s")  # noqa: T201
    assert ev.ended_by == "qemu exited (rc=0)", ev.summary()  # it powered itself off
    assert "PXEPROV-OCS-RESULT rc=0" in ev.serial, ev.summary()
    text = out.read_text()
    what = "Restore img2 to vda" if action == "restore" else "Save img2 from vda"
    fired = f"{mac}  plan fired ({what} (then power off)): from now on it boots the menu"
    assert fired in text, text
    assert f"{mac}  job done ({what} (then power off)): Clonezilla reached its end and logged " \
        "no failed partition" in text, text  # fmt: skip
    return ev
