"""pxeprov's own checks of the menus it renders, which no program of their own validates.

iPXE and pxelinux have no syntax checker, so each menu is read back here the way its loader reads
it, and must consist of the forms pxeprov's templates write, nothing else: no stray command, no
second command on a line, no setting expanded but the menu's own. The readers return what the
menu says (title, entries, kernels, arguments), which the tests compare with what was meant to
be written: a value that changed a menu's structure shows up there.

An admin's own template (/etc/pxeprov/templates) is held to the same forms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pxeprov.errors import CommandError
from pxeprov.syntax import DNSMASQ_MAX_LINE

_LABEL_RE = re.compile(r"[A-Za-z0-9_.-]+")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# A one-shot plan's marker (state.Plan.marker): plans/<mac with dashes>-<token>
MARKER_RE = re.compile(r"plans/[0-9a-f]{2}(-[0-9a-f]{2}){5}-[0-9a-f]{16}")
_INT_RE = re.compile(r"[0-9]+")
_IPXE_SPACE = " \t\n\v\f\r"  # isspace() in iPXE's C library
_CONNECTORS = (";", "&&", "||")


class MenuError(CommandError):
    """A rendered menu is not made of the forms pxeprov writes."""


Bad = Callable[[str], MenuError]  # makes the error for the line being read


def _control(line: str) -> bool:
    return any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in line)


# ---------------------------------------------------------------- iPXE


@dataclass
class IpxeEntry:
    kernel: str = ""
    initrd_names: list[str] = field(default_factory=list)  # the kernel line's initrd=
    args: list[str] = field(default_factory=list)  # words after the initrd= ones
    initrds: list[str] = field(default_factory=list)
    boots: bool = False
    sanboot: str = ""  # a URL booted as a disk
    marker: str = ""  # a plan's marker, fetched (and freed) first


@dataclass
class IpxeMenu:
    title: str = ""
    items: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    # items shown on one platform only: label -> "pcbios" or "efi"
    item_platforms: dict[str, str] = field(default_factory=dict)
    default: str = ""
    timeout_ms: int | None = None
    labels: list[str] = field(default_factory=list)
    entries: dict[str, IpxeEntry] = field(default_factory=dict)
    gotos: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)  # MACs sent to their plan before the menu


def _ipxe_commands(tokens: list[str]) -> list[tuple[list[str], str]]:
    """Split a line's words into commands as iPXE does: (words, connector after it)."""
    out: list[tuple[list[str], str]] = []
    current: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            break
        if token in _CONNECTORS:
            out.append((current, token))
            current = []
        else:
            current.append(token)
    out.append((current, ""))
    return out


def parse_ipxe(text: str) -> IpxeMenu:
    """The menu an iPXE script of pxeprov's forms describes; MenuError for anything else."""
    menu = IpxeMenu()
    lines = text.split("\n")
    if lines[0] != "#!ipxe":
        raise MenuError("iPXE script: the first line is not #!ipxe")
    section: str | None = None
    for number, line in enumerate(lines[1:], start=2):

        def bad(why: str, n: int = number) -> MenuError:
            return MenuError(f"iPXE script line {n}: {why}")

        if _control(line):
            raise bad("control character (iPXE reads a new line or garbage)")
        if line.endswith("\\"):
            raise bad("ends in '\\', which joins the next line to it")
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith(":"):
            label = words[0][1:]
            if len(words) != 1 or not _LABEL_RE.fullmatch(label) or label in menu.labels:
                raise bad(f"bad or repeated label {line.strip()!r}")
            menu.labels.append(label)
            section = label
            continue
        commands = _ipxe_commands(words)
        if any("${" in w for cmd, _ in commands for w in cmd) and not _allowed_expansion(commands):
            raise bad("expands a setting outside the menu's own forms")
        _ipxe_line(commands, section, menu, bad)
    _ipxe_consistent(menu)
    return menu


def _allowed_expansion(commands: list[tuple[list[str], str]]) -> bool:
    words = commands[0][0]
    if words == ["goto", "${target}"]:
        return True
    if words[:2] in (["iseq", "${platform}"], ["iseq", "${mac}"]):  # switches: the first only
        return all("${" not in w for cmd, _ in commands[1:] for w in cmd)
    return (
        bool(words)
        and words[0] == "echo"
        and all("${" not in w or w in ("${errno}", "${errno}.") for w in words)
    )


