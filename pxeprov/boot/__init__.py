"""Boot chains: the table (chains.py), what the loader binaries can do (binaries.py), and which
rows a server serves (here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from pxeprov.arch import ARM64, X86_64
from pxeprov.boot.binaries import grub_http, grub_supports_proxy, ipxe_supports_https
from pxeprov.boot.chains import (
    CHAINS,
    HTTP_PACKAGES,
    IPXE_SCRIPT,
    MENUS,
    SERVICE_PACKAGES,
    SIGNED_GRUB,
    Chain,
    Loader,
    LoaderFile,
    Transport,
    UefiChain,
)
from pxeprov.errors import InputError, MissingFileError
from pxeprov.paths import Root
from pxeprov.state import State

__all__ = [
    "CHAINS",
    "HTTP_PACKAGES",
    "IPXE_SCRIPT",
    "MENUS",
    "SIGNED_GRUB",
    "Chain",
    "Decision",
    "Loader",
    "LoaderFile",
    "UefiChain",
    "arm64_grub",
    "check_https",
    "decide",
    "grub_device",
    "grub_over_http",
    "grub_supports_proxy",
    "ipxe_supports_https",
    "loader_files",
    "menus",
    "packages",
    "resolve_arm64",
    "resolve_uefi",
    "served",
    "transport",
    "unanswered",
]


@dataclass(frozen=True)
class Decision:
    """How this server boots its clients, decided once (`decide`) from the state and the loader
    binaries installed, and handed to whatever renders, checks or explains the chains.

    `uefi`: the x86-64 UEFI chain `--uefi-loader` resolved to; `arm64`: the arm64 UEFI chain
    (None: arm64 clients are not answered, no loader for them is installed); `grub_http`: GRUB
    loads kernels and initrds over HTTP; `warnings`: what some clients will not get (Secure
    Boot, HTTP)."""

    uefi: UefiChain = "ipxe"
    grub_http: bool = False
    warnings: tuple[str, ...] = ()
    arm64: UefiChain | None = None

    def chains(self, state: State) -> tuple[Chain, ...]:
        """The rows served (see `served`)."""
        return served(state, self.uefi, self.arm64)


def transport(state: State) -> Transport:
    return "http" if state.payload_base is not None else "tftp"


def served(state: State, uefi: UefiChain, arm64: UefiChain | None = None) -> tuple[Chain, ...]:
    """The rows this server serves: one per firmware and architecture, in the table's order.
    BIOS clients have one row per transport; UEFI clients the loader resolved for their
    architecture (arm64 ones none when `arm64` is None)."""
    wanted = transport(state)
    chosen = {X86_64.name: uefi, ARM64.name: arm64}
    return tuple(
        c
        for c in CHAINS
        if c.transport == wanted and (c.firmware == "bios" or c.uefi == chosen[c.arch])
    )


UNANSWERED_ARM64 = (
    "not answered: no arm64 GRUB on this server (Debian's arm64 packages shim-signed and "
    "grub-efi-arm64-signed >= 2.12, or grub-efi-arm64-bin; see the README's ARM64 section)"
)


def unanswered(arches: set[str]) -> list[tuple[str, str]]:
    """The clients no chain served answers, as (client, why) lines for init and list."""
    return [] if ARM64.name in arches else [(ARM64.uefi_client, UNANSWERED_ARM64)]


def loader_files(chains: tuple[Chain, ...]) -> tuple[LoaderFile, ...]:
    return tuple(dict.fromkeys(f for c in chains for f in c.files))


def menus(chains: tuple[Chain, ...]) -> list[Loader]:
    """The menu formats the chains read, in MENUS' order."""
    used = {c.loader for c in chains}
    return [fmt for fmt in MENUS if fmt in used]


def packages(state: State) -> tuple[str, ...]:
    """What `init` installs: every chain the server may serve (BIOS on both transports, so that
    --http/--no-http needs no new package; the iPXE UEFI chain, which `auto` falls back to; the
    GRUB chain when asked for), the service, and nginx for HTTP."""
    names = list(SERVICE_PACKAGES)
    for c in CHAINS:
        if c.arch != X86_64.name:
            continue  # another architecture's packages: served when they are installed
        if c.firmware == "bios" or c.loader == "ipxe" or state.uefi_loader == c.loader:
            names += c.packages
    if state.http:
        names += HTTP_PACKAGES
    if state.repo_path:
        names.append("samba")  # the image repository this box serves
    return tuple(dict.fromkeys(names))


