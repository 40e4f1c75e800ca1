"""The escaping contract: how a value may become part of a rendered file.

Every value that enters a file pxeprov renders (the dnsmasq config, the nginx site, the pxelinux
menu, the iPXE script, grub.cfg) passes two gates:

1. **What it may hold at all** (`check_*`), when it enters pxeprov: an option, a value in the
   state file, text read from an ISO. A refusal is an `InputError` (exit 2) that names the value
   and the character; add-image reports refusals of what an ISO holds as `ImageError` (exit 10).
   Text read from an ISO is never checked and used as it is: labels and versions are *derived*
   from it through an allow-list (`label_from_iso`, `version_from_iso`), and files are copied
   under fixed names, so an ISO's own names never reach a rendered file.
2. **How each format writes it** (the `<format>_*` functions, the templates' filters): quoted so
   that the format reads it as data, or refused where the format has no quoting for it. The
   filters check again what they rely on, so a template an admin overrides cannot turn a value
   into syntax by leaving a check out; the Jinja environment also refuses any control character
   in any value (render.environment).

Per format (what is syntax there, and what pxeprov does about it):

dnsmasq   One option per line. `#` after a space starts a comment, `,` separates fields, and a
          line is read in pieces of at most 1024 bytes (MAXDNAME): the tail of a longer line
          would be read as an option of its own. Inside "...", `\\` `\\"` `\\t` `\\n` `\\e`
          `\\b` `\\r` are escapes and `,` is data.
            bare words (interface, paths, addresses): only [A-Za-z0-9._+/-]; refused otherwise
            text (the title in `pxe-service`): inside "...", `\\` and `"` escaped
            every line shorter than 1000 bytes (checked on the rendered file: `menus.check_dnsmasq`)
nginx     Tokens end at whitespace, `;` ends and `{` `}` open and close directives, `#` starts a
          comment, quotes group, `$` expands a variable (inside quotes too).
            paths: only [A-Za-z0-9._+/-]; refused otherwise
pxelinux  A keyword and the rest of its line; `#` starts a comment only at the start of a line.
            text, kernel arguments, paths: the rest of the line, any printable character; a
            control character (a newline would start a directive) is refused
iPXE      The line is split at whitespace and there is no quoting at all: a word `;` `&&` `||`
          ends the command, a word starting with `#` starts a comment, `${` anywhere expands a
          setting, and a `\\` at the end of a line joins the next one.
            text, kernel arguments, URLs: `$` and `\\` refused anywhere, and the words `;` `&&`
            `||` and any word starting with `#` (iPXE has no way to write them as data)
GRUB      Shell-like words: quotes, `\\`, `$` expansion, `;` `|` `&` `<` `>` `{` `}`, newlines.
            text (menu entry titles): in single quotes, `'` written as `'\\''`
            kernel arguments: each word with every character outside [A-Za-z0-9_./:=,+@%-]
            escaped by `\\`; GRUB's own command-line builder then passes a `"` as `\\"` (as
            Clonezilla's own grub.cfg does)
            paths: as kernel argument words

Value classes (the `check_*` allow-lists):
  name    [a-z0-9][a-z0-9._-]*, at most 64 characters: image names, which are labels and ids in
          every menu
  text    labels and the title: 1-80 printable characters, no leading or trailing space; no
          control character, `"`, `\\` or `$`; no word that iPXE reads as syntax
  args    kernel arguments: printable ASCII and spaces, at most 1024 characters; no `$` or `\\`,
          no word that iPXE reads as syntax, and balanced double quotes (the kernel groups the
          words between quotes: an odd one would swallow every argument after it)
  path    a path relative to the TFTP root: components of [A-Za-z0-9._+-] that do not start
          with `.`, at most 255 characters
  root    the TFTP root: an absolute path of such components, not one of the system's own
          directories (or inside one) and not a parent of them (see `check_tftp_root`)
  repo    the image repository's directory: as root, and not in or above /home or /root
          (nor, on disk, another account's home; see `check_repo_path`); apart from the TFTP
          root, neither inside the other (`check_apart`)
  iface   a network interface name: [A-Za-z0-9_.+-], 1-15 characters, not `.` or `..`
  url     the HTTP base URL: http(s)://host[:port][/path] of [A-Za-z0-9._~%+/-], at most 200
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from pxeprov.errors import InputError

MAX_NAME = 64
MAX_TEXT = 80
MAX_ARGS = 1024
MAX_PATH = 255
MAX_URL = 200
DNSMASQ_MAX_LINE = 1000  # dnsmasq reads a line in pieces of 1024 bytes (MAXDNAME + NUL)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# A path's names: no leading '.' (hidden, never served) nor '-' (iPXE's `kernel` and `initrd`
# read a word starting with '-' as an option).
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
_IFACE_RE = re.compile(r"[A-Za-z0-9_.+-]{1,15}")
_BARE_RE = re.compile(r"[A-Za-z0-9._+/-]+")  # dnsmasq and nginx words written without quotes
# Parentheses are ordinary characters in GRUB's lexer (grub-core/script/yylex.l): devices such
# as (http,10.0.0.2:8069) stay readable.
_GRUB_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,+@%-()")
_URL_RE = re.compile(
    r"https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?:/[A-Za-z0-9._~/%+-]*)?"
)
_IPXE_TERMINATORS = (";", "&&", "||")

# What a TFTP root may not be, nor be inside: the system's own trees, and pxeprov's own state.
SYSTEM_DIRS = tuple(
    PurePosixPath(p)
    for p in (
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
        "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/pxeprov", "/var/cache/pxeprov",
        "/var/log", "/var/lib/dpkg", "/var/lib/apt", "/tmp",
    )
)  # fmt: skip


def _show(char: str) -> str:
    """A character as an error message shows it: printable ones quoted, others as escapes."""
    return repr(char) if char.isprintable() else repr(char).strip("'")


def _refuse(what: str, value: str, why: str) -> InputError:
    shown = value if len(value) <= 60 else value[:57] + "..."
    return InputError(f"{what} {shown!r} {why}")


def _ipxe_words(value: str, what: str) -> None:
    for word in value.split():
        if word in _IPXE_TERMINATORS:
            raise _refuse(what, value, f"has {word!r} as a word of its own, which iPXE reads "
                          "as the end of a command")  # fmt: skip
        if word.startswith("#"):
            raise _refuse(what, value, f"has a word starting with '#' ({word!r}), which iPXE "
                          "reads as a comment")  # fmt: skip


def _no_control(value: str, what: str) -> None:
    for char in value:
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            raise _refuse(what, value, f"contains the character {_show(char)}, which is not "
                          "allowed (control characters and line breaks)")  # fmt: skip


# ---------------------------------------------------------------- value classes


def check_name(value: str, what: str = "image name") -> str:
    if not NAME_RE.fullmatch(value) or len(value) > MAX_NAME:
        raise _refuse(what, value, f"must match [a-z0-9][a-z0-9._-]* (at most {MAX_NAME} "
                      "characters)")  # fmt: skip
    return value


# Names the menus use for their own entries: pxelinux's `LABEL local`, iPXE's `:img-NAME-bios`
# and `:img-NAME-uefi` for an image that boots differently on each firmware.
RESERVED_NAMES = ("local",)
RESERVED_SUFFIXES = ("-bios", "-uefi")


def check_image_name(value: str, what: str = "image name") -> str:
    """An image's name: as `check_name`, and none of the menus' own labels."""
    check_name(value, what)
    if value in RESERVED_NAMES or value.endswith(RESERVED_SUFFIXES):
        raise _refuse(what, value, "is a name the menus use for their own entries ('local', "
                      "names ending in -bios or -uefi)")  # fmt: skip
    return value


def check_text(value: str, what: str = "label") -> str:
    """Labels and the menu title. Not starting with '-': iPXE's `menu` and GRUB's `menuentry`
    would read it as an option (`menu --delete`, `menuentry '--users=x'`)."""
    if not value.strip():
        raise _refuse(what, value, "must not be empty")
    if value.startswith("-"):
        raise _refuse(what, value, "must not start with '-' (menus read that as an option)")
    if len(value) > MAX_TEXT:
        raise _refuse(what, value, f"is longer than {MAX_TEXT} characters")
    if value != value.strip():
        raise _refuse(what, value, "must not start or end with a space")
    _no_control(value, what)
    for char in '"\\$':
        if char in value:
            raise _refuse(what, value, f"contains {char!r}, which menus cannot show as text")
    _ipxe_words(value, what)
    return value


def check_args(value: str, what: str = "kernel arguments") -> str:
    """Kernel arguments (the admin's --append, and what a kind adds)."""
    if len(value) > MAX_ARGS:
        raise _refuse(what, value, f"are longer than {MAX_ARGS} characters")
    for char in value:
        if not (" " <= char <= "~"):
            raise _refuse(what, value, f"contain the character {_show(char)}: only printable "
                          "ASCII and spaces")  # fmt: skip
    for char in "$\\":
        if char in value:
            raise _refuse(what, value, f"contain {char!r}, which iPXE reads as syntax")
    _ipxe_words(value, what)
    if value.count('"') % 2:
        raise _refuse(what, value, "have an odd number of '\"': the kernel would read every "
                      "argument after the last one as part of it")  # fmt: skip
    return value


def check_path(value: str, what: str = "path") -> str:
    """A path relative to the TFTP root (of an image's files)."""
    parts = value.split("/")
    if not value or len(value) > MAX_PATH or not all(_COMPONENT_RE.fullmatch(p) for p in parts):
        raise _refuse(what, value, "must be a relative path of names made of A-Z a-z 0-9 . _ + - "
                      "(not starting with '.')")  # fmt: skip
    return value


# Dot files an installer tree must serve (Anaconda reads .treeinfo before anything else).
SERVED_DOTFILES = (".treeinfo", ".discinfo")


def check_served_path(value: str, what: str = "path") -> str:
    """A path relative to the TFTP root of a file or tree an image serves: as `check_path`, but
    the last name may also be one of SERVED_DOTFILES; a tree ends in "/"."""
    head, _, last = value.removesuffix("/").rpartition("/")
    if last in SERVED_DOTFILES and not value.endswith("/"):
        if head:
            check_path(head, what)
        return value
    check_path(value.removesuffix("/"), what)
    return value


def check_tftp_root(value: str, what: str = "TFTP root") -> PurePosixPath:
    path = PurePosixPath(value)
    parts = value.split("/")[1:]
    if (
        not value.startswith("/")
        or len(value) > MAX_PATH
        or not parts
        or not all(_COMPONENT_RE.fullmatch(p) for p in parts)
    ):
        raise _refuse(what, value, "must be an absolute path of names made of A-Z a-z 0-9 . _ + - "
                      "(not starting with '.'), like /srv/tftp")  # fmt: skip
    _keep_out(path, value, what, SYSTEM_DIRS, "which is not for served files",
              "every file under it would be served")  # fmt: skip
    return path


def _keep_out(
    path: PurePosixPath,
    value: str,
    what: str,
    dirs: tuple[PurePosixPath, ...],
    inside: str,
    holding: str,
) -> None:
    """`path` is none of `dirs`, inside none, and holds none: `inside` and `holding` say why."""
    for d in dirs:
        if path == d or d in path.parents:
            raise _refuse(what, value, f"is inside {d}, {inside}")
        if path in d.parents:
            raise _refuse(what, value, f"contains {d}: {holding}")


# Where an image repository may not be either: people's own files (other users' homes are read
# from the passwd file where a command runs: `pipeline.check_repo_on_disk`).
HOME_DIRS = (PurePosixPath("/home"), PurePosixPath("/root"))


def check_repo_path(value: str, what: str = "repository path") -> PurePosixPath:
    """The directory Samba shares as the image repository: as the TFTP root (a path of plain
    names, no system tree), and not a home directory, inside one or holding one."""
    path = check_tftp_root(value, what)
    _keep_out(path, value, what, HOME_DIRS, "which holds people's own files",
              "people's own files would be shared")  # fmt: skip
    return path


def check_apart(tftp_root: PurePosixPath, repo: PurePosixPath, what: str = "") -> None:
    """The TFTP root and the image repository share no file: TFTP and HTTP serve everything
    under the root to anyone on the network (disk images hold whole machines' data), and the
    repository's write share must not reach the boot files. `what`: how the repository is
    named (an option, a key of the state), or ""."""
    named = f" ({what})" if what else ""
    if repo == tftp_root:
        raise InputError(
            f"the image repository {repo}{named} is the TFTP root: every disk image saved there "
            "would be served to anyone on the network",
            "keep the repository and the TFTP root apart (pxeprov repo init --path DIR)",
        )
    if tftp_root in repo.parents:
        raise InputError(
            f"the image repository {repo}{named} is inside the TFTP root {tftp_root}: every disk "
            "image saved there would be served to anyone on the network",
            "keep the repository and the TFTP root apart (pxeprov repo init --path DIR)",
        )
    if repo in tftp_root.parents:
        raise InputError(
            f"the TFTP root {tftp_root} is inside the image repository {repo}{named}: the boot "
            "files would be shared by Samba, and writable through its write share",
            "keep the repository and the TFTP root apart (pxeprov init --tftp-root DIR)",
        )


def check_interface(value: str, what: str = "network interface") -> str:
    if not _IFACE_RE.fullmatch(value) or value in (".", ".."):
        raise _refuse(what, value, "must be 1-15 characters of A-Z a-z 0-9 _ . + -")
    return value


def check_url(value: str, what: str = "HTTP base URL") -> str:
    m = _URL_RE.fullmatch(value) if len(value) <= MAX_URL else None
    if m is None or (m["port"] is not None and not 1 <= int(m["port"]) <= 65535):
        raise _refuse(what, value, "must be like http://10.0.0.5/pxe (an address or host, a port "
                      "1-65535, a path of A-Z a-z 0-9 . _ ~ % + / -, no spaces)")  # fmt: skip
    return value


# ---------------------------------------------------------------- from an ISO

_LABEL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ._-+()[]:,/@"
)
_VERSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-+~:")


