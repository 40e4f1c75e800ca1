"""The escaping contract (pxeprov/syntax.py), format by format, with generated hostile values.

For every value: either it is refused with an InputError that names it (exit 2 on the command
line), or every file rendered with it passes its real validator (dnsmasq --test, nginx -t,
grub-script-check, pxeprov's own iPXE and pxelinux checks) and, read back the way its loader
reads it, says exactly what was meant: the same title, labels, entries, kernels and arguments,
and nothing else. A value that became syntax would add, remove or change a line or a command,
and the read-back would differ.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
import tomli_w
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pxeprov import menucheck, render, syntax
from pxeprov.boot import Decision, UefiChain
from pxeprov.errors import InputError
from pxeprov.pipeline import VALIDATORS, check_kinds
from pxeprov.render import Kind
from pxeprov.state import Image, Network, State, loads

from .conftest import NET as CLI_NET
from .conftest import Cli, snapshot
from .grubwords import words
from .isos import clonezilla_files, make_iso

# nginx -t binds the listen address: it must be one this machine has.
NET = Network("lo", ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Network("127.0.0.0/8"))
# What makes a value syntax somewhere: iPXE's words and expansions, GRUB's and nginx's tokens,
# dnsmasq's separators, quotes, escapes, line breaks, and text that merely looks harmless.
NASTY = [";", "||", "&&", "#", "#x", "${x}", "$", "\\", '"', "'", "{", "}", "<", ">", "|", "&",
         ",", "=", "\n", "\r", "\t", "\x00", "\x1b[2J", " ", "  ", "é", "ü", "—", "\u2028",
         "\u00a0", "menu", "item", "goto", "boot", "chain http://x/y", "LABEL", "APPEND",
         "dhcp-script=/bin/sh", "server {", "root /;", "`", "^"]  # fmt: skip
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def hostile(max_parts: int = 8) -> st.SearchStrategy[str]:
    part = st.sampled_from(NASTY) | st.text(min_size=1, max_size=6)
    return st.lists(part, min_size=1, max_size=max_parts).map("".join)


def plausible(join: str = " ") -> st.SearchStrategy[str]:
    """Words a user might well type, with the characters that are syntax somewhere."""
    word = st.sampled_from(
        ["'", "{", "}", "<", ">", "|", "&", ";", ",", "=", "(", ")", "é", "—", "a;b", "x&&y",
         "#1", "O'Brien", "{x}", "a|b", "[F12]", "50%", "~/x", "@", "!", "*", "?", "+"]
    ) | st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True)  # fmt: skip
    return st.lists(word, min_size=1, max_size=8).map(join.join)


def hostile_words() -> st.SearchStrategy[str]:
    part = st.sampled_from(NASTY) | st.from_regex(r"[a-z0-9=_./:-]{1,8}", fullmatch=True)
    return st.lists(part, min_size=1, max_size=10).map(" ".join)


def image(**changes: object) -> Image:
    base = Image(
        name="img",
        label="Image",
        kind="custom",
        kernel="images/img/vmlinuz",
        initrd="images/img/initrd.img",
        append="quiet",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def rendered(state: State, chain: UefiChain) -> dict[str, str]:
    """Every generated file, each passed through its format's real validator."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for f in render.render(state, decision=Decision(chain)):
            if f.kind is not Kind.GENERATED:
                continue
            assert f.content is not None and f.syntax is not None
            candidate = Path(tmp) / f.path.name
            candidate.write_bytes(f.content)
            VALIDATORS[f.syntax](candidate)
            out[f.syntax] = f.content.decode()
    return out


def dnsmasq_options(text: str) -> list[tuple[str, str]]:
    """(option, value) per line as dnsmasq reads them: comments go, "..." is unquoted."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value))
    return out


def unquote_dnsmasq(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def grub_entries(text: str) -> list[list[str]]:
    """The words of each menuentry and linux/initrd line; no word may expand or be a token
    besides the entry's own `{`."""
    found = []
    for line in text.splitlines():
        ws = words(line)
        if not ws or ws[0].text not in ("menuentry", "linux", "initrd"):
            continue
        assert not any(w.expands for w in ws), line
        tokens = [w.text for w in ws if w.token]
        assert tokens == (["{"] if ws[0].text == "menuentry" else []), line
        found.append([w.text for w in ws])
    return found