SIGNED_GRUB_PACKAGE = X86_64.signed_grub_package


def check_grub_candidate(version: str | None) -> None:
    """`--uefi-loader grub` where the signed GRUB is still to be installed: refused before
    anything is installed (and in a dry run) when the version apt would install is older than
    2.12, as the run refuses it once installed. None (apt cannot say): the run checks the
    binary after the install."""
    if version is None:
        return
    # a signed package's version is "<its own>+<GRUB's>": 1+2.06+13+deb12u2, 1.202+2.12-1ubuntu7
    upstream = re.search(r"\+(\d+)\.(\d+)", version) or re.match(r"(?:\d+:)?(\d+)\.(\d+)", version)
    if upstream is None or (int(upstream[1]), int(upstream[2])) >= (2, 12):
        return
    raise MissingFileError(
        f"the {SIGNED_GRUB_PACKAGE} that apt would install ({version}) is older than 2.12: GRUB "
        "before 2.12 has no proxyDHCP support (it asks the ordinary DHCP server for its files, "
        "so it cannot boot here)",
        f"install {SIGNED_GRUB_PACKAGE} >= 2.12 (Debian 13, Ubuntu 24.04), or use "
        "--uefi-loader ipxe",
    )


def resolve_uefi(state: State, root: Root, *, preview: bool = False) -> tuple[UefiChain, list[str]]:
    """The UEFI chain to serve, and a warning when Secure Boot clients will not boot."""
    if state.uefi_loader == "ipxe":
        return "ipxe", []
    proxy = grub_supports_proxy(root.path(SIGNED_GRUB))
    if state.uefi_loader == "grub":
        if proxy is False:
            raise MissingFileError(
                f"the signed GRUB {SIGNED_GRUB} has no proxyDHCP support (GRUB older "
                "than 2.12 asks the ordinary DHCP server for its files, so it cannot boot here)",
                f"install {SIGNED_GRUB_PACKAGE} >= 2.12 (Debian 13, Ubuntu 24.04), or use "
                "--uefi-loader ipxe",
            )
        if proxy is None and not preview:
            raise MissingFileError(
                f"boot-loader file {SIGNED_GRUB} is missing",
                f"install the packages shim-signed and {SIGNED_GRUB_PACKAGE}",
            )
        return "grub", []
    if proxy:
        return "grub", []
    why = "is not installed" if proxy is None else "is older than 2.12 (no proxyDHCP support)"
    return "ipxe", [
        "UEFI clients get iPXE (snponly.efi), which is not signed: clients with Secure Boot on "
        f"will refuse it. Debian's signed GRUB ({SIGNED_GRUB}) {why}; with "
        f"{SIGNED_GRUB_PACKAGE} >= 2.12 and shim-signed (Debian 13, Ubuntu 24.04), "
        "`pxeprov init --uefi-loader grub` serves a signed chain."
    ]


def _found(root: Root, paths: tuple[PurePosixPath, ...]) -> PurePosixPath | None:
    """The first of `paths` that is a file on `root`."""
    return next((p for p in paths if root.path(p).is_file()), None)


def arm64_grub(root: Root, chain: UefiChain | None) -> PurePosixPath | None:
    """The GRUB arm64 clients get on that chain: where it is on this server."""
    if chain is None:
        return None
    wanted = ARM64.signed_grub if chain == "grub" else ARM64.unsigned_grub
    return _found(root, ARM64.candidates(wanted))


