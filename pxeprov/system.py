"""The one place that runs programs: argv lists only, failures turned into readable errors.

Side effects sit behind small classes (`Packages`, `Service`), so the core can be exercised
without root, and the same code runs for real on a server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pxeprov.errors import CommandError
from pxeprov.paths import WATCH_LOG

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


# Which Debian package brings a program pxeprov runs (for "X is not installed").
PACKAGE_OF = {
    "ip": "iproute2",
    "ss": "iproute2",
    "dnsmasq": "dnsmasq",
    "nginx": "nginx",
    "curl": "curl",
    "nft": "nftables",
    "apt-get": "apt",
    "dpkg-query": "dpkg",
    "systemctl": "systemd",
    "grub-script-check": "grub-common",
    "logrotate": "logrotate",
    "testparm": "samba-common-bin",
    "smbpasswd": "samba-common-bin",
    "pdbedit": "samba-common-bin",
    "useradd": "passwd",
    "qemu-system-x86_64": "qemu-system-x86",
    "xorriso": "xorriso",
}


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Completed:
    """Run `argv`; with `check`, a non-zero exit becomes a CommandError naming the command."""
    log.debug("run: %s", " ".join(argv))
    full_env = None if env is None else {**os.environ, **env}
    found = which(argv[0]) if argv and "/" not in argv[0] else None
    try:
        proc = subprocess.run(
            [found or argv[0], *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
            **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
        )
    except FileNotFoundError:
        package = PACKAGE_OF.get(Path(argv[0]).name)
        hint = f"install the package {package}" if package else None
        raise CommandError(f"{argv[0]} is not installed", hint) from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    done = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        why = reason(detail) or "no output"
        raise CommandError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {why}")
    return done


# How programs mark the line that says why they failed: nginx's levels (its last line is only
# "configuration file ... test failed", after the [emerg] that says why), apt's "E:", and the
# words the others use.
_NGINX_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")  # its log's form
_NGINX_FATAL = re.compile(r"\[emerg\]")
_NGINX_ERROR = re.compile(r"\[(?:alert|crit|error)\]")
_ERROR_LINE = re.compile(
    r"^E: |\b(?:error|fatal|failed|cannot|can't|could not|unable|invalid|bad|unknown|denied|"
    r"not found|no such|refused|illegal|unrecognized)\b",
    re.IGNORECASE,
)


def reason(lines: Sequence[str]) -> str:
    """The line of a failed program's output that says why: its first fatal line (nginx's
    [emerg]), else its first error line, else its last line ("" for none)."""
    lines = [_NGINX_STAMP.sub(r"nginx: \1 ", line.strip()) for line in lines if line.strip()]
    for pattern in (_NGINX_FATAL, _NGINX_ERROR, _ERROR_LINE):
        for line in lines:
            if pattern.search(line):
                return line
    return lines[-1] if lines else ""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Any: ...


# Where servers and admin tools live, searched after $PATH: an account's PATH without root
# often lacks them (dnsmasq and nginx are in /usr/sbin), and "not installed" would be false.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(program: str) -> str | None:
    """The program's path: from $PATH, then the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(program, path=path)


def have(program: str) -> bool:
    return which(program) is not None


_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_POLICY_MARK = "# pxeprov: keeps dnsmasq and nginx from starting while their packages install"
_POLICY_SCRIPT = f"""#!/bin/sh
{_POLICY_MARK}
# (removed right after; invoke-rc.d(8): exit 101 = action forbidden)
case "$1" in dnsmasq|nginx) exit 101 ;; esac
exit 0
"""