def accepted(check: object, value: str, what: str) -> bool:
    assert callable(check)
    try:
        check(value, what)
    except InputError as exc:
        assert what in exc.message  # the refusal names the value's place
        event("refused")
        return False
    event("accepted")
    return True


# ---------------------------------------------------------------- text: labels, the title


@SETTINGS
@given(text=hostile() | plausible())
@example(text="a ; chain http://evil/x")
@example(text="x || shell")
@example(text="#default")
@example(text="ends in \\")
@example(text="line\nbreak")
@example(text="GRUB { } ; $x")
@example(text="O'Brien's {rescue} a;b&&c x>y |z")
@example(text='dnsmasq, with "quotes"')
def test_text_is_data_in_every_menu(text: str) -> None:
    if not accepted(syntax.check_text, text, "label"):
        return
    state = State(network=NET, title=text, images=(image(label=text),))
    for chain in ("ipxe", "grub"):
        files = rendered(state, chain)
        ipxe = menucheck.parse_ipxe(files["ipxe"]) if "ipxe" in files else None
        if ipxe is not None:  # iPXE joins a line's words with single spaces
            shown = " ".join(text.split())
            assert ipxe.title == shown
            assert ipxe.items == [("local", "Boot from local disk"), ("img-img", shown)]
            assert list(ipxe.entries) == ["img-img"]
        pxe = menucheck.parse_pxelinux(files["pxelinux"])
        assert pxe.title == text
        assert [(x.name, x.menu_label) for x in pxe.labels] == [
            ("local", "Boot from local disk"), ("img", text)]  # fmt: skip
        if "grub" in files:
            entries = grub_entries(files["grub"])
            assert [e[1] for e in entries if e[0] == "menuentry"] == ["Boot from local disk", text]
        services = [v for k, v in dnsmasq_options(files["dnsmasq"]) if k == "pxe-service"]
        assert len(services) == (3 if chain == "grub" else 5)
        for value in services:
            quoted = re.fullmatch(
                r'(?:tag:!?ipxe,)?[A-Za-z0-9_-]+,"((?:[^"\\]|\\.)*)",[\w.]+', value
            )
            assert quoted is not None, value
            assert unquote_dnsmasq(quoted.group(1)).startswith(text + " (")


# ---------------------------------------------------------------- kernel arguments


@SETTINGS
@given(args=hostile_words() | plausible())
@example(args='ocs_live_run="ocs-sr -g auto restoredisk img sda" quiet')
@example(args="ds=nocloud-net;s=http://10.0.0.1/seed/ a;b")
@example(args="quiet ; reboot")
@example(args="x #comment")
@example(args="url=${next-server}")
@example(args='odd " quote')
@example(args="{ } <x> a|b a&b 'single'")
def test_kernel_arguments_are_data(args: str) -> None:
    if not accepted(syntax.check_args, args, "append"):
        return
    state = State(network=NET, images=(image(append=args),))
    for chain in ("ipxe", "grub"):
        files = rendered(state, chain)
        pxe = menucheck.parse_pxelinux(files["pxelinux"])
        assert pxe.labels[1].append == args.strip()
        if "ipxe" in files:
            entry = menucheck.parse_ipxe(files["ipxe"]).entries["img-img"]
            assert entry.args == args.split()
        if "grub" in files:
            linux = next(e for e in grub_entries(files["grub"]) if e[0] == "linux")
            assert linux[2:] == args.split()


# ---------------------------------------------------------------- paths, interfaces, URLs


@SETTINGS
@given(path=st.lists(hostile(3) | st.sampled_from(["srv", "tftp", "var", "lib"]), min_size=1,
                     max_size=4).map(lambda parts: "/" + "/".join(parts)))  # fmt: skip