def resolve_arm64(root: Root) -> tuple[UefiChain | None, list[str]]:
    """What arm64 UEFI clients get: shim + Debian's signed GRUB when both are there and GRUB
    reads the proxy's offer (>= 2.12), else Debian's unsigned netboot GRUB when it does, else
    nothing (they are not answered). Never installed by `init`: on an x86-64 server they are
    arm64 packages, unpacked under arch.UNPACKED (the README says how)."""
    signed, unsigned = arm64_grub(root, "grub"), arm64_grub(root, "grub-unsigned")
    shim = _found(root, ARM64.candidates(*ARM64.shim))
    proxy = {p: grub_supports_proxy(root.path(p)) for p in (signed, unsigned) if p is not None}
    if signed is not None and proxy[signed] and shim is not None:
        return "grub", []
    if unsigned is not None and proxy[unsigned]:
        return "grub-unsigned", []
    if False in proxy.values():
        return None, [
            "UEFI arm64 clients are not answered: the arm64 GRUB there is older than 2.12 "
            f"({', '.join(str(p) for p, ok in proxy.items() if not ok)}: no proxyDHCP support)"
        ]
    return None, []


def decide(state: State, root: Root, *, preview: bool = False) -> Decision:
    """The boot decision for `state` on `root` (resolve_uefi, resolve_arm64, then
    grub_over_http). `preview`: loaders still to come with a package count as what their
    package brings."""
    uefi, warnings = resolve_uefi(state, root, preview=preview)
    arm64, arm_warnings = resolve_arm64(root)
    grub_http, why = grub_over_http(state, root, uefi, preview=preview, arm64=arm64)
    return Decision(uefi, grub_http, (*warnings, *arm_warnings, *why), arm64)


def check_https(state: State, root: Root, uefi: UefiChain) -> None:
    """An https:// base URL only where every iPXE binary served can fetch it: Debian 12's iPXE
    has no TLS at all, and would be pointed at URLs it cannot open."""
    if not state.payload_base or not state.payload_base.startswith("https://"):
        return
    for chain in served(state, uefi):
        if not chain.ipxe:
            continue
        for f in chain.files:
            source = next((root.path(s) for s in f.sources if root.path(s).is_file()), None)
            if source is not None and ipxe_supports_https(source) is False:
                raise InputError(
                    f"the HTTP base URL {state.payload_base} is https://, but the iPXE this "
                    f"server serves ({f.name}, from {source}) cannot fetch https:// URLs: it was "
                    "built without TLS (as Debian 12's ipxe package is)",
                    "give an http:// URL, or install an ipxe package built with HTTPS",
                )


def grub_device(base: str) -> tuple[str, str]:
    """GRUB's name for an http:// base URL: the device `(http,host[:port])` and the path below
    it (without a trailing slash)."""
    parts = urlsplit(base)
    return f"(http,{parts.netloc})", parts.path.rstrip("/")


def grub_over_http(
    state: State,
    root: Root,
    uefi: UefiChain,
    *,
    preview: bool = False,
    arm64: UefiChain | None = None,
) -> tuple[bool, list[str]]:
    """Whether GRUB's menu loads kernels and initrds over HTTP (when there is HTTP and every
    GRUB served can: x86-64's and arm64's read the same grub.cfg), and why not when it cannot
    although there is HTTP."""
    base = state.payload_base
    grubs = [X86_64.signed_grub] if uefi == "grub" else []
    arm = arm64_grub(root, arm64)
    if arm is not None:
        grubs.append(arm)
    if not grubs or base is None:
        return False, []
    who = {(True, False): "Secure Boot clients (GRUB)", (False, True): "arm64 clients (GRUB)"}
    tftp = who.get((uefi == "grub", arm64 is not None), "GRUB clients (Secure Boot, arm64)")
    tftp += " load kernels and initrds over TFTP"
    if not base.startswith("http://"):
        return False, [f"{tftp}: GRUB cannot fetch https:// URLs ({base})"]
    port = urlsplit(base).port or 80
    for grub in grubs:
        found = grub_http(root.path(grub))
        if found is None:  # comes with its package (Debian's netboot GRUB has http)
            if preview:
                continue
            return False, []
        has_http, any_port = found
        if not has_http:
            return False, [f"{tftp}: the {_grub_words(grub)} ({grub}) has no http module"]
        if port != 80 and not any_port:
            return False, [
                f"{tftp}: the {_grub_words(grub)} ({grub}) fetches over HTTP from port 80 only, "
                f"and payloads are on port {port}"
            ]
    return True, []


def _grub_words(path: PurePosixPath) -> str:
    return "signed GRUB" if path.name.endswith(".signed") else "GRUB"
