"""`add-image` and `remove-image`: ISO (or URL) -> files under the TFTP root + menu entries.

Order, so that a failure at any point leaves disk as it was:
  1. (download into the cache, verified), open the ISO, recognize its layout;
  2. under the lock: clean what an interrupted run left, plan the new state (a hand-edited menu
     stops everything here, before any copy);
  3. copy the files into a staging directory, rename it into place;
  4. apply the plan (state + menus, atomically; dnsmasq is not restarted: its config is
     unchanged); if that fails, the image directory goes again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pxeprov import commands
from pxeprov.apply import Outcome, check_conflicts
from pxeprov.errors import ChecksumError, FilesystemError, ImageError, InputError, PxeprovError
from pxeprov.fsutil import make_dirs
from pxeprov.images import kinds, pe
from pxeprov.images.iso import Iso, sync_files
from pxeprov.paths import Root
from pxeprov.plan import Plan
from pxeprov.state import Image, State, check_name, check_text

# (what, bytes done, bytes in all or None): the CLI turns this into a progress bar.
Progress = Callable[[str, int, int | None], None]
CACHE_DIR = PurePosixPath("/var/cache/pxeprov")
IMAGES = "images"
_STAGING = ".staging-"
_TRASH = ".trash-"
_LABELS = {"clonezilla": "Clonezilla live", "gparted": "GParted live", "debian-live": "Debian live"}


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
    locale: str = kinds.DEFAULT_LOCALE
    keyboard: str = kinds.DEFAULT_KEYBOARD
    replace: bool = False
    force: bool = False


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
    stem = re.sub(r"[^a-z0-9._-]+", "-", stem).lstrip("._-")
    if not stem:
        raise InputError(f"cannot derive an image name from {filename!r}", "give --name")
    return stem


def _image_dir(state: State, name: str) -> PurePosixPath:
    return state.tftp_root / IMAGES / name


def _require_network(state: State) -> None:
    if state.network is None:
        raise InputError("pxeprov is not set up here yet", "run `pxeprov init` first")


def _clean_leftovers(root: Root, state: State) -> list[str]:
    """Staging and trash directories an interrupted run left behind (we hold the lock)."""
    images = root.path(state.tftp_root / IMAGES)
    cleaned = []
    if images.is_dir():
        for p in images.iterdir():
            if p.name.startswith((_STAGING, _TRASH)):
                shutil.rmtree(p, ignore_errors=True)
                cleaned.append(p.name)
    return cleaned


def _layout(iso: Iso, options: AddImageOptions) -> kinds.Layout:
    if options.kind is not None and options.kind not in kinds.KINDS:
        raise InputError(f"--kind must be one of {', '.join(kinds.KINDS)}")
    if options.kind == "custom":
        if not options.kernel or not options.initrd:
            raise InputError("--kind custom needs --kernel and --initrd (paths inside the ISO)")
        wanted = {"kernel": options.kernel, "initrd": options.initrd}
        if options.rootfs:
            wanted["rootfs"] = options.rootfs
        found = {}
        for what, path in wanted.items():
            key = "/" + path.strip("/").lower()
            if key not in iso.files:
                raise ImageError(f"--{what} {path}: no such file in the ISO")
            found[what] = key
        return kinds.Layout("custom", found["kernel"], found["initrd"], found.get("rootfs"))
    if options.kernel or options.initrd or options.rootfs:
        raise InputError("--kernel, --initrd and --rootfs go with --kind custom")
    sizes = {path: f.size for path, f in iso.files.items()}
    texts = {p: iso.read_small(p) for p in sizes if kinds.is_version_file(p)}
    layout = kinds.detect(sizes, texts, iso.volume_id)
    if options.kind is not None and options.kind != layout.kind:
        if layout.kind == "debian-live" or options.kind == "debian-live":
            # same files; the admin knows better which arguments it needs
            return kinds.Layout(options.kind, layout.kernel, layout.initrd, layout.rootfs)
        raise ImageError(f"the ISO looks like {layout.kind}, not {options.kind}")
    return layout


def _new_image(
    state: State,
    options: AddImageOptions,
    name: str,
    layout: kinds.Layout,
    sizes: dict[str, int],
    sha256: str,
) -> Image:
    folder = PurePosixPath(IMAGES, name)  # paths in the state are relative to the TFTP root
    picked = {"kernel": layout.kernel, "initrd": layout.initrd, "rootfs": layout.rootfs}
    rel = {k: str(folder / PurePosixPath(v).name) for k, v in picked.items() if v}
    label = options.label
    if label is None:
        label = (
            f"{_LABELS[layout.kind]} ({layout.version or name})" if layout.kind in _LABELS else name
        )
    return Image(
        name=name,
        label=check_text(label, "label"),
        kind=layout.kind,
        kernel=rel["kernel"],
        initrd=rel["initrd"],
        rootfs=rel.get("rootfs", ""),
        append=options.append,
        default=options.default,
        locale=kinds.check_locale(options.locale),
        keyboard=kinds.check_keyboard(options.keyboard),
        source=options.source,
        sha256=sha256,
        size=sum(sizes.values()),
        version=layout.version or "",
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


def add_image(
    machine: commands.Machine,
    options: AddImageOptions,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> AddImageResult:
    root = machine.root
    state = commands.load_state(root)
    _require_network(state)
    if options.name is not None:
        check_name(options.name)
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
    check_name(name)
    with Iso(iso_path) as iso:
        layout = _layout(iso, options)
        wanted = [p for p in (layout.kernel, layout.initrd, layout.rootfs) if p]
        basenames = [PurePosixPath(p).name for p in wanted]
        if len(set(basenames)) != len(basenames):
            raise ImageError(f"kernel, initrd and rootfs need different file names: {basenames}")
        sizes = {p: iso.files[p].size for p in wanted}
        for p in wanted:
            iso.extents(iso.files[p])  # a truncated ISO is refused before anything is copied
        image = _new_image(state, options, name, layout, sizes, sha256)
        if not pe.is_signed(iso.head(layout.kernel, pe.HEAD)):
            image = replace(image, unsigned_kernel=True)
            notes.append(
                f"warning: the kernel {layout.kernel} has no Secure Boot signature: UEFI "
                "clients with Secure Boot on will refuse it (the GRUB menu marks the entry)"
            )
        if dry_run:
            new_state = _with_image(state, image, replace=True)
            plan = commands.plan_state(machine, new_state, preview=True)
            files = [(f"{IMAGES}/{name}/{PurePosixPath(p).name}", sizes[p]) for p in wanted]
            return AddImageResult(image, layout, plan, None, files, notes)
        with commands.lock(machine):
            state = commands.load_state(root)  # again, under the lock
            taken = next((i for i in state.images if i.name == name), None)
            if taken is not None and not options.replace:
                raise ImageError(
                    f"image name {name!r} is already taken (from {taken.source or 'unknown'})",
                    f"add it with --replace to replace it, or `pxeprov remove-image {name}` first",
                )
            for leftover in _clean_leftovers(root, state):
                notes.append(f"removed {leftover} left by an interrupted run")
            new_state = _with_image(state, image, replace=True)
            plan = commands.plan_state(machine, new_state)
            check_conflicts(plan, options.force)
            files = _copy_in(machine, state, iso, name, wanted, progress)
            final = root.path(_image_dir(state, name))
            trash = _swap_in(final, final.with_name(f"{_STAGING}{name}-{os.getpid()}"))
            try:
                outcome = commands.apply_plan(machine, plan, force=options.force)
            except PxeprovError:
                shutil.rmtree(final, ignore_errors=True)
                if trash is not None:
                    trash.rename(final)
                raise
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
    return AddImageResult(image, layout, plan, outcome, files, notes)


def _copy_in(
    machine: commands.Machine,
    state: State,
    iso: Iso,
    name: str,
    wanted: list[str],
    progress: Progress | None,
) -> list[tuple[str, int]]:
    """Copy into images/.staging-<name>-<pid>; on any failure the staging directory goes."""
    root = machine.root
    images = root.path(state.tftp_root / IMAGES)
    staging = images / f"{_STAGING}{name}-{os.getpid()}"
    total = sum(iso.files[p].size for p in wanted)
    make_dirs(images)
    try:
        free = shutil.disk_usage(images).free
    except OSError as exc:
        raise FilesystemError(f"cannot create {images}: {exc.strerror}") from None
    if total > free:
        raise FilesystemError(
            f"not enough space in {images}: the image needs {total} bytes, {free} are free"
        )
    done = 0
    out = []
    try:
        staging.mkdir(mode=0o755)
        os.chmod(staging, 0o755)  # noqa: PTH101 - umask must not take world access away
        for path in wanted:
            target = staging / PurePosixPath(path).name

            def step(n: int, what: str = target.name) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(f"copy {what}", done, total)

            iso.copy(path, target, step)
            out.append((f"{IMAGES}/{name}/{target.name}", iso.files[path].size))
        sync_files([staging / PurePosixPath(p).name for p in wanted])
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise FilesystemError(f"cannot write {staging}: {exc.strerror}") from None
    except BaseException:  # also KeyboardInterrupt: never leave a half image
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap_in(final: Path, staging: Path) -> Path | None:
    """Rename the staging directory to its final name; an existing one (replace, or one an
    interrupted run left without a menu entry) is moved aside and returned."""
    trash = None
    try:
        if final.exists():
            trash = final.with_name(f"{_TRASH}{final.name}-{os.getpid()}")
            final.rename(trash)
        staging.rename(final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if trash is not None and not final.exists():
            trash.rename(final)
        raise FilesystemError(f"cannot move {staging} to {final}: {exc.strerror}") from None
    return trash


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
            stack.enter_context(commands.lock(machine))
        state = commands.load_state(root)
        _require_network(state)
        image = next((i for i in state.images if i.name == name), None)
        if image is None:
            known = ", ".join(i.name for i in state.images) or "none"
            raise ImageError(f"no image named {name!r} (images: {known})")
        new_state = state.with_changes(images=tuple(i for i in state.images if i.name != name))
        plan = commands.plan_state(machine, new_state, preview=dry_run)
        if dry_run:
            return RemoveImageResult(image, plan, None)
        check_conflicts(plan, force)
        folder = root.path(_image_dir(state, name))
        trash = folder.with_name(f"{_TRASH}{name}-{os.getpid()}")
        if folder.exists():
            folder.rename(trash)  # gone from clients' view at once, deleted after the menus
        try:
            outcome = commands.apply_plan(machine, plan, force=force)
        except PxeprovError:
            if trash.exists():
                trash.rename(folder)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    return RemoveImageResult(image, plan, outcome)
