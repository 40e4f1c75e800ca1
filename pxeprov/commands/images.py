"""`add-image` and `remove-image`: an ISO (or URL) -> files under the TFTP root + menu entries.

Order, so that a failure at any point leaves disk as it was:
  1. (download into the cache, verified), open the ISO, recognize its kind, check every file to
     copy (a regular file with all of its data inside the image);
  2. the pipeline: under the lock, finish what an interrupted run left, plan the new state with
     the image directory as one of its actions (a hand-edited menu stops everything here,
     before any copy);
  3. apply (apply.py): the copy into a staging directory, the journal, the swap of the
     directory and the writes of state, menus and manifest. dnsmasq is not restarted: its
     config does not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pxeprov import arch, pipeline, syntax
from pxeprov.apply import Outcome
from pxeprov.errors import ChecksumError, ImageError, InputError
from pxeprov.images import kinds, pe
from pxeprov.images.iso import Iso
from pxeprov.images.source import Source, open_source
from pxeprov.images.trees import DirTree
from pxeprov.pipeline import Change, Machine
from pxeprov.plan import ChangeSet, DirAction, DirOp
from pxeprov.progress import Counter, Progress
from pxeprov.state import (
    DEFAULT_KEYBOARD,
    DEFAULT_LOCALE,
    Image,
    State,
    check_keyboard,
    check_locale,
)

CACHE_DIR = PurePosixPath("/var/cache/pxeprov")
IMAGES = pipeline.IMAGES_DIR
MAX_TREE_FILES = 10_000  # files of one tree copied out of an ISO


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
    arch: str | None = None  # the kernel's architecture when its bytes do not say (None: they do)


@dataclass
class AddImageResult:
    image: Image
    layout: kinds.Layout | None  # None: a dry run of a URL, nothing downloaded
    plan: ChangeSet | None
    outcome: Outcome | None = None  # None for a dry run
    files: list[tuple[str, int]] = field(default_factory=list)  # (path under the TFTP root, size)
    notes: list[str] = field(default_factory=list)


def is_url(source: str) -> bool:
    """Whether the source names a URL (any scheme://), not a path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


def derive_name(filename: str) -> str:
    """`Clonezilla-Live-3.1.2-22-amd64.iso` -> `clonezilla-live-3.1.2-22-amd64`."""
    stem = filename.rsplit("/", 1)[-1]
    stem = re.sub(r"\.iso$", "", stem, flags=re.IGNORECASE).lower()
    stem = re.sub(r"[^a-z0-9._-]+", "-", stem).lstrip("._-")[: syntax.MAX_NAME].rstrip("._-")
    if not stem:
        raise InputError(f"cannot derive an image name from {filename!r}", "give --name")
    try:
        return syntax.check_image_name(stem, f"the name derived from {filename[-60:]!r}")
    except InputError as exc:
        raise InputError(exc.message, "give --name") from None


def _image_dir(state: State, name: str) -> PurePosixPath:
    return state.tftp_root / IMAGES / name


def _require_network(state: State) -> None:
    if state.network is None:
        raise InputError("pxeprov is not set up here yet", "run `pxeprov init` first")


def check_options(options: AddImageOptions) -> None:
    """The options, checked by the state's rules and named as the user typed them (exit 2)."""
    if options.name is not None:
        syntax.check_image_name(options.name, "--name")
    if options.label is not None:
        syntax.check_text(options.label, "--label")
    if options.kind is not None and options.kind not in kinds.names():
        raise InputError(f"--kind must be one of {', '.join(kinds.names())}")
    syntax.check_args(options.append, "--append")
    check_locale(options.locale, "--locale")
    check_keyboard(options.keyboard, "--keyboard")
    if options.arch is not None:
        arch.named(options.arch, "--arch")
    if not 1 <= options.stall_timeout <= 3600:
        raise InputError(f"--stall-timeout {options.stall_timeout:g} must be 1 to 3600 seconds")
    if options.kind == "custom":
        if not options.kernel or not options.initrd:
            raise InputError("--kind custom needs --kernel and --initrd (paths inside the ISO)")
    elif options.kernel or options.initrd or options.rootfs:
        raise InputError("--kernel, --initrd and --rootfs go with --kind custom")


# ---------------------------------------------------------------- the ISO


@dataclass(frozen=True)
class Local:
    path: Path
    filename: str
    sha256: str  # "" when not checked
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pending:
    """A URL not downloaded (a dry run)."""

    url: str


def acquire(
    machine: Machine, options: AddImageOptions, progress: Progress | None, *, download: bool
) -> Local | Pending:
    """The ISO as a local file: a path (checked against --sha256), or a URL downloaded into the
    cache (unless `download` is off: then Pending)."""
    if not is_url(options.source):
        path = Path(options.source)
        sha = _verify_local(path, options.sha256, progress) if options.sha256 is not None else ""
        return Local(path, path.name, sha)
    scheme = options.source.split("://", 1)[0]
    if scheme.lower() not in ("http", "https"):
        raise InputError(
            f"only http:// and https:// URLs can be downloaded, not {scheme}://: fetch the "
            "file another way, then `pxeprov add-image` it as a file"
        )
    if not download:
        return Pending(options.source)
    from pxeprov.images import download as dl  # requests is imported only when a URL is given

    got = dl.fetch(
        options.source,
        machine.root.path(CACHE_DIR),
        sha256=options.sha256,
        progress=progress,
        stall_timeout=options.stall_timeout,
    )
    got_it = f"{'cached' if got.from_cache else 'downloaded'} {got.filename} ({got.size} bytes)"
    if got.checksum_source.startswith("none"):
        why = got.checksum_source.removeprefix("none").strip(" ()") or (
            f"no {'/'.join(dl.CHECKSUM_FILES)} next to it lists it"
        )
        note = (
            f"{got_it}, SHA-256 {got.sha256}, not checked ({why}): compare it with the "
            "publisher's, or give --sha256"
        )
    else:
        note = f"{got_it}, SHA-256 {got.sha256}, checked against {got.checksum_source}"
    return Local(got.path, got.filename, got.sha256, (note,))


def _verify_local(path: Path, expected: str, progress: Progress | None) -> str:
    want = expected.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise InputError("--sha256 must be 64 hexadecimal digits")
    if not path.is_file():
        raise ImageError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    digest = hashlib.sha256()
    counter = Counter(progress, path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            counter.add(f"check {path.name}", len(chunk))
    got = digest.hexdigest()
    if got != want:
        raise ChecksumError(f"SHA-256 of {path} is {got}, expected {want}; nothing was changed")
    return got


def _layout(iso: Source, options: AddImageOptions) -> kinds.Layout:
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
    if options.kind is not None and not kinds.get(options.kind).detected:
        named = kinds.get(options.kind).detect(iso)  # a kind only ever chosen by name
        if named is None:
            raise ImageError(f"{iso.path} cannot be used as {options.kind}")
        return named
    layout = kinds.detect(iso)
    if options.kind is not None and options.kind != layout.kind:
        forced, seen = kinds.get(options.kind), kinds.get(layout.kind)
        if forced.family and forced.family == seen.family and (forced.generic or seen.generic):
            return replace(layout, kind=options.kind)  # same files: the admin knows better
        raise ImageError(f"the ISO looks like {layout.kind}, not {options.kind}")
    return layout


def _to_copy(iso: Source, layout: kinds.Layout) -> list[tuple[str, str]]:
    """(name under images/<name>/, path in the ISO) of every file to copy, trees walked."""
    out = [(kinds.KERNEL, layout.kernel)] if layout.kernel else []
    if layout.initrd:
        out.append((kinds.INITRD, layout.initrd))
    if layout.rootfs:
        out.append((kinds.ROOTFS, layout.rootfs))
    for name, path in layout.extra:
        out += _tree(iso, name, path) if name.endswith("/") else [(name, path)]
    for _name, path in out:
        iso.file(path)  # a regular file with its data inside the image, or ImageError
    return out


def _tree(iso: Source, name: str, path: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(rel: str, src: str) -> Iterator[tuple[str, str]]:
        listing = iso.listdir(src)
        if not listing and iso.lookup(src) is None:
            raise ImageError(f"{src}: no such directory in the ISO")
        for entry_name, entry in sorted(listing.items()):
            spelled = entry.spelled  # a copy keeps the ISO's case: trees are read by name
            syntax.check_path(spelled, "a file name in the ISO")  # becomes a served path
            if entry.is_dir:
                yield from walk(f"{rel}{spelled}/", f"{src}/{entry_name}")
            else:
                yield f"{rel}{spelled}", f"{src}/{entry_name}"

    try:
        for item in walk(name, path.rstrip("/")):
            found.append(item)
            if len(found) > MAX_TREE_FILES:
                raise ImageError(f"{path} in the ISO holds more than {MAX_TREE_FILES} files")
    except InputError as exc:
        raise ImageError(f"{path} in the ISO: {exc.message}") from None
    return found


def _populate(
    iso: Source, copy: list[tuple[str, str]], whole: str | None, progress: Progress | None
) -> DirAction:
    """The plan's action that fills images/<name>/ (its path is set by the caller): apply
    calls it with an empty staging directory. `whole`: a copy of the whole ISO, by this name."""
    files = tuple((name, iso.file(path).size) for name, path in copy)
    if whole is not None:
        if not isinstance(iso, Iso):
            raise ImageError(f"{iso.path}: this kind serves the whole image, which must be an ISO")
        files += ((whole, iso.size),)

    def populate(staging: Path) -> list[tuple[str, int]]:
        counter = Counter(progress, sum(size for _, size in files))
        out = []
        for name, path in copy:
            target = staging / name
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            out.append((name, iso.copy(path, target, counter)))
        if whole is not None and isinstance(iso, Iso):
            out.append((whole, iso.copy_whole(staging / whole, counter)))
        return out

    return DirAction(DirOp.INSTALL, PurePosixPath("/"), files, populate)


def _new_image(
    options: AddImageOptions, name: str, layout: kinds.Layout, size: int, sha256: str
) -> Image:
    kind = kinds.get(layout.kind)
    label = options.label or layout.label
    if not label:
        label = f"{kind.label} ({layout.version or name})" if kind.label else name
    # paths in the state are relative to the TFTP root
    kernel, initrd, rootfs, files = kind.paths(layout, f"{IMAGES}/{name}")
    return Image(
        name=name,
        label=label,
        kind=layout.kind,
        kernel=kernel,
        initrd=initrd,
        rootfs=rootfs,
        append=options.append,
        default=options.default,
        locale=options.locale,
        keyboard=options.keyboard,
        source=options.source,
        sha256=sha256,
        size=size,
        version=layout.version,
        files=files,
        variant=layout.variant,
    )


def _kernel_arch(
    iso: Source, layout: kinds.Layout, options: AddImageOptions, notes: list[str]
) -> str:
    """The architecture the image's kernel is for, from its own bytes; --arch where they do
    not say, and refused where they say otherwise (an x86-64 client must never be offered an
    arm64 kernel, nor the other way round)."""
    found = arch.kernel_arch(iso.head(layout.kernel, arch.KERNEL_HEAD)) if layout.kernel else None
    if found is not None:
        if options.arch is not None and options.arch != found.name:
            raise ImageError(
                f"--arch {options.arch}: the kernel {layout.kernel} is for {found.name}",
                f"leave --arch out, or give --arch {found.name}",
            )
        return found.name
    if options.arch is not None:
        return options.arch
    notes.append(
        f"the kernel {layout.kernel} does not say which CPU it is for: taken as x86-64 "
        "(add it again with --replace --arch arm64 if it is not)"
    )
    return arch.X86_64.name


def _with_image(state: State, image: Image) -> State:
    images = [i for i in state.images if i.name != image.name]
    if image.default:
        images = [replace(i, default=False) if i.default else i for i in images]
    return state.with_changes(images=(*images, image))


def add_image(
    machine: Machine,
    options: AddImageOptions,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> AddImageResult:
    check_options(options)
    _require_network(pipeline.load_state(machine.root))
    source = acquire(machine, options, progress, download=not dry_run)
    if isinstance(source, Pending):
        name = options.name or derive_name(source.url)
        placeholder = Image(name, options.label or name, options.kind or "custom", "k", "i")
        note = f"would download {source.url} into {CACHE_DIR}, then add it as {name!r}"
        return AddImageResult(placeholder, None, None, notes=[note])
    name = options.name or derive_name(source.filename)
    notes = list(source.notes)
    iso = open_source(source.path)
    with contextlib.closing(iso):
        try:
            layout = _layout(iso, options)
        except ImageError as exc:
            if not isinstance(iso, DirTree) or not iso.unfollowed:
                raise
            links = ", ".join(iso.unfollowed)
            raise ImageError(f"{exc.message} (symbolic links in {iso.path} are not followed: "
                             f"{links})", exc.hint) from None  # fmt: skip
        kind = kinds.get(layout.kind)
        populate = _populate(iso, _to_copy(iso, layout), layout.whole, progress)
        image = _new_image(options, name, layout, populate.size, source.sha256)
        image = replace(image, arch=_kernel_arch(iso, layout, options, notes))
        uefi_kernel = layout.uefi_kernel or layout.kernel
        if uefi_kernel and not pe.is_signed(iso.head(uefi_kernel, pe.HEAD)):
            image = replace(image, unsigned_kernel=True)
            notes.append(
                f"warning: the kernel {uefi_kernel} has no Secure Boot signature: UEFI clients "
                "with Secure Boot on will refuse it (the GRUB menu marks the entry)"
            )
        elif kind.foreign_signature:
            notes.append(
                f"warning: {kind.label} kernels are signed by {kind.foreign_signature}, not "
                "Debian: UEFI clients with Secure Boot on refuse them through Debian's shim (the "
                "GRUB menu marks the entry)"
            )
        notes += kind.review(layout, populate.size)

        def build(state: State) -> Change:
            _require_network(state)
            if kind.needs_http and state.payload_base is None:
                raise InputError(
                    f"{kind.label or kind.name} images are fetched over HTTP, which this "
                    "server does not serve",
                    "run `pxeprov init --http` first",
                )
            taken = next((i for i in state.images if i.name == name), None)
            if taken is not None and not options.replace:
                raise ImageError(
                    f"image name {name!r} is already taken (from {taken.source or 'unknown'})",
                    f"add it with --replace to replace it, or `pxeprov remove-image {name}` first",
                )
            folder = replace(populate, path=_image_dir(state, name))
            return Change(_with_image(state, image), dirs=(folder,))

        done = pipeline.run(machine, build, dry_run=dry_run, force=options.force)
    listing = [(f"{IMAGES}/{name}/{target}", size) for target, size in populate.files]
    return AddImageResult(image, layout, done.plan, done.outcome, listing, notes + done.warnings)


# ---------------------------------------------------------------- remove


@dataclass
class RemoveImageResult:
    image: Image
    plan: ChangeSet
    outcome: Outcome | None


def remove_image(
    machine: Machine, name: str, *, dry_run: bool = False, force: bool = False
) -> RemoveImageResult:
    removed: list[Image] = []

    def build(state: State) -> Change:
        _require_network(state)
        image = next((i for i in state.images if i.name == name), None)
        if image is None:
            known = ", ".join(i.name for i in state.images) or "none"
            raise ImageError(f"no image named {name!r} (images: {known})")
        removed.append(image)
        folder = _image_dir(state, name)
        dirs = (DirAction(DirOp.DELETE, folder),) if machine.root.path(folder).exists() else ()
        return Change(state.with_changes(images=tuple(i for i in state.images if i != image)), dirs)

    done = pipeline.run(machine, build, dry_run=dry_run, force=force)
    return RemoveImageResult(removed[-1], done.plan, done.outcome)
