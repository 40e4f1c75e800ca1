"""`list`: what the menus offer, and which boot chain each kind of client gets. Reads only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pxeprov import boot, pipeline, render
from pxeprov.pipeline import Machine
from pxeprov.state import State


@dataclass(frozen=True)
class MenuItem:
    """One entry of the menus, as `list` shows it."""

    name: str
    label: str
    kind: str  # "local" for "Boot from local disk"
    default: bool
    size: int = 0
    arch: str = ""  # the clients' CPU architecture ("" for the local disk: any)
    source: str = ""
    sha256: str = ""
    version: str = ""
    kernel: str = ""
    initrd: str = ""
    rootfs: str = ""
    args: str = ""


@dataclass(frozen=True)
class ChainItem:
    client: str  # "BIOS", "UEFI x86-64"
    firmware: str
    arch: str
    offer: str
    summary: str
    signed: bool


@dataclass(frozen=True)
class PlanItem:
    """A machine with a plan (`pxeprov plans` says more: its last stage seen)."""

    mac: str
    what: str  # the plan in words
    now: str  # what it boots now
    one_shot: bool
    fired: str
    progress: str = ""  # render.plan_progress


@dataclass(frozen=True)
class Listing:
    title: str
    menu_timeout: int
    entries: tuple[MenuItem, ...]
    chains: tuple[ChainItem, ...]
    plans: tuple[PlanItem, ...] = ()

    def as_json(self) -> dict[str, Any]:
        entries = [asdict(e) for e in self.entries]
        # the local entry has no image fields
        entries[0] = {k: entries[0][k] for k in ("name", "label", "kind", "default")}
        return {
            "title": self.title,
            "menu_timeout": self.menu_timeout,
            "entries": entries,
            "chains": [asdict(c) for c in self.chains],
            "plans": [asdict(p) for p in self.plans],
        }


def menu_items(state: State) -> tuple[MenuItem, ...]:
    items = [MenuItem("local", "Boot from local disk", "local", state.default_image is None)]
    for image in state.images:
        entry = render.menu_entry(state, image) if state.network is not None else None
        items.append(
            MenuItem(
                name=image.name,
                label=image.label,
                kind=image.kind,
                default=image.default,
                size=image.size,
                arch=image.arch,
                source=image.source,
                sha256=image.sha256,
                version=image.version,
                kernel=image.kernel,
                initrd=image.initrd,
                rootfs=image.rootfs,
                args=entry.args if entry is not None else image.append,
            )
        )
    return tuple(items)


def listing(machine: Machine) -> Listing:
    state = pipeline.load_state(machine.root)
    chains: tuple[ChainItem, ...] = ()
    if state.network is not None:
        decision = boot.decide(state, machine.root, preview=True)
        chains = tuple(
            ChainItem(c.client, c.firmware, c.arch, c.offer, c.summary, c.signed)
            for c in decision.chains(state)
        )
    plans = tuple(
        PlanItem(
            p.mac,
            render.plan_label(p),
            render.plan_now(p),
            p.one_shot,
            p.fired,
            render.plan_progress(p),
        )
        for p in state.plans
    )
    return Listing(state.title, state.menu_timeout, menu_items(state), chains, plans)
