"""The image repository (`pxeprov repo init`, issue 17): where it may be, and who its shares act
as.

- Its directory is refused where the TFTP root is refused (system trees), in or above /home and
  /root, in or around another account's home (passwd), behind any symbolic link on disk, and
  where it overlaps the TFTP root in either direction; a later `init --tftp-root` is held to the
  same overlap rules, lexically (the state) and on disk (the TFTP root's links followed).
- Neither share acts as root: both act as the account pxeprov-imaging, which owns the directory
  (`fsutil.hand_over`, on a real system); Samba's own reader accepts the shares.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from pxeprov import fsutil, syntax, system
from pxeprov.errors import CommandError, InputError
from pxeprov.paths import Root
from pxeprov.pipeline import load_state, strays
from pxeprov.state import State, dumps, loads

from .conftest import NET, Cli, snapshot

TFTP = "var/lib/tftpboot"
SHARES = "etc/samba/pxeprov.conf"


@pytest.fixture
def server(loader_root: Path, cli: Cli) -> Path:
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    return loader_root


def unlocked(snap: dict[str, tuple[str, int, int]]) -> dict[str, tuple[str, int, int]]:
    snap.pop("var/lib/pxeprov/lock", None)
    return snap


# ---------------------------------------------------------------- the path, as text


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("/home", "is inside /home, which holds people's own files"),
        ("/home/alice/images", "is inside /home"),
        ("/root/images", "is inside /root"),
        ("/etc/pxeprov/images", "is inside /etc"),
        ("/var/lib/pxeprov/images", "is inside /var/lib/pxeprov"),
        ("/var", "contains /var/lib/pxeprov"),
        ("/srv/../etc", "must be an absolute path of names"),
        ("/srv/.images", "must be an absolute path of names"),
        ("srv/images", "must be an absolute path of names"),
    ],
)
def test_repository_paths_refused_as_text(value: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        syntax.check_repo_path(value, "--path")


def test_repository_paths_allowed_as_text() -> None:
    for value in ("/srv/pxeprov/images", "/srv/images", "/data/clonezilla", "/var/lib/images"):
        assert syntax.check_repo_path(value) == PurePosixPath(value)


@pytest.mark.parametrize(
    ("tftp", "repo", "words"),
    [
        ("/srv/tftp", "/srv/tftp", "is the TFTP root"),
        ("/srv/tftp", "/srv/tftp/images", "is inside the TFTP root /srv/tftp"),
        ("/srv/tftp", "/srv/tftp/a/b", "is inside the TFTP root /srv/tftp"),
        ("/srv/pxe/tftp", "/srv/pxe", "the TFTP root /srv/pxe/tftp is inside the image repository"),
    ],
)
def test_the_repository_and_the_tftp_root_stay_apart(tftp: str, repo: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        syntax.check_apart(PurePosixPath(tftp), PurePosixPath(repo))
    with pytest.raises(InputError, match=words):  # the state holds to it whatever its source
        State(tftp_root=PurePosixPath(tftp), repo_path=repo)
    text = dumps(State(tftp_root=PurePosixPath(tftp)))
    with pytest.raises(InputError, match=words):
        loads(text + f'\n[imaging]\npath = "{repo}"\n')
    syntax.check_apart(PurePosixPath(tftp), PurePosixPath("/srv/elsewhere"))
    syntax.check_apart(PurePosixPath("/srv/tftp"), PurePosixPath("/srv/tftp2"))  # a sibling


# ---------------------------------------------------------------- `repo init --path`


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/var/lib/tftpboot", "is the TFTP root"),
        ("/var/lib/tftpboot/images/saved", "is inside the TFTP root /var/lib/tftpboot"),
        ("/var/lib", "contains /var/lib/pxeprov"),
        ("/home", "is inside /home"),
        ("/home/alice/images", "is inside /home"),
        ("/root/images", "is inside /root"),
    ],
)
def test_repo_init_refuses_a_path(server: Path, cli: Cli, path: str, words: str) -> None:
    before = unlocked(snapshot(server))
    r = cli(server, "repo", "init", "--path", path)
    assert r.exit_code == 2, r.stdout
    assert words in r.stderr, r.stderr
    assert unlocked(snapshot(server)) == before


def test_repo_init_refuses_a_path_that_reaches_etc_through_a_link(server: Path, cli: Cli) -> None:
    """/srv/pxeprov -> ../etc: /srv/pxeprov/images is a fine path as text, but Samba would share
    /etc/images and pxeprov would write its README into /etc."""
    (server / "etc/images").mkdir()
    (server / "srv").mkdir()
    (server / "srv/pxeprov").symlink_to("../etc")
    before = unlocked(snapshot(server))
    r = cli(server, "repo", "init", "--path", "/srv/pxeprov/images")
    assert r.exit_code == 2, r.stdout
    assert "goes through a symbolic link: /srv/pxeprov -> ../etc" in r.stderr, r.stderr
    assert unlocked(snapshot(server)) == before
    assert not (server / "etc/images/README.txt").exists()
    assert cli(server, "repo", "init", "--path", "/srv/pxeprov/images", "--dry-run").exit_code == 2


@pytest.mark.parametrize("target", ["/var/lib/tftpboot", "elsewhere", "/srv/real"])
def test_repo_init_refuses_any_link_on_the_way(server: Path, cli: Cli, target: str) -> None:
    """Even a link to a harmless directory: what Samba shares is the path's own directory."""
    (server / "srv/real").mkdir(parents=True)
    (server / "srv/images").symlink_to(target)
    r = cli(server, "repo", "init", "--path", "/srv/images")
    assert r.exit_code == 2 and "goes through a symbolic link: /srv/images" in r.stderr, r.stderr
    assert load_state(Root.of(server)).repo_path == ""


