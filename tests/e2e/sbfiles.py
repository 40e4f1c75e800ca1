"""Debian packages the Secure Boot end-to-end tests need, downloaded once and unpacked, never
installed (the recipe of shared/lab/secureboot/fetch-packages.sh).

- Debian 13 (trixie)'s signed ``shim-signed`` and ``grub-efi-amd64-signed``: GRUB 2.12 is the
  first signed GRUB that takes its TFTP server from a proxyDHCP offer; bookworm's 2.06 cannot
  boot through a proxy at all (NOTES.txt), so the host's own packages would prove nothing.
- trixie's ``ipxe``: built with HTTPS, unlike bookworm's (pxeprov detects which, test_https).
- bookworm's ``isc-dhcp-server``: dhcpd plays a "Windows-like" ordinary DHCP server (siaddr
  0.0.0.0, no boot file), which dnsmasq cannot imitate (it always sets siaddr to itself).

apt-get runs with its own sources, lists, caches and preferences under a build directory:
the system's apt configuration and state are read (mirror, keyring) but never written. The
result goes to CACHE, which later runs reuse. It is built in a temporary sibling directory and
renamed into place, so an interrupted run never leaves a half-filled cache behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

CACHE = Path("/var/cache/pxeprov-tests/secureboot")

SIGNED_SUITE = "trixie"
SIGNED_PACKAGES = ("shim-signed", "grub-efi-amd64-signed", "ipxe")
# The dhcpd verified in the lab (4.4.3-P1-2); bookworm's build runs on this host's libc.
DHCPD_SUITE = "bookworm"
DHCPD_PACKAGE = "isc-dhcp-server"

# Paths inside the unpacked packages.
SHIM = Path("usr/lib/shim/shimx64.efi.signed")
GRUB = Path("usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
DHCPD = Path("usr/sbin/dhcpd")
IPXE_EFI = Path("usr/lib/ipxe/snponly.efi")
IPXE_KPXE = Path("usr/lib/ipxe/undionly.kpxe")

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SOURCES_LIST = Path("/etc/apt/sources.list")
MANIFEST = "MANIFEST"  # one "package version suite" line per .deb; written last

UPDATE_TIMEOUT = 600.0  # apt-get update of one suite's main (Packages.xz is ~10 MB)
DOWNLOAD_TIMEOUT = 300.0
LOCAL_TIMEOUT = 60.0  # dpkg -x, dpkg-deb -f


class PackageError(RuntimeError):
    """The packages could not be fetched or unpacked; the message says which step and why."""


@dataclass(frozen=True)
class SecureBootFiles:
    """Absolute paths into the cache."""

    shim: Path  # trixie's shimx64.efi.signed (Microsoft-signed)
    grub: Path  # trixie's grubnetx64.efi.signed (Debian-signed GRUB 2.12)
    dhcpd: Path  # bookworm's ISC dhcpd binary
    manifest: str  # what was downloaded, for reports
    ipxe_efi: Path = Path()  # trixie's snponly.efi and undionly.kpxe (built with HTTPS)
    ipxe_kpxe: Path = Path()


def _run(argv: Sequence[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PackageError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise PackageError(f"program not found: {argv[0]}") from exc
    if res.returncode != 0:
        raise PackageError(
            f"exit {res.returncode}: {' '.join(argv)}\n{res.stderr.strip() or res.stdout.strip()}"
        )
    return res.stdout


def debian_mirror() -> str:
    """The system's Debian mirror: the first URI of a non-security deb822 stanza, else the
    first ``deb`` line of sources.list (options in brackets skipped)."""
    if SOURCES.is_file():
        for stanza in SOURCES.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "\t", "#")):
                    fields[key.strip().lower()] = value.strip()
            uris = fields.get("uris", "").split()
            suites = fields.get("suites", "")
            enabled = fields.get("enabled", "yes").lower() != "no"
            deb = "deb" in fields.get("types", "").split()
            if uris and enabled and deb and "security" not in suites:
                return uris[0]
    if SOURCES_LIST.is_file():
        for line in SOURCES_LIST.read_text().splitlines():
            words = line.split()
            if not words or words[0] != "deb":
                continue
            rest = words[1:]
            if rest and rest[0].startswith("["):
                while rest and not rest[0].endswith("]"):
                    rest = rest[1:]
                rest = rest[1:]
            if rest and "security" not in line:
                return rest[0]
    raise PackageError(f"no Debian mirror found in {SOURCES} or {SOURCES_LIST}")


def _fetch(
    suite: str,
    packages: Sequence[str],
    mirror: str,
    work: Path,
    dest: Path,
    architecture: str | None = None,
) -> list[Path]:
    """`apt-get download` ``packages`` from ``suite`` into ``dest`` with an apt state of its
    own under ``work``; return the .deb files. ``architecture``: another architecture's
    packages (arm64's on this amd64 host: downloaded and unpacked, never installed)."""
    etc, lists, cache = work / "sources.list.d", work / "lists", work / "cache"
    for d in (etc, work / "preferences.d", lists / "partial", cache / "archives/partial"):
        d.mkdir(parents=True)
    (etc / f"{suite}.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {KEYRING}\n"
    )
    opts = [
        "-q",
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={etc}",
        # The system's pinning must not pick another version; none of ours exist.
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", f"Dir::Etc::PreferencesParts={work / 'preferences.d'}",
        "-o", f"Dir::State::Lists={lists}",
        # Dir::Cache holds pkgcache.bin: without this apt would rebuild the system's one
        # (/var/cache/apt) from our lists.
        "-o", f"Dir::Cache={cache}",
        "-o", f"Dir::Cache::Archives={cache / 'archives'}",
        "-o", "APT::Get::List-Cleanup=0",
    ]  # fmt: skip
    if architecture is not None:
        opts += ["-o", f"APT::Architecture={architecture}",
                 "-o", f"APT::Architectures::={architecture}"]  # fmt: skip
    _run(["apt-get", *opts, "update"], UPDATE_TIMEOUT)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.deb"))
    _run(["apt-get", *opts, "download", *packages], DOWNLOAD_TIMEOUT, cwd=dest)
    debs = sorted(set(dest.glob("*.deb")) - before)
    if len(debs) != len(packages):
        raise PackageError(f"expected {len(packages)} .deb from {suite}, got {debs}")
    return debs


Fetch = tuple[str, Sequence[str], str, str | None]  # suite, packages, directory, architecture


def _build(tmp: Path, fetches: Sequence[Fetch] | None = None) -> None:
    """Fill ``tmp`` as the cache: debs/, trixie/ (unpacked), dhcpd/ (unpacked), MANIFEST (or
    what ``fetches`` say: each suite's packages unpacked into its directory)."""
    mirror = debian_mirror()
    # apt downloads as user _apt: our directories must be traversable, and the one it downloads
    # into writable by it, else it falls back to downloading as root (with a warning).
    tmp.chmod(0o755)
    apt = tmp / "apt"
    debs_dir = tmp / "debs"
    debs_dir.mkdir()
    with contextlib.suppress(LookupError, PermissionError):  # no _apt: apt stays root anyway
        shutil.chown(debs_dir, user="_apt")
    manifest: list[str] = []
    wanted = fetches or (
        (SIGNED_SUITE, SIGNED_PACKAGES, SIGNED_SUITE, None),
        (DHCPD_SUITE, (DHCPD_PACKAGE,), "dhcpd", None),
    )
    for suite, packages, folder, architecture in wanted:
        target = tmp / folder
        for deb in _fetch(suite, packages, mirror, apt / suite, debs_dir, architecture):
            _run(["dpkg-deb", "-x", str(deb), str(target)], LOCAL_TIMEOUT)
            fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], LOCAL_TIMEOUT)
            name_version = " ".join(line.split(": ", 1)[1] for line in fields.splitlines())
            manifest.append(f"{name_version} {suite}")
    # The lists (tens of MB) were only needed to find the packages.
    shutil.rmtree(apt)
    os.chown(debs_dir, 0, 0)
    for deb in debs_dir.iterdir():
        os.chown(deb, 0, 0)
    (tmp / MANIFEST).write_text("\n".join(manifest) + "\n")


