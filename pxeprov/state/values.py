"""The state's values: checks and parsing of single values (ports, timeouts, locales,
keyboards, MACs, repository URLs, IPv4 addresses and subnets, the UEFI loader and dnsmasq
mode), the times plans record, and the defaults and choices the model and the commands share.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import secrets
import time
from typing import Literal, TypeGuard

from pxeprov.errors import InputError

DnsmasqMode = Literal["drop-in", "main"]
UefiLoader = Literal["auto", "grub", "ipxe"]
UEFI_LOADERS: tuple[UefiLoader, ...] = ("auto", "grub", "ipxe")
DNSMASQ_MODES: tuple[DnsmasqMode, ...] = ("drop-in", "main")
MAX_MENU_TIMEOUT = 3600
# The machines expected to boot at once (a room woken together): the TFTP limits follow it
DEFAULT_ROOM_SIZE = 200
MAX_ROOM_SIZE = 5000
DEFAULT_HTTP_PORT = 80
DEFAULT_HTTP_FALLBACK_PORT = 8069
DEFAULT_LOCALE = "en_US.UTF-8"
DEFAULT_KEYBOARD = "us"
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(_[A-Za-z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
_KEYBOARD_RE = re.compile(r"[a-z]{2,8}(,[a-z]{2,8})*")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# A repository URL, as Clonezilla's ocs_repository takes it. The password may only hold
# characters that neither the URL, nor mount.cifs' option string, nor a kernel command line,
# nor Clonezilla's parse_cmdline_option (which sources it as shell) read as syntax.
_REPO_RE = re.compile(
    r"(?P<scheme>smb|smb3|nfs|nfs4|ssh)://"
    r"(?:(?P<user>[A-Za-z0-9._-]{1,32})(?::(?P<password>[A-Za-z0-9._~+=-]{1,64}))?@)?"
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._/-]{0,200})"
)
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# The status page's secret: the path nginx serves the page under (URL-safe base64, no padding)
_WEB_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")


def check_port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise InputError(f"{what} {value} must be between 1 and 65535")
    return value


def check_web_token(value: str, what: str = "web.token") -> str:
    """The status page's token: it becomes a path of nginx's config and of a URL."""
    if not _WEB_TOKEN_RE.fullmatch(value):
        raise InputError(f"{what} must be 32 to 128 letters, digits, '-' or '_'")
    return value


def check_room_size(value: int, what: str = "server.room_size") -> int:
    if not 1 <= value <= MAX_ROOM_SIZE:
        raise InputError(f"{what} {value} must be between 1 and {MAX_ROOM_SIZE} machines")
    return value


def new_web_token() -> str:
    """A new secret for the status page's path: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def check_timeout(value: int, what: str = "menu timeout") -> int:
    if not 0 <= value <= MAX_MENU_TIMEOUT:
        raise InputError(f"{what} {value} must be between 0 and {MAX_MENU_TIMEOUT} seconds")
    return value


def check_locale(value: str, what: str = "locale") -> str:
    if not _LOCALE_RE.fullmatch(value):
        raise InputError(f"{what} {value!r} is not like en_US.UTF-8")
    return value


def check_keyboard(value: str, what: str = "keyboard") -> str:
    if not _KEYBOARD_RE.fullmatch(value):
        raise InputError(f"{what} layout {value!r} is not like us or de,fr")
    return value


# ---------------------------------------------------------------- MACs, repositories


def normal_mac(value: str, what: str = "MAC address") -> str:
    """52:54:00:ab:cd:ef from any common spelling (dashes, dots, upper case)."""
    text = value.strip().lower().replace("-", ":")
    if "." in text:  # Cisco's 5254.00ab.cdef
        text = text.replace(".", "")
    if ":" not in text and len(text) == 12:
        text = ":".join(text[i : i + 2] for i in range(0, 12, 2))
    if not _MAC_RE.fullmatch(text):
        raise InputError(f"{what} {value[:40]!r} is not a MAC address like 52:54:00:12:34:56")
    first = int(text[:2], 16)
    if first & 1 or text == "00:00:00:00:00:00":
        raise InputError(f"{what} {text} is a multicast or empty address, not a machine's")
    return text


def check_repo(value: str, what: str = "repository") -> str:
    m = _REPO_RE.fullmatch(value)
    if not m:
        raise InputError(
            f"{what} {value[:80]!r} must be smb://[user[:password]@]host/share/path, "
            "nfs://host/path, nfs4://host/path or ssh://user@host[:port]/path",
            "a password may hold letters, digits and ._~+=- only",
        )
    user, host, port = m["user"] or "", m["host"], m["port"]
    if user.startswith("-"):  # mount.cifs or ssh would read it as an option
        raise InputError(f"{what}: the user name {user!r} starts with '-'")
    if port is not None and not 1 <= int(port) <= 65535:
        raise InputError(f"{what}: port {port} is not a port (1-65535)")
    labels = host.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels) or (
        len(labels) != 4 and labels[-1].isdigit()
    ):
        raise InputError(
            f"{what}: the host {host!r} is neither an IPv4 address nor a host name "
            "(labels of letters, digits and inner '-')"
        )
    if len(labels) == 4 and all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InputError(f"{what}: the host {host!r} is not an IPv4 address") from None
    return value


def repo_parts(value: str) -> dict[str, str]:
    m = _REPO_RE.fullmatch(value)
    assert m is not None, value
    return {k: v or "" for k, v in m.groupdict().items()}


# ---------------------------------------------------------------- times


def utc_stamp(when: float | None = None) -> str:
    """A time as plans record it: 2026-11-28T13:00:00Z (UTC, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def stamp_epoch(stamp: str) -> float | None:
    """A plan's recorded time as epoch seconds; None for "" (not recorded)."""
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


# ---------------------------------------------------------------- addresses, choices


def parse_address(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InputError(f"{value!r} is not an IPv4 address") from None


def parse_subnet(value: str, prefix_hint: int | None = None) -> ipaddress.IPv4Network:
    """A CIDR (`192.168.1.0/24`), or a bare network address (`172.16.1.0`, as in dnsmasq's
    `dhcp-range=172.16.1.0,proxy`) whose prefix then comes from the interface (`prefix_hint`)."""
    try:
        if "/" in value:
            return ipaddress.IPv4Network(value, strict=True)
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise InputError(
            f"{value!r} is not a valid subnet (CIDR like 192.168.1.0/24): {exc}"
        ) from None
    if prefix_hint is None:
        raise InputError(f"subnet {value!r} has no prefix length; give a CIDR like {value}/24")
    try:
        return ipaddress.IPv4Network(f"{address}/{prefix_hint}", strict=True)
    except ValueError:
        raise InputError(
            f"{value!r} is not the network address of a /{prefix_hint}; give a CIDR"
        ) from None


def _is_loader(value: str) -> TypeGuard[UefiLoader]:
    return value in UEFI_LOADERS


def cast_loader(value: str) -> UefiLoader:
    if not _is_loader(value):
        raise InputError(f"--uefi-loader must be one of {', '.join(UEFI_LOADERS)}")
    return value


def _is_mode(value: str) -> TypeGuard[DnsmasqMode]:
    return value in DNSMASQ_MODES


def cast_mode(value: str) -> DnsmasqMode:
    if not _is_mode(value):
        raise InputError(f"--dnsmasq-config must be one of {', '.join(DNSMASQ_MODES)}")
    return value