def label_from_iso(text: str, limit: int = 64) -> str:
    """A label derived from text an ISO holds (a version file, .disk/info, a volume id): the
    first line, the allowed characters only (others become spaces), spaces collapsed, cut.
    "" when nothing is left."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    kept = " ".join("".join(c if c in _LABEL_CHARS else " " for c in line).split())
    kept = kept.lstrip("- ")  # a leading '-' would read as a menu command's option
    if len(kept) > limit:  # cut at a word's end
        cut = kept[: limit + 1].rsplit(" ", 1)[0]
        kept = cut if cut else kept[:limit]
    return kept.strip()


def version_from_iso(text: str, limit: int = 64) -> str:
    """A version string derived from text an ISO holds: the first word of the first line, the
    allowed characters only. "" when nothing is left."""
    words = text.split()
    word = words[0] if words else ""
    return "".join(c for c in word if c in _VERSION_CHARS)[:limit]


# ---------------------------------------------------------------- per format


def _bare(value: object, fmt: str) -> str:
    text = str(value)
    if not _BARE_RE.fullmatch(text):
        raise _refuse(f"{fmt} value", text, "can only hold A-Z a-z 0-9 . _ + / -")
    return text


def dnsmasq_bare(value: object) -> str:
    """A word dnsmasq reads as it is: an interface, a path, an address."""
    return _bare(value, "dnsmasq")


def dnsmasq_quoted(value: object) -> str:
    """Text for inside "..." in a dnsmasq option: `\\` and `"` escaped."""
    text = str(value)
    _no_control(text, "dnsmasq text")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def nginx_bare(value: object) -> str:
    """A word nginx reads as it is: a path, an address."""
    return _bare(value, "nginx")


def pxelinux_text(value: object) -> str:
    """The rest of a pxelinux line: text, a path, kernel arguments."""
    text = str(value)
    _no_control(text, "pxelinux text")
    return text


def ipxe_text(value: object) -> str:
    """Words on an iPXE line: text, a URL, kernel arguments. iPXE has no quoting."""
    text = str(value)
    _no_control(text, "iPXE text")
    for char in "$\\":
        if char in text:
            raise _refuse("iPXE text", text, f"contains {char!r}, which iPXE reads as syntax")
    _ipxe_words(text, "iPXE text")
    return text


def grub_quoted(value: object) -> str:
    """A GRUB word in single quotes (inside them, every character is data but `'` itself)."""
    text = str(value)
    _no_control(text, "GRUB text")
    return "'" + text.replace("'", "'\\''") + "'"


def grub_word(value: object) -> str:
    """A GRUB word with every character outside a safe set escaped by a backslash."""
    text = str(value)
    _no_control(text, "GRUB word")
    if not text:
        return "''"
    return "".join(c if c in _GRUB_SAFE else "\\" + c for c in text)


def grub_args(value: object) -> str:
    """Kernel arguments for GRUB's `linux`: each whitespace-separated word escaped."""
    return " ".join(grub_word(word) for word in str(value).split())


def samba_value(value: object) -> str:
    """A value of smb.conf: the rest of its line, so no line break, no trailing backslash (it
    joins the next line), no %-substitution, no spaces at either end (Samba trims them)."""
    text = str(value)
    _no_control(text, "Samba value")
    if text != text.strip() or text.endswith("\\") or "%" in text:
        raise InputError(f"{text[:60]!r} cannot be a value of smb.conf")
    return text


FILTERS = {
    "dnsmasq_bare": dnsmasq_bare,
    "dnsmasq_quoted": dnsmasq_quoted,
    "nginx_bare": nginx_bare,
    "pxelinux_text": pxelinux_text,
    "ipxe_text": ipxe_text,
    "grub_quoted": grub_quoted,
    "grub_word": grub_word,
    "grub_args": grub_args,
    "samba_value": samba_value,
}
