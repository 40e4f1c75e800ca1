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
from pxeprov.paths import DEFAULT_REPO_PATH
from pxeprov.pipeline import REPO_ACCOUNT, REPO_MODE
from pxeprov.system import system_account
from pxeprov.vlab import stop_process

from .conftest import NET, Cli
from .sambalab import private_binds, smb_conf

PASSWORD = "test-Password-1"


@dataclass(frozen=True)
class Smb:
    ns: str
    repo: Path
    work: Path

    def client(self, share: str, command: str, *, user: str | None = None) -> tuple[int, str]:
        auth = ["-U", f"{user}%{PASSWORD}"] if user else ["-N"]
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
