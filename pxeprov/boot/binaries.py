"""What pxeprov learns from the boot-loader binaries themselves (not from package versions).

- Debian's signed netboot GRUB takes its server from a proxyDHCP offer only from 2.12 on
  ("efinet: Add DHCP proxy support"); strings of that code are in the signed image. GRUB 2.06
  asks the ordinary DHCP server for its files instead and cannot boot through a proxy at all.
- GRUB's http module sends requests it writes with the strings below (grub-core/net/http.c);
  from 2.12 on it also puts a port other than 80 in the Host header (":%d"), where older ones
  could not talk to any other port. Debian's signed netboot GRUB has the module built in.
- iPXE's URI openers are a table of scheme names; a build with HTTPS has the NUL-terminated
  string "https" among them. Debian 12's ipxe (1.0.0+git-20190125) has none: no TLS at all;
  Debian 13's has. PXE images (.kpxe, .pxe) hold iPXE LZMA-compressed (iPXE's util/zbin.c: raw
  LZMA1, lc=2 lp=0 pb=0, behind a 32-bit length), so those are unpacked to look.
"""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

_PROXY_SUPPORT = b"setting values from proxy offer"
_HTTPS_SCHEME = b"\0https\0"
_GRUB_HTTP = b"\0 HTTP/1.1\r\nHost: \0"
_GRUB_HTTP_PORT = b"\0 HTTP/1.1\r\nHost: \0:%d\0"
_IPXE_LZMA = [{"id": lzma.FILTER_LZMA1, "lc": 2, "lp": 0, "pb": 0, "dict_size": 1 << 23}]
_MAX_LOADER = 16 << 20


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(_MAX_LOADER)
    except OSError:
        return None


def grub_supports_proxy(path: Path) -> bool | None:
    """True/False for the signed GRUB at `path`; None when there is none."""
    data = _read(path)
    return None if data is None else _PROXY_SUPPORT in data


def grub_http(path: Path) -> tuple[bool, bool] | None:
    """Whether the GRUB at `path` fetches over HTTP, and whether from any port (not only 80);
    None when there is none."""
    data = _read(path)
    if data is None:
        return None
    return _GRUB_HTTP in data, _GRUB_HTTP_PORT in data


def ipxe_supports_https(path: Path) -> bool | None:
    """Whether the iPXE binary at `path` can fetch https:// URLs; None when there is none."""
    data = _read(path)
    if data is None:
        return None
    if _HTTPS_SCHEME in data:
        return True
    return any(_HTTPS_SCHEME in payload for payload in _ipxe_payloads(data))


def _ipxe_payloads(data: bytes) -> list[bytes]:
    """The LZMA-packed parts of an iPXE PXE image: a little-endian length, then that many bytes
    of compressed data that end the file (up to some padding)."""
    found = []
    end = len(data)
    for offset in range(0, max(0, end - 4)):
        (length,) = struct.unpack_from("<I", data, offset)
        if length < 1024 or not end - 64 <= offset + 4 + length <= end:
            continue
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_IPXE_LZMA)
        try:
            found.append(decoder.decompress(data[offset + 4 : offset + 4 + length], 1 << 23))
        except lzma.LZMAError:
            continue
    return found
