"""The real binaries: trixie's ipxe package has HTTPS, bookworm's (the host's) has not.

Not a boot: it reads the binaries the Secure Boot tests download anyway (sbfiles.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeprov.boot import ipxe_supports_https

from .sbfiles import SecureBootFiles

pytestmark = pytest.mark.e2e


def test_trixie_ipxe_has_https_bookworm_has_not(sb_files: SecureBootFiles) -> None:
    assert ipxe_supports_https(sb_files.ipxe_efi) is True
    assert ipxe_supports_https(sb_files.ipxe_kpxe) is True
    assert ipxe_supports_https(Path("/usr/lib/ipxe/snponly.efi")) is False
    assert ipxe_supports_https(Path("/usr/lib/ipxe/undionly.kpxe")) is False
