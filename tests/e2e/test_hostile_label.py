"""End to end: a label and kernel arguments full of characters that are syntax somewhere, but
accepted by pxeprov's contract (syntax.py), and the clients still get exactly the intended menu.

The image is the menu default, with a label of GRUB's braces, quotes, iPXE's `;` and `&&`
inside words, and kernel arguments of the same. GRUB (through shim, plain OVMF) and iPXE
(snponly.efi) show the label on the console, and boot the entry with the arguments on the
kernel's command line: as given for iPXE, and for GRUB as GRUB passes quotes on (`\\'`, `\\"`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MakeDir
from .netlab import Dnsmasq, NetLab
from .pxeserver import (
    CONSOLE,
    ISO_NAME,
    TFTP_ROOT,
    build_root,
    clonezilla_iso,
    conf_for_test,
    pxeprov,
)
from .sbfiles import SecureBootFiles
from .test_secureboot import GRUB, SHIM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABEL = "O'Brien's {rescue} a;b&&c x>y |z 50% [F12]"
ARGS = "hostile.a={x} hostile.b='q' hostile.c=a;b hostile.d=x&&y hostile.e=<y>|z"
ARGS += ' hostile.f="two words"'
GRUB_MAC = "52:54:00:77:08:01"
IPXE_MAC = "52:54:00:77:08:02"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0e-\x1f]")


def _console_text(serial: str) -> str:
    """The serial console with terminal control sequences removed, lines joined."""
    return _ESCAPES.sub("", serial)


def _served(lab: NetLab, make_dir: MakeDir, files: SecureBootFiles, loader: str) -> Path:
    root = make_dir(f"pxeprov-e2e-hostile-{loader}-")
    build_root(root, {SHIM: files.shim, GRUB: files.grub})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "4", "--no-http",
            "--uefi-loader", loader, "--title", LABEL)  # fmt: skip
    iso = clonezilla_iso(make_dir("pxeprov-e2e-hostile-iso-"))
    pxeprov(lab, root, "add-image", str(iso), "--name", ISO_NAME, "--default", "--label", LABEL,
            "--append", f"{CONSOLE} {ARGS}")  # fmt: skip
    return root


@pytest.fixture(scope="module")
def roots(lab: NetLab, make_dir: MakeDir, sb_files: SecureBootFiles) -> Iterator[dict[str, Path]]:
    yield {loader: _served(lab, make_dir, sb_files, loader) for loader in ("grub", "ipxe")}


def _proxy(lab: NetLab, root: Path, name: str) -> Dnsmasq:
    conf = root / "etc/dnsmasq.d/pxeprov.conf"
    test_conf = conf_for_test(conf, root / TFTP_ROOT.lstrip("/"), lab.workdir / f"{name}.conf")
    return lab.start_dnsmasq(name, lab.ns_b, test_conf)


@pytest.mark.parametrize(
    ("loader", "mac", "expected_args"),
    [
        ("ipxe", IPXE_MAC, ARGS),
        ("grub", GRUB_MAC, ARGS.replace("'", "\\'").replace('"', '\\"')),
    ],
)
def test_hostile_label_still_gives_the_intended_menu(
    lab: NetLab, roots: dict[str, Path], loader: str, mac: str, expected_args: str
) -> None:
    proxy = _proxy(lab, roots[loader], f"hostile-{loader}")
    try:
        ev = lab.boot("uefi", mac, proxy)
    finally:
        lab.stop_dnsmasq(proxy)
    console = _console_text(ev.serial)
    assert ev.kernel_after is not None, ev.summary()
    assert LABEL in console, ev.summary()  # the entry, shown as text
    line = re.search(r"Command line: (.*)", console)
    assert line is not None, ev.summary()
    assert line.group(1).rstrip().endswith(f"{CONSOLE} {expected_args}"), line.group(1)
    # the default entry booted: its kernel and initrd came from the proxy
    for name in ("vmlinuz", "initrd.img"):
        assert f"images/{ISO_NAME}/{name}" in ev.proxy_log, ev.summary()
