"""The one place that runs programs: argv lists only, failures turned into readable errors.

Side effects sit behind small classes (`Packages`, `Service`), so the core can be exercised
without root, and the same code runs for real on a server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pxeprov.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run `argv`; with `check`, a non-zero exit becomes a CommandError naming the command."""
    log.debug("run: %s", " ".join(argv))
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    done = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        last = detail[-1] if detail else "no output"
        raise CommandError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {last}")
    return done


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Any: ...


def have(program: str) -> bool:
    return shutil.which(program) is not None


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


class Service:
    """A systemd unit on the real system."""

    def __init__(
        self, unit: str, verb: str = "restart", run_dir: Path = Path("/run/systemd/system")
    ) -> None:
        self.unit = unit
        self.verb = verb  # nginx: reload-or-restart, so open downloads are not cut
        self._run_dir = run_dir

    def systemd_running(self) -> bool:
        # sd_booted(3): systemd is PID 1 exactly when this directory exists.
        return self._run_dir.is_dir()

    def is_active(self) -> bool:
        return run(["systemctl", "is-active", "--quiet", self.unit], check=False).returncode == 0

    def enable_and_restart(self) -> None:
        run(["systemctl", "enable", "--quiet", self.unit])
        run(["systemctl", self.verb, self.unit], timeout=120)


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


def nginx_test(site: Path) -> None:
    """`nginx -t` on pxeprov's site inside a minimal main config of its own (the system's
    nginx.conf would also load the live site, and this one must not touch the real logs)."""
    if not have("nginx"):
        raise CommandError(
            "nginx is not installed, so the site cannot be validated", "install the package nginx"
        )
    with tempfile.TemporaryDirectory(prefix="pxeprov-nginx-") as tmp:
        main = Path(tmp) / "nginx.conf"
        main.write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  include {site};\n}}\n"
        )
        run(["nginx", "-t", "-q", "-p", tmp, "-c", str(main)], timeout=30)
