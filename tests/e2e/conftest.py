"""Fixtures for the end-to-end tests: one network lab for the whole session.

Set PXEPROV_E2E_KEEP=1 to keep the test's files (logs, serial consoles, configs, the pxeprov
root) after the run; the namespaces and processes are removed regardless.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .liveimage import LiveImage, LiveImageError
from .liveimage import live_image as build_live_image
from .netlab import NetLab, missing_preconditions, traversable_tempdir
from .sbfiles import CACHE, PackageError, SecureBootFiles, secureboot_files

MakeDir = Callable[[str], Path]


@pytest.fixture(scope="session")
def make_dir() -> Iterator[MakeDir]:
    """Factory for 0755 temp dirs (dnsmasq serves TFTP unprivileged), removed at session end."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        made.append(traversable_tempdir(prefix))
        return made[-1]

    yield make
    keep = os.environ.get("PXEPROV_E2E_KEEP", "") not in ("", "0")
    for path in made:
        if keep:
            print(f"\nkept e2e files in {path}")  # noqa: T201 - says where the kept evidence is
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lab(make_dir: MakeDir) -> Iterator[NetLab]:
    """Namespaces A (ordinary DHCP server on br0) and B (the pxeprov box), shared by all boots.

    Setting the lab up takes well under a second; sharing it keeps one topology and one
    teardown for every boot of the session.
    """
    # Fail, never skip: a CI run that silently skips its e2e tests proves nothing.
    problems = missing_preconditions()
    if problems:
        pytest.fail("e2e preconditions not met:\n  " + "\n  ".join(problems), pytrace=False)
    netlab = NetLab(make_dir("pxeprov-e2e-lab-"))
    try:
        netlab.up()
        yield netlab
    finally:
        netlab.down()


@pytest.fixture(scope="session")
def sb_files() -> SecureBootFiles:
    """trixie's signed shim and GRUB 2.12 and bookworm's dhcpd, unpacked in a cache that later
    runs reuse (sbfiles.py); downloaded with apt-get from Debian's archive on the first run."""
    try:
        return secureboot_files()
    except PackageError as exc:
        # Fail, never skip (see `lab`).
        pytest.fail(f"Secure Boot packages not available in {CACHE}:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def live_image() -> LiveImage:
    """The suite's live system (build-live-image.sh), built with mmdebstrap on the first run
    and cached in /var/cache/pxeprov-tests/live for the next ones."""
    try:
        return build_live_image()
    except LiveImageError as exc:
        pytest.fail(f"the live image could not be built:\n{exc}", pytrace=False)
