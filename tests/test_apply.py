"""apply() with a stand-in service manager: restart only on change, rollback when it fails."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pxeprov import render, system
from pxeprov.apply import apply
from pxeprov.errors import CommandError
from pxeprov.paths import Root
from pxeprov.pipeline import VALIDATORS
from pxeprov.plan import Op, make_plan
from pxeprov.state import Network, State
from pxeprov.system import Packages, Service

NET = Network("lo", ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Network("127.0.0.0/8"))
CONF = "etc/dnsmasq.d/pxeprov.conf"


class FakeService(Service):
    """systemd as seen by pxeprov; `fail` restarts fail, and it records what was asked."""

    def __init__(
        self,
        systemd: bool = True,
        active: bool = True,
        fail: int = 0,
        unit: str = "dnsmasq",
        program: str | None = None,
    ) -> None:
        super().__init__(unit, program=program)
        self.systemd, self.active, self.fail = systemd, active, fail
        self.restarts = 0
        self.seen_conf: list[bytes] = []
        self.conf_path: Path | None = None

    def systemd_running(self) -> bool:
        return self.systemd

    def init_script(self) -> Path | None:
        return None  # a box without systemd and without dnsmasq's init script

    def is_active(self) -> bool:
        return self.active

    def enable_and_restart(self) -> None:
        self.restarts += 1
        if self.conf_path is not None:
            self.seen_conf.append(self.conf_path.read_bytes())
        if self.fail:
            self.fail -= 1
            raise CommandError("`systemctl restart dnsmasq` failed (exit 1): job failed")


def fake_watcher() -> FakeService:
    return FakeService(unit="pxeprov-watch", program="sh")  # whether pxeprov is on PATH or not


def run(
    root: Path, service: FakeService, state: State, watcher: FakeService | None = None
) -> list[tuple[str, str]]:
    plan = make_plan(render.render(state), Root.of(root))
    services = {"dnsmasq": service, "pxeprov-watch": watcher or fake_watcher()}
    return apply(plan, Root.of(root), force=False, validators=VALIDATORS, services=services).lines


def test_the_watcher_is_started_with_its_unit_and_left_running(loader_root: Path) -> None:
    """pxeprov-watch (`watch --fire`, which fires one-shot plans) is a service like dnsmasq:
    started when its unit is new, started again when it is not running, otherwise left alone
    (it reads the state itself: a menu change needs no restart)."""
    dnsmasq, watcher = FakeService(), fake_watcher()
    lines = run(loader_root, dnsmasq, State(network=NET), watcher)
    assert watcher.restarts == 1 and ("restarted", "pxeprov-watch (enabled at boot)") in lines
    unit = (loader_root / "etc/systemd/system/pxeprov-watch.service").read_text()
    assert "ExecStart=pxeprov watch --fire\n" in unit
    run(loader_root, dnsmasq, State(network=NET, menu_timeout=3), watcher)
    assert watcher.restarts == 1
    watcher.active = False
    run(loader_root, dnsmasq, State(network=NET, menu_timeout=3), watcher)
    assert watcher.restarts == 2


def test_restart_only_when_dnsmasq_config_changes(loader_root: Path) -> None:
    service = FakeService()
    lines = run(loader_root, service, State(network=NET))
    assert service.restarts == 1 and ("restarted", "dnsmasq (enabled at boot)") in lines
    run(loader_root, service, State(network=NET))
    assert service.restarts == 1  # nothing changed, dnsmasq is running
    run(loader_root, service, State(network=NET, menu_timeout=3))
    assert service.restarts == 1  # only the menus changed: TFTP serves them without a restart
    service.active = False
    run(loader_root, service, State(network=NET, menu_timeout=3))
    assert service.restarts == 2  # not running: started even though nothing changed


def test_failed_restart_puts_the_previous_config_back(loader_root: Path) -> None:
    service = FakeService()
    run(loader_root, service, State(network=NET))
    old_conf = (loader_root / CONF).read_bytes()
    old_menu = (loader_root / "var/lib/tftpboot/boot.ipxe").read_bytes()

    service.fail = 1
    service.conf_path = loader_root / CONF
    wider = Network("lo", NET.address, ipaddress.IPv4Network("127.0.0.0/16"))
    with pytest.raises(CommandError, match="previous config was put back and dnsmasq restarted"):
        run(loader_root, service, State(network=wider, menu_timeout=2))
    assert service.restarts == 3
    assert len(service.seen_conf) == 2  # restarted with the new config, then with the old
    assert service.seen_conf[0] != old_conf and service.seen_conf[1] == old_conf
    assert (loader_root / CONF).read_bytes() == old_conf
    assert (loader_root / "var/lib/tftpboot/boot.ipxe").read_bytes() == old_menu
    # and the manifest agrees, so the next run sees no hand edit
    plan = make_plan(render.render(State(network=NET)), Root.of(loader_root))
    assert {a.op for a in plan.files} == {Op.IDENTICAL}


def test_without_systemd_it_starts_the_service_itself(loader_root: Path) -> None:
    """A box without systemd (a container, a chroot): pxeprov starts dnsmasq itself, and says
    how (tests/e2e/test_fresh_box.py does it for real)."""
    service = FakeService(systemd=False)
    lines = run(loader_root, service, State(network=NET))
    assert service.restarts == 1
    assert ("restarted", f"dnsmasq ({service.how()})") in lines
    assert "systemd" in service.how()


def test_without_any_way_to_start_it_it_says_so(loader_root: Path) -> None:
    service = FakeService(systemd=False)
    service.manageable = lambda: False  # type: ignore[method-assign]
    lines = run(loader_root, service, State(network=NET))
    assert service.restarts == 0
    assert any(
        status == "skipped"
        and "neither systemd nor an init script" in what
        and "restart dnsmasq" in what
        for status, what in lines
    )


def test_package_install_keeps_dnsmasq_from_starting(tmp_path: Path) -> None:
    """While apt-get runs, a policy-rc.d forbids starting dnsmasq (and nothing else); it is
    gone afterwards, and an admin's own policy-rc.d is left alone."""
    policy = tmp_path / "policy-rc.d"
    verdicts: list[list[int]] = []

    def fake_apt(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        if argv[:2] == ["apt-get", "install"]:  # what invoke-rc.d would be told, per unit
            verdicts.append(
                [subprocess.run([policy, u, "start"], check=False).returncode for u in UNITS]
            )

    Packages(policy_rc_d=policy, runner=fake_apt).install(["dnsmasq"])
    assert verdicts == [[101, 0]] and not policy.exists()
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    Packages(policy_rc_d=policy, runner=fake_apt).install(["dnsmasq"])
    assert policy.read_text() == "#!/bin/sh\nexit 101\n"


UNITS = ("dnsmasq", "ssh")


class _Watcher(FakeService):
    """pxeprov-watch on a box without systemd, which ended: starting it makes it run."""

    def __init__(self, starts: bool) -> None:
        super().__init__(systemd=False, active=False, unit="pxeprov-watch", program="sh")
        self.starts = starts

    def manageable(self) -> bool:
        return True

    def enable_and_restart(self) -> None:
        self.restarts += 1
        self.active = self.starts

    def pid(self) -> int | None:
        return 4242 if self.active else None


def test_a_watcher_that_ended_is_started_again_without_systemd() -> None:
    """No systemd restarts pxeprov-watch: a watcher that ended (a state it could not read when
    it started, a kill) is started again by the next assign, which says so."""
    from pxeprov.commands.plans import _watcher_note
    from pxeprov.pipeline import Machine

    watcher = _Watcher(starts=True)
    machine = Machine(root=Root.of("/"), services={"pxeprov-watch": watcher})
    assert _watcher_note(machine) == [
        "pxeprov-watch was not running: started it again (pid 4242), so that the plans fire"
    ]
    assert watcher.restarts == 1
    assert _watcher_note(machine) == [] and watcher.restarts == 1  # it runs: nothing to do
    stuck = _Watcher(starts=False)
    machine = Machine(root=Root.of("/"), services={"pxeprov-watch": stuck})
    assert "pxeprov-watch is not running" in _watcher_note(machine)[0]


def test_a_failed_nginx_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The init script says only "nginx failed!" (systemctl: "job failed"): the error carries
    nginx's own reason, from `nginx -t` (here a stand-in nginx on PATH: nothing binds)."""
    init_dir, bin_dir = tmp_path / "init.d", tmp_path / "bin"
    init_dir.mkdir()
    bin_dir.mkdir()
    script = init_dir / "nginx"
    script.write_text("#!/bin/sh\necho 'Restarting nginx: nginx failed!'\nexit 1\n")
    fake = bin_dir / "nginx"
    fake.write_text(
        "#!/bin/sh\necho 'nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in "
        "use)' >&2\necho 'nginx: configuration file /etc/nginx/nginx.conf test failed' >&2\n"
        "exit 1\n"
    )
    for f in (script, fake):
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(system, "SBIN", ())
    nginx = Service("nginx", run_dir=tmp_path / "no-systemd", init_dir=init_dir)
    with pytest.raises(CommandError) as caught:
        nginx.enable_and_restart()
    assert "nginx failed!" in caught.value.message
    assert caught.value.message.endswith(
        "; nginx -t says: nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)"
    ), caught.value.message
