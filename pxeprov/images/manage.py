"""`add-image` and `remove-image`: ISO (or URL) -> files under the TFTP root + menu entries.

Order, so that a failure at any point leaves disk as it was:
  1. (download into the cache, verified), open the ISO, recognize its layout, check every file
     to copy (a regular file with all of its data inside the image);
  2. under the lock: finish what an interrupted run left, plan the new state (a hand-edited menu
     stops everything here, before any copy); the image directory is part of the plan;
  3. apply the plan (apply.py): the copy into a staging directory, the journal, the swap of the
     directory and the writes of state, menus and manifest; dnsmasq is not restarted: its config
     is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pxeprov import commands, syntax
from pxeprov.apply import Outcome, check_conflicts
from pxeprov.errors import ChecksumError, ImageError, InputError
from pxeprov.images import kinds, pe
from pxeprov.images.iso import Iso
from pxeprov.plan import DirAction, DirOp, Plan, with_dirs
from pxeprov.state import (
    DEFAULT_KEYBOARD,
    DEFAULT_LOCALE,
    Image,
    State,
    check_keyboard,
    check_locale,
)

# (what, bytes done, bytes in all or None): the CLI turns this into a progress bar.
Progress = Callable[[str, int, int | None], None]
CACHE_DIR = PurePosixPath("/var/cache/pxeprov")
IMAGES = commands.IMAGES_DIR


@dataclass(frozen=True)
class AddImageOptions:
    source: str
    name: str | None = None
    label: str | None = None
    kind: str | None = None
    sha256: str | None = None
    append: str = ""
    default: bool = False
    kernel: str | None = None  # --kind custom: paths inside the ISO
    initrd: str | None = None
    rootfs: str | None = None
    locale: str = DEFAULT_LOCALE
    keyboard: str = DEFAULT_KEYBOARD
    replace: bool = False
    force: bool = False
    stall_timeout: float = 60.0  # a download that grows too little for this long is retried


@dataclass
class AddImageResult:
    image: Image
    layout: kinds.Layout | None
    plan: Plan | None
    outcome: Outcome | None = None  # None for a dry run
    files: list[tuple[str, int]] = field(default_factory=list)  # (path under the TFTP root, size)
    notes: list[str] = field(default_factory=list)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def derive_name(filename: str) -> str:
    """`Clonezilla-Live-3.1.2-22-amd64.iso` -> `clonezilla-live-3.1.2-22-amd64`."""
    stem = filename.rsplit("/", 1)[-1]
    stem = re.sub(r"\.iso$", "", stem, flags=re.IGNORECASE).lower()
    stem = re.sub(r"[^a-z0-9._-]+", "-", stem).lstrip("._-")[: syntax.MAX_NAME].rstrip("._-")
    if not stem:
        raise InputError(f"cannot derive an image name from {filename!r}", "give --name")
    return stem


def _image_dir(state: State, name: str) -> PurePosixPath:
    return state.tftp_root / IMAGES / name


def _require_network(state: State) -> None:
    if state.network is None:
        raise InputError("pxeprov is not set up here yet", "run `pxeprov init` first")


def _check_options(options: AddImageOptions) -> None:
    """The options, checked by the state's rules and named as the user typed them (exit 2)."""
    if options.name is not None:
        syntax.check_name(options.name, "--name")
    if options.label is not None:
        syntax.check_text(options.label, "--label")
    if options.kind is not None and options.kind not in kinds.KINDS:
        raise InputError(f"--kind must be one of {', '.join(kinds.KINDS)}")
    syntax.check_args(options.append, "--append")
    check_locale(options.locale, "--locale")
    check_keyboard(options.keyboard, "--keyboard")
    if not 1 <= options.stall_timeout <= 3600:
        raise InputError(f"--stall-timeout {options.stall_timeout:g} must be 1 to 3600 seconds")
    if options.kind == "custom":
        if not options.kernel or not options.initrd:
            raise InputError("--kind custom needs --kernel and --initrd (paths inside the ISO)")
    elif options.kernel or options.initrd or options.rootfs:
        raise InputError("--kernel, --initrd and --rootfs go with --kind custom")


