"""System paths, always joined late onto a root (`--root`, default `/`).

Every path pxeprov reads or writes is written here as it is on a real server (`/etc/...`) and
turned into a real location only through `Root.path`, so a test can run every command for real
inside a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pxeprov.errors import InputError

STATE_FILE = PurePosixPath("/etc/pxeprov/pxeprov.toml")
TEMPLATE_OVERRIDE_DIR = PurePosixPath("/etc/pxeprov/templates")
DNSMASQ_DROP_IN = PurePosixPath("/etc/dnsmasq.d/pxeprov.conf")
DNSMASQ_MAIN = PurePosixPath("/etc/dnsmasq.conf")
DNSMASQ_MAIN_ORIGINAL = PurePosixPath("/etc/dnsmasq.conf.pxeprov-orig")
DNSMASQ_DROP_IN_DIR = PurePosixPath("/etc/dnsmasq.d")
DNSMASQ_DEFAULTS = PurePosixPath("/etc/default/dnsmasq")
STATE_DIR = PurePosixPath("/var/lib/pxeprov")
MANIFEST = STATE_DIR / "manifest.json"
LOCK_FILE = STATE_DIR / "lock"
JOURNAL = STATE_DIR / "journal.json"
WATCH_STATE = STATE_DIR / "watch.json"  # pxeprov-watch: where it stopped in each log, what waits
# The status page (`pxeprov web url`): its files (render), and the data pxeprov-watch writes;
# nginx serves this directory, and only it, under the secret token's path
WEB_DIR = STATE_DIR / "web"
WEB_DATA = WEB_DIR / "api" / "v1" / "status.json"
REPORTS_LOG = PurePosixPath("/var/log/pxeprov-reports.log")  # what imaging jobs reported
BACKUP_DIR = STATE_DIR / "backups"
DEFAULT_TFTP_ROOT = PurePosixPath("/var/lib/tftpboot")
NGINX_SITE = PurePosixPath("/etc/nginx/conf.d/pxeprov.conf")
DNSMASQ_LOG = PurePosixPath("/var/log/pxeprov-dnsmasq.log")
NGINX_ACCESS_LOG = PurePosixPath("/var/log/nginx/access.log")  # Debian's, for every site
LOGROTATE = PurePosixPath("/etc/logrotate.d/pxeprov")
# `pxeprov watch --fire` as a service: fires one-shot plans without anyone at a terminal
WATCH_UNIT = PurePosixPath("/etc/systemd/system/pxeprov-watch.service")
WATCH_LOG = PurePosixPath("/var/log/pxeprov-watch.log")  # its output where systemd does not run
SAMBA_CONF = PurePosixPath("/etc/samba/smb.conf")
SAMBA_SHARES = PurePosixPath("/etc/samba/pxeprov.conf")
REPO_PASSWORD = PurePosixPath("/etc/pxeprov/repo-password")  # 0600: the write account's
DEFAULT_REPO_PATH = "/srv/pxeprov/images"


def check_relative(value: str, what: str) -> PurePosixPath:
    """A relative path that stays below the directory it is joined to (no `..`, not absolute)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise InputError(f"{what} {value!r} must be a relative path without '..'")
    return path


@dataclass(frozen=True)
class Root:
    """The directory every system path is joined onto."""

    base: Path

    @classmethod
    def of(cls, value: str | Path) -> Root:
        return cls(Path(value).absolute())

    @property
    def is_system(self) -> bool:
        """True when this is the real `/`: only then do system actions (apt, systemctl) run."""
        return self.base == Path("/")

    def path(self, system_path: PurePosixPath) -> Path:
        if not system_path.is_absolute() or ".." in system_path.parts:
            raise InputError(f"path {str(system_path)!r} must be absolute, without '..'")
        return self.base.joinpath(*system_path.parts[1:])
