"""State -> every managed file, in memory. Pure: reads templates, never the root's other files.

Templates are Jinja with StrictUndefined, shipped inside the wheel (`pxeprov/templates`), and an
admin's own directory (`/etc/pxeprov/templates` under the root) overrides them file by file.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from pxeprov import __version__, boot, syntax
from pxeprov import state as state_mod
from pxeprov.arch import ARCHITECTURES, X86_64
from pxeprov.arch import named as arch_named
from pxeprov.boot import Decision
from pxeprov.errors import InputError
from pxeprov.images import kinds
from pxeprov.paths import (
    DNSMASQ_DEFAULTS,
    DNSMASQ_DROP_IN,
    DNSMASQ_LOG,
    DNSMASQ_MAIN,
    LOGROTATE,
    NGINX_SITE,
    REPORTS_LOG,
    SAMBA_CONF,
    SAMBA_SHARES,
    STATE_FILE,
    WATCH_LOG,
    WATCH_UNIT,
    WEB_DIR,
)
from pxeprov.state import Image, Plan, State

IPXE = Decision()  # no decision made: iPXE for UEFI, payloads as the state says


class Kind(enum.Enum):
    GENERATED = "generated"  # rendered text pxeprov owns: a hand edit is a conflict
    COPY = "copy"  # a boot-loader file copied from its package
    EDIT = "edit"  # a file pxeprov only adjusts (one line), or its own state file


@dataclass(frozen=True)
class ManagedFile:
    path: PurePosixPath  # the path on the server
    kind: Kind
    content: bytes | None = None  # GENERATED
    sources: tuple[PurePosixPath, ...] = ()  # COPY: the file to copy, the first that exists
    package: str | None = None  # COPY: the package that provides `source`
    edit: Callable[[bytes | None], bytes] | None = None  # EDIT: current content -> new content
    service: str | None = None  # the service (dnsmasq, nginx) to restart when this file changes
    mode: int = 0o644  # every served file is world-readable: dnsmasq drops privileges
    syntax: str | None = None  # GENERATED: its format, validated before it goes live


def packaged_template_dir() -> Path:
    """Templates inside the installed wheel, or `templates/` of a source checkout."""
    inside = Path(__file__).resolve().parent / "templates"
    if inside.is_dir():
        return inside
    return Path(__file__).resolve().parent.parent / "templates"


def _one_line(value: object) -> object:
    """Jinja's `finalize`: every value a template writes, whatever filter it went through (or
    none, in an admin's own template), stays on its line: no control character passes."""
    text = str(value)
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InputError(f"value {text[:60]!r} has a control character ({char!r})")
    return value


def environment(override_dir: Path | None) -> jinja2.Environment:
    loaders_: list[jinja2.BaseLoader] = []
    if override_dir is not None and override_dir.is_dir():
        loaders_.append(jinja2.FileSystemLoader(override_dir))
    loaders_.append(jinja2.FileSystemLoader(packaged_template_dir()))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders_),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # config files, not HTML: each format quotes with its own filters
        finalize=_one_line,
    )
    env.filters.update(syntax.FILTERS)
    return env


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except InputError as exc:  # a value a filter refused
        raise InputError(f"template {name}: {exc.message}", exc.hint) from None
    except jinja2.TemplateError as exc:
        where = getattr(exc, "filename", None) or name
        line = getattr(exc, "lineno", None)
        at = f"{where}:{line}" if line else where
        raise InputError(f"template {at}: {exc.message or exc}") from None


@dataclass(frozen=True)
class LoaderBoot:
    """How one loader boots an entry, as its menu writes it."""

    kernel: str  # pxelinux and iPXE: the path, or its HTTP URL; GRUB: the path
    initrds: tuple[str, ...]  # the same
    initrd_names: tuple[str, ...]  # the initrds' file names (iPXE's kernel line: initrd=NAME)
    args: str  # the kind's kernel arguments, then the admin's --append
    sanboot: str  # iPXE: a URL to boot as a disk instead


@dataclass(frozen=True)
class MenuEntry:
    """One image as the menus show it: the same entry, label and default in every menu, and
    how each loader boots it (None: that loader cannot)."""

    name: str
    label: str
    default: bool
    secure_boot_note: str  # shown after the label in GRUB's menu (Secure Boot clients)
    pxelinux: LoaderBoot | None
    ipxe_bios: LoaderBoot | None
    ipxe_uefi: LoaderBoot | None
    grub: LoaderBoot | None
    cpu: str = X86_64.grub_cpu  # GRUB's $grub_cpu of the clients that can boot it

    @property
    def args(self) -> str:
        """The arguments of the first loader that boots it (what `list` shows)."""
        boots = (self.pxelinux, self.ipxe_bios, self.ipxe_uefi, self.grub)
        return next((b.args for b in boots if b is not None), "")


