"""Anaconda installers: netinst/boot and DVD ISOs of Fedora and the RHEL family (CentOS Stream,
Rocky, Alma). Anaconda fetches its runtime (images/install.img) from an installable tree over
HTTP, which must hold .treeinfo: `inst.stage2=` for netinst (packages come from the mirrors),
`inst.repo=` for a DVD whose package repository is served too."""

from __future__ import annotations

import configparser

from pxeprov.arch import ARCHITECTURES
from pxeprov.errors import InputError
from pxeprov.images.kinds.registry import ImageKind, IsoView, Layout, Served, folder, register
from pxeprov.state import Image
from pxeprov.syntax import check_path, label_from_iso, version_from_iso

TREEINFO = ".treeinfo"
REPOS = ("baseos", "appstream", "packages", "repodata", "minimal")


def _treeinfo(text: str) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return parser


def _iso_path(value: str | None, default: str) -> str | None:
    """A path .treeinfo names, or None when it is not one pxeprov would serve."""
    path = (value or default).strip().strip("/")
    try:
        check_path(path, "a path in .treeinfo")
    except InputError:
        return None
    return f"/{path.lower()}"


class FedoraInstaller(ImageKind):
    name = "fedora-installer"
    label = "Fedora/RHEL installer"
    recognized_by = "`.treeinfo` with `images/install.img` and `images/pxeboot/*`"
    arguments = (
        "`inst.stage2=http://<server>/images/<name>/ ip=dhcp` (`inst.repo=` for a DVD, whose "
        "repository is served too)"
    )
    transport = "HTTP (a tree: .treeinfo, images/install.img, a DVD's repository)"
    firmware = "BIOS, UEFI (signed by Fedora/Red Hat: no Secure Boot through Debian's shim)"
    needs_http = True
    foreign_signature = "Fedora or Red Hat"
    detect_order = 25

    def detect(self, iso: IsoView) -> Layout | None:
        info = iso.read_small(f"/{TREEINFO}")
        parser = _treeinfo(info) if info else None
        if parser is None:
            return None
        # the images of the tree's architecture (x86_64, aarch64: the kernel says which)
        section = next((f"images-{a.machine}" for a in ARCHITECTURES
                        if parser.has_section(f"images-{a.machine}")), None)  # fmt: skip
        images = dict(parser[section]) if section else {}
        stage2 = parser.get("stage2", "mainimage", fallback=None)
        kernel = _iso_path(images.get("kernel"), "images/pxeboot/vmlinuz")
        initrd = _iso_path(images.get("initrd"), "images/pxeboot/initrd.img")
        runtime = _iso_path(stage2, "images/install.img")
        if not (kernel and initrd and runtime):
            return None
        top = iso.listdir("/")
        if iso.listdir(runtime.rsplit("/", 1)[0]).get(runtime.rsplit("/", 1)[1]) is None:
            return None
        extra: list[tuple[str, str]] = [(TREEINFO, f"/{TREEINFO}")]
        if ".discinfo" in top:
            extra.append((".discinfo", "/.discinfo"))
        extra.append((runtime.lstrip("/"), runtime))
        repos = [e for n, e in sorted(top.items()) if n in REPOS and e.is_dir]
        extra += [(f"{e.spelled}/", f"/{e.name}") for e in repos]
        name = parser.get("release", "name", fallback="") or parser.get(
            "general", "family", fallback=""
        )
        version = parser.get("release", "version", fallback="") or parser.get(
            "general", "version", fallback=""
        )
        return Layout(
            self.name,
            kernel,
            initrd,
            None,
            version_from_iso(version),
            extra=tuple(extra),
            label=label_from_iso(f"{name} {version} installer") if name else "",
            variant="dvd" if repos else "netinst",
        )

    def kernel_args(self, image: Image, served: Served) -> str:
        tree = served.url(folder(image))
        option = "inst.repo" if image.variant == "dvd" else "inst.stage2"
        return f"{option}={tree}/ ip=dhcp"


register(FedoraInstaller())