def _files(cache: Path) -> SecureBootFiles | None:
    """The cache's files, or None if the cache is absent or incomplete."""
    files = SecureBootFiles(
        shim=cache / SIGNED_SUITE / SHIM,
        grub=cache / SIGNED_SUITE / GRUB,
        dhcpd=cache / "dhcpd" / DHCPD,
        manifest="",
        ipxe_efi=cache / SIGNED_SUITE / IPXE_EFI,
        ipxe_kpxe=cache / SIGNED_SUITE / IPXE_KPXE,
    )
    manifest = cache / MANIFEST
    paths = (files.shim, files.grub, files.dhcpd, files.ipxe_efi, files.ipxe_kpxe)
    if not (manifest.is_file() and all(p.is_file() for p in paths)):
        return None
    return replace(files, manifest=manifest.read_text())


def _remove_leftovers(cache: Path) -> None:
    """Build directories of runs that were killed (no ``finally`` ran). One older than any
    build can take cannot belong to a run still going."""
    too_old = time.time() - (2 * UPDATE_TIMEOUT + 2 * DOWNLOAD_TIMEOUT + 600)
    for path in cache.parent.glob(f".{cache.name}-*"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and path.stat().st_mtime < too_old:
                shutil.rmtree(path)


def secureboot_files(cache: Path = CACHE) -> SecureBootFiles:
    """The unpacked packages, downloaded first if the cache is not complete.

    Raises PackageError (with apt's own message) when they cannot be had.
    """
    return _cached(cache, _files, _build)


# arm64's signed chain: trixie's shim-signed and grub-efi-arm64-signed for arm64, unpacked
ARM64_CACHE = Path("/var/cache/pxeprov-tests/arm64-signed")
ARM64_PACKAGES = ("shim-signed", "grub-efi-arm64-signed")
SHIM_ARM64 = Path("usr/lib/shim/shimaa64.efi.signed")
GRUB_ARM64 = Path("usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed")


@dataclass(frozen=True)
class Arm64Files:
    shim: Path  # trixie's shimaa64.efi.signed
    grub: Path  # trixie's grubnetaa64.efi.signed (Debian-signed GRUB 2.12)
    manifest: str


def _arm64_files(cache: Path) -> Arm64Files | None:
    files = Arm64Files(cache / SIGNED_SUITE / SHIM_ARM64, cache / SIGNED_SUITE / GRUB_ARM64, "")
    manifest = cache / MANIFEST
    if not (manifest.is_file() and files.shim.is_file() and files.grub.is_file()):
        return None
    return replace(files, manifest=manifest.read_text())


def arm64_files(cache: Path = ARM64_CACHE) -> Arm64Files:
    """trixie's arm64 shim and signed netboot GRUB, downloaded (never installed) first if the
    cache is not complete."""
    fetches: tuple[Fetch, ...] = ((SIGNED_SUITE, ARM64_PACKAGES, SIGNED_SUITE, "arm64"),)
    return _cached(cache, _arm64_files, lambda tmp: _build(tmp, fetches))


T = TypeVar("T")


def _cached(cache: Path, files: Callable[[Path], T | None], build: Callable[[Path], None]) -> T:
    found = files(cache)
    if found is not None:
        return found
    cache.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(cache)
    if cache.exists():
        # Not ours to trust (an older layout, or emptied by hand): set aside, then removed.
        stale = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}-stale-"))
        cache.rename(stale / cache.name)
        shutil.rmtree(stale)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}-build-"))
    try:
        build(tmp)
        try:
            tmp.rename(cache)
        except OSError:
            # Another run finished first (rename onto a non-empty directory fails): use its.
            if files(cache) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = files(cache)
    if done is None:
        raise PackageError(f"{cache} is incomplete right after it was built")
    return done
