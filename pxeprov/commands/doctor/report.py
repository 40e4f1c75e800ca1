"""What doctor's checks say: each check, and the report of them all."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pxeprov.pipeline import Machine

Status = Literal["pass", "warn", "fail", "info"]
EXIT = {"pass": 0, "info": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Check:
    name: str  # a stable key, for --json: "dnsmasq.running"
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    header: str

    @property
    def exit_code(self) -> int:
        return max((EXIT[c.status] for c in self.checks), default=0)

    def as_json(self) -> dict[str, Any]:
        worst = {0: "pass", 1: "warn", 2: "fail"}[self.exit_code]
        return {
            "status": worst,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
        }


def restart_fix(machine: Machine, service: str) -> str:
    """The command that (re)starts `service`: systemd's where it runs the service."""
    unit = machine.services.get(service)
    if unit is not None and unit.systemd_running():
        return f"systemctl restart {service}"
    return "pxeprov init (starts it without systemd too)"