def served(state: State) -> kinds.Served:
    """Where clients find images' files: the server's address, never a host name (proxyDHCP
    clients get no DNS server)."""
    assert state.network is not None
    return kinds.Served(f"tftp://{state.network.address}", state.payload_base)


def _src(state: State, path: str) -> str:
    base = state.payload_base
    return path if base is None else f"{base}/{path}"


def _grub_src(state: State, path: str, over_http: bool) -> str:
    """A file as GRUB names it: `/path` on the TFTP server it came from, or on the web server
    as `(http,host:port)/path`."""
    base = state.payload_base
    if not over_http or base is None:
        return f"/{path}"
    device, below = boot.grub_device(base)
    return f"{device}{below}/{path}"


def _loader_boot(
    state: State,
    image: Image,
    spec: kinds.BootSpec | None,
    over_http: bool,
    *,
    grub: bool = False,
) -> LoaderBoot | None:
    if spec is None:
        return None
    if spec.sanboot:
        return LoaderBoot("", (), (), "", spec.sanboot)
    args = " ".join(part for part in (spec.args, image.append.strip()) if part)
    syntax.check_args(args, f"kernel arguments of image {image.name!r}")

    def place(path: str) -> str:
        if grub:
            return _grub_src(state, path, over_http)
        return _src(state, path) if over_http else path

    return LoaderBoot(
        place(spec.kernel),
        tuple(place(i) for i in spec.initrds),
        tuple(i.rsplit("/", 1)[-1] for i in spec.initrds),
        args,
        "",
    )


def menu_entry(state: State, image: Image, *, grub_http: bool = False) -> MenuEntry:
    """`grub_http`: GRUB loads payloads over HTTP (boot.grub_over_http)."""
    kind = kinds.get(image.kind)
    specs = kind.boots(image, served(state))
    if image.unsigned_kernel:
        note = " [not signed: no Secure Boot]"
    elif kind.foreign_signature:
        note = f" [signed by {kind.foreign_signature}: no Secure Boot with Debian's shim]"
    else:
        note = ""
    x86 = image.arch == X86_64.name  # pxelinux and iPXE are served to x86-64 clients only
    return MenuEntry(
        image.name,
        image.label,
        image.default,
        note,
        # iPXE loads payloads over HTTP when there is HTTP, GRUB when it can
        _loader_boot(state, image, specs.get("pxelinux"), True) if x86 else None,
        _loader_boot(state, image, specs.get("ipxe-bios"), True) if x86 else None,
        _loader_boot(state, image, specs.get("ipxe-uefi"), True) if x86 else None,
        _loader_boot(state, image, specs.get("grub"), grub_http, grub=True),
        arch_named(image.arch).grub_cpu,
    )


@dataclass(frozen=True)
class PlanEntry:
    """A machine's plan as the menus write it."""

    mac: str  # 52:54:00:12:34:56
    key: str  # 525400123456: its labels and ids
    dashes: str  # 52-54-00-12-34-56: pxelinux's per-client file name
    now: str  # entry, local, restore, save (menu: no plan rendered)
    label: str  # what GRUB's entry and pxelinux's label say
    pxelinux: LoaderBoot | None  # None: local (or that loader cannot boot the entry)
    ipxe_bios: LoaderBoot | None
    ipxe_uefi: LoaderBoot | None
    grub: LoaderBoot | None
    marker: str = ""  # a one-shot plan's marker: its boot fetches this file first
    cpu: str = ""  # GRUB's $grub_cpu of the clients its image boots on ("": local, any)


@dataclass(frozen=True)
class IpxeBoot:
    """A label of the iPXE script that boots something: an image's entry, or a plan."""

    label: str
    comment: str
    bios: LoaderBoot | None
    uefi: LoaderBoot | None
    local: bool  # the plan boots the local disk
    marker: str = ""  # a one-shot plan's marker, fetched before anything else