def _ipxe_line(
    commands: list[tuple[list[str], str]],
    section: str | None,
    menu: IpxeMenu,
    bad: Bad,
) -> None:
    first, connector = commands[0]
    if not first:
        raise bad("empty command")
    if first[0] == "iseq":
        _platform_switch(commands, section, menu, bad)
        return
    name, args = first[0], first[1:]
    # The only two-command lines pxeprov writes: `choose ... || goto L`, `boot || goto L`,
    # `sanboot ... || goto L`, and the platform switches (_platform_switch).
    if len(commands) > 1:
        second = commands[1][0]
        if (
            len(commands) != 2
            or connector != "||"
            or name not in ("choose", "boot", "sanboot", "imgfetch")
            or len(second) != 2
            or second[0] != "goto"
            or not _LABEL_RE.fullmatch(second[1])
        ):
            raise bad("more than one command on the line")
        menu.gotos.append(second[1])
    if name == "menu" and section == "menu":
        menu.title = " ".join(args)
    elif name == "item" and section == "menu" and args and _LABEL_RE.fullmatch(args[0]):
        menu.items.append((args[0], " ".join(args[1:])))
    elif name == "choose" and section == "menu":
        _choose(args, menu, bad)
    elif (
        name == "goto"
        and len(args) == 1
        and (args[0] == "${target}" or _LABEL_RE.fullmatch(args[0]))
    ):
        if args[0] != "${target}":
            menu.gotos.append(args[0])
    elif (
        name == "echo"
        or (name == "exit" and len(args) <= 1 and all(_INT_RE.fullmatch(a) for a in args))
        or (name == "sleep" and len(args) == 1 and _INT_RE.fullmatch(args[0]))
    ):
        pass
    elif name == "kernel" and section is not None and args:
        entry = menu.entries.setdefault(section, IpxeEntry())
        if entry.kernel or entry.sanboot:
            raise bad("second kernel line in one entry")
        names = []
        rest = args[1:]
        while rest and rest[0].startswith("initrd="):
            names.append(rest.pop(0)[len("initrd=") :])
        entry.kernel, entry.initrd_names, entry.args = args[0], names, rest
    elif name == "initrd" and section is not None and len(args) == 1:
        menu.entries.setdefault(section, IpxeEntry()).initrds.append(args[0])
    elif name == "boot" and section is not None and not args:
        menu.entries.setdefault(section, IpxeEntry()).boots = True
    elif name == "imgfetch" and section is not None and section.startswith("plan-"):
        entry = menu.entries.setdefault(section, IpxeEntry())
        if (
            len(args) != 3
            or args[:2] != ["--name", "pxeprov-plan"]
            or not MARKER_RE.fullmatch(args[2])
            or len(commands) != 2
            or entry.marker
            or entry.kernel
        ):
            raise bad(
                "imgfetch line not of the form `imgfetch --name pxeprov-plan plans/… || goto L`"
            )
        entry.marker = args[2]
    elif name == "imgfree" and args == ["pxeprov-plan"] and section is not None:
        if not menu.entries.get(section, IpxeEntry()).marker:
            raise bad("imgfree without the plan's imgfetch before it")
    elif name == "sanboot" and section is not None and args[:1] == ["--no-describe"]:
        entry = menu.entries.setdefault(section, IpxeEntry())
        if len(args) != 2 or entry.kernel or len(commands) != 2:
            raise bad("sanboot line not of the form `sanboot --no-describe URL || goto L`")
        entry.sanboot = args[1]
    else:
        raise bad(f"{' '.join(first)!r} is not a command of pxeprov's menu")


def _platform_switch(
    commands: list[tuple[list[str], str]], section: str | None, menu: IpxeMenu, bad: Bad
) -> None:
    """`iseq ${platform} efi && goto A || goto B` (an entry that boots differently on BIOS
    and UEFI), and `iseq ${platform} OTHER || item LABEL TEXT` (an item on one platform)."""
    first, connector = commands[0]
    if len(first) == 3 and first[1] == "${mac}":
        _plan_switch(commands, section, menu, bad)
        return
    if len(first) != 3 or first[1] != "${platform}" or first[2] not in ("efi", "pcbios"):
        raise bad("iseq line not of the form `iseq ${platform} efi|pcbios ...`")
    rest = [words for words, _ in commands[1:]]
    connectors = [connector, *(c for _, c in commands[1:-1])]
    if (
        connectors == ["&&", "||"]
        and first[2] == "efi"
        and all(len(w) == 2 and w[0] == "goto" and _LABEL_RE.fullmatch(w[1]) for w in rest)
    ):
        menu.gotos += [rest[0][1], rest[1][1]]
    elif (
        connectors == ["||"]
        and section == "menu"
        and len(rest) == 1
        and len(rest[0]) >= 2
        and rest[0][0] == "item"
        and _LABEL_RE.fullmatch(rest[0][1])
    ):
        label = rest[0][1]
        menu.items.append((label, " ".join(rest[0][2:])))
        menu.item_platforms[label] = "pcbios" if first[2] == "efi" else "efi"
    else:
        raise bad("iseq line not one of the menu's platform switches")


