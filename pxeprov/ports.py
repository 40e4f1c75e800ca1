"""Who serves on a port: the sockets of this network namespace, and nginx's other sites.

pxeprov's site must never take an existing web site's place, and `doctor` says who holds the
DHCP and TFTP ports. Two sources, both read-only:
- the sockets of this network namespace (/proc/net/tcp, tcp6, udp, udp6: TCP sockets that
  listen, UDP sockets bound to a port) and the processes holding them (their /proc/<pid>/fd
  links): Apache, a container's proxy, another DHCP or TFTP server, anything;
- nginx's own configuration (nginx.conf and every file it includes), for the server blocks of
  other sites. nginx answers a request on an address and port with the most particular `listen`,
  so pxeprov's site (which listens on the server's address) would silently take the place of
  any other site on that port (Debian's default site listens on every address). nginx's own
  sockets are therefore judged by its configuration, not by the socket table.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pxeprov.paths import NGINX_SITE, Root

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NGINX_CONF = PurePosixPath("/etc/nginx/nginx.conf")
_NGINX_PREFIX = PurePosixPath("/etc/nginx")  # where nginx resolves relative include paths
_LISTEN_STATES = {"tcp": "0A", "udp": "07"}  # TCP_LISTEN; a bound UDP socket is TCP_CLOSE
_MAX_CONFIG_FILES = 512
_MAX_CONFIG_BYTES = 1 << 20
_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket (or a bound UDP one) and the processes that hold it."""

    address: Address
    port: int
    programs: tuple[tuple[int, str], ...]  # (pid, name); empty when none could be read
    proto: str = "tcp"

    @property
    def names(self) -> set[str]:
        return {name for _, name in self.programs}

    @property
    def owner(self) -> str:
        if not self.programs:
            return "a process"
        names = sorted({name for _, name in self.programs})
        pids = ", ".join(str(pid) for pid, _ in self.programs[:3])
        return f"{'/'.join(names)} (pid {pids})"

    def where(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def _address(hexed: str) -> Address:
    """An address as /proc/net/tcp writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hexed)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _sockets(proc: Path, proto: str) -> dict[int, list[tuple[Address, int]]]:
    """Listening sockets: inode -> (address, port)."""
    found: dict[int, list[tuple[Address, int]]] = {}
    for name in (proto, f"{proto}6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN_STATES[proto]:
                continue
            host, _, port = fields[1].partition(":")
            try:
                found.setdefault(int(fields[9]), []).append((_address(host), int(port, 16)))
            except ValueError:
                continue
    return found


def _owners(proc: Path, inodes: set[int]) -> dict[int, list[tuple[int, str]]]:
    """inode -> the (pid, program name) of each process with that socket open."""
    owners: dict[int, list[tuple[int, str]]] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue  # gone, or not ours to read
        links = set()
        for fd in fds:
            try:
                links.add(str(fd.readlink()))
            except OSError:
                continue  # closed meanwhile
        for link in links & wanted.keys():
            owners.setdefault(wanted[link], []).append((int(entry.name), comm))
    return owners


def listeners(port: int, proc: Path = Path("/proc"), proto: str = "tcp") -> list[Listener]:
    """The sockets listening on `port` (TCP; or bound to it, UDP) in this network namespace."""
    sockets = {
        inode: [(a, p) for a, p in places if p == port]
        for inode, places in _sockets(proc, proto).items()
    }
    sockets = {inode: places for inode, places in sockets.items() if places}
    owners = _owners(proc, set(sockets)) if sockets else {}
    return [
        Listener(address, p, tuple(sorted(owners.get(inode, []))), proto)
        for inode, places in sorted(sockets.items())
        for address, p in places
    ]


def covers(listener: Address, address: ipaddress.IPv4Address) -> bool:
    """Whether a socket bound to `listener` receives connections to `address` (a wildcard IPv6
    socket is dual-stack on Linux by default)."""
    if listener.is_unspecified:
        return True
    if isinstance(listener, ipaddress.IPv6Address) and listener.ipv4_mapped is not None:
        return listener.ipv4_mapped == address
    return listener == address


# ---------------------------------------------------------------- nginx's configuration


@dataclass(frozen=True)
class NginxListen:
    file: PurePosixPath
    line: int
    host: str  # "*", an IPv4 address, "[v6]" or a host name
    port: int
    text: str  # the directive as written

    def describe(self) -> str:
        return f"nginx's site {self.file} (line {self.line}: {self.text})"


_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<q>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')|(?P<p>[{};])|(?P<w>[^\s{};"'#]+)"""
)


