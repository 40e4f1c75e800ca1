"""An https:// base URL only where the iPXE binaries served can fetch it (pxeprov/boot/binaries.py).

Debian 12's ipxe package is built without TLS: every iPXE client would be pointed at URLs it
cannot open. pxeprov looks for iPXE's "https" URI scheme in the binaries it serves (in the
LZMA-packed payload of the PXE images) and refuses an https:// base URL when it is not there.
"""

from __future__ import annotations

import lzma
import random
import struct
from pathlib import Path

import pytest

from pxeprov.boot import ipxe_supports_https

from .conftest import NET, Cli, snapshot

LZMA = [{"id": lzma.FILTER_LZMA1, "lc": 2, "lp": 0, "pb": 0, "dict_size": 1 << 23}]


def packed(payload: bytes) -> bytes:
    """A PXE image as iPXE's zbin lays it out: an uncompressed prefix, then a 32-bit length and
    the raw-LZMA payload at the end of the file."""
    data = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=LZMA)
    return b"\xeb\x3c" + bytes(5000) + struct.pack("<I", len(data)) + data


# iPXE's scheme table among code that does not compress to nothing (a seeded, fixed filler).
SCHEMES = b"ftp\0http\0https\0tftp\0" + random.Random(7).randbytes(20000)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"MZ" + bytes(100) + SCHEMES, True),  # an EFI image: not compressed
        (b"MZ" + bytes(100) + SCHEMES.replace(b"https\0", b"httpx\0"), False),
        (packed(SCHEMES), True),
        (packed(SCHEMES.replace(b"https\0", b"httpx\0")), False),
    ],
    ids=["efi-https", "efi-no-https", "kpxe-https", "kpxe-no-https"],
)
def test_detection(tmp_path: Path, content: bytes, expected: bool) -> None:
    path = tmp_path / "ipxe.bin"
    path.write_bytes(content)
    assert ipxe_supports_https(path) is expected


def test_debian_12_ipxe_has_no_https() -> None:
    for name in ("snponly.efi", "undionly.kpxe"):
        path = Path("/usr/lib/ipxe") / name
        if not path.is_file():
            pytest.fail(f"{path} is missing (tests/run-all.sh installs ipxe)")
        assert ipxe_supports_https(path) is False, path
    assert ipxe_supports_https(Path("/nonexistent")) is None


def test_https_base_url_refused_with_debian_12_ipxe(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--http-base-url", "https://cdn.example.org/pxe")
    assert r.exit_code == 2, r.stderr
    assert "cannot fetch https:// URLs" in r.stderr and "undionly.kpxe" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert snapshot(loader_root) == before


def test_https_base_url_taken_where_ipxe_has_https(
    loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    """The same root with iPXE binaries that do have HTTPS (stand-ins with the scheme)."""
    for name, content in (("snponly.efi", b"MZ" + SCHEMES), ("undionly.kpxe", packed(SCHEMES))):
        (loader_root / "usr/lib/ipxe" / name).write_bytes(content)
    r = cli(loader_root, "init", *NET, "--http-base-url", "https://cdn.example.org/pxe")
    assert r.exit_code == 0, r.stderr