def _plan_switch(
    commands: list[tuple[list[str], str]], section: str | None, menu: IpxeMenu, bad: Bad
) -> None:
    """`iseq ${mac} 52:54:00:12:34:56 && goto plan-525400123456 ||`: a machine's plan, before
    the menu."""
    first, connector = commands[0]
    shape = [(words, c) for words, c in commands[1:]]
    if (
        section is not None
        or not _MAC_RE.fullmatch(first[2])
        or connector != "&&"
        or len(shape) != 2
        or shape[0][1] != "||"
        or shape[1] != ([], "")
        or len(shape[0][0]) != 2
        or shape[0][0][0] != "goto"
        or shape[0][0][1] != "plan-" + first[2].replace(":", "")
    ):
        raise bad("iseq line not of the form `iseq ${mac} MAC && goto plan-HEX ||` before the menu")
    menu.gotos.append(shape[0][0][1])
    menu.plans.append(first[2])


def _choose(args: list[str], menu: IpxeMenu, bad: Bad) -> None:
    rest = list(args)
    while len(rest) > 1:
        option, value = rest[0], rest[1]
        if option == "--timeout" and _INT_RE.fullmatch(value):
            menu.timeout_ms = int(value)
        elif option == "--default" and _LABEL_RE.fullmatch(value):
            menu.default = value
        else:
            break
        rest = rest[2:]
    if rest != ["target"] or not menu.default:
        raise bad("choose line not of the form `choose [--timeout MS] --default LABEL target`")


def _ipxe_consistent(menu: IpxeMenu) -> None:
    for label in [*menu.gotos, menu.default, *(label for label, _ in menu.items)]:
        if label and label not in menu.labels:
            raise MenuError(f"iPXE script: label {label!r} is used but never defined")
    for label, entry in menu.entries.items():
        if entry.sanboot or (entry.marker and not entry.kernel and not entry.boots):
            continue  # a plan's marker before `goto local`
        if not (entry.kernel and entry.boots):
            raise MenuError(f"iPXE script: entry {label!r} lacks a kernel or boot line")
        if [i.rsplit("/", 1)[-1] for i in entry.initrds] != entry.initrd_names:
            raise MenuError(f"iPXE script: entry {label!r} names other initrds than it loads")


def check_ipxe(path: Path) -> None:
    parse_ipxe(path.read_text(encoding="utf-8", errors="strict"))


# ---------------------------------------------------------------- pxelinux


@dataclass
class PxelinuxLabel:
    name: str
    menu_label: str = ""
    kernel: str = ""
    initrd: str = ""
    append: str = ""
    default: bool = False
    localboot: bool = False


@dataclass
class PxelinuxMenu:
    title: str = ""
    timeout: int | None = None
    ui: str = ""
    default: str = ""  # DEFAULT: the label booted without a menu
    marker: str = ""  # INCLUDE of a one-shot plan's marker
    labels: list[PxelinuxLabel] = field(default_factory=list)


def parse_pxelinux(text: str) -> PxelinuxMenu:
    """The menu a pxelinux config of pxeprov's forms describes; MenuError for anything else."""
    menu = PxelinuxMenu()
    current: PxelinuxLabel | None = None
    for number, line in enumerate(text.split("\n"), start=1):

        def bad(why: str, n: int = number) -> MenuError:
            return MenuError(f"pxelinux menu line {n}: {why}")

        if _control(line):
            raise bad("control character")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "MENU":
            sub, _, rest = rest.partition(" ")
            keyword = f"MENU {sub.upper()}"
            rest = rest.strip()
        if current is None:
            if keyword == "UI" and rest == "menu.c32":
                menu.ui = rest
            elif keyword == "PROMPT" and rest == "0":
                pass
            elif keyword == "INCLUDE" and MARKER_RE.fullmatch(rest) and not menu.marker:
                menu.marker = rest  # a machine's one-shot plan: its marker
            elif keyword == "TIMEOUT" and _INT_RE.fullmatch(rest):
                menu.timeout = int(rest)
            elif keyword == "MENU TITLE" and rest:
                menu.title = rest
            elif keyword == "DEFAULT" and _LABEL_RE.fullmatch(rest) and not menu.default:
                menu.default = rest  # a machine's plan: no menu, this label at once
            elif keyword != "LABEL":
                raise bad(f"{keyword} is not a directive of pxeprov's menu here")
        if keyword == "LABEL":
            if not _LABEL_RE.fullmatch(rest) or any(label.name == rest for label in menu.labels):
                raise bad(f"bad or repeated label {rest!r}")
            current = PxelinuxLabel(rest)
            menu.labels.append(current)
        elif current is not None:
            _pxelinux_label(current, keyword, rest, bad)
    if sum(label.default for label in menu.labels) > 1:
        raise MenuError("pxelinux menu: more than one MENU DEFAULT")
    for label in menu.labels:
        if label.localboot == bool(label.kernel):
            raise MenuError(f"pxelinux menu: label {label.name!r} needs KERNEL or LOCALBOOT")
    if menu.default and menu.default not in [label.name for label in menu.labels]:
        raise MenuError(f"pxelinux menu: DEFAULT {menu.default!r} is no label")
    if menu.default and menu.ui:
        raise MenuError("pxelinux menu: DEFAULT with a UI module")
    return menu