def plan_label(plan: Plan) -> str:
    """The plan in words (what it does, fired or not)."""
    if plan.action == "local":
        return "Boot from local disk"
    if plan.action == "entry":
        return f"Boot {plan.entry}"
    then = {"local": "then boot from disk", "reboot": "then reboot", "poweroff": "then power off"}
    verb = "Restore" if plan.action == "restore" else "Save"
    where = "to" if plan.action == "restore" else "from"
    return f"{verb} {plan.image} {where} {plan.disk} ({then[plan.then]})"


def plan_progress(plan: Plan) -> str:
    """How far a one-shot plan is, in words ("" for a standing plan): waiting for its machine,
    taken (fired) when, and for an imaging plan what its job reported."""
    if not plan.one_shot:
        return ""
    if not plan.fired:
        return "one boot" if plan.token else "one boot; from an older pxeprov: assign it again"
    words = f"one boot; fired {plan.fired}"
    if plan.status == "started":
        words += "; its job runs: no report yet"
    elif plan.status in ("done", "failed"):
        words += f"; {plan.status.upper() if plan.status == 'failed' else plan.status} "
        words += f"{plan.reported}: {plan.reason}"
    return words


def missed_session(state: State, plan: Plan) -> bool:
    """The plan's multicast session ended before its machine took the plan."""
    session = state.session(plan.session) if plan.session else None
    return session is not None and bool(session.ended) and not plan.fired


def plan_now(plan: Plan) -> str:
    """What the machine boots now, in words: its plan, or after a one-shot fired, its local
    disk or the menu."""
    return {"menu": "the menu", "local": "its local disk"}.get(plan.now, plan_label(plan))


def plan_entry(state: State, plan: Plan, *, grub_http: bool = False) -> PlanEntry | None:
    """How each loader boots `plan` (None once it boots the menu again, or when its multicast
    session ended before the machine took it: no sender would answer it)."""
    if plan.now == "menu" or missed_session(state, plan):
        return None
    key = plan.mac.replace(":", "")
    dashes = plan.mac.replace(":", "-")
    boots: list[LoaderBoot | None] = [None, None, None, None]
    cpu = ""
    if plan.now != "local":
        image = next(i for i in state.images if i.name == plan.entry)
        cpu = arch_named(image.arch).grub_cpu
        if plan.imaging:
            kind = kinds.get(image.kind)
            session = state.session(plan.session) if plan.session else None
            args = kind.job_args(image, served(state), plan, plan.repo or state.repo, session)
            if args is None:
                raise InputError(
                    f"the plan of {plan.mac} runs its job with {image.name}, a {image.kind} "
                    "image: only a Clonezilla live image runs Clonezilla jobs"
                )
            spec = kinds.BootSpec(image.kernel, (image.initrd,) if image.initrd else (), args)
            specs = dict.fromkeys(kinds.LOADERS, spec)
        else:
            specs = kinds.get(image.kind).boots(image, served(state))
        x86 = image.arch == X86_64.name
        boots = [
            _loader_boot(state, image, specs.get("pxelinux"), True) if x86 else None,
            _loader_boot(state, image, specs.get("ipxe-bios"), True) if x86 else None,
            _loader_boot(state, image, specs.get("ipxe-uefi"), True) if x86 else None,
            _loader_boot(state, image, specs.get("grub"), grub_http, grub=True),
        ]
    label = "Boot from local disk" if plan.now == "local" else plan_label(plan)
    pxelinux, ipxe_bios, ipxe_uefi, grub = boots
    return PlanEntry(plan.mac, key, dashes, plan.now, label, pxelinux, ipxe_bios, ipxe_uefi, grub,
                     plan.marker, cpu)  # fmt: skip


def marker_text(plan: Plan) -> bytes:
    """A plan's marker file: a comment in every loader's script syntax (iPXE fetches it and
    frees it, GRUB sources it, pxelinux includes it)."""
    return f"# pxeprov: the machine {plan.mac} took its plan ({plan_label(plan)}).\n".encode()


def _default(entries: list[MenuEntry], loader: str) -> str:
    """The label a loader's menu starts on: the default image, when that loader boots it."""
    for entry in entries:
        if entry.default and getattr(entry, loader.replace("-", "_")) is not None:
            return entry.name
    return ""