def _tokens(text: str) -> list[tuple[str, int, bool]]:
    """nginx's lexical structure: (token, line, is a punctuation mark)."""
    out: list[tuple[str, int, bool]] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # a lone quote: nginx -t refuses it; stop reading this file here
            break
        if m.group("q"):
            out.append((m.group("q")[1:-1], line, False))
        elif m.group("p"):
            out.append((m.group("p"), line, True))
        elif m.group("w"):
            out.append((m.group("w"), line, False))
        line += m.group(0).count("\n")
        pos = m.end()
    return out


def _listen(arg: str) -> tuple[str, int] | None:
    """(host, port) of a `listen` directive's first argument; None for a UNIX socket."""
    if arg.startswith("unix:"):
        return None
    if arg.startswith("["):
        host, _, rest = arg.partition("]")
        port = rest[1:] if rest.startswith(":") else "80"
        return (host + "]", int(port)) if port.isdigit() else None
    if arg.isdigit():
        return "*", int(arg)
    host, sep, port = arg.rpartition(":")
    if not sep:
        return arg, 80
    return (host or "*", int(port)) if port.isdigit() else None


def _in_root(root: Root, path: PurePosixPath) -> Path:
    """`path` under `root`, its symbolic links followed as on the system `root` stands for
    (Debian's sites-enabled links are absolute: /etc/nginx/sites-available/...)."""
    for _ in range(16):
        real = root.path(path)
        if not real.is_symlink():
            return real
        target = PurePosixPath(str(real.readlink()))
        path = PurePosixPath(os.path.normpath(path.parent / target))
    return root.path(path)


@dataclass
class _Server:
    file: PurePosixPath
    line: int
    listens: bool = False


class _Reader:
    def __init__(self, root: Root, skip: PurePosixPath) -> None:
        self.root = root
        self.skip = skip
        self.files = 0
        self.found: list[NginxListen] = []
        self.servers: list[_Server] = []  # the http server blocks open, innermost last

    def read(self, path: PurePosixPath, depth: int, outer: list[str]) -> None:
        """Walk one file; `outer` is the block context it is included in."""
        if path == self.skip or depth > _MAX_INCLUDE_DEPTH or self.files >= _MAX_CONFIG_FILES:
            return
        self.files += 1
        try:
            with _in_root(self.root, path).open("rb") as f:
                text = f.read(_MAX_CONFIG_BYTES).decode("utf-8", "replace")
        except OSError:
            return
        stack = list(outer)
        words: list[tuple[str, int]] = []
        for token, line, punct in _tokens(text):
            if not punct:
                words.append((token, line))
                continue
            name, where = words[0] if words else ("", line)
            args = [w for w, _ in words[1:]]
            words = []
            if token == "{":
                if name == "server" and stack[-1:] == ["http"]:
                    self.servers.append(_Server(path, where))
                stack.append(name)
            elif token == "}":
                if len(stack) <= len(outer):
                    return  # unbalanced: nginx -t refuses it
                closed = stack.pop()
                if closed == "server" and stack[-1:] == ["http"] and self.servers:
                    server = self.servers.pop()
                    if not server.listens:  # a server without `listen` listens on *:80
                        self.found.append(NginxListen(server.file, server.line, "*", 80, "server"))
            elif name == "include" and args:
                self._include(args[0], depth, stack)
            elif name == "listen" and args and stack[-2:] == ["http", "server"]:
                if self.servers:
                    self.servers[-1].listens = True
                parsed = _listen(args[0])
                if parsed is not None:
                    directive = " ".join(["listen", *args])
                    self.found.append(NginxListen(path, where, *parsed, directive))

    def _include(self, pattern: str, depth: int, stack: list[str]) -> None:
        target = PurePosixPath(pattern)
        if not target.is_absolute():
            target = _NGINX_PREFIX / target
        if ".." in target.parts:
            return
        base = self.root.base
        pattern = str(target.relative_to("/"))
        # glob(3), as nginx uses it: wildcards do not match names starting with a dot
        for match in sorted(p for p in base.glob(pattern) if not p.name.startswith(".")):
            self.read(PurePosixPath("/") / match.relative_to(base).as_posix(), depth + 1, stack)