class Packages:
    """Debian packages on the real system (dpkg / apt-get)."""

    def __init__(self, policy_rc_d: Path = _POLICY_RC_D, runner: Runner | None = None) -> None:
        self._policy_rc_d = policy_rc_d
        self._run: Runner = runner or run
        self._updated = False
        self.failed: set[str] = set()  # what try_install could not install in this run

    def missing(self, names: Sequence[str]) -> list[str]:
        if not have("dpkg-query"):
            return list(names)
        out = []
        for name in names:
            done = run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], check=False)
            if done.returncode != 0 or done.stdout.strip() != "installed":
                out.append(name)
        return out

    def candidate(self, name: str) -> str | None:
        """The version apt would install (`apt-cache policy`), or None when it cannot say."""
        if not have("apt-cache"):
            return None
        done = run(["apt-cache", "policy", name], check=False, timeout=60)
        found = re.search(r"^\s*Candidate:\s*(\S+)", done.stdout, re.MULTILINE)
        if done.returncode != 0 or found is None or found[1] == "(none)":
            return None
        return found[1]

    def install(self, names: Sequence[str]) -> None:
        """apt-get install, with dnsmasq and nginx kept from starting on their packages' default
        configs (dnsmasq: a DNS server on every interface, which fails where systemd-resolved
        holds port 53 and then fails the install; nginx: a default site on every address);
        pxeprov starts them once its own config is in place."""
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        if not self._updated:
            self._run(["apt-get", "update"], env=env)
            self._updated = True
        with self._no_dnsmasq_start():
            self._run(["apt-get", "install", "-y", "--no-install-recommends", *names], env=env)

    def try_install(self, names: Sequence[str]) -> str | None:
        """Install packages the server can do without: a failure is returned in words (and
        remembered in `failed`), not raised."""
        try:
            self.install(names)
        except CommandError as exc:
            self.failed.update(names)
            return exc.message
        return None

    @contextlib.contextmanager
    def _no_dnsmasq_start(self) -> Iterator[None]:
        path = self._policy_rc_d
        ours = self._is_ours(path)
        if path.exists() and not ours:
            yield  # the admin's own policy (a container, ...) stays as it is
            return
        path.write_text(_POLICY_SCRIPT)
        path.chmod(0o755)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    @staticmethod
    def _is_ours(path: Path) -> bool:
        try:
            return _POLICY_MARK in path.read_text(errors="replace")
        except OSError:
            return False


# Where Debian's init scripts keep the daemons' pids (a box without systemd)
PID_FILES = {
    "dnsmasq": Path("/run/dnsmasq/dnsmasq.pid"),
    "nginx": Path("/run/nginx.pid"),
    "pxeprov-watch": Path("/run/pxeprov-watch.pid"),  # written by pxeprov when it starts it
}