@example(path="/srv/tftp\ndhcp-script=/bin/sh")
@example(path="/srv/tftp,eth0")
@example(path="/srv/tftp;autoindex on")
@example(path="/srv/my tftp")
@example(path="/etc")
@example(path="/etc/dnsmasq.d/x")
@example(path="/var")
@example(path="/srv/tftp-boot/x_y+z.1")
def test_tftp_root_is_data(path: str) -> None:
    if not accepted(syntax.check_tftp_root, path, "tftp root"):
        return
    state = State(network=NET, tftp_root=PurePosixPath(path), http=True)
    files = rendered(state, "ipxe")
    assert ("tftp-root", path) in dnsmasq_options(files["dnsmasq"])
    roots = [
        line.split() for line in files["nginx"].splitlines() if line.strip().startswith("root")
    ]
    assert roots == [["root", f"{path};"]]


@SETTINGS
@given(name=hostile(3) | st.from_regex(r"[A-Za-z0-9_.+-]{1,15}", fullmatch=True))
@example(name="eth0\ndhcp-range=0.0.0.0,1.1.1.1")
@example(name="eth0,lo")
@example(name="br-lan.10")
def test_interface_is_data(name: str) -> None:
    if not accepted(syntax.check_interface, name, "interface"):
        return
    net = Network(name, NET.address, NET.subnet)
    files = rendered(State(network=net), "ipxe")
    assert [v for k, v in dnsmasq_options(files["dnsmasq"]) if k == "interface"] == [name]


@pytest.mark.parametrize(
    "url",
    ["http://x/a b", "http://x/a;b", "http://x/${y}", "http://x/a\nb", "ftp://x/", "http://x/#",
     "http://x:99999/", "http://x:0/", "http://a:b:c/", "http://[/", "http://-x/"],
)  # fmt: skip
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(InputError, match="base URL"):
        syntax.check_url(url, "HTTP base URL")


# ---------------------------------------------------------------- the state file is input too

STATE_KEYS = {
    "menu.title": ("menu", "title"),
    "server.tftp_root": ("server", "tftp_root"),
    "http.base_url": ("http", "base_url"),
    "network.interface": ("network", "interface"),
}
IMAGE_KEYS = ["label", "kernel", "initrd", "rootfs", "append", "locale", "keyboard", "source",
              "version", "sha256", "kind", "name"]  # fmt: skip


def base_state() -> dict[str, object]:
    return {
        "network": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
        "server": {"tftp_root": "/var/lib/tftpboot"},
        "menu": {"title": "Lab"},
        "http": {"enabled": True, "base_url": ""},
        "images": [
            {
                "name": "cz",
                "label": "CZ",
                "kind": "clonezilla",
                "kernel": "images/cz/vmlinuz",
                "initrd": "images/cz/initrd.img",
                "rootfs": "images/cz/filesystem.squashfs",
            },
        ],
    }


@SETTINGS
@given(key=st.sampled_from([*STATE_KEYS, *(f"images.{k}" for k in IMAGE_KEYS)]), value=hostile())
def test_every_state_value_is_checked_on_load(key: str, value: str) -> None:
    data = base_state()
    if key.startswith("images."):
        images = data["images"]
        assert isinstance(images, list)
        images[0][key.removeprefix("images.")] = value
        where = f"images[0].{key.removeprefix('images.')}"
    else:
        table, name = STATE_KEYS[key]
        section = data[table]
        assert isinstance(section, dict)
        section[name] = value
        where = key
    text = tomli_w.dumps(data)
    try:
        state = loads(text, where="pxeprov.toml")
        check_kinds(state, "pxeprov.toml")
    except InputError as exc:
        assert exc.message.startswith("pxeprov.toml: ")
        assert key.split(".")[-1] in exc.message, exc.message  # the key is named
        if where.startswith("images["):
            assert "images[0]." in exc.message, exc.message
        return
    for chain in ("ipxe", "grub"):
        rendered(state, chain)  # every file still passes its validator


