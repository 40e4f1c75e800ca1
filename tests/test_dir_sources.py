"""add-image from a directory (issue 17): no symbolic link is followed or copied, and no file
other users may not read is copied (everything copied is served to anyone on the network).

The case of the issue: a source directory whose `debian-installer` is a link to a directory
elsewhere, with a kernel only root may read; pxeprov, as root, copied it and TFTP served it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov.errors import ImageError
from pxeprov.images import kinds
from pxeprov.images.trees import DirTree

from .conftest import NET, Cli, snapshot
from .test_kinds import Toolbox

TFTP = "var/lib/tftpboot"


@pytest.fixture
def server(loader_root: Path, cli: Cli) -> Path:
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    return loader_root


@pytest.fixture
def toolbox() -> Iterator[Toolbox]:
    kind = Toolbox()
    kinds.register(kind)
    try:
        yield kind
    finally:
        kinds.unregister(kind.name)


def installer(where: Path, *, kernel_mode: int = 0o644) -> Path:
    """A Debian installer netboot tree: debian-installer/amd64/{linux,initrd.gz}."""
    amd64 = where / "debian-installer/amd64"
    amd64.mkdir(parents=True)
    (amd64 / "linux").write_bytes(b"k" * 1000)
    (amd64 / "linux").chmod(kernel_mode)
    (amd64 / "initrd.gz").write_bytes(b"i" * 2000)
    (amd64 / "initrd.gz").chmod(0o644)
    return where


def refused(server: Path, cli: Cli, source: Path, *args: str) -> str:
    before = snapshot(server)
    r = cli(server, "add-image", str(source), "--name", "di", *args)
    assert r.exit_code == 10, (r.stdout, r.stderr)
    after = snapshot(server)
    before.pop("var/lib/pxeprov/lock", None), after.pop("var/lib/pxeprov/lock", None)
    assert after == before  # nothing copied, nothing served
    return " ".join(r.stderr.split())


def test_a_directory_of_its_own_is_copied(server: Path, cli: Cli, tmp_path: Path) -> None:
    source = installer(tmp_path / "netboot")
    r = cli(server, "add-image", str(source), "--name", "di")
    assert r.exit_code == 0, r.stderr
    assert (server / TFTP / "images/di/vmlinuz").read_bytes() == b"k" * 1000


def test_a_linked_directory_out_of_the_source_is_refused(
    server: Path, cli: Cli, tmp_path: Path
) -> None:
    installer(tmp_path / "private", kernel_mode=0o600)  # root's alone
    source = tmp_path / "netboot"
    source.mkdir()
    (source / "debian-installer").symlink_to("../private/debian-installer")
    for args in ((), ("--kind", "debian-installer")):
        text = refused(server, cli, source, *args)
        assert f"debian-installer in {source} is a symbolic link to ../private/debian-installer, " \
            "which leads out of the directory" in text, text  # fmt: skip
    # deeper: a directory on the way, not the last one before the file
    source2 = tmp_path / "netboot2"
    (source2 / "debian-installer").mkdir(parents=True)
    (source2 / "debian-installer/amd64").symlink_to(tmp_path / "private/debian-installer/amd64")
    text = refused(server, cli, source2)
    assert "debian-installer/amd64 in" in text and "leads out of the directory" in text, text


def test_a_linked_file_is_refused_by_name(server: Path, cli: Cli, tmp_path: Path) -> None:
    source = installer(tmp_path / "netboot")
    outside = tmp_path / "kernel"
    outside.write_bytes(b"o" * 1000)
    outside.chmod(0o644)
    linux = source / "debian-installer/amd64/linux"
    linux.unlink()
    linux.symlink_to(outside)
    text = refused(server, cli, source)
    assert f"debian-installer/amd64/linux in {source} is a symbolic link to {outside}, which " \
        "leads out of the directory" in text, text  # fmt: skip
    linux.unlink()
    (source / "debian-installer/amd64/real-linux").write_bytes(b"k" * 1000)
    linux.symlink_to("real-linux")  # inside the tree: still no link is copied
    text = refused(server, cli, source)
    assert "debian-installer/amd64/linux in" in text, text
    assert "is a symbolic link (to real-linux, inside the directory), not a file" in text, text


def test_a_link_inside_is_not_followed_and_named(server: Path, cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "netboot"
    installer(source / "real")
    (source / "debian-installer").symlink_to("real/debian-installer")
    text = refused(server, cli, source)
    assert "symbolic links in" in text and "are not followed: debian-installer" in text, text


@pytest.mark.parametrize("private", ["file", "directory"])
def test_a_private_file_is_not_copied(server: Path, cli: Cli, tmp_path: Path, private: str) -> None:
    source = installer(tmp_path / "netboot", kernel_mode=0o600 if private == "file" else 0o644)
    if private == "directory":
        (source / "debian-installer/amd64").chmod(0o750)
    text = refused(server, cli, source)
    if private == "file":
        assert "debian-installer/amd64/linux in" in text and "may be read by its owner only " \
            "(-rw-------)" in text, text  # fmt: skip
        assert "chmod o+r" in text
    else:
        assert "debian-installer/amd64 in" in text and "a directory other users may not enter " \
            "(drwxr-x---)" in text, text  # fmt: skip
    # the source directory itself may be private (an admin's download in /root): its contents
    # are what is checked
    tmp_path.chmod(0o700)
    fine = installer(tmp_path / "mine")
    assert cli(server, "add-image", str(fine), "--name", "di").exit_code == 0


def test_a_copied_tree_holds_no_link(
    toolbox: Toolbox, server: Path, cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "tb"
    tools = source / "toolbox/tools"
    tools.mkdir(parents=True)
    for name, data in (("kernel", b"k"), ("initrd", b"i")):
        (source / "toolbox" / name).write_bytes(data * 100)
    (tools / "a.bin").write_bytes(b"a")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("root's")
    (tools / "sub").symlink_to(secret)  # a linked directory in the tree
    text = refused(server, cli, source, "--name", "tb")
    assert f"toolbox/tools/sub in {source} is a symbolic link to {secret}, which leads out" in text
    (tools / "sub").unlink()
    (tools / "same").symlink_to("a.bin")
    text = refused(server, cli, source, "--name", "tb")
    assert "toolbox/tools/same in" in text and "inside the directory), not a file" in text
    (tools / "same").unlink()
    r = cli(server, "add-image", str(source), "--name", "tb")
    assert r.exit_code == 0, r.stderr
    entry = json.loads(cli(server, "list", "--json").stdout)["entries"][1]
    assert entry["kind"] == "toolbox"


def test_the_source_reader_itself(tmp_path: Path) -> None:
    source = installer(tmp_path / "src")
    (source / "version.info").write_text("Debian version: 12\n")
    (source / "version.info").chmod(0o600)
    tree = DirTree(source)
    assert tree.read_small("/version.info") is None  # a private file says nothing
    assert tree.file("/debian-installer/amd64/linux").size == 1000
    (source / "link").symlink_to("/etc")
    entry = DirTree(source).lookup("/link")  # (a tree reads each directory once)
    assert entry is not None and entry.symlink and not entry.is_dir
    with pytest.raises(ImageError, match="leads out of the directory"):
        DirTree(source).listdir("/link")
    with pytest.raises(ImageError, match="leads out of the directory"):
        DirTree(source).file("/link/hostname")
    linked = tmp_path / "linked"
    linked.symlink_to(source)  # the directory named may itself be a link: it is the source
    assert DirTree(linked).file("/debian-installer/amd64/initrd.gz").size == 2000
