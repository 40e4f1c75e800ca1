"""The state: `/etc/pxeprov/pxeprov.toml`, the single source of truth every file is rendered from.

Typed and frozen; unknown keys are rejected; `dumps(loads(text))` round-trips. Imports run one
way: values.py (checks and parsing of single values, times, defaults) <- machines.py (plans and
multicast sessions) <- model.py (the network, images, the State) <- codec.py (the TOML file).
This module hands their names on.
"""

from __future__ import annotations

from pxeprov.state.codec import HEADER, MAX_STATE_BYTES, TRAILER, WHOLE, dumps, loads
from pxeprov.state.machines import (
    MAX_MCAST_PARTS,
    MCAST_PORT_SPAN,
    PLAN_ACTIONS,
    PLAN_RESULTS,
    SESSION_OUTCOMES,
    THEN,
    Plan,
    PlanAction,
    Session,
)
from pxeprov.state.model import Image, Network, State
from pxeprov.state.values import (
    DEFAULT_HTTP_FALLBACK_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_KEYBOARD,
    DEFAULT_LOCALE,
    DEFAULT_ROOM_SIZE,
    DNSMASQ_MODES,
    MAX_MENU_TIMEOUT,
    UEFI_LOADERS,
    DnsmasqMode,
    UefiLoader,
    cast_loader,
    cast_mode,
    check_keyboard,
    check_locale,
    check_port,
    check_repo,
    check_room_size,
    check_timeout,
    check_web_token,
    new_web_token,
    normal_mac,
    parse_address,
    parse_subnet,
    repo_parts,
    stamp_epoch,
    utc_stamp,
)

__all__ = [
    "DEFAULT_HTTP_FALLBACK_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_KEYBOARD",
    "DEFAULT_LOCALE",
    "DEFAULT_ROOM_SIZE",
    "DNSMASQ_MODES",
    "HEADER",
    "MAX_MCAST_PARTS",
    "MAX_MENU_TIMEOUT",
    "MAX_STATE_BYTES",
    "MCAST_PORT_SPAN",
    "PLAN_ACTIONS",
    "PLAN_RESULTS",
    "SESSION_OUTCOMES",
    "THEN",
    "TRAILER",
    "UEFI_LOADERS",
    "WHOLE",
    "DnsmasqMode",
    "Image",
    "Network",
    "Plan",
    "PlanAction",
    "Session",
    "State",
    "UefiLoader",
    "cast_loader",
    "cast_mode",
    "check_keyboard",
    "check_locale",
    "check_port",
    "check_repo",
    "check_room_size",
    "check_timeout",
    "check_web_token",
    "dumps",
    "loads",
    "new_web_token",
    "normal_mac",
    "parse_address",
    "parse_subnet",
    "repo_parts",
    "stamp_epoch",
    "utc_stamp",
]
