"""The repository's shares, served by the real smbd (issue 17): neither acts as root.

smbd runs in a network namespace of the test's own (only its loopback up) and a mount namespace
whose Samba state directories are the test's, with the shares exactly as `repo init` renders
them (their path pointed at the test's directory). The account pxeprov-imaging must exist on
this machine for `force user` (made with useradd --system when it is missing, as `repo init`
makes it).

- A guest reads, through the read-only share, an image file of the account's that is 0600 (as
  Clonezilla saves them), and cannot write.
- A guest cannot read a file of root's that is 0600: the share does not act as root.
- The account, with its password, writes through the write share, and what it writes is its
  own, not readable by other local users.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxeprov import fsutil
from pxeprov.commands.doctor.imaging import write_share
from pxeprov.commands.plans import AssignOptions, assign, fire, record_result, unassign
from pxeprov.commands.repo import repo_init
from pxeprov.paths import DEFAULT_REPO_PATH, Root
from pxeprov.pipeline import Machine, load_state
from pxeprov.repository import REPO_ACCOUNT, REPO_MODE
from pxeprov.state import repo_parts
from pxeprov.system import SambaPasswords, system_account
from pxeprov.vlab import stop_process

from .conftest import NET, Cli
from .isos import clonezilla_files, make_iso
from .sambalab import private_binds, smb_conf

PASSWORD = "test-Password-1"
MAC_A, MAC_B = "52:54:00:17:03:01", "52:54:00:17:03:02"


@dataclass(frozen=True)
class Smb:
    ns: str
    repo: Path
    work: Path

    def client(
        self, share: str, command: str, *, user: str | None = None, password: str = PASSWORD
    ) -> tuple[int, str]:
        auth = ["-U", f"{user}%{password}"] if user else ["-N"]
        done = subprocess.run(["ip", "netns", "exec", self.ns, "smbclient", f"//127.0.0.1/{share}",
                               *auth, "-m", "SMB3", "-c", command], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def smb(loader_root: Path, cli: Cli) -> Iterator[Smb]:
    if os.geteuid() != 0:
        pytest.fail("this test creates namespaces and an account: run the suite as root")
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "repo", "init")
    assert r.exit_code == 0, r.stderr
    work = Path(tempfile.mkdtemp(prefix="pxeprov-smb-"))
    work.chmod(0o755)  # the account must reach the repository
    repo = work / "repo"
    repo.mkdir()
    uid, gid = system_account(REPO_ACCOUNT)
    fsutil.hand_over(repo, uid, gid, REPO_MODE)  # what `repo init` does on a real system
    shares = (loader_root / "etc/samba/pxeprov.conf").read_text()
    assert shares.count(f"path = {DEFAULT_REPO_PATH}\n") == 2
    conf = smb_conf(
        work, "127.0.0.1/8", shares.replace(f"path = {DEFAULT_REPO_PATH}", f"path = {repo}")
    )
    binds = private_binds(work)
    script = " && ".join([
        *binds,
        f"printf '%s\\n%s\\n' {PASSWORD} {PASSWORD} | smbpasswd -c {conf} -s -a {REPO_ACCOUNT}",
        f"exec smbd --foreground --no-process-group --debug-stdout -s {conf}",
    ])  # fmt: skip
    ns = f"pxeprov-smb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True,
                       timeout=10)  # fmt: skip
        with (work / "smbd.out").open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--mount",
                                     "--propagation", "private", "sh", "-c", script],
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while ":445 " not in subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn"],
                                            capture_output=True, text=True,
                                            timeout=10).stdout:  # fmt: skip
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"smbd did not start:\n{(work / 'smbd.out').read_text()}")
            time.sleep(0.1)
        yield Smb(ns, repo, work)
    finally:
        if proc is not None:
            stop_process(proc)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)
        subprocess.run(["rm", "-rf", str(work)], check=False, timeout=60)


def test_the_shares_never_act_as_root(smb: Smb) -> None:
    uid, gid = system_account(REPO_ACCOUNT)
    image = smb.repo / "img1"
    image.mkdir(mode=0o750)
    (image / "sda1.gz").write_bytes(b"saved by clonezilla")
    (image / "sda1.gz").chmod(0o600)
    (image / "roots").write_bytes(b"root's own")
    (image / "roots").chmod(0o600)
    for p in (image, image / "sda1.gz"):
        os.chown(p, uid, gid)
    got = smb.work / "got"
    # a guest reads the account's 0600 file through the read-only share
    rc, out = smb.client("pxeprov-images", f"get img1/sda1.gz {got}")
    assert rc == 0, out
    assert got.read_bytes() == b"saved by clonezilla"
    # ... not root's own 0600 file: the share acts as the account, not as root
    rc, out = smb.client("pxeprov-images", f"get img1/roots {smb.work / 'roots'}")
    assert rc != 0 and "NT_STATUS_ACCESS_DENIED" in out, out
    # ... and writes nothing
    (smb.work / "new").write_bytes(b"a save")
    rc, out = smb.client("pxeprov-images", f"put {smb.work / 'new'} img1/new")
    assert rc != 0 and not (image / "new").exists(), out
    # the write share: no guest; the account writes, and what it writes is its own, private
    rc, out = smb.client("pxeprov-images-rw", f"put {smb.work / 'new'} img1/new")
    assert rc != 0 and not (image / "new").exists(), out
    rc, out = smb.client("pxeprov-images-rw", f"mkdir img2; put {smb.work / 'new'} img2/new",
                         user=REPO_ACCOUNT)  # fmt: skip
    assert rc == 0, out
    st = (smb.repo / "img2/new").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid) and not st.st_mode & 0o007
    dst = (smb.repo / "img2").stat()
    assert (dst.st_uid, dst.st_gid) == (uid, gid) and not dst.st_mode & 0o007
    st = smb.repo.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o750)  # other local users: no way in
    rc, out = smb.client("pxeprov-images", f"get img2/new {smb.work / 'back'}")
    assert rc == 0 and (smb.work / "back").read_bytes() == b"a save", out


def share_check(machine: Machine) -> str:
    """doctor's verdict on the write share."""
    (check,) = write_share(machine, load_state(machine.root))
    assert check.name == "repo.write"
    return check.status


