"""doctor's checks of imaging: the plans and their jobs' reports, the repository's write share,
the multicast sessions' senders."""

from __future__ import annotations

import time
from collections.abc import Iterator

from pxeprov import (
    multicast,
    ports,
    repository,
    system,
)
from pxeprov import state as state_mod
from pxeprov.commands import session as sessions
from pxeprov.commands.doctor.report import Check
from pxeprov.images.kinds.clonezilla import REPORT_PORT
from pxeprov.pipeline import Machine
from pxeprov.state import State

# ---------------------------------------------------------------- plans


STALE_JOB = 6 * 3600  # seconds a taken imaging plan may wait for its job's report


def plans(state: State, root_is_system: bool, now: float | None = None) -> Iterator[Check]:
    """One-shot plans need pxeprov-watch: it fires them and takes their jobs' reports on TCP
    6461. A job taken long ago without a report, and a failed one, are said."""
    now = time.time() if now is None else now
    waiting = [p for p in state.plans if p.status in ("armed", "started")]
    if waiting and root_is_system and state.network is not None:
        address = state.network.address
        port = REPORT_PORT
        found = [x for x in ports.listeners(port) if ports.covers(x.address, address)]
        if not found:
            yield Check(
                "plans.watch",
                "fail",
                f"{len(waiting)} one-shot plan(s) wait, and nothing takes the jobs' reports on "
                f"{address}:{port}: pxeprov-watch is not running",
                "pxeprov init (it starts pxeprov-watch), or run `pxeprov watch --fire`",
            )
        elif not any("python" in n or "pxeprov" in n for x in found for n in x.names):
            yield Check(
                "plans.watch",
                "warn",
                f"{found[0].owner} listens on {address}:{port}, where pxeprov-watch takes the "
                "jobs' reports",
                "stop it (Clonezilla SE's ocsmgrd uses that port too), then pxeprov init",
            )
    for p in state.plans:
        fired = state_mod.stamp_epoch(p.fired)
        if p.status == "started" and fired is not None and now - fired > STALE_JOB:
            yield Check(
                "plans.report",
                "warn",
                f"the job of {p.mac} was taken at {p.fired} and never reported how it ended"
                + ("; the write share takes its password until then" if p.action == "save" else ""),
                f"look at the machine; `pxeprov assign {p.mac} …` again to run it again, or "
                f"`pxeprov unassign {p.mac}`",
            )
        elif p.status == "failed":
            yield Check(
                "plans.report",
                "warn",
                f"the job of {p.mac} failed at {p.reported}: {p.reason}",
                f"`pxeprov assign {p.mac} …` again to run it again",
            )


def write_share(machine: Machine, state: State) -> Iterator[Check]:
    """Samba takes a password for the repository's account only while a save plan is armed or
    its job runs (pipeline.sync_write_access): anything else is a share open to an old
    password, or a save that cannot write."""
    samba = machine.passwords()
    if not state.repo_path or samba is None:
        return
    enabled = samba.enabled(repository.REPO_ACCOUNT)
    saving = bool(repository.write_password(state))
    share = repository.WRITE_SHARE
    if enabled and not saving:
        yield Check(
            "repo.write",
            "fail",
            f"the write share {share} takes a password, and no save plan is armed or running: "
            "a password read from an old boot line writes the repository",
            "pxeprov repo init (it closes the share)",
        )
    elif saving and not enabled:
        yield Check(
            "repo.write",
            "fail",
            f"a save plan is armed or running, and the write share {share} takes no password: "
            "its job cannot write",
            "pxeprov repo init (it opens the share to the save plans)",
        )
    elif saving:
        yield Check("repo.write", "info", f"the write share {share} is open to the save plans")
    else:
        yield Check("repo.write", "pass", f"the write share {share} takes no password")


def multicast_sessions(machine: Machine, state: State) -> Iterator[Check]:
    """What multicast sessions need: a sender for each session that has not ended, none for
    sessions gone, an interface that can multicast, udp-sender and Clonezilla's feeder."""
    assert state.network is not None
    running = sessions.active(state)
    notes = sessions.check_senders(machine, act=False)
    for note in notes:
        fix = "pxeprov plans (it stops a leftover sender, resumes or ends a session)"
        yield Check("multicast.sender", "fail", note, fix)
    if not running:
        return
    for name in sorted({s.interface or state.network.interface for s in running}):
        flag = multicast.interface_multicast(name)
        if flag is None:
            yield Check("multicast.interface", "fail", f"the interface {name} is missing",
                        "unassign the session, and assign it with --mcast-interface")  # fmt: skip
        elif not flag:
            yield Check("multicast.interface", "fail",
                        f"the interface {name} has no MULTICAST flag: the session's packets "
                        "are not sent", f"ip link set {name} multicast on")  # fmt: skip
        else:
            yield Check("multicast.interface", "pass", f"{name} can multicast")
    missing = [t for t in ("udp-sender",) if not system.have(t)]
    if missing or not multicast.FUNCTIONS.is_file():
        yield Check("multicast.tools", "fail",
                    "udp-sender or Clonezilla's feeder (drbl's ocs-functions) is missing",
                    f"apt-get install {' '.join(multicast.PACKAGES)}")  # fmt: skip
    elif not notes:
        names = ", ".join(s.name for s in running)
        yield Check("multicast.sender", "pass", f"the senders of {names} run")