def _pxelinux_label(label: PxelinuxLabel, keyword: str, rest: str, bad: Bad) -> None:
    if keyword == "MENU LABEL" and rest and not label.menu_label:
        label.menu_label = rest
    elif keyword == "MENU DEFAULT" and not rest and not label.default:
        label.default = True
    elif keyword == "LOCALBOOT" and _INT_RE.fullmatch(rest) and not label.localboot:
        label.localboot = True
    elif keyword == "KERNEL" and rest and " " not in rest and not label.kernel:
        label.kernel = rest
    elif keyword == "INITRD" and rest and " " not in rest and not label.initrd:
        label.initrd = rest
    elif keyword == "APPEND" and rest and not label.append:
        label.append = rest
    else:
        raise bad(f"{keyword} {rest!r} is not a line of pxeprov's menu entries")


def check_pxelinux(path: Path) -> None:
    parse_pxelinux(path.read_text(encoding="utf-8", errors="strict"))


# ---------------------------------------------------------------- dnsmasq


def check_dnsmasq_lines(path: Path) -> None:
    """What `dnsmasq --test` does not see: a line longer than dnsmasq reads at once (its tail
    would be read as an option of its own), a control character."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if len(line) >= DNSMASQ_MAX_LINE:
            raise MenuError(f"dnsmasq config line {number} is {len(line)} bytes long")
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in line):
            raise MenuError(f"dnsmasq config line {number} has a control character")


# ---------------------------------------------------------------- logrotate

_LOGROTATE_DIRECTIVE = re.compile(
    r"(daily|weekly|monthly|yearly|compress|nocompress|delaycompress|nodelaycompress|missingok|"
    r"nomissingok|notifempty|ifempty|copytruncate|nocopytruncate|dateext|nodateext|"
    r"(rotate|maxage|minsize|maxsize|size) \w+|create( [0-7]{3,4}( [a-z_][a-z0-9_-]*){2})?|"
    r"su [a-z_][a-z0-9_-]* [a-z_][a-z0-9_-]*)"
)


def parse_logrotate(text: str) -> list[str]:
    """A logrotate file of the form pxeprov writes: `PATH {`, directives from a known list (no
    scripts), `}`. The paths it rotates."""
    paths: list[str] = []
    inside = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not inside:
            m = re.fullmatch(r"(/[A-Za-z0-9._/-]+) \{", line)
            if m is None:
                raise MenuError(f"logrotate line {number}: expected 'PATH {{', got {line[:60]!r}")
            paths.append(m[1])
            inside = True
        elif line == "}":
            inside = False
        elif not _LOGROTATE_DIRECTIVE.fullmatch(line):
            raise MenuError(f"logrotate line {number}: unknown directive {line[:60]!r}")
    if inside:
        raise MenuError("logrotate: a block is not closed")
    return paths


def check_logrotate(path: Path) -> None:
    parse_logrotate(path.read_text(encoding="utf-8", errors="strict"))


# ---------------------------------------------------------------- the watcher's systemd unit

_UNIT_SECTIONS = {"Unit": {"Description", "After"},
                  "Service": {"Type", "ExecStart", "Environment", "Restart", "RestartSec"},
                  "Install": {"WantedBy"}}  # fmt: skip
_UNIT_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,:/=_+-]*")


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    """A systemd unit of the form pxeprov writes (pxeprov-watch.service): its three sections,
    each with its known keys once, values of plain characters (no specifiers `%`, no quotes, no
    line continuations). {section: {key: value}}."""
    sections: dict[str, dict[str, str]] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m is not None:
            if m[1] not in _UNIT_SECTIONS or m[1] in sections:
                raise MenuError(f"unit line {number}: unexpected section {line[:40]!r}")
            current = m[1]
            sections[current] = {}
            continue
        key, eq, value = line.partition("=")
        if current is None or not eq or key not in _UNIT_SECTIONS[current]:
            raise MenuError(f"unit line {number}: unexpected {line[:60]!r}")
        if key in sections[current] or not _UNIT_VALUE.fullmatch(value):
            raise MenuError(f"unit line {number}: {key} is repeated or holds {value[:60]!r}")
        sections[current][key] = value
    if set(sections) != set(_UNIT_SECTIONS) or "ExecStart" not in sections["Service"]:
        raise MenuError("unit: [Unit], [Service] with ExecStart=, and [Install] are expected")
    return sections


def check_unit(path: Path) -> None:
    parse_unit(path.read_text(encoding="utf-8", errors="strict"))