def _layout(iso: Iso, options: AddImageOptions) -> kinds.Layout:
    if options.kind == "custom":
        assert options.kernel is not None and options.initrd is not None
        wanted = {"kernel": options.kernel, "initrd": options.initrd}
        if options.rootfs:
            wanted["rootfs"] = options.rootfs
        found = {}
        for what, path in wanted.items():
            key = "/" + path.strip("/").lower()
            if iso.lookup(key) is None:
                raise ImageError(f"--{what} {path!r}: no such file in the ISO")
            found[what] = key
        return kinds.Layout("custom", found["kernel"], found["initrd"], found.get("rootfs"))
    layout = kinds.detect(iso)
    if options.kind is not None and options.kind != layout.kind:
        if layout.kind == "debian-live" or options.kind == "debian-live":
            # same files; the admin knows better which arguments it needs
            return replace(layout, kind=options.kind)
        raise ImageError(f"the ISO looks like {layout.kind}, not {options.kind}")
    return layout


def _wanted(layout: kinds.Layout) -> dict[str, str]:
    """{fixed name under images/<name>/: path in the ISO}."""
    roles = {"kernel": layout.kernel, "initrd": layout.initrd, "rootfs": layout.rootfs}
    return {kinds.FIXED_NAMES[role]: path for role, path in roles.items() if path}


def _new_image(
    options: AddImageOptions, name: str, layout: kinds.Layout, size: int, sha256: str
) -> Image:
    folder = PurePosixPath(IMAGES, name)  # paths in the state are relative to the TFTP root
    label = options.label
    if label is None:
        known = kinds.LABELS.get(layout.kind)
        label = f"{known} ({layout.version or name})" if known else name
    has_rootfs = layout.rootfs is not None
    return Image(
        name=name,
        label=label,
        kind=layout.kind,
        kernel=str(folder / kinds.FIXED_NAMES["kernel"]),
        initrd=str(folder / kinds.FIXED_NAMES["initrd"]),
        rootfs=str(folder / kinds.FIXED_NAMES["rootfs"]) if has_rootfs else "",
        append=options.append,
        default=options.default,
        locale=options.locale,
        keyboard=options.keyboard,
        source=options.source,
        sha256=sha256,
        size=size,
        version=layout.version,
    )


def _with_image(state: State, image: Image, replace: bool) -> State:
    images = [i for i in state.images if not (replace and i.name == image.name)]
    if image.default:
        images = [_undefault(i) for i in images]
    return state.with_changes(images=(*images, image))


def _undefault(image: Image) -> Image:
    return replace(image, default=False) if image.default else image


def _local_iso(
    machine: commands.Machine, options: AddImageOptions, progress: Progress | None
) -> tuple[Path, str, str, list[str]]:
    """(ISO path, file name, sha256 or "", notes), downloading a URL into the cache first."""
    if not is_url(options.source):
        path = Path(options.source)
        sha = ""
        if options.sha256 is not None:
            sha = _verify_local(path, options.sha256, progress)
        return path, path.name, sha, []
    from pxeprov.images import download  # requests is imported only when a URL is given

    def report(done: int, total: int | None) -> None:
        if progress:
            progress(f"download {options.source.rsplit('/', 1)[-1]}", done, total)

    got = download.fetch(
        options.source,
        machine.root.path(CACHE_DIR),
        sha256=options.sha256,
        progress=report,
        stall_timeout=options.stall_timeout,
    )
    notes = [
        f"{'cached' if got.from_cache else 'downloaded'} {got.filename} ({got.size} bytes), "
        f"SHA-256 {got.sha256}, checked against {got.checksum_source}"
    ]
    return got.path, got.filename, got.sha256, notes


def _verify_local(path: Path, expected: str, progress: Progress | None) -> str:
    want = expected.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise InputError("--sha256 must be 64 hexadecimal digits")
    if not path.is_file():
        raise ImageError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(f"check {path.name}", done, total)
    got = digest.hexdigest()
    if got != want:
        raise ChecksumError(f"SHA-256 of {path} is {got}, expected {want}; nothing was changed")
    return got