class Service:
    """A service on the real system: a systemd unit, or, on a box without systemd (a container,
    a chroot), the package's init script."""

    def __init__(
        self,
        unit: str,
        verb: str = "restart",
        run_dir: Path = Path("/run/systemd/system"),
        init_dir: Path = Path("/etc/init.d"),
        *,
        program: str | None = None,
        own_unit: bool = False,
    ) -> None:
        self.unit = unit
        self.verb = verb  # nginx: reload-or-restart, so open downloads are not cut
        self._run_dir = run_dir
        self._init_dir = init_dir
        self.program = program or unit  # the program that must be installed
        self.own_unit = own_unit  # its unit file is pxeprov's: systemd reloads it first

    def systemd_running(self) -> bool:
        # sd_booted(3): systemd is PID 1 exactly when this directory exists.
        return self._run_dir.is_dir()

    def init_script(self) -> Path | None:
        """The package's init script, where systemd does not run."""
        script = self._init_dir / self.unit
        return script if script.is_file() and os.access(script, os.X_OK) else None

    def manageable(self) -> bool:
        return (
            self.systemd_running() or self.init_script() is not None or self.unit in _DIRECT
        ) and have(self.program)

    def how(self) -> str:
        """How it is started, in words, for pxeprov's output."""
        if self.systemd_running():
            return "enabled at boot"
        script = self.init_script()
        if script is not None:
            return f"with {script}; systemd is not running"
        return "started directly: neither systemd nor its init script is here"

    def log_hint(self) -> str:
        if self.systemd_running():
            return f"see `journalctl -u {self.unit}`"
        script = self.init_script()
        return f"run `{script} restart` to see why" if script else "see its log"

    def is_active(self) -> bool:
        if self.systemd_running():
            done = run(["systemctl", "is-active", "--quiet", self.unit], check=False)
            return done.returncode == 0
        return self.pid() is not None

    def pid(self) -> int | None:
        """The daemon's pid from its pid file, when that process lives (no systemd)."""
        pid_file = PID_FILES.get(self.unit)
        try:
            pid = int(pid_file.read_text().split()[0]) if pid_file is not None else 0
            if pid <= 0:
                return None
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        if self.unit in _SPAWNED and not runs(pid, b"pxeprov", b"watch"):
            return None  # a stale pid file: that pid is another process now
        return pid

    def enable_and_restart(self) -> None:
        """Enable and (re)start the service; a failed nginx says why (its own `nginx -t`):
        systemctl and the init script say only that it failed ("nginx failed!")."""
        try:
            self._enable_and_restart()
        except CommandError as exc:
            why = _nginx_says() if self.unit == "nginx" else ""
            if not why or why in exc.message:
                raise
            raise CommandError(f"{exc.message}; nginx -t says: {why}", exc.hint) from None

    def _enable_and_restart(self) -> None:
        if self.systemd_running():
            if self.own_unit:
                run(["systemctl", "daemon-reload"], timeout=120)
            run(["systemctl", "enable", "--quiet", self.unit])
            run(["systemctl", self.verb, self.unit], timeout=120)
            return
        script = self.init_script()
        if script is None:
            self._restart_directly()
            return
        verb = "restart"
        if self.verb == "reload-or-restart":
            verb = "reload" if self.is_active() else "start"
        run([str(script), verb], timeout=120)

    def _restart_directly(self) -> None:
        """The daemon itself, as its init script would run it (no systemd, no init script:
        dnsmasq-base alone, a container)."""
        if self.unit not in _DIRECT:
            raise CommandError(f"neither systemd nor /etc/init.d/{self.unit}: cannot start it")
        pid = self.pid()
        if self.unit == "nginx" and pid is not None:
            run(["nginx", "-s", "reload"], timeout=60)
            return
        if pid is not None:
            _stop(pid)
        pid_file = PID_FILES[self.unit]
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        if self.unit in _SPAWNED:
            spawn(_DIRECT[self.unit](), pid_file, _SPAWNED[self.unit])
            return
        run(_DIRECT[self.unit](), timeout=60)


def _nginx_says() -> str:
    """Why nginx does not start with its configuration (a port held, an address not on the
    box, a broken file), as `nginx -t` says it; "" when it says nothing is wrong."""
    if not have("nginx"):
        return ""
    done = run(["nginx", "-t", "-q"], check=False, timeout=30)
    if done.returncode == 0:
        return ""
    return reason((done.stderr.strip() or done.stdout.strip()).splitlines())


def _stop(pid: int, wait: float = 10.0) -> None:
    """SIGTERM to a daemon we started (its pid file's pid), and wait for it to go."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise CommandError(f"process {pid} did not stop within {wait:.0f} s")


def dnsmasq_config_args(etc: Path) -> list[str]:
    """What dnsmasq reads as Debian's init script starts it, under `etc`: the main config when
    there is one, and the drop-in directory without the package manager's leftovers."""
    args = [f"--conf-file={etc / 'dnsmasq.conf'}"] if (etc / "dnsmasq.conf").is_file() else []
    if (etc / "dnsmasq.d").is_dir():
        args.append(f"--conf-dir={etc / 'dnsmasq.d'},.dpkg-dist,.dpkg-old,.dpkg-new")
    return args