def test_repo_init_refuses_a_file_on_the_way(server: Path, cli: Cli) -> None:
    (server / "srv").mkdir()
    (server / "srv/images").write_text("a file")
    r = cli(server, "repo", "init", "--path", "/srv/images/x")
    assert r.exit_code == 2 and "/srv/images is not a directory" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/srv/alice/images", "is in the home directory of the account alice (/srv/alice)"),
        ("/srv/alice", "is in the home directory of the account alice (/srv/alice)"),
        ("/srv", "contains the home directory of the account alice (/srv/alice)"),
        ("/var/www/images", "is in the home directory of the account www-data (/var/www)"),
    ],
)
def test_repo_init_refuses_an_accounts_home(server: Path, cli: Cli, path: str, words: str) -> None:
    (server / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "alice:x:1000:1000:Alice:/srv/alice:/bin/bash\n"
        "pxeprov-imaging:x:998:998::/srv/pxeprov/images:/usr/sbin/nologin\n"  # its own: fine
        "broken line\n"
    )
    r = cli(server, "repo", "init", "--path", path)
    assert r.exit_code == 2, r.stdout
    assert words in r.stderr, r.stderr
    assert cli(server, "repo", "init").exit_code == 0  # /srv/pxeprov/images


def test_init_keeps_the_tftp_root_apart_from_the_repository(server: Path, cli: Cli) -> None:
    """The TFTP root changed later: refused inside the repository or around it, as text (the
    state) and on disk (a TFTP root that is a link into the repository)."""
    assert cli(server, "repo", "init").exit_code == 0
    before = unlocked(snapshot(server))
    for root, words in (
        ("/srv/pxeprov/images/tftp", "the TFTP root /srv/pxeprov/images/tftp is inside the image"),
        ("/srv/pxeprov/images", "is the TFTP root"),
        ("/srv/pxeprov", "is inside the TFTP root /srv/pxeprov"),
    ):
        r = cli(server, "init", "--tftp-root", root)
        assert r.exit_code == 2, r.stdout
        assert words in r.stderr, r.stderr
        assert unlocked(snapshot(server)) == before
    (server / "srv/tftp").symlink_to("pxeprov/images")
    r = cli(server, "init", "--tftp-root", "/srv/tftp")
    assert r.exit_code == 2, r.stdout
    assert "the image repository /srv/pxeprov/images is the TFTP root" in r.stderr, r.stderr
    assert load_state(Root.of(server)).tftp_root == PurePosixPath("/var/lib/tftpboot")
    # and every later run checks the repository on disk again
    (server / "srv/tftp").unlink()
    images = server / "srv/pxeprov/images"
    for p in images.iterdir():
        p.unlink()
    images.rmdir()
    images.symlink_to("../../etc")
    r = cli(server, "init")
    assert r.exit_code == 2 and "goes through a symbolic link" in r.stderr, r.stderr
    assert not (server / "etc/README.txt").exists()