def context(state: State, decision: Decision = IPXE) -> dict[str, Any]:
    if state.network is None:
        raise InputError("the state has no network yet", "run `pxeprov init`")
    grub_http = decision.grub_http
    entries = [menu_entry(state, image, grub_http=grub_http) for image in state.images]
    plans = [p for p in (plan_entry(state, x, grub_http=grub_http) for x in state.plans) if p]
    ipxe_boots = [
        IpxeBoot(f"img-{e.name}", "", e.ipxe_bios, e.ipxe_uefi, False)
        for e in entries
        if e.ipxe_bios or e.ipxe_uefi
    ] + [
        IpxeBoot(
            f"plan-{p.key}",
            f"The plan of {p.mac}: {p.label}",
            p.ipxe_bios,
            p.ipxe_uefi,
            p.now == "local",
            p.marker,
        )
        for p in plans
    ]
    return {
        "plans": plans,
        "ipxe_boots": ipxe_boots,
        "chains": decision.chains(state),
        "ipxe_script": boot.IPXE_SCRIPT,
        "version": __version__,
        "state_file": str(STATE_FILE),
        "network": state.network,
        "tftp_root": str(state.tftp_root),
        "title": state.title,
        "menu_timeout": state.menu_timeout,
        "images": entries,
        "defaults": {
            "pxelinux": _default(entries, "pxelinux"),
            "ipxe": _default(entries, "ipxe-bios") or _default(entries, "ipxe-uefi"),
            "grub": _default(entries, "grub"),
        },
        # GRUB's menu is read by x86-64 and arm64 clients alike: with images of more than one
        # architecture, each entry (and each default) is for the $grub_cpu its kernel runs on
        "grub_cpus": {
            a.grub_cpu: _default([e for e in entries if e.cpu == a.grub_cpu], "grub")
            for a in ARCHITECTURES
        }
        if any(e.cpu != X86_64.grub_cpu for e in entries)
        else {},
        "http_port": state.http_port,
        "dnsmasq_log": str(DNSMASQ_LOG),
        "watch_log": str(WATCH_LOG),
        "reports_log": str(REPORTS_LOG),
        "web_token": web_token(state),
        "room_size": state.room_size,
        "tftp_max": tftp_max(state),
        "web_dir": str(WEB_DIR),
    }


def tftp_max(state: State) -> int:
    """dnsmasq's limit of TFTP transfers at once: twice the room (a firmware that times out
    asks again while its first transfer lingers), and never below dnsmasq's own default."""
    return max(50, 2 * state.room_size)


WEB_PAGE = ("index.html", "status.js", "status.css")  # the status page's files, in web/


def web_token(state: State) -> str:
    """The status page's token when nginx serves the page ("" no page): it needs pxeprov's
    own nginx site."""
    return state.web_token if state.http else ""


def dnsmasq_path(state: State) -> PurePosixPath:
    return DNSMASQ_MAIN if state.dnsmasq_config == "main" else DNSMASQ_DROP_IN


def set_dnsmasq_except(current: bytes | None) -> bytes:
    """`DNSMASQ_EXCEPT="lo"` in /etc/default/dnsmasq, exactly once, other lines kept.

    With port=0 dnsmasq serves no DNS; without this line Debian's init script would still
    register 127.0.0.1 as the system's resolver and break name resolution.
    """
    wanted = 'DNSMASQ_EXCEPT="lo"'
    lines = (current or b"").decode("utf-8", "surrogateescape").splitlines()
    out: list[str] = []
    placed = False
    for line in lines:
        if line.strip().startswith("DNSMASQ_EXCEPT="):
            if not placed:
                out.append(wanted)
                placed = True
            continue
        out.append(line)
    if not placed:
        out += ["# Added by pxeprov: dnsmasq serves no DNS here (port=0).", wanted]
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


_INCLUDE = f"include = {SAMBA_SHARES}"


def include_shares(current: bytes | None) -> bytes:
    """smb.conf with pxeprov's shares included, once, at its end; everything else kept (no
    smb.conf yet, before the package: a minimal one)."""
    text = (current or b"[global]\n").decode("utf-8", "surrogateescape")
    if any(line.strip() == _INCLUDE for line in text.splitlines()):
        return text.encode("utf-8", "surrogateescape")
    if not text.endswith("\n"):
        text += "\n"
    text += (
        f"\n# Added by pxeprov: its image repository shares (`pxeprov repo init`).\n{_INCLUDE}\n"
    )
    return text.encode("utf-8", "surrogateescape")


