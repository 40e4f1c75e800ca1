"""The state file's TOML: `loads` reads and checks it (unknown keys are rejected), `dumps`
writes it between its header and its trailer; `dumps(loads(text))` round-trips.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import PurePosixPath
from typing import Any, TypeVar

import tomli_w

from pxeprov.arch import X86_64
from pxeprov.errors import InputError
from pxeprov.state.machines import Plan, Session
from pxeprov.state.model import Image, Network, State
from pxeprov.state.values import DEFAULT_ROOM_SIZE, parse_address, parse_subnet

_T = TypeVar("_T")

MAX_STATE_BYTES = 1 << 20  # a state file is a few kB; more is not one

HEADER = (
    "# pxeprov state: every file pxeprov manages is rendered from this file.\n"
    "# Edit it and run `pxeprov init` (or use pxeprov's commands) to apply a change.\n"
    + "# Keep its last line: a state file without it was cut short, and pxeprov refuses it.\n"
)
# pxeprov writes this line last: a file that has the header's last line but not this one was
# cut short (a copy, a disk that ran out) and is refused, not read as a state with fewer images
# and plans. (A file written before pxeprov wrote this line has neither.)
TRAILER = "# pxeprov: end of the state\n"
WHOLE = HEADER.splitlines()[-1]


def _table(data: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {key}.{unknown[0]}")
    return value


def _typed(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where}: {key} must be a {kind.__name__}")
    return value


def loads(text: str, where: str = "state") -> State:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(f"{where}: not a state: arrays or tables nested too deeply") from None
    unknown = sorted(set(data) - {"network", "server", "menu", "http", "images", "imaging",
                                  "plans", "sessions", "web"})  # fmt: skip
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]}")
    try:
        return _from_dict(data, where)
    except InputError as exc:
        if exc.message.startswith(f"{where}: "):
            raise
        raise InputError(f"{where}: {exc.message}", exc.hint) from None
    except (KeyError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def _from_dict(data: dict[str, Any], where: str) -> State:
    kwargs: dict[str, Any] = {}
    net = _table(data, "network", {"interface", "address", "subnet"}, where)
    if net:
        missing = sorted({"interface", "address", "subnet"} - set(net))
        if missing:
            raise InputError(f"{where}: network.{missing[0]} is missing")
        kwargs["network"] = Network(
            interface=_typed(net, "interface", str, where),
            address=parse_address(_typed(net, "address", str, where)),
            subnet=parse_subnet(_typed(net, "subnet", str, where)),
        )
    server = _table(
        data, "server", {"tftp_root", "dnsmasq_config", "uefi_loader", "room_size"}, where
    )
    if "room_size" in server:
        kwargs["room_size"] = _typed(server, "room_size", int, where)
    if "tftp_root" in server:
        kwargs["tftp_root"] = PurePosixPath(_typed(server, "tftp_root", str, where))
    if "dnsmasq_config" in server:
        kwargs["dnsmasq_config"] = _typed(server, "dnsmasq_config", str, where)
    if "uefi_loader" in server:
        kwargs["uefi_loader"] = _typed(server, "uefi_loader", str, where)
    menu = _table(data, "menu", {"title", "timeout"}, where)
    if "title" in menu:
        kwargs["title"] = _typed(menu, "title", str, where)
    if "timeout" in menu:
        kwargs["menu_timeout"] = _typed(menu, "timeout", int, where)
    http = _table(data, "http", {"enabled", "port", "fallback_port", "base_url"}, where)
    if "enabled" in http:
        kwargs["http"] = _typed(http, "enabled", bool, where)
    if "port" in http:
        kwargs["http_port"] = _typed(http, "port", int, where)
    if "fallback_port" in http:
        kwargs["http_fallback_port"] = _typed(http, "fallback_port", int, where)
    if "base_url" in http:
        kwargs["http_base_url"] = _typed(http, "base_url", str, where)
    web = _table(data, "web", {"token"}, where)
    if "token" in web:
        kwargs["web_token"] = _typed(web, "token", str, where)
    images = data.get("images", [])
    if not isinstance(images, list):
        raise InputError(f"{where}: images must be an array of tables ([[images]])")
    kwargs["images"] = tuple(_image(entry, where, i) for i, entry in enumerate(images))
    imaging = _table(data, "imaging", {"repo", "path"}, where)
    if "repo" in imaging:
        kwargs["repo"] = _typed(imaging, "repo", str, where)
    if "path" in imaging:
        kwargs["repo_path"] = _typed(imaging, "path", str, where)
    plans = data.get("plans", [])
    if not isinstance(plans, list):
        raise InputError(f"{where}: plans must be an array of tables ([[plans]])")
    kwargs["plans"] = tuple(_plan(entry, where, i) for i, entry in enumerate(plans))
    sessions = data.get("sessions", [])
    if not isinstance(sessions, list):
        raise InputError(f"{where}: sessions must be an array of tables ([[sessions]])")
    kwargs["sessions"] = tuple(_session(entry, where, i) for i, entry in enumerate(sessions))
    return State(**kwargs)


def _entry(entry: Any, where: str, array: str, keys: set[str], needed: set[str], one: str) -> None:
    """One table of an array of tables ([[array]]): a table, no unknown key, none missing."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: each [[{array}]] entry must be a table")
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise InputError(f"{where}: unknown key {array}.{unknown[0]}")
    missing = sorted(needed - set(entry))
    if missing:
        raise InputError(f"{where}: {one} has no {missing[0]}")


