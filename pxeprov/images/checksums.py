"""The SHA-256 a publisher lists next to an image: checksum files (SHA256SUMS, Clonezilla's
CHECKSUMS.TXT...) in the image's directory, fetched and parsed (GNU and BSD line forms), and the
check of a SHA-256 given by hand."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from urllib.parse import urljoin

import urllib3

from pxeprov.errors import DownloadError, InputError
from pxeprov.images.httpclient import Client, Retryable, reason

# Looked for in the image's directory, in this order. Clonezilla publishes CHECKSUMS.TXT, which
# holds MD5, SHA-1, SHA-256 and SHA-512 lines; only the 64-hex line naming our file counts.
CHECKSUM_FILES = ("SHA256SUMS", "CHECKSUMS.TXT", "CHECKSUMS")
MAX_CHECKSUM_FILE = 4 << 20  # a longer "checksum file" is not one

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+[*]?(.+)")  # GNU: "<hex>  name" / "<hex> *name"
_BSD_LINE = re.compile(r"SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]{64})")  # BSD: "SHA256 (name) = <hex>"


def normalise_sha256(value: str) -> str:
    text = value.strip()
    if not _HEX64.fullmatch(text):
        raise InputError(f"a SHA-256 is 64 hexadecimal digits, not {value!r}")
    return text.lower()


def parse_checksums(text: str, filename: str) -> str | None:
    """The SHA-256 that a SHA256SUMS-like text lists for `filename` (lower case), or None.

    Lines of other hash types (MD5, SHA-1, SHA-512 in Clonezilla's CHECKSUMS.TXT), comments and
    headings are skipped: only a 64-hex hash followed by our file name counts."""
    for raw in text.splitlines():
        line = raw.strip()
        gnu = _SUM_LINE.fullmatch(line)
        if gnu is not None:
            digest, name = gnu.group(1), gnu.group(2)
        else:
            bsd = _BSD_LINE.fullmatch(line)
            if bsd is None:
                continue
            name, digest = bsd.group(1), bsd.group(2)
        name = name.strip().removeprefix("./")
        if name == filename:
            return digest.lower()
    return None


def published_sha256(client: Client, url: str, filename: str) -> tuple[str | None, str]:
    """The SHA-256 a checksum file in the image's directory lists for `filename`, and where;
    or None and "none", with the reason when a checksum file was there but could not be read.
    A checksum file is the publisher's extra, which the user did not ask for: one that fails
    (a 5xx, a broken connection; one retry) does not stop the download, and is said."""
    failed: list[str] = []
    once = replace(client, retries=min(client.retries, 1))
    for name in CHECKSUM_FILES:
        sums_url = urljoin(url, name)
        try:
            text = once.run(functools.partial(_get_text, client, sums_url))
        except DownloadError as exc:
            failed.append(exc.message)
            continue
        if text is None:
            continue
        digest = parse_checksums(text, filename)
        if digest is not None:
            return digest, f"{name} at {sums_url}"
    return None, f"none ({'; '.join(failed)})" if failed else "none"


def _get_text(client: Client, url: str) -> str | None:
    """The body of a small text file, or None when the server has none (any 4xx)."""
    with client.open("GET", url, {}) as resp:
        if resp.status_code != 200:
            return None
        try:
            body = resp.raw.read(MAX_CHECKSUM_FILE + 1, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Retryable(f"download of {url} broke off: {reason(exc)}") from None
        if not isinstance(body, bytes) or len(body) > MAX_CHECKSUM_FILE:
            return None
        return body.decode("utf-8", errors="replace")