def test_the_write_share_takes_a_password_only_while_a_save_runs(
    smb: Smb, loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    """Samba takes the repository account's password only while a save plan is armed or its
    job runs: the password of a boot line is worth nothing once the job reported or the plan
    is gone (an SMB client tries to write with it), and the fixed password of an older pxeprov
    stops working at `repo init`."""
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(loader_root, "add-image", str(iso), "--name", "cz").exit_code == 0
    machine = Machine(root=Root.of(loader_root), samba=SambaPasswords(str(smb.work / "smb.conf")))
    (smb.work / "new").write_bytes(b"a save")
    tries = iter(range(100))

    def writes(password: str) -> bool:
        name = f"try{next(tries)}"
        rc, out = smb.client("pxeprov-images-rw", f"put {smb.work / 'new'} {name}",
                             user=REPO_ACCOUNT, password=password)  # fmt: skip
        assert (rc == 0) == (smb.repo / name).exists(), out
        assert rc == 0 or "NT_STATUS_LOGON_FAILURE" in out or "ACCOUNT_DISABLED" in out, out
        return rc == 0

    def password_of(mac: str) -> str:
        (plan,) = (p for p in load_state(machine.root).plans if p.mac == mac)
        assert plan.repo.startswith(f"smb://{REPO_ACCOUNT}:") and "pxeprov-images-rw" in plan.repo
        return repo_parts(plan.repo)["password"]

    def token_of(mac: str) -> str:
        return next(p.token for p in load_state(machine.root).plans if p.mac == mac)

    assert writes(PASSWORD)  # what the account had before (an older pxeprov's fixed password)
    assert share_check(machine) == "fail"  # open, and no save plan
    repo_init(machine)
    assert not writes(PASSWORD)
    assert share_check(machine) == "pass"
    assert SambaPasswords(str(smb.work / "smb.conf")).enabled(REPO_ACCOUNT) is False

    save = AssignOptions((MAC_A,), "save", image="golden", disk="vda")
    assign(machine, save)
    first = password_of(MAC_A)
    assert len(first) >= 20 and writes(first)
    assert share_check(machine) == "info"
    SambaPasswords(str(smb.work / "smb.conf")).disable(REPO_ACCOUNT)
    assert share_check(machine) == "fail"  # a save plan, and the share closed
    repo_init(machine)
    assert writes(first)
    assign(machine, AssignOptions((MAC_B,), "save", image="other", disk="vda"))
    assert password_of(MAC_B) == first  # one password per account: the armed plans share it
    assert fire(machine, MAC_A, token_of(MAC_A))  # A's job runs: its mount needs the password
    assert writes(first)
    assert record_result(machine, MAC_A, token_of(MAC_A), "done", "")
    assert writes(first)  # B is still armed
    unassign(machine, (MAC_B,))
    assert not writes(first)  # neither plan stands: its password writes nothing

    assign(machine, save)  # a new save: a new password, the old one stays dead
    second = password_of(MAC_A)
    assert second != first
    assert writes(second) and not writes(first)
    assert fire(machine, MAC_A, token_of(MAC_A))
    assert record_result(machine, MAC_A, token_of(MAC_A), "failed", "Failed to save partition")
    assert not writes(second)
    assert not writes(PASSWORD)