def _made(make: Callable[..., _T], kwargs: dict[str, Any], at: str) -> _T:
    """An entry of an array of tables, its checks' messages told where it stands (`at`)."""
    try:
        return make(**kwargs)
    except InputError as exc:
        raise InputError(f"{at}{exc.message}", exc.hint) from None


_SESSION_KEYS = {f.name: f for f in fields(Session)}


def _session(entry: Any, where: str, index: int) -> Session:
    _entry(entry, where, "sessions", set(_SESSION_KEYS), {"name", "image"}, "a session")
    kwargs = {
        name: _typed(entry, name, int if str(f.type) == "int" else str, where)
        for name, f in _SESSION_KEYS.items()
        if name in entry
    }
    return _made(Session, kwargs, f"{where}: sessions[{index}]: ")


_PLAN_KEYS = {f.name for f in fields(Plan)}


def _plan(entry: Any, where: str, index: int) -> Plan:
    _entry(entry, where, "plans", _PLAN_KEYS, {"mac", "action"}, "a plan")
    kwargs: dict[str, Any] = {}
    for f in fields(Plan):
        if f.name in entry:
            kwargs[f.name] = _typed(entry, f.name, bool if f.name == "once" else str, where)
    return _made(Plan, kwargs, f"{where}: plans[{index}]: ")


_IMAGE_KEYS = {f.name for f in fields(Image)}


def _image(entry: Any, where: str, index: int) -> Image:
    _entry(entry, where, "images", _IMAGE_KEYS, {"name", "kernel"}, "an image")
    kwargs: dict[str, Any] = {}
    for f in fields(Image):
        if f.name == "files" and "files" in entry:
            files = _typed(entry, "files", list, where)
            if not all(isinstance(p, str) for p in files):
                raise InputError(f"{where}: images[{index}].files must be a list of paths")
            kwargs["files"] = tuple(files)
        elif f.name in entry:
            kind = {"bool": bool, "int": int}.get(str(f.type), str)
            kwargs[f.name] = _typed(entry, f.name, kind, where)
    kwargs.setdefault("label", kwargs["name"])
    kwargs.setdefault("kind", "custom")
    return _made(Image, kwargs, f"{where}: images[{index}].")


def dumps(state: State) -> str:
    data: dict[str, Any] = {}
    if state.network is not None:
        data["network"] = {
            "interface": state.network.interface,
            "address": str(state.network.address),
            "subnet": str(state.network.subnet),
        }
    data["server"] = {
        "tftp_root": str(state.tftp_root),
        "dnsmasq_config": state.dnsmasq_config,
        "uefi_loader": state.uefi_loader,
        **({"room_size": state.room_size} if state.room_size != DEFAULT_ROOM_SIZE else {}),
    }
    data["menu"] = {"title": state.title, "timeout": state.menu_timeout}
    data["http"] = {
        "enabled": state.http,
        "port": state.http_port,
        "fallback_port": state.http_fallback_port,
        "base_url": state.http_base_url,
    }
    if state.web_token:
        data["web"] = {"token": state.web_token}
    if state.repo or state.repo_path:
        data["imaging"] = {
            "repo": state.repo,
            **({"path": state.repo_path} if state.repo_path else {}),
        }
    if state.images:
        data["images"] = [_image_table(image) for image in state.images]
    if state.plans:
        data["plans"] = [_plan_table(plan) for plan in state.plans]
    if state.sessions:
        defaults = {f.name: f.default for f in fields(Session)}
        data["sessions"] = [
            {k: v for k, v in asdict(s).items() if k in ("name", "image") or v != defaults[k]}
            for s in state.sessions
        ]
    return HEADER + "\n" + tomli_w.dumps(data) + "\n" + TRAILER


def _image_table(image: Image) -> dict[str, Any]:
    table = asdict(image)
    # Most images have none of these: the state file stays as it was.
    if not image.files:
        del table["files"]
    else:
        table["files"] = list(image.files)
    if not image.variant:
        del table["variant"]
    if image.arch == X86_64.name:  # most images: the state file stays as it was
        del table["arch"]
    return table


def _plan_table(plan: Plan) -> dict[str, Any]:
    """Only what the plan uses: the state file stays readable."""
    defaults = {f.name: f.default for f in fields(Plan)}
    keep = {"mac", "action"} | ({"disk", "then"} if plan.imaging else set())
    return {k: v for k, v in asdict(plan).items() if k in keep or v != defaults[k]}