def render(
    state: State,
    template_override_dir: Path | None = None,
    decision: Decision = IPXE,
) -> list[ManagedFile]:
    """Every file pxeprov manages for `state`, dnsmasq's config last. `decision`: the boot
    decision (boot.decide: the UEFI chain, GRUB over HTTP); the boot chain table says the
    rest."""
    env = environment(template_override_dir)
    ctx = context(state, decision)
    tftp = state.tftp_root
    chains = decision.chains(state)
    kind_loaders = [f for i in state.images for f in kinds.get(i.kind).loader_files]
    files: list[ManagedFile] = [
        ManagedFile(tftp / f.name, Kind.COPY, sources=f.sources, package=f.package)
        for f in dict.fromkeys([*boot.loader_files(chains), *kind_loaders])
    ]
    for fmt in boot.menus(chains):
        name, template = boot.MENUS[fmt]
        text = render_template(env, template, ctx)
        files.append(ManagedFile(tftp / name, Kind.GENERATED, content=text.encode(), syntax=fmt))
    if "pxelinux" in boot.menus(chains):
        # pxelinux looks for pxelinux.cfg/01-<mac> before pxelinux.cfg/default: one per plan
        for plan in ctx["plans"]:
            if plan.now != "local" and plan.pxelinux is None:
                continue  # pxelinux cannot boot that entry: the menu, as for everyone
            text = render_template(env, "pxelinux.cfg/plan.j2", {**ctx, "plan": plan})
            path = tftp / "pxelinux.cfg" / f"01-{plan.dashes}"
            files.append(
                ManagedFile(path, Kind.GENERATED, content=text.encode(), syntax="pxelinux")
            )
    for p in state.plans:  # what a machine fetches when it takes its one-shot plan
        if p.marker:
            files.append(ManagedFile(tftp / p.marker, Kind.GENERATED, content=marker_text(p)))
    files.append(
        # root's only: it holds the plans' tokens and a save plan's password
        ManagedFile(
            STATE_FILE,
            Kind.EDIT,
            edit=lambda _current: state_mod.dumps(state).encode(),
            mode=0o600,
        )
    )
    files.append(
        ManagedFile(DNSMASQ_DEFAULTS, Kind.EDIT, edit=set_dnsmasq_except, service="dnsmasq")
    )
    if state.repo_path:
        shares = render_template(
            env, "samba/pxeprov.conf.j2", {**ctx, "repo_path": state.repo_path}
        )
        files += [
            ManagedFile(
                SAMBA_SHARES,
                Kind.GENERATED,
                content=shares.encode(),
                service="smbd",
                syntax="samba",
            ),
            ManagedFile(SAMBA_CONF, Kind.EDIT, edit=include_shares, service="smbd"),
            # the share's directory comes with its README
            ManagedFile(
                PurePosixPath(state.repo_path) / "README.txt",
                Kind.GENERATED,
                content=render_template(env, "samba/README.txt.j2", ctx).encode(),
            ),
        ]
    logrotate = render_template(env, "logrotate.j2", ctx)
    files.append(
        ManagedFile(LOGROTATE, Kind.GENERATED, content=logrotate.encode(), syntax="logrotate")
    )
    watcher = render_template(env, "pxeprov-watch.service.j2", ctx)
    files.append(
        ManagedFile(
            WATCH_UNIT,
            Kind.GENERATED,
            content=watcher.encode(),
            service="pxeprov-watch",
            syntax="systemd",
        )
    )
    if state.http:
        site = render_template(env, "nginx-site.conf.j2", ctx)
        files.append(
            ManagedFile(
                NGINX_SITE,
                Kind.GENERATED,
                content=site.encode(),
                service="nginx",
                syntax="nginx",
                mode=0o600 if ctx["web_token"] else 0o644,  # the page's secret is in it
            )
        )
    if ctx["web_token"]:
        for name in WEB_PAGE:
            page = render_template(env, f"web/{name}.j2" if name.endswith(".html") else
                                   f"web/{name}", ctx)  # fmt: skip
            files.append(ManagedFile(WEB_DIR / name, Kind.GENERATED, content=page.encode()))
    conf = render_template(env, "dnsmasq.conf.j2", ctx)
    files.append(
        ManagedFile(
            dnsmasq_path(state),
            Kind.GENERATED,
            content=conf.encode(),
            service="dnsmasq",
            syntax="dnsmasq",
        )
    )
    return files


def guidance(
    state: State, template_override_dir: Path | None = None, decision: Decision = IPXE
) -> str:
    env = environment(template_override_dir)
    return render_template(env, "guidance.txt.j2", context(state, decision))
