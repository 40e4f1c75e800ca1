"""A private smbd for the tests: its state, logs and passwords in the test's own directory,
and pxeprov's shares as rendered (tests/test_samba_shares.py, tests/e2e/test_restore.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

# smbd, samba-dcerpcd and friends write there whatever the config says: each test binds its own
# copies over them in a private mount namespace (private_binds)
SAMBA_DIRS = ("/var/log/samba", "/var/lib/samba", "/run/samba", "/var/cache/samba")


def smb_conf(base: Path, interfaces: str, shares: str, extra: str = "") -> Path:
    """base/smb.conf: a standalone server on `interfaces` only, port 445, no NetBIOS or
    printing, its directories under base/run, then `shares`; checked with testparm."""
    run = base / "run"
    for d in ("lock", "state", "cache", "private", "pid", "ncalrpc", "log"):
        (run / d).mkdir(parents=True, exist_ok=True)
    conf = base / "smb.conf"
    more = f"  {extra}\n" if extra else ""
    conf.write_text(f"""\
[global]
  server role = standalone server
  interfaces = {interfaces}
  bind interfaces only = yes
  smb ports = 445
  disable netbios = yes
  lock directory = {run}/lock
  state directory = {run}/state
  cache directory = {run}/cache
  private dir = {run}/private
  pid directory = {run}/pid
  ncalrpc dir = {run}/ncalrpc
  log file = {run}/log/log.%m
  passdb backend = tdbsam:{run}/private/passdb.tdb
  guest account = nobody
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
{more}
{shares}""")
    subprocess.run(["testparm", "-s", str(conf)], check=True, capture_output=True, timeout=30)
    return conf


def private_binds(base: Path) -> list[str]:
    """Shell commands that bind base/private-dirs/* over SAMBA_DIRS (run them in a private
    mount namespace, before smbd)."""
    binds = []
    for d in SAMBA_DIRS:
        mine = base / "private-dirs" / d.strip("/").replace("/", "-")
        mine.mkdir(parents=True)
        binds.append(f"mkdir -p {d} && mount --bind {mine} {d}")
    return binds
