"""`repo init`: this box becomes the image repository of Clonezilla jobs, with Samba.

Samba's package is installed like dnsmasq's; pxeprov's shares go in a file of their own
(/etc/samba/pxeprov.conf, checked with `testparm`), included from smb.conf; the shared
directory is created with a README. A read-only share for guests (restores need nothing more,
so no password goes into their boot lines) becomes the state's repository; a write share for
one account, pxeprov-imaging, serves saves: Samba takes a password for it only while a save
plan is armed or its job runs (the plan's, in its boot line; pipeline.sync_write_access), so a
password read from a boot line is worth nothing once the job has reported.

Neither share acts as root: both read and write as pxeprov-imaging, a system account that
cannot log in, which owns the directory (0750: other local users read no disk image). So what a
save writes (Clonezilla makes its files 0600) a restore through the guest share reads. The
directory is not the TFTP root, nor inside it or around it (TFTP and HTTP would serve every
disk image to anyone), not a system tree or anyone's home, and no symbolic link leads to it
(`syntax.check_repo_path`, `syntax.check_apart`, `pipeline.check_repo_on_disk`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pxeprov import fsutil, pipeline, repository, syntax, system
from pxeprov.apply import Outcome
from pxeprov.errors import InputError
from pxeprov.paths import DEFAULT_REPO_PATH, REPO_PASSWORD
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import ChangeSet
from pxeprov.state import State

ACCOUNT = repository.REPO_ACCOUNT
READ_SHARE = repository.READ_SHARE


@dataclass
class RepoResult:
    state: State
    plan: ChangeSet
    outcome: Outcome | None
    read_url: str
    write_url: str  # the write share (no password: each save plan gets one)
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
    write_url = repository.write_share_url(state)
    if done.outcome is not None:
        if machine.root.is_system:
            pipeline.hand_over_repo(state)
            notes += _forget_fixed_password()
        else:
            notes.append(f"skipped: handing {state.repo_path} over to {ACCOUNT} (--root is not /)")
            if machine.samba is None:
                notes.append(f"skipped: the Samba account {ACCOUNT} (--root is not /)")
        # whatever Samba had (a password of an older pxeprov, a sync that failed): the save
        # plans' password, or none
        notes += pipeline.sync_write_access(machine, state)
    return RepoResult(state, done.plan, done.outcome, state.repo, write_url, notes + done.warnings)


def _forget_fixed_password() -> list[str]:
    """An older pxeprov kept one password for the write share in REPO_PASSWORD: gone."""
    path = Path(str(REPO_PASSWORD))
    if not path.exists():
        return []
    fsutil.remove(path)
    return [f"{REPO_PASSWORD} is removed: the write share takes a password only while a save "
            "plan is armed or its job runs (each `assign --save` makes one)"]  # fmt: skip
