"""The kinds registry's plugin seam: a kind registered by another module (here, this test) is
recognized, listed, copied (files and a tree) and rendered like a built-in one; and the README's
table of kinds is the registry's."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov import menucheck
from pxeprov.images import kinds
from pxeprov.state import Image

from .conftest import NET, Cli, snapshot
from .isos import make_iso

TFTP = "var/lib/tftpboot"
README = Path(__file__).resolve().parent.parent / "README.md"


class Toolbox(kinds.ImageKind):
    """A made-up kind: toolbox/kernel, toolbox/initrd, and the toolbox/tools/ tree."""

    name = "toolbox"
    label = "Toolbox"
    recognized_by = "`toolbox/kernel`, `toolbox/initrd`"
    arguments = "`toolbox.tools=<url>`"
    detect_order = 5

    def detect(self, iso: kinds.IsoView) -> kinds.Layout | None:
        box = iso.listdir("/toolbox")
        if "kernel" not in box or "initrd" not in box:
            return None
        version = iso.read_small("/toolbox/version") or ""
        return kinds.Layout(
            self.name, "/toolbox/kernel", "/toolbox/initrd", None,
            version.split()[0] if version.split() else "", extra=(("tools/", "/toolbox/tools"),),
        )  # fmt: skip

    def kernel_args(self, image: Image, served: kinds.Served) -> str:
        return f"toolbox.tools={served.url(f'images/{image.name}/tools/')}"


class NeedsHttp(Toolbox):
    name = "toolbox-http"
    needs_http = True
    detect_order = 4


@pytest.fixture
def toolbox() -> Iterator[Toolbox]:
    kind = Toolbox()
    kinds.register(kind)
    try:
        yield kind
    finally:
        kinds.unregister(kind.name)


def toolbox_iso(tmp_path: Path) -> Path:
    return make_iso(tmp_path / "toolbox.iso", {
        "toolbox/kernel": b"k" * 1000, "toolbox/initrd": b"i" * 2000, "toolbox/version": b"2.1\n",
        "toolbox/tools/a.bin": b"a", "toolbox/tools/sub/b.bin": b"bb",
    })  # fmt: skip


def test_a_kind_registered_elsewhere_is_one_like_the_others(
    toolbox: Toolbox, loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    assert "toolbox" in kinds.names()
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    r = cli(loader_root, "add-image", str(toolbox_iso(tmp_path)), "--name", "tb")
    assert r.exit_code == 0, r.stderr
    folder = loader_root / TFTP / "images/tb"
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert found == ["initrd.img", "tools/a.bin", "tools/sub/b.bin", "vmlinuz"]
    entry = json.loads(cli(loader_root, "list", "--json").stdout)["entries"][1]
    assert (entry["kind"], entry["label"], entry["version"]) == ("toolbox", "Toolbox (2.1)", "2.1")
    assert entry["args"] == "toolbox.tools=tftp://127.0.0.1/images/tb/tools/"
    ipxe = menucheck.parse_ipxe((loader_root / TFTP / "boot.ipxe").read_text())
    assert ipxe.entries["img-tb"].args == ["toolbox.tools=tftp://127.0.0.1/images/tb/tools/"]
    state = (loader_root / "etc/pxeprov/pxeprov.toml").read_text()
    assert 'files = [\n    "images/tb/tools/",\n]' in state
    # forced with --kind, and named in the error for a kind that does not exist
    r = cli(loader_root, "add-image", str(toolbox_iso(tmp_path)), "--name", "tb2", "--kind", "x")
    assert r.exit_code == 2 and "toolbox" in r.stderr


def test_a_kind_that_needs_http_says_so(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    kinds.register(NeedsHttp())
    try:
        assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
        before = snapshot(loader_root)
        r = cli(loader_root, "add-image", str(toolbox_iso(tmp_path)), "--name", "tb")
        assert r.exit_code == 2 and "run `pxeprov init --http` first" in r.stderr
        assert snapshot(loader_root) == before
    finally:
        kinds.unregister("toolbox-http")


def test_hostile_names_in_a_copied_tree_are_refused(
    toolbox: Toolbox, loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    iso = make_iso(tmp_path / "bad.iso", {
        "toolbox/kernel": b"k", "toolbox/initrd": b"i", "toolbox/tools/a;b $x": b"x",
    })  # fmt: skip
    before = snapshot(loader_root)
    r = cli(loader_root, "add-image", str(iso), "--name", "tb")
    assert r.exit_code == 10, r.stderr
    assert "/toolbox/tools in the ISO" in r.stderr and "a;b $x" in r.stderr
    assert snapshot(loader_root) == before


def test_readme_table_of_kinds_is_the_registry() -> None:
    """`UPDATE_README=1 pytest tests/test_kinds.py` rewrites it after a kind changed."""
    text = README.read_text()
    start = text.index("| kind | recognized by |")
    end = text.index("\n\n", start) + 1
    table = kinds.markdown_table()
    if os.environ.get("UPDATE_README"):
        README.write_text(text[:start] + table + text[end:])
        text = README.read_text()
    assert text[start : text.index("\n\n", start) + 1] == table