def test_state_file_that_is_a_device_is_refused(tmp_path: Path, cli: Cli) -> None:
    state = tmp_path / "etc/pxeprov/pxeprov.toml"
    state.parent.mkdir(parents=True)
    os.mknod(state, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's device
    for args in (["list"], ["render"], ["init", *CLI_NET, "--no-install-packages"]):
        r = cli(tmp_path, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert "is not a regular file" in r.stderr and len(r.stderr.splitlines()) == 1


def test_hostile_state_fails_every_command_naming_the_key(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *CLI_NET).exit_code == 0
    state = loader_root / "etc/pxeprov/pxeprov.toml"
    text = state.read_text()
    hostile = 'tftp_root = "/var/lib/tftpboot\\ndhcp-script=/bin/sh"'
    state.write_text(text.replace('tftp_root = "/var/lib/tftpboot"', hostile))
    before = snapshot(loader_root)
    for args in (["init"], ["render"], ["list"], ["remove-image", "x"], ["add-image", "/nope"]):
        r = cli(loader_root, *args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert "server.tftp_root" in r.stderr, (args, r.stderr)
    assert snapshot(loader_root) == before


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--title", "a ; b", "--title 'a ; b' has ';' as a word"),
        ("--title", "new\nline", "--title"),
        ("--tftp-root", "/srv/tftp,eth0", "--tftp-root"),
        ("--tftp-root", "/etc/dnsmasq.d", "is inside /etc"),
        ("--tftp-root", "/var", "contains /var/lib/pxeprov"),
        ("--interface", "lo\ninterface=eth1", "--interface"),
        ("--http-base-url", "http://x/a;b", "--http-base-url"),
        ("--http-base-url", "http://x:99999/", "a port 1-65535"),
        # iPXE's `menu` (and GRUB's `menuentry`) would take it for an option: no menu at all
        ("--title", "--delete Evil", "must not start with '-'"),
        ("--address", "127.0.0.0", "is the network address of 127.0.0.0/8"),
        ("--address", "127.255.255.255", "is the broadcast address of 127.0.0.0/8"),
    ],
)
def test_options_are_refused_naming_them(
    loader_root: Path, cli: Cli, option: str, value: str, words: str
) -> None:
    assert cli(loader_root, "init", *CLI_NET).exit_code == 0
    before = snapshot(loader_root)
    given = dict(zip(CLI_NET[::2], CLI_NET[1::2], strict=True))
    given.pop(option, None)  # the option tried, instead of the lab's own value
    args = [word for pair in given.items() for word in pair]
    r = cli(loader_root, "init", *args, option, value)
    assert r.exit_code == 2, r.stderr
    assert words in r.stderr and len(r.stderr.splitlines()) == 1
    assert snapshot(loader_root) == before


def test_admin_template_cannot_write_raw_control_characters(tmp_path: Path) -> None:
    """The Jinja environment's last gate: even a template that forgets every filter cannot
    write a value with a line break (here: through a label smuggled past the state's checks)."""
    override = tmp_path / "templates"
    (override / "pxelinux.cfg").mkdir(parents=True)
    (override / "pxelinux.cfg/default.j2").write_text(
        "{% for image in images %}MENU LABEL {{ image.label ~ '\\n' }}\n{% endfor %}"
    )
    state = State(network=NET, images=(image(),))
    with pytest.raises(InputError, match="control character"):
        render.render(state, override)


def test_a_tftp_root_that_links_into_a_system_tree_is_refused(loader_root: Path, cli: Cli) -> None:
    """/srv/tftp -> ../etc: the path is fine as text, but every file under /etc would be served
    (and pxeprov's loaders and menus written there)."""
    assert cli(loader_root, "init", *CLI_NET).exit_code == 0
    (loader_root / "srv").mkdir()
    (loader_root / "srv/tftp").symlink_to("../etc")
    before = snapshot(loader_root)
    r = cli(loader_root, "init", *CLI_NET, "--tftp-root", "/srv/tftp")
    assert r.exit_code == 2, r.stdout
    assert "the TFTP root /srv/tftp leads to '/etc' is inside /etc" in r.stderr, r.stderr
    assert snapshot(loader_root) == before
    (loader_root / "srv/tftp").unlink()
    (loader_root / "srv/tftp").symlink_to("/var/lib")  # absolute: out of --root
    r = cli(loader_root, "init", *CLI_NET, "--tftp-root", "/srv/tftp")
    assert r.exit_code == 2 and "leads out of" in r.stderr, r.stderr
    (loader_root / "srv/tftp").unlink()
    (loader_root / "srv/tftp-real").mkdir()
    (loader_root / "srv/tftp").symlink_to("tftp-real")  # a link to a served tree is fine
    assert cli(loader_root, "init", *CLI_NET, "--tftp-root", "/srv/tftp").exit_code == 0


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("kernel", "--name", "images[0].kernel '--name' must be a relative path"),
        ("initrd", "images/cz/-a", "images[0].initrd"),
        ("label", "--users=nobody", "images[0].label '--users=nobody' must not start with '-'"),
        ("name", "local", "the menus use for their own entries"),
        ("name", "mt-uefi", "the menus use for their own entries"),
    ],
)
def test_state_values_that_menus_would_read_as_options_or_their_own_labels(
    key: str, value: str, words: str
) -> None:
    """iPXE's `kernel`/`initrd` take a word starting with '-' for an option, GRUB's `menuentry`
    a title starting with '--'; `local` and NAME-bios/NAME-uefi are the menus' own labels."""
    data = base_state()
    images = data["images"]
    assert isinstance(images, list)
    images[0][key] = value
    with pytest.raises(InputError) as exc:
        loads(tomli_w.dumps(data), where="pxeprov.toml")
    assert words in exc.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [("disk", "nvme\u0661n\u0661"), ("assigned", "2026-13-45T99:99:99Z"),
     ("fired", "\uff12026-11-28T13:00:00Z"), ("repo", "nfs://10.0.0.1:\u0668\u0660/x")],
)  # fmt: skip
def test_plan_values_are_ascii_and_real_times(key: str, value: str) -> None:
    data = base_state()
    data["plans"] = [{"mac": "52:54:00:12:34:56", "action": "restore", "entry": "cz",
                      "image": "img", "disk": "sda", "then": "local", key: value}]  # fmt: skip
    with pytest.raises(InputError) as exc:
        loads(tomli_w.dumps(data), where="pxeprov.toml")
    assert f"plans.{key}" in exc.value.message or "plans[0]" in exc.value.message


def test_an_iso_label_never_starts_with_a_dash() -> None:
    assert syntax.label_from_iso("--users=x Live 1.0\n") == "users x Live 1.0"
    assert syntax.label_from_iso("- - -") == ""


def test_an_image_may_not_take_a_name_of_the_menus_own(
    loader_root: Path, cli: Cli, tmp_path: Path
) -> None:
    """`local` is pxelinux's label for the disk, NAME-bios/NAME-uefi iPXE's for an image that
    boots differently per firmware: refused up front (exit 2, naming --name), not by the
    menu checker after the copy."""
    assert cli(loader_root, "init", *CLI_NET, "--no-http").exit_code == 0
    iso = make_iso(tmp_path / "local.iso", clonezilla_files())
    before = snapshot(loader_root)
    r = cli(loader_root, "add-image", str(iso))
    assert r.exit_code == 2 and "the menus use for their own entries" in r.stderr, r.stderr
    assert "give --name" in r.stderr
    r = cli(loader_root, "add-image", str(iso), "--name", "cz-uefi")
    assert r.exit_code == 2 and "--name 'cz-uefi'" in r.stderr, r.stderr
    assert snapshot(loader_root) == before
    assert cli(loader_root, "add-image", str(iso), "--name", "cz").exit_code == 0
