"""The typed state: the serving network, the menu's images, and the State that holds them
with the server's settings and the machines' plans and sessions (machines.py).

Frozen, and each part checked as it is made: a State that exists is a valid one.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from pxeprov.arch import X86_64, named
from pxeprov.errors import InputError
from pxeprov.paths import DEFAULT_TFTP_ROOT
from pxeprov.state.machines import MCAST_PORT_SPAN, Plan, Session
from pxeprov.state.values import (
    DEFAULT_HTTP_FALLBACK_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_KEYBOARD,
    DEFAULT_LOCALE,
    DEFAULT_ROOM_SIZE,
    DNSMASQ_MODES,
    UEFI_LOADERS,
    DnsmasqMode,
    UefiLoader,
    check_keyboard,
    check_locale,
    check_port,
    check_repo,
    check_room_size,
    check_timeout,
    check_web_token,
)
from pxeprov.syntax import (
    check_apart,
    check_args,
    check_image_name,
    check_interface,
    check_path,
    check_repo_path,
    check_served_path,
    check_text,
    check_tftp_root,
    check_url,
)

_KIND_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_VERSION_RE = re.compile(r"[A-Za-z0-9._+~:-]{0,64}")
_SHA256_RE = re.compile(r"([0-9a-f]{64})?")
_VARIANT_RE = re.compile(r"[a-z0-9._-]{0,32}")


def _check_source(value: str) -> None:
    """Where an image came from is shown by `list`: one line, no control characters."""
    if len(value) > 4096 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"source {value[:60]!r} must be one line without control characters")


@dataclass(frozen=True)
class Network:
    interface: str
    address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network

    def __post_init__(self) -> None:
        check_interface(self.interface, "network.interface")
        if self.address not in self.subnet:
            raise InputError(f"address {self.address} is not inside subnet {self.subnet}")
        if self.subnet.prefixlen < 31 and self.address in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise InputError(
                f"address {self.address} is the "
                + ("network" if self.address == self.subnet.network_address else "broadcast")
                + f" address of {self.subnet}, not a host's"
            )


@dataclass(frozen=True)
class Image:
    """One menu entry: a kernel and initrd under the TFTP root, with its kernel arguments."""

    name: str
    label: str
    kind: str
    kernel: str  # paths relative to the TFTP root
    initrd: str  # "" when the kind boots without one
    rootfs: str = ""  # the squashfs live-boot fetches, if the kind has one
    append: str = ""  # the admin's own kernel arguments, after the kind's
    default: bool = False
    locale: str = DEFAULT_LOCALE
    keyboard: str = DEFAULT_KEYBOARD
    source: str = ""  # where it came from: an ISO path or URL
    sha256: str = ""  # of the ISO
    size: int = 0  # bytes under the TFTP root
    version: str = ""  # e.g. from Clonezilla-Live-Version
    unsigned_kernel: bool = False  # the kernel has no Authenticode signature (no Secure Boot)
    # More files the image serves (relative to the TFTP root); one ending in "/" is a tree.
    files: tuple[str, ...] = ()
    variant: str = ""  # what the kind says of this image (server/desktop, dvd/netinst, ...)
    arch: str = X86_64.name  # the CPU architecture its kernel is for: only its clients get it

    def __post_init__(self) -> None:
        # The keys' own names, so that a bad state file says which key is wrong.
        check_image_name(self.name, "name")
        check_text(self.label, "label")
        if not _KIND_RE.fullmatch(self.kind):
            raise InputError(f"kind {self.kind!r} must match [a-z0-9][a-z0-9-]*")
        check_path(self.kernel, "kernel")
        if self.initrd:  # some kinds (memtest86+) boot without one
            check_path(self.initrd, "initrd")
        if self.rootfs:
            check_path(self.rootfs, "rootfs")
        check_args(self.append, "append")
        check_locale(self.locale)
        check_keyboard(self.keyboard)
        _check_source(self.source)
        if not _SHA256_RE.fullmatch(self.sha256):
            raise InputError(f"sha256 {self.sha256[:70]!r} must be 64 lower-case hex digits")
        if self.size < 0:
            raise InputError(f"size {self.size} must not be negative")
        named(self.arch)
        if not _VERSION_RE.fullmatch(self.version):
            raise InputError(f"version {self.version[:70]!r} must match [A-Za-z0-9._+~:-]*")
        for path in self.files:
            check_served_path(path, "files")
        if not _VARIANT_RE.fullmatch(self.variant):
            raise InputError(f"variant {self.variant[:40]!r} must match [a-z0-9._-]*")


@dataclass(frozen=True)
class State:
    network: Network | None = None
    tftp_root: PurePosixPath = DEFAULT_TFTP_ROOT
    dnsmasq_config: DnsmasqMode = "drop-in"
    uefi_loader: UefiLoader = "auto"  # as asked; `pxeprov init` resolves auto on each run
    title: str = "pxeprov network boot"
    menu_timeout: int = 10
    http: bool = False  # serve the TFTP root with nginx too, and boot payloads over HTTP
    http_port: int = DEFAULT_HTTP_PORT
    # The port `init` gives pxeprov's site when another web server already serves port 80.
    http_fallback_port: int = DEFAULT_HTTP_FALLBACK_PORT
    http_base_url: str = ""  # payloads from another web server (a CDN) instead
    repo: str = ""  # the image repository of Clonezilla jobs (plans may name their own)
    repo_path: str = ""  # the directory this box shares with Samba as a repository ("" none)
    images: tuple[Image, ...] = field(default_factory=tuple)
    plans: tuple[Plan, ...] = field(default_factory=tuple)
    sessions: tuple[Session, ...] = field(default_factory=tuple)
    room_size: int = DEFAULT_ROOM_SIZE  # machines expected to boot at once (TFTP limits)
    # the status page's secret path (`pxeprov web url`); "" no page. Root's only, as the file.
    web_token: str = ""

    def __post_init__(self) -> None:
        check_tftp_root(str(self.tftp_root), "server.tftp_root")
        if self.web_token:
            check_web_token(self.web_token)
        check_room_size(self.room_size)
        if self.dnsmasq_config not in DNSMASQ_MODES:
            raise InputError(f"dnsmasq_config must be one of {', '.join(DNSMASQ_MODES)}")
        if self.uefi_loader not in UEFI_LOADERS:
            raise InputError(f"uefi_loader must be one of {', '.join(UEFI_LOADERS)}")
        check_text(self.title, "menu.title")
        check_timeout(self.menu_timeout, "menu.timeout")
        check_port(self.http_port, "http.port")
        check_port(self.http_fallback_port, "http.fallback_port")
        if self.http_base_url:
            check_url(self.http_base_url, "http.base_url")
        names = [image.name for image in self.images]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"image name {duplicates[0]!r} is used twice in the state")
        if sum(image.default for image in self.images) > 1:
            raise InputError("more than one image is marked default")
        if self.repo:
            check_repo(self.repo, "imaging.repo")
        if self.repo_path:
            repo_path = check_repo_path(self.repo_path, "imaging.path")
            check_apart(self.tftp_root, repo_path, "imaging.path")
        macs = [plan.mac for plan in self.plans]
        twice = sorted({m for m in macs if macs.count(m) > 1})
        if twice:
            raise InputError(f"the machine {twice[0]} has two plans in the state")
        known = set(names)
        for plan in self.plans:
            if plan.action != "local" and plan.entry not in known:
                raise InputError(
                    f"the plan of {plan.mac} names the image {plan.entry!r}, which is not in "
                    "the menus"
                )
            if plan.imaging and not (plan.repo or self.repo):
                raise InputError(f"the plan of {plan.mac} has no repository (and the state none)")
        self._check_sessions()

    def _check_sessions(self) -> None:
        by_name = {s.name: s for s in self.sessions}
        if len(by_name) != len(self.sessions):
            raise InputError("two sessions have the same name in the state")
        for plan in self.plans:
            session = by_name.get(plan.session) if plan.session else None
            if plan.session and session is None:
                raise InputError(f"the plan of {plan.mac} names the session {plan.session!r}, "
                                 "which is not in the state")  # fmt: skip
            if session is not None and plan.image != session.image:
                raise InputError(
                    f"the plan of {plan.mac} restores {plan.image!r}, its session "
                    f"{session.name!r} sends {session.image!r}"
                )
        ordered = sorted(self.sessions, key=lambda s: s.port)
        for a, b in itertools.pairwise(ordered):
            if b.port < a.port + MCAST_PORT_SPAN:
                raise InputError(
                    f"the sessions {a.name!r} and {b.name!r} share ports: each takes "
                    f"{MCAST_PORT_SPAN} ports from its own"
                )
        addresses = [s.address for s in self.sessions]
        if len(set(addresses)) != len(addresses):
            raise InputError("two sessions have the same multicast address")

    def session(self, name: str) -> Session | None:
        return next((s for s in self.sessions if s.name == name), None)

    @property
    def payload_base(self) -> str | None:
        """Where kernels, initrds and squashfs files are fetched over HTTP (None: TFTP)."""
        if self.http_base_url:
            return self.http_base_url.rstrip("/")
        if self.http and self.network is not None:
            port = "" if self.http_port == 80 else f":{self.http_port}"
            return f"http://{self.network.address}{port}"
        return None

    @property
    def default_image(self) -> Image | None:
        return next((image for image in self.images if image.default), None)

    def with_changes(self, **changes: Any) -> State:
        return replace(self, **changes)