def nginx_listens(root: Root, skip: PurePosixPath = NGINX_SITE) -> list[NginxListen]:
    """The `listen` directives of nginx's http server blocks (a block without one listens on
    *:80), in every file nginx.conf includes, but `skip` (pxeprov's own site)."""
    reader = _Reader(root, skip)
    reader.read(NGINX_CONF, 0, [])
    return reader.found


def _nginx_covers(listen: NginxListen, address: ipaddress.IPv4Address) -> bool:
    if listen.host == "*":
        return True
    if listen.host.startswith("["):  # nginx binds IPv6 addresses with ipv6only=on
        return False
    try:
        return ipaddress.ip_address(listen.host) == address
    except ValueError:
        return True  # a host name: it may well be this address


def holders(
    root: Root,
    address: ipaddress.IPv4Address,
    port: int,
    *,
    proc: Path = Path("/proc"),
    site: PurePosixPath = NGINX_SITE,
) -> list[str]:
    """What already serves `address`:`port` besides pxeprov's own site, in words (empty: the
    port is free for pxeprov's site)."""
    # Without root a socket's process cannot be seen (/proc/PID/fd is its owner's): one
    # whose owner is unknown, while nginx runs here, is taken for nginx's
    nginx_runs = _runs(proc, "nginx")
    out = [
        f"{listener.owner} listens on {listener.where()}"
        for listener in listeners(port, proc)
        if covers(listener.address, address)
        and not any(name == "nginx" for _, name in listener.programs)
        and not (not listener.programs and nginx_runs)
    ]
    out += [
        listen.describe()
        for listen in nginx_listens(root, site)
        if listen.port == port and _nginx_covers(listen, address)
    ]
    return list(dict.fromkeys(out))


def _runs(proc: Path, name: str) -> bool:
    """Whether a process of that name runs (/proc/PID/comm, readable by every account)."""
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            if (entry / "comm").read_text().strip() == name:
                return True
        except OSError:
            continue
    return False


DEFAULT_SITE = PurePosixPath("/etc/nginx/sites-enabled/default")
_DEFAULT_SITE_SOURCE = PurePosixPath("/etc/nginx/sites-available/default")


def disable_default_site(root: Root) -> list[str]:
    """Remove the link that enables Debian's default nginx site (the site itself stays in
    sites-available). Only the package's own link is removed; anything else is left alone."""
    link = root.path(DEFAULT_SITE)
    try:
        target = str(link.readlink())
    except OSError:
        return []  # not there, or not a link: an admin's own file
    resolved = PurePosixPath(os.path.normpath(PurePosixPath(DEFAULT_SITE).parent / target))
    if resolved != _DEFAULT_SITE_SOURCE:
        return []
    try:
        link.unlink()
    except OSError as exc:
        return [f"could not disable nginx's default site ({link}): {exc.strerror}"]
    return [
        f"disabled nginx's default site (installed with nginx just now): removed {DEFAULT_SITE}; "
        f"{_DEFAULT_SITE_SOURCE} is kept"
    ]
