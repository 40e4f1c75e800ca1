"""`repo init`: this box becomes the image repository of Clonezilla jobs, with Samba.

Samba's package is installed like dnsmasq's; pxeprov's shares go in a file of their own
(/etc/samba/pxeprov.conf, checked with `testparm`), included from smb.conf; the shared
directory is created with a README. A read-only share for guests (restores need nothing more,
so no password goes into their boot lines) becomes the state's repository; a write share for
one account, pxeprov-imaging, whose password is kept in a 0600 file, serves saves.

Neither share acts as root: both read and write as pxeprov-imaging, a system account that
cannot log in, which owns the directory (0750: other local users read no disk image). So what a
save writes (Clonezilla makes its files 0600) a restore through the guest share reads. The
directory is not the TFTP root, nor inside it or around it (TFTP and HTTP would serve every
disk image to anyone), not a system tree or anyone's home, and no symbolic link leads to it
(`syntax.check_repo_path`, `syntax.check_apart`, `pipeline.check_repo_on_disk`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pxeprov import pipeline, syntax, system
from pxeprov.apply import Outcome
from pxeprov.errors import InputError
from pxeprov.paths import DEFAULT_REPO_PATH, REPO_PASSWORD
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import Plan as FilePlan
from pxeprov.state import State

ACCOUNT = pipeline.REPO_ACCOUNT
READ_SHARE, WRITE_SHARE = "pxeprov-images", "pxeprov-images-rw"


@dataclass
class RepoResult:
    state: State
    plan: FilePlan
    outcome: Outcome | None
    read_url: str
    write_url: str  # with the account's password; "" where it was not set up
    notes: list[str] = field(default_factory=list)


def repo_init(
    machine: Machine, path: str = DEFAULT_REPO_PATH, *, dry_run: bool = False
) -> RepoResult:
    repo_path = syntax.check_repo_path(path, "--path")
    notes: list[str] = []

    def build(previous: State) -> Change:
        if previous.network is None:
            raise InputError("pxeprov is not set up here", "run `pxeprov init` first")
        syntax.check_apart(previous.tftp_root, repo_path, "--path")
        url = f"smb://{previous.network.address}/{READ_SHARE}/"
        if previous.repo and previous.repo != url:
            notes.append(f"the repository was {previous.repo}; it is now {url}")
        state = previous.with_changes(repo_path=path, repo=url)
        install: list[str] = []
        if machine.root.is_system:
            install = machine.packages.missing(["samba"])
        return Change(state, install=tuple(install))

    if machine.root.is_system and not dry_run:
        system.system_account(ACCOUNT)  # before smbd loads shares that act as it
    done = pipeline.run(machine, build, dry_run=dry_run)
    state = done.change.state
    assert state.network is not None
    write_url = ""
    if done.outcome is not None:
        if machine.root.is_system:
            pipeline.hand_over_repo(state)
            password = _password()
            write_url = f"smb://{ACCOUNT}:{password}@{state.network.address}/{WRITE_SHARE}/"
        else:
            notes.append(f"skipped: the Samba account {ACCOUNT} (--root is not /)")
            notes.append(f"skipped: handing {state.repo_path} over to {ACCOUNT} (--root is not /)")
    return RepoResult(state, done.plan, done.outcome, state.repo, write_url, notes + done.warnings)


def _password() -> str:
    """The write share's account's Samba password (kept in /etc/pxeprov/repo-password, 0600,
    made once)."""
    path = Path(str(REPO_PASSWORD))
    try:
        password = path.read_text().strip()
    except OSError:
        password = ""
    if not password:
        # only characters a repository URL may hold (state.check_repo)
        password = secrets.token_urlsafe(18)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
    system.run(["smbpasswd", "-s", "-a", ACCOUNT], stdin=f"{password}\n{password}\n")
    return password
