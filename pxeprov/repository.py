"""This box's image repository as Samba shares it (`repo init`): its account, its two shares,
and the write share's password, which lives in the save plans that are armed or running.

Samba keeps one password per account, so every such save plan carries the same one (made
with the first); when none is left, the share takes no password (pipeline.sync_write_access
tells Samba).
"""

from __future__ import annotations

from pxeprov import state as state_mod
from pxeprov.state import State

REPO_ACCOUNT = "pxeprov-imaging"  # the repository's own account: both shares act as it
REPO_MODE = 0o750
READ_SHARE, WRITE_SHARE = "pxeprov-images", "pxeprov-images-rw"  # templates/samba/


def own_write_share(state: State, url: str) -> bool:
    """Whether `url` is this box's write share (`repo init`), whatever account it names."""
    if state.network is None or not url:
        return False
    parts = state_mod.repo_parts(url)
    return (
        parts["host"] == str(state.network.address)
        and parts["path"].strip("/").split("/")[0] == WRITE_SHARE
    )


def write_share_url(state: State, password: str = "") -> str:
    """This box's write share; with `password`, as a save plan's repository (the account's)."""
    assert state.network is not None
    account = f"{REPO_ACCOUNT}:{password}@" if password else ""
    return f"smb://{account}{state.network.address}/{WRITE_SHARE}/"


def write_password(state: State, skip: frozenset[str] = frozenset()) -> str:
    """The write share's password while a save plan on it is armed or its job runs (a plan of
    a machine in `skip` aside), else "": the share takes no password then. Every such plan
    has the same one (Samba keeps one per account), made with the first."""
    live = (p for p in state.plans if p.action == "save" and p.status in ("armed", "started"))
    for p in live:
        if p.mac not in skip and own_write_share(state, p.repo):
            return state_mod.repo_parts(p.repo)["password"]
    return ""