def _dnsmasq_argv() -> list[str]:
    """Debian's init script's command line: the main config, the drop-in directory, the pid
    file, and the dnsmasq user (created by dnsmasq-base) when there is one."""
    argv = ["dnsmasq", f"--pid-file={PID_FILES['dnsmasq']}", *dnsmasq_config_args(Path("/etc"))]
    try:
        pwd.getpwnam("dnsmasq")
        argv.append("--user=dnsmasq")
    except KeyError:
        pass
    return argv


def _watch_argv() -> list[str]:
    """pxeprov's own watcher, run by the Python that runs this pxeprov."""
    return [sys.executable, "-m", "pxeprov", "watch", "--fire"]


def runs(pid: int, *words: bytes) -> bool:
    """Whether process `pid` runs a command line holding every one of `words` (a pid file's
    pid that another program took since is not ours)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(word in argv for word in words)


def service_of(pid: int) -> str | None:
    """The systemd service that process `pid` runs in (its cgroup's unit, like
    `isc-dhcp-server.service`), or None: not in a service, no systemd, or gone."""
    try:
        return service_in_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return None


def service_in_cgroup(text: str) -> str | None:
    """The service unit named by a /proc/PID/cgroup text (its last `.service` component)."""
    for line in text.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith(".service") and re.fullmatch(r"[\w@.:\\-]+", part):
                return part
    return None


def spawn(argv: list[str], pid_file: Path, log: Path, wait: float = 1.0) -> None:
    """Start a daemon that does not detach itself: its own session, its output appended to
    `log`, its pid in `pid_file`; it must still run after `wait` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
    except OSError as exc:
        raise CommandError(f"cannot start {argv[0]}: {exc.strerror}") from None
    pid_file.write_text(f"{proc.pid}\n")
    try:
        rc = proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return  # it runs
    pid_file.unlink(missing_ok=True)
    raise CommandError(f"{' '.join(argv[1:4])} exited at once ({rc}): see {log}")


_DIRECT: dict[str, Callable[[], list[str]]] = {
    "dnsmasq": _dnsmasq_argv,
    "nginx": lambda: ["nginx"],  # daemonizes; /etc/nginx/nginx.conf names /run/nginx.pid
    "pxeprov-watch": _watch_argv,
}
# Daemons that stay in the foreground: started by spawn, their output in a log of their own
_SPAWNED: dict[str, Path] = {"pxeprov-watch": Path(str(WATCH_LOG))}


def dnsmasq_test(conf_file: Path) -> None:
    """`dnsmasq --test` on one config file: a syntax check (it does not look at interfaces or
    the TFTP root). Raises CommandError with dnsmasq's own message."""
    if not have("dnsmasq"):
        raise CommandError(
            "dnsmasq is not installed, so the config cannot be validated",
            "install the package dnsmasq",
        )
    run(["dnsmasq", "--test", f"--conf-file={conf_file}"], timeout=30)


def grub_script_check(cfg: Path) -> None:
    """`grub-script-check` (package grub-common) on a grub.cfg: GRUB's own parser."""
    if not have("grub-script-check"):
        raise CommandError(
            "grub-script-check is not installed, so grub.cfg cannot be validated",
            "install the package grub-common",
        )
    run(["grub-script-check", str(cfg)], timeout=30)


def logrotate_check(conf: Path) -> None:
    """logrotate's own reading of a config file, where logrotate is installed (`--debug` only
    reads; its state file is a throw-away one)."""
    if have("logrotate"):
        with tempfile.TemporaryDirectory(prefix="pxeprov-logrotate-") as tmp:
            run(["logrotate", "--debug", "--state", f"{tmp}/state", str(conf)], timeout=30)