# ---------------------------------------------------------------- the shares


def test_the_shares_act_as_the_repository_account(server: Path, cli: Cli) -> None:
    r = cli(server, "repo", "init")
    assert r.exit_code == 0, r.stderr
    assert "skipped: handing /srv/pxeprov/images over to pxeprov-imaging" in r.stderr
    shares = (server / SHARES).read_text()
    assert "= root" not in shares
    read, write = shares.split("[pxeprov-images-rw]")
    read = read.split("[pxeprov-images]")[1]
    for line in ("read only = yes", "guest ok = yes", "force user = pxeprov-imaging"):
        assert f"  {line}\n" in read, read
    assert "valid users" not in read
    for line in (
        "read only = no",
        "guest ok = no",
        "valid users = pxeprov-imaging",
        "force user = pxeprov-imaging",
        "create mask = 0640",
        "directory mask = 0750",
    ):
        assert f"  {line}\n" in write, write  # fmt: skip
    done = subprocess.run(["testparm", "-s", str(server / SHARES)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert "Loaded services file OK" in done.stderr, done.stderr
    assert "Unknown parameter" not in done.stderr and "Ignoring" not in done.stderr, done.stderr
    # testparm's reading of each share (a global-only parameter in a share would be dropped)
    read_share = subprocess.run(["testparm", "-s", "--section-name", "pxeprov-images",
                                 str(server / SHARES)], capture_output=True, text=True,
                                check=False).stdout  # fmt: skip
    assert "force user = pxeprov-imaging" in read_share
    assert "guest ok = Yes" in read_share and "read only = No" not in read_share
    readme = (server / "srv/pxeprov/images/README.txt").read_text()
    assert "chown -R pxeprov-imaging:" in readme


def test_hand_over_changes_owners_inside_and_follows_no_link(tmp_path: Path) -> None:
    """What `repo init` does to the directory on a real system (here: to nobody)."""
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    repo = tmp_path / "repo"
    (repo / "img1").mkdir(parents=True)
    (repo / "img1/sda1.gz").write_bytes(b"x")
    (repo / "img1/sda1.gz").chmod(0o600)  # as Clonezilla saves them
    (repo / "README.txt").write_text("pxeprov's")
    outside = tmp_path / "outside"
    outside.write_text("not the repository's")
    (repo / "img1/link").symlink_to(outside)
    fsutil.hand_over(repo, uid, gid, 0o750, keep=("README.txt",))
    st = repo.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o750)
    for p in (repo / "img1", repo / "img1/sda1.gz"):
        assert (p.stat().st_uid, p.stat().st_gid) == (uid, gid), p
    assert (repo / "img1/link").lstat().st_uid == uid  # the link itself
    assert outside.stat().st_uid == 0 and (repo / "README.txt").stat().st_uid == 0
    assert (repo / "img1/sda1.gz").stat().st_mode & 0o777 == 0o600  # modes inside stay
    fsutil.hand_over(repo, uid, gid, 0o750, keep=("README.txt",))  # again: nothing to do
    link = tmp_path / "link"
    link.symlink_to(repo)
    with pytest.raises(Exception, match="link"):
        fsutil.hand_over(link, 0, 0, 0o750)
    assert repo.stat().st_uid == uid


def test_the_account_is_never_root() -> None:
    with pytest.raises(CommandError, match="has root's user or group id"):
        system.system_account("root")
    if os.geteuid() == 0:  # an existing account is only looked up
        assert system.system_account("nobody") == (
            pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)  # fmt: skip


def test_the_repository_readme_is_no_stray(server: Path, cli: Cli) -> None:
    assert cli(server, "repo", "init").exit_code == 0
    assert strays(Root.of(server), PurePosixPath("/var/lib/tftpboot")) == []