def _populate(iso: Iso, wanted: dict[str, str], progress: Progress | None) -> DirAction:
    """The plan's action that fills images/<name>/ from the ISO (the path is set by the caller).

    apply calls it with an empty staging directory; it copies each file under its fixed name."""
    total = sum(iso.file(p).size for p in wanted.values())

    def populate(staging: Path) -> list[tuple[str, int]]:
        done = 0
        out = []
        for target, path in wanted.items():

            def step(n: int, what: str = target) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(f"copy {what}", done, total)

            out.append((target, iso.copy(path, staging / target, step)))
        return out

    files = tuple((target, iso.file(path).size) for target, path in wanted.items())
    return DirAction(DirOp.INSTALL, PurePosixPath("/"), files, populate)


def add_image(
    machine: commands.Machine,
    options: AddImageOptions,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> AddImageResult:
    root = machine.root
    _check_options(options)
    state = commands.load_state(root)
    _require_network(state)
    if dry_run and is_url(options.source):
        name = options.name or derive_name(options.source)
        placeholder = Image(name, options.label or name, options.kind or "custom", "k", "i")
        return AddImageResult(
            placeholder,
            None,
            None,
            notes=[f"would download {options.source} into {CACHE_DIR}, then add it as {name!r}"],
        )
    iso_path, filename, sha256, notes = _local_iso(machine, options, progress)
    name = options.name or derive_name(filename)
    with Iso(iso_path) as iso:
        layout = _layout(iso, options)
        wanted = _wanted(layout)
        populate = _populate(iso, wanted, progress)  # checks every file before anything else
        image = _new_image(options, name, layout, populate.size, sha256)
        if not pe.is_signed(iso.head(layout.kernel, pe.HEAD)):
            image = replace(image, unsigned_kernel=True)
            notes.append(
                f"warning: the kernel {layout.kernel} has no Secure Boot signature: UEFI "
                "clients with Secure Boot on will refuse it (the GRUB menu marks the entry)"
            )
        listing = [(f"{IMAGES}/{name}/{target}", size) for target, size in populate.files]
        with contextlib.ExitStack() as stack:
            if not dry_run:
                notes += stack.enter_context(commands.session(machine))
                state = commands.load_state(root)  # again, under the lock
            taken = next((i for i in state.images if i.name == name), None)
            if taken is not None and not options.replace and not dry_run:
                raise ImageError(
                    f"image name {name!r} is already taken (from {taken.source or 'unknown'})",
                    f"add it with --replace to replace it, or `pxeprov remove-image {name}` first",
                )
            new_state = _with_image(state, image, replace=True)
            plan = commands.plan_state(machine, new_state, preview=dry_run)
            plan = with_dirs(plan, [replace(populate, path=_image_dir(state, name))])
            if dry_run:
                return AddImageResult(image, layout, plan, None, listing, notes)
            check_conflicts(plan, options.force)
            outcome = commands.apply_plan(machine, plan, force=options.force)
    return AddImageResult(image, layout, plan, outcome, listing, notes)


# ---------------------------------------------------------------- remove


@dataclass
class RemoveImageResult:
    image: Image
    plan: Plan
    outcome: Outcome | None


def remove_image(
    machine: commands.Machine, name: str, *, dry_run: bool = False, force: bool = False
) -> RemoveImageResult:
    root = machine.root
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(commands.session(machine))
        state = commands.load_state(root)
        _require_network(state)
        image = next((i for i in state.images if i.name == name), None)
        if image is None:
            known = ", ".join(i.name for i in state.images) or "none"
            raise ImageError(f"no image named {name!r} (images: {known})")
        new_state = state.with_changes(images=tuple(i for i in state.images if i.name != name))
        plan = commands.plan_state(machine, new_state, preview=dry_run)
        if root.path(_image_dir(state, name)).exists():
            plan = with_dirs(plan, [DirAction(DirOp.DELETE, _image_dir(state, name))])
        if dry_run:
            return RemoveImageResult(image, plan, None)
        check_conflicts(plan, force)
        outcome = commands.apply_plan(machine, plan, force=force)
    return RemoveImageResult(image, plan, outcome)
