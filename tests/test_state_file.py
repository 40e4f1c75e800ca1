"""The state is never silently reset (issue 17, part 4).

A state file that is there but not whole (empty, only comments, cut short anywhere, not text,
nested without end) or not a file of its own (a link, a FIFO, a directory) is refused by every
command with one line and exit 2, and nothing on disk changes: read as a fresh install it would
forget every image and plan, a pending restore too. `init --start-over` starts over on purpose
and keeps the old file. The state file is root's only (it holds the plans' tokens). Values that
make no sense for a server (its address equal to the network's or the broadcast address) or a
repository (port 0, a host that is no host, a user that reads as an option) are refused.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeprov import state as state_mod
from pxeprov.errors import InputError
from pxeprov.state import check_repo

from .conftest import NET, Cli, snapshot

STATE = "etc/pxeprov/pxeprov.toml"
MAC = "52:54:00:00:17:04"
# what reads the state, and what would write a fresh one on top of a bad one
COMMANDS = (
    ["list"],
    ["plans"],
    ["render"],
    ["init", *NET, "--no-http"],
    ["init", "--dry-run"],
    ["assign", MAC, "--local"],
    ["repo", "init", "--dry-run"],
)


def _set_up(root: Path, cli: Cli) -> bytes:
    """A state with a plan in it (what a reset would lose), as pxeprov writes it."""
    assert cli(root, "init", *NET, "--no-http").exit_code == 0
    r = cli(root, "assign", MAC, "--local", "--once")
    assert r.exit_code == 0, r.stderr
    return (root / STATE).read_bytes()


def _refused_by_all(root: Path, cli: Cli, words: str) -> None:
    before = snapshot(root)
    for args in COMMANDS:
        r = cli(root, *args)
        assert r.exit_code == 2, (args, r.exit_code, r.stdout, r.stderr)
        assert words in r.stderr, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert snapshot(root) == before, args  # nothing written, nothing moved


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty: pxeprov does not take that for a fresh install"),
        (b"\n  \n\t\n", "is empty"),
        (state_mod.HEADER.encode(), "is empty but for comments"),
        (b"\xff\xfe[network]\n", "is not UTF-8 text"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deeply"),
    ],
)
def test_a_state_that_is_not_whole_is_refused(
    loader_root: Path, cli: Cli, content: bytes, words: str
) -> None:
    _set_up(loader_root, cli)
    (loader_root / STATE).write_bytes(content)
    _refused_by_all(loader_root, cli, words)
    assert (loader_root / STATE).read_bytes() == content


def test_a_state_cut_short_anywhere_is_refused(loader_root: Path, cli: Cli) -> None:
    whole = _set_up(loader_root, cli)
    assert whole.endswith(state_mod.TRAILER.encode())
    path = loader_root / STATE
    # every cut: at each line's end (valid TOML, fewer plans: the case a parser cannot see) and
    # in the middle of each line
    cuts = set()
    for i, byte in enumerate(whole[:-1]):
        if byte == ord("\n"):
            cuts |= {i + 1, i + 1 + max(1, whole.find(b"\n", i + 1) - i) // 2}
    assert len(cuts) > 30
    for cut in sorted(cuts):
        if cut >= len(whole):
            continue
        path.write_bytes(whole[:cut])
        r = cli(loader_root, "list")
        assert r.exit_code == 2, (cut, whole[:cut][-60:], r.stdout)
        assert len(r.stderr.splitlines()) == 1, r.stderr
        assert path.read_bytes() == whole[:cut]
    path.write_bytes(whole)
    assert cli(loader_root, "list").exit_code == 0


def test_the_last_line_may_be_followed_by_a_hand_edit(loader_root: Path, cli: Cli) -> None:
    whole = _set_up(loader_root, cli)
    edited = whole.replace(b'title = "pxeprov network boot"', b'title = "Room 12"')
    assert edited != whole
    (loader_root / STATE).write_bytes(edited + b"# a note of mine after the last line\n")
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    text = (loader_root / STATE).read_text()
    assert 'title = "Room 12"' in text and text.endswith(state_mod.TRAILER)


def test_a_state_written_before_the_last_line_is_read(loader_root: Path, cli: Cli) -> None:
    """A file of an older pxeprov (neither the header's new line nor the last line) is read,
    and pxeprov's next write makes it whole."""
    whole = _set_up(loader_root, cli).decode()
    old = whole.replace(state_mod.WHOLE + "\n", "").replace(state_mod.TRAILER, "")
    (loader_root / STATE).write_text(old)
    r = cli(loader_root, "plans")
    assert r.exit_code == 0 and MAC in r.stdout, r.stderr
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    assert (loader_root / STATE).read_text() == whole


def test_a_link_is_kept_and_refused(loader_root: Path, cli: Cli, tmp_path: Path) -> None:
    whole = _set_up(loader_root, cli)
    elsewhere = tmp_path / "kept.toml"
    elsewhere.write_bytes(whole)
    path = loader_root / STATE
    path.unlink()
    path.symlink_to(elsewhere)
    _refused_by_all(loader_root, cli, "is a symbolic link")
    assert path.is_symlink() and elsewhere.read_bytes() == whole


@pytest.mark.parametrize("odd", ["fifo", "directory"])
def test_an_odd_file_is_kept_and_refused(loader_root: Path, cli: Cli, odd: str) -> None:
    _set_up(loader_root, cli)
    path = loader_root / STATE
    path.unlink()
    if odd == "fifo":
        os.mkfifo(path)
        # a reader that waited for a writer would hang: the commands must not
        timer = threading.Timer(30, lambda: os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        timer.start()
        try:
            _refused_by_all(loader_root, cli, "is not a regular file")
        finally:
            timer.cancel()
        assert stat.S_ISFIFO(path.lstat().st_mode)
    else:
        path.mkdir()
        _refused_by_all(loader_root, cli, "is not a regular file")
        assert path.is_dir()


def test_start_over_on_purpose_keeps_the_old_file(loader_root: Path, cli: Cli) -> None:
    _set_up(loader_root, cli)
    path = loader_root / STATE
    path.write_bytes(b"")
    before = snapshot(loader_root)
    r = cli(loader_root, "init", "--start-over", "--dry-run", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    assert "would keep /etc/pxeprov/pxeprov.toml as /etc/pxeprov/pxeprov.toml.bad-" in r.stderr
    assert snapshot(loader_root) == before
    r = cli(loader_root, "init", "--start-over", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    kept = list(path.parent.glob("pxeprov.toml.bad-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"", kept
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert f"kept as /etc/pxeprov/{kept[0].name}" in r.stderr
    assert cli(loader_root, "list").exit_code == 0
    assert cli(loader_root, "plans").stdout.startswith("No machine has a plan")
    assert path.read_text().endswith(state_mod.TRAILER)


def test_start_over_moves_a_link_aside_as_it_is(loader_root: Path, cli: Cli) -> None:
    _set_up(loader_root, cli)
    path = loader_root / STATE
    path.unlink()
    path.symlink_to("/etc/hostname")
    r = cli(loader_root, "init", "--start-over", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    (kept,) = path.parent.glob("pxeprov.toml.bad-*")
    assert kept.is_symlink() and str(kept.readlink()) == "/etc/hostname"
    assert path.is_file() and not path.is_symlink()


def test_the_state_is_root_s_only(loader_root: Path, cli: Cli) -> None:
    _set_up(loader_root, cli)
    path = loader_root / STATE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # as an older pxeprov wrote it
    r = cli(loader_root, "init", *NET, "--no-http")
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = snapshot(loader_root)
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    assert snapshot(loader_root) == before  # re-running changes nothing


def test_a_server_address_is_a_host_s() -> None:
    """(`init --address` on the subnet's network or broadcast address: tests/test_syntax.py.)
    Any prefix: the broadcast address of a /23; a /31's two addresses are both hosts."""
    with pytest.raises(InputError, match=re.escape("is the broadcast address of 10.0.0.0/23")):
        state_mod.Network(
            "lo", state_mod.parse_address("10.0.1.255"), state_mod.parse_subnet("10.0.0.0/23")
        )
    net = state_mod.Network(
        "lo", state_mod.parse_address("10.0.0.0"), state_mod.parse_subnet("10.0.0.0/31")
    )
    assert net.address == state_mod.parse_address("10.0.0.0")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ssh://u@host:0/images", "port 0 is not a port"),
        ("ssh://u@host:99999/images", "port 99999 is not a port"),
        ("smb://-oremount@host/share/", "starts with '-'"),
        ("smb://host..lan/share/", "neither an IPv4 address nor a host name"),
        ("smb://host-/share/", "neither an IPv4 address nor a host name"),
        ("smb://-host/share/", "must be smb://"),
        ("smb://10.0.7/share/", "neither an IPv4 address nor a host name"),
        ("smb://10.0.0.300/share/", "is not an IPv4 address"),
    ],
)
def test_a_repository_url_names_a_host_and_a_port(url: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        check_repo(url)


@pytest.mark.parametrize(
    "url",
    ["smb://10.0.0.1/pxeprov-images/", "ssh://me@files.lab-2.example:2222/srv/img",
     "nfs://nas/export/img", "smb://user:p4ss@nas.local/share/x"],
)  # fmt: skip
def test_a_good_repository_url_passes(url: str) -> None:
    assert check_repo(url) == url


_GOOD = state_mod.dumps(
    state_mod.State(
        network=state_mod.Network(
            "eth0", state_mod.parse_address("10.0.0.5"), state_mod.parse_subnet("10.0.0.0/24")
        )
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(max_size=400)
    | st.builds(
        lambda cut, noise, at: _GOOD[:at] + noise + _GOOD[at + cut :],
        st.integers(0, 40),
        st.text(alphabet="[]{}=\"'#\n .,0123456789abc\\", max_size=30),
        st.integers(0, len(_GOOD)),
    )
)
def test_any_text_is_a_state_or_one_clean_error(text: str) -> None:
    """The codec on anything: a State or an InputError, never another exception."""
    try:
        state_mod.loads(text, where="fuzz")
    except InputError as exc:
        assert exc.message.startswith("fuzz: "), exc.message
        assert "\n" not in exc.message.removeprefix("fuzz: ").split(":")[0]


def test_doctor_names_the_way_out_of_a_bad_state(loader_root: Path, cli: Cli) -> None:
    _set_up(loader_root, cli)
    (loader_root / STATE).write_bytes(b"")
    r = cli(loader_root, "doctor", "--no-probe", "--json")
    (check,) = json.loads(r.stdout)["checks"]
    assert (check["name"], check["status"]) == ("state", "fail")
    assert "is empty" in check["message"] and "init --start-over" in check["fix"], check