def system_account(name: str) -> tuple[int, int]:
    """A system account that cannot log in and has no home, made with useradd when it is
    missing (its group of the same name with it): its user and group ids. One with root's
    user or group id is refused: what acts as it would act as root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", name], timeout=60)  # fmt: skip
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise CommandError(
            f"the account {name} has root's user or group id",
            f"give it ids of its own (userdel {name}; pxeprov makes it again)",
        )
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class SambaPasswords:
    """Samba's own password of an account (its passdb, through smbpasswd and pdbedit): the
    system's, or with `conf` the one that smb.conf names (a test's private smbd)."""

    conf: str | None = None

    def _argv(self, program: str, *args: str) -> list[str]:
        return [program, *(["-c" if program == "smbpasswd" else "-s", self.conf] if self.conf
                           else []), *args]  # fmt: skip

    def enable(self, account: str, password: str) -> None:
        """The account takes `password` (added to the passdb when it is missing)."""
        self._set(account, password)
        run(self._argv("smbpasswd", "-e", account), timeout=60)

    def disable(self, account: str) -> None:
        """The account takes no password (a random one, and disabled); nothing when it is not
        in the passdb or Samba is not installed."""
        if not have("smbpasswd") or self.enabled(account) is None:
            return
        self._set(account, secrets.token_urlsafe(24))
        run(self._argv("smbpasswd", "-d", account), timeout=60)

    def enabled(self, account: str) -> bool | None:
        """Whether Samba takes a password for the account (None: not in the passdb, or Samba
        is not installed)."""
        if not have("pdbedit"):
            return None
        done = run(self._argv("pdbedit", "-v", "-u", account), check=False, timeout=60)
        flags = re.search(r"^Account Flags:\s*\[([A-Z ]*)\]", done.stdout, re.MULTILINE)
        if done.returncode != 0 or flags is None:
            return None
        return "D" not in flags.group(1)

    def _set(self, account: str, password: str) -> None:
        run(self._argv("smbpasswd", "-s", "-a", account), stdin=f"{password}\n{password}\n",
            timeout=60)  # fmt: skip


def testparm_check(conf: Path) -> None:
    """Samba's own reading of a config file (`testparm -s`): its errors, or none."""
    if not have("testparm"):
        raise CommandError(
            "testparm is not installed, so the Samba config cannot be validated",
            "install the package samba-common-bin",
        )
    done = run(["testparm", "-s", str(conf)], check=False, timeout=30)
    if done.returncode != 0 or "Loaded services file OK" not in done.stderr + done.stdout:
        errors = [line for line in done.stderr.splitlines() if "rror" in line or "Unknown" in line]
        raise CommandError(f"testparm refuses {conf}: {(errors or ['no OK'])[0].strip()}")


# `listen ADDRESS:PORT` (or a port alone) at the start of a directive: what nginx -t would bind
_LISTEN = re.compile(r"(^\s*listen\s+)(?!unix:)[^\s;]+", re.MULTILINE)


def nginx_test(site: Path) -> None:
    """`nginx -t` on pxeprov's site inside a minimal main config of its own (the system's
    nginx.conf would also load the live site, and this one must not touch the real logs)."""
    if not have("nginx"):
        raise CommandError(
            "nginx is not installed, so the site cannot be validated", "install the package nginx"
        )
    with tempfile.TemporaryDirectory(prefix="pxeprov-nginx-") as tmp:
        # nginx -t binds what the site listens on: the site is checked with its listen lines
        # on sockets of its own in here (an address not on this box yet, or a port another
        # server holds, is not a fault of the file; starting nginx reports a real bind failure)
        try:
            text = site.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {site}: {exc.strerror or exc}") from None
        count = iter(range(1 << 16))
        checked = Path(tmp) / "site.conf"
        checked.write_text(
            _LISTEN.sub(lambda m: f"{m[1]}unix:{tmp}/listen{next(count)}.sock", text)
        )
        main = Path(tmp) / "nginx.conf"
        main.write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  include {checked};\n}}\n"
        )
        try:
            run(["nginx", "-t", "-q", "-p", tmp, "-c", str(main)], timeout=30)
        except CommandError as exc:
            # say the site's name, not the copy's
            raise CommandError(exc.message.replace(str(checked), str(site)), exc.hint) from None
