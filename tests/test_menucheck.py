"""pxeprov's own checks of the iPXE script and the pxelinux menu (pxeprov/menucheck.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeprov.menucheck import (
    MenuError,
    check_dnsmasq_lines,
    parse_ipxe,
    parse_pxelinux,
)

from .conftest import NET, Cli, override_template, snapshot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IPXE = (EXAMPLES / "rendered/var/lib/tftpboot/boot.ipxe").read_text()
PXELINUX = (EXAMPLES / "rendered/var/lib/tftpboot/pxelinux.cfg/default").read_text()


def test_the_rendered_examples_read_back() -> None:
    ipxe = parse_ipxe(IPXE)
    assert ipxe.items[0] == ("local", "Boot from local disk")
    assert ipxe.default in ipxe.labels and ipxe.timeout_ms is not None
    assert all(e.kernel and e.initrds and e.boots for e in ipxe.entries.values())
    pxe = parse_pxelinux(PXELINUX)
    assert pxe.labels[0].localboot and pxe.ui == "menu.c32"
    assert sum(label.default for label in pxe.labels) == 1


def _entry_line(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.split("\n")) if line.startswith(start))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.replace("#!ipxe", "#!gpxe"), "first line"),
        (lambda t: t + "chain http://evil/x\n", "not a command"),
        (lambda t: t.replace("boot || goto failed", "boot ; shell", 1), "more than one command"),
        (lambda t: t.replace("boot || goto failed", "boot && shell", 1), "more than one command"),
        (
            lambda t: t.replace("initrd=initrd.img", "initrd=initrd.img x=${net0/ip}", 1),
            "expands a setting",
        ),
        (lambda t: t.replace("sleep 5", "sleep 5 \\"), "joins the next line"),
        (lambda t: t.replace("goto menu", "goto nowhere"), "never defined"),
        (lambda t: t.replace(":local", ":menu"), "repeated label"),
        (lambda t: t.replace("Boot from local disk", "Boot\rfrom"), "control character"),
        (lambda t: t.replace("initrd=initrd.img", "initrd=other.img", 1), "other initrds"),
    ],
)
def test_ipxe_scripts_pxeprov_does_not_write_are_refused(change: object, words: str) -> None:
    assert callable(change)
    with pytest.raises(MenuError, match=words):
        parse_ipxe(change(IPXE))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t + "SAY hello\n", "not a line"),
        (
            lambda t: t.replace("  KERNEL images/d-i", "  MENU DEFAULT\n  KERNEL images/d-i"),
            "more than one",
        ),
        (lambda t: t.replace("LOCALBOOT 0", "LOCALBOOT 0\n  LOCALBOOT 0"), "not a line"),
        (lambda t: t.replace("UI menu.c32", "UI vesamenu.c32"), "not a directive"),
        (lambda t: t.replace("LABEL local", "LABEL local\nLABEL local"), "repeated label"),
        (lambda t: t.replace("  LOCALBOOT 0\n", ""), "needs KERNEL or LOCALBOOT"),
        (lambda t: t.replace("MENU TITLE", "MENU TITLE \x1b[2J"), "control character"),
        (lambda t: t.replace("APPEND ", "APPEND x\n  APPEND ", 1), "not a line"),
    ],
)
def test_pxelinux_menus_pxeprov_does_not_write_are_refused(change: object, words: str) -> None:
    assert callable(change)
    with pytest.raises(MenuError, match=words):
        parse_pxelinux(change(PXELINUX))


def test_dnsmasq_lines(tmp_path: Path) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text("port=0\ntftp-root=/" + "a" * 1100 + "\n")
    with pytest.raises(MenuError, match="line 2 is 1111 bytes long"):
        check_dnsmasq_lines(conf)
    conf.write_text("port=0\ninterface=eth0\x00\n")
    with pytest.raises(MenuError, match="control character"):
        check_dnsmasq_lines(conf)
    conf.write_text("port=0\n")
    check_dnsmasq_lines(conf)


def test_admin_template_with_a_stray_command_never_goes_live(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET).exit_code == 0
    override_template(loader_root, "boot.ipxe.j2", ":local\n", ":local\nchain http://x/y\n")
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--title", "New title")
    assert r.exit_code == 5, r.stderr
    assert "rejected by pxeprov's iPXE check" in r.stderr and "not a command" in r.stderr
    assert snapshot(loader_root) == before


SWITCHED = """#!ipxe
:menu
menu Lab
item local Boot from local disk
iseq ${platform} efi || item img-mt Memtest86+
item img-fd FreeDOS
choose --default local target || goto local
goto ${target}

:local
exit 0

:img-mt
iseq ${platform} efi && goto img-mt-uefi || goto img-mt-bios
:img-mt-bios
kernel images/mt/vmlinuz console=ttyS0,115200
boot || goto failed
:img-mt-uefi
echo This entry does not boot on UEFI clients.
goto failed

:img-fd
sanboot --no-describe http://10.0.0.2/images/fd/image.iso || goto failed

:failed
goto menu
"""


def test_platform_switches_and_sanboot_read_back() -> None:
    menu = parse_ipxe(SWITCHED)
    assert menu.item_platforms == {"img-mt": "pcbios"}
    assert menu.entries["img-mt-bios"].kernel == "images/mt/vmlinuz"
    assert menu.entries["img-mt-bios"].initrds == []
    assert menu.entries["img-fd"].sanboot == "http://10.0.0.2/images/fd/image.iso"


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("iseq ${platform} efi || item", "iseq ${platform} efi && item", "platform switches"),
        ("iseq ${platform} efi ||", "iseq ${net0/ip} efi ||", "expands a setting"),
        ("|| goto img-mt-bios", "|| shell", "platform switches"),
        ("sanboot --no-describe", "sanboot --drive 0x80", "not a command"),
        ("image.iso || goto failed", "image.iso ; shell", "more than one command"),
    ],
)
def test_switches_pxeprov_does_not_write_are_refused(old: str, new: str, words: str) -> None:
    with pytest.raises(MenuError, match=words):
        parse_ipxe(SWITCHED.replace(old, new, 1))
