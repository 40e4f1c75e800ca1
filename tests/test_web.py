"""The status page and its JSON API: the token (init, `web url`, `web rotate`), the data
pxeprov-watch writes, the real nginx serving both under the token only, and a real headless
browser (Debian's chromium) showing the data, hostile text as text, on a laptop and a phone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeprov.commands import web
from pxeprov.paths import Root
from pxeprov.pipeline import load_state

from . import browser as browser_mod
from .conftest import NET, Cli
from .test_evidence import Watch
from .test_http import SITE, TFTP, free_port, nginx, request
from .test_http import served_root as served_root  # a fixture

STATE = "etc/pxeprov/pxeprov.toml"
WEB = "var/lib/pxeprov/web"
DATA = f"{WEB}/api/v1/status.json"
A = "52:54:00:12:34:56"
ARTEFACTS = Path(os.environ.get("PXEPROV_ARTEFACTS", "/tmp/pxeprov-artefacts"))
SAMPLE = Path(__file__).resolve().parent / "data" / "web" / "status-sample.json"
# What hostile text could look like wherever data reaches the page
PAYLOADS = (
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    '"><svg onload="window.pwned=3">',
)


def token_of(root: Path) -> str:
    return load_state(Root.of(root)).web_token


# ---------------------------------------------------------------- the token


def test_init_gives_the_page_a_secret_once(loader_root: Path, cli: Cli) -> None:
    port = free_port()
    r = cli(loader_root, "init", *NET, "--http", "--http-port", str(port))
    assert r.exit_code == 0, r.output
    token = token_of(loader_root)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    site = loader_root / SITE
    assert f"location ^~ /pxeprov/{token}/ {{" in site.read_text()
    # the secret is in the site and the state: root's only
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    assert stat.S_IMODE((loader_root / STATE).stat().st_mode) == 0o600
    for name in ("index.html", "status.js", "status.css"):
        page = loader_root / WEB / name
        assert stat.S_IMODE(page.stat().st_mode) == 0o644 and token not in page.read_text()
    assert f'[web]\ntoken = "{token}"' in (loader_root / STATE).read_text()
    # again: nothing changes, the token stays
    r = cli(loader_root, "init", *NET, "--http", "--http-port", str(port))
    assert r.exit_code == 0 and token_of(loader_root) == token
    assert "updated" not in r.stdout and "created" not in r.stdout, r.stdout
    r = cli(loader_root, "web", "url")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"http://127.0.0.1:{port}/pxeprov/{token}/\n"


def test_init_dry_run_shows_the_page_files(loader_root: Path, cli: Cli) -> None:
    r = cli(loader_root, "init", *NET, "--http", "--dry-run")
    assert r.exit_code == 0, r.output
    for name in ("index.html", "status.js", "status.css"):
        assert f"/var/lib/pxeprov/web/{name}" in r.stdout, r.stdout
    assert not (loader_root / WEB).exists()


def test_rotate_gives_a_new_token_and_retires_the_old(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--http").exit_code == 0
    old = token_of(loader_root)
    r = cli(loader_root, "web", "rotate")
    assert r.exit_code == 0, r.output
    new = token_of(loader_root)
    assert new != old and r.stdout.strip().endswith(f"/pxeprov/{new}/")
    site = (loader_root / SITE).read_text()
    assert new in site and old not in site
    assert cli(loader_root, "web", "url").stdout.strip().endswith(f"/pxeprov/{new}/")


def test_a_server_from_before_the_page_gets_one(loader_root: Path, cli: Cli) -> None:
    """A state written before the page (no [web]): `web url` says how to add it; `web rotate`
    and `init` add it."""
    assert cli(loader_root, "init", *NET, "--http").exit_code == 0
    path = loader_root / STATE
    path.write_text(re.sub(r"\[web\]\ntoken = \"[^\"]+\"\n\n?", "", path.read_text()))
    assert token_of(loader_root) == ""
    r = cli(loader_root, "web", "url")
    assert r.exit_code == 2 and "run `pxeprov init`: it adds the page" in r.stderr, r.output
    r = cli(loader_root, "web", "rotate")
    assert r.exit_code == 0 and token_of(loader_root), r.output
    assert (loader_root / WEB / "index.html").is_file()


def test_without_nginx_there_is_no_page(loader_root: Path, cli: Cli) -> None:
    assert cli(loader_root, "init", *NET, "--no-http").exit_code == 0
    assert token_of(loader_root) == "" and not (loader_root / WEB).exists()
    for args in (["web", "url"], ["web", "rotate"]):
        r = cli(loader_root, *args)
        assert r.exit_code != 0 and "Traceback" not in r.output
        assert r.stderr.startswith("error: the status page is not set up here"), r.stderr


@pytest.mark.parametrize("token", ["short", "x" * 40 + "/../", "a b" * 20, "ä" * 40])
def test_a_bad_token_in_the_state_is_refused(loader_root: Path, cli: Cli, token: str) -> None:
    assert cli(loader_root, "init", *NET, "--http").exit_code == 0
    path = loader_root / STATE
    text = path.read_text()
    path.write_text(text.replace(token_of(loader_root), token))
    r = cli(loader_root, "web", "url")
    assert r.exit_code == 2 and "web.token must be 32 to 128 letters" in r.stderr, r.output
    assert "Traceback" not in r.output


# ---------------------------------------------------------------- the data


@pytest.fixture
def watcher(served: Path, tmp_path: Path) -> Iterator[Watch]:
    w = Watch(served, tmp_path / "watch")
    w.work.mkdir()
    try:
        yield w
    finally:
        w.end()


@pytest.fixture
def served(served_root: Path, cli: Cli, tmp_path: Path) -> Path:
    """A server with HTTP (on a free loopback port), an image and a restore plan for A."""
    from .isos import clonezilla_files, make_iso

    port = free_port()
    root = served_root
    assert cli(root, "init", *NET, "--http", "--http-port", str(port)).exit_code == 0
    iso = make_iso(tmp_path / "cz.iso", clonezilla_files())
    assert cli(root, "add-image", str(iso), "--name", "cz").exit_code == 0
    r = cli(root, "assign", A, "--restore", "img1", "--repo", "smb://user:s3cret@10.1.1.1/images",
            "--yes")  # fmt: skip
    assert r.exit_code == 0, r.output
    return root


def read_data(root: Path) -> dict[str, object]:
    data = json.loads((root / DATA).read_text())
    assert isinstance(data, dict)
    return data


def wait_data(root: Path, what: str, limit: float = 10) -> tuple[dict[str, object], float]:
    """The data once `what` is in it, and how long that took."""
    start = time.monotonic()
    while True:
        path = root / DATA
        if path.exists() and what in path.read_text():
            return read_data(root), time.monotonic() - start
        assert time.monotonic() - start < limit, path.read_text() if path.exists() else "none"
        time.sleep(0.05)


def test_the_watcher_writes_what_the_page_shows(served: Path, watcher: Watch) -> None:
    watcher.start()
    data, _ = wait_data(served, '"machines"')
    assert data["api"] == 1 and isinstance(data["generated"], float)
    # the plan's machine is there before it boots, with what it boots next
    (m,) = data["machines"]  # type: ignore[misc]
    assert m["mac"] == A and m["stage"] == "" and m["plan"]["status"] == "armed"
    assert "Clonezilla" in m["plan"]["now"] or "restore" in m["plan"]["what"].lower()
    raw = (served / DATA).read_text()
    plan = load_state(Root.of(served)).plans[0]
    # never a plan's token, nor the repository's password
    assert plan.token and plan.token not in raw and "s3cret" not in raw
    assert token_of(served) not in raw
    watcher.offer(A)
    watcher.fetched("snponly.efi", "10.0.0.9")
    watcher.fetched("boot.ipxe", "10.0.0.9")
    data, _ = wait_data(served, "10.0.0.9")
    (m,) = data["machines"]  # type: ignore[misc]
    assert [s["stage"] for s in m["timeline"]] == ["offer", "loader", "menu"]
    assert m["address"] == "10.0.0.9" and m["firmware"] == "UEFI"
    assert data["images"][0]["name"] == "cz"  # type: ignore[index]
    assert any("proxy offer" in e["text"] for e in data["events"])  # type: ignore[attr-defined]
    assert stat.S_IMODE((served / DATA).stat().st_mode) == 0o644


def test_a_request_is_in_the_data_within_two_seconds(served: Path, watcher: Watch) -> None:
    watcher.start()
    wait_data(served, '"machines"')
    times = []
    for i in range(5):
        mac = f"52:54:00:00:00:{i:02x}"
        watcher.offer(mac)
        times.append(wait_data(served, mac)[1])
    assert max(times) < 2.0, times


def test_the_data_is_bounded_and_outlives_the_watcher(served: Path, watcher: Watch) -> None:
    watcher.start()
    wait_data(served, '"machines"')
    with watcher.dnsmasq_log.open("a") as f:
        stamp = time.strftime("%b %e %H:%M:%S")
        for i in range(web.MAX_MACHINES + 50):
            mac = f"52:54:00:01:{i >> 8:02x}:{i & 255:02x}"
            f.write(f"{stamp} dnsmasq-dhcp[7]: 1 PXE(lo) {mac} proxy\n")
    last = f"52:54:00:01:{(web.MAX_MACHINES + 49) >> 8:02x}:{(web.MAX_MACHINES + 49) & 255:02x}"
    data, _ = wait_data(served, last)
    assert len(data["machines"]) == web.MAX_MACHINES  # type: ignore[arg-type]
    assert len(data["events"]) <= web.MAX_EVENTS  # type: ignore[arg-type]
    assert (served / DATA).stat().st_size < 1 << 20
    watcher.end()
    before = read_data(served)["server"]["watcher_since"]  # type: ignore[index]
    # a new watcher keeps what the last one saw, marked as from before, until it comes again
    again = Watch(served, watcher.work)
    try:
        again.start()
        data, _ = wait_data(served, '"earlier": true')
        assert data["server"]["watcher_since"] != before  # type: ignore[index]
        earlier = [m for m in data["machines"] if m["earlier"]]  # type: ignore[attr-defined]
        assert len(earlier) >= web.MAX_MACHINES - 1
        again.offer(last)

        def fresh() -> bool:
            machines = read_data(served)["machines"]
            return any(m["mac"] == last and not m["earlier"] for m in machines)  # type: ignore[attr-defined]

        deadline = time.monotonic() + 10
        while not fresh():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        again.end()


# ---------------------------------------------------------------- nginx and the browser


def web_site(root: Path, workdir: Path) -> Path:
    """The rendered site with the page's directory pointed at the test's root (the TFTP root's
    line is the `nginx` helper's)."""
    text = (root / SITE).read_text()
    line = "alias /var/lib/pxeprov/web/;"
    assert text.count(line) == 1
    site = workdir / "pxeprov.conf"
    site.write_text(text.replace(line, f"alias {root / WEB}/;"))
    return site


@pytest.fixture
def nginx_web(served: Path, tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """nginx with the served root's site: (port, the page's path, nginx's workdir)."""
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    port = load_state(Root.of(served)).http_port
    with nginx(web_site(served, workdir), served / TFTP, workdir):
        yield port, f"/pxeprov/{token_of(served)}/", workdir


def write_sample(root: Path, **changes: object) -> dict[str, object]:
    data = json.loads(SAMPLE.read_text())
    data.update(changes)
    data["generated"] = time.time()
    path = root / DATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o644)
    return data


def test_nginx_serves_the_page_only_under_its_token(
    served: Path, nginx_web: tuple[int, str, Path]
) -> None:
    port, page, workdir = nginx_web
    write_sample(served)
    token = token_of(served)
    status, body = request(port, "GET", page)
    assert status == 200 and b"status.js" in body
    for path in (f"{page}status.js", f"{page}status.css", f"{page}api/v1/status.json"):
        assert request(port, "GET", path)[0] == 200, path
    assert json.loads(request(port, "GET", f"{page}api/v1/status.json")[1])["api"] == 1
    # no token: 401; a wrong one: 403; no data either way
    for path in ("/pxeprov", "/pxeprov/", "/pxeprov/api/v1/status.json"):
        status, body = request(port, "GET", path)
        assert status in (401, 403) and b"machines" not in body, path
    assert request(port, "GET", "/pxeprov/")[0] == 401
    wrong = "A" * 43
    for path in (f"/pxeprov/{wrong}/", f"/pxeprov/{wrong}/api/v1/status.json",
                 f"/pxeprov/{token[:-1]}/api/v1/status.json",
                 f"/pxeprov/{token}x/api/v1/status.json"):  # fmt: skip
        status, body = request(port, "GET", path)
        assert status == 403 and b"machines" not in body, path
    # the address without its last slash leads to the page
    assert request(port, "GET", page.rstrip("/"))[0] == 301
    for method in ("POST", "PUT", "DELETE"):
        assert request(port, method, f"{page}api/v1/status.json")[0] in (403, 405), method
    for path in (f"{page}api/", f"{page}api/v1/", f"{page}.status.json.tmp", f"{page}nothing"):
        assert request(port, "GET", path)[0] in (403, 404), path
    # the token never reaches nginx's logs, whatever the answer
    logs = "".join(p.read_text() for p in workdir.glob("*.log"))
    assert token not in logs
    # what is not the page's is never served, token or not (a path above the root is refused
    # before any location: nginx logs such a request as it came)
    secrets = [served / STATE, served / "var/lib/pxeprov/manifest.json"]
    for path in (f"{page}../pxeprov.toml", f"{page}../../../../etc/pxeprov/pxeprov.toml",
                 f"{page}../manifest.json", f"{page}..%2fmanifest.json", f"{page}../watch.json",
                 "/etc/pxeprov/pxeprov.toml",
                 "/var/lib/pxeprov/web/api/v1/status.json"):  # fmt: skip
        status, body = request(port, "GET", path)
        assert status in (400, 403, 404), (path, status)
        for secret in secrets:
            assert secret.read_bytes()[:40] not in body


def test_the_page_headers_allow_nothing_but_the_page(
    served: Path, nginx_web: tuple[int, str, Path]
) -> None:
    import http.client

    port, page, _ = nginx_web
    write_sample(served)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for path, kind in ((page, "text/html"), (f"{page}status.js", "text/javascript"),
                           (f"{page}api/v1/status.json", "application/json")):  # fmt: skip
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            assert resp.getheader("Content-Type", "").startswith(kind)
            csp = resp.getheader("Content-Security-Policy", "")
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert resp.getheader("X-Content-Type-Options") == "nosniff"
            assert resp.getheader("Referrer-Policy") == "no-referrer"
            assert resp.getheader("Cache-Control") == "no-store"
    finally:
        conn.close()


@pytest.fixture
def chromium() -> Iterator[browser_mod.Browser]:
    lacking = browser_mod.missing()
    if lacking:
        pytest.fail(f"the browser tests need {lacking} (tests/run-all.sh installs them)")
    with browser_mod.browser() as b:
        yield b


def machines_on_page(b: browser_mod.Browser) -> list[str]:
    return list(b.js("return Array.from(document.querySelectorAll('.machine'))"
                     ".map(m => m.getAttribute('data-mac'))"))  # fmt: skip


def test_the_page_shows_hostile_text_as_text(
    served: Path, nginx_web: tuple[int, str, Path], chromium: browser_mod.Browser
) -> None:
    port, page, _ = nginx_web
    data = write_sample(served)
    machines = data["machines"]
    assert isinstance(machines, list)
    machines[0]["timeline"][0]["detail"] = PAYLOADS[0]
    machines[0]["stalled"] = PAYLOADS[1]
    machines[1]["mac"] = PAYLOADS[2]
    data["images"][0]["label"] = PAYLOADS[1]  # type: ignore[index]
    data["events"][0]["text"] = PAYLOADS[0]  # type: ignore[index]
    data["server"]["hostname"] = PAYLOADS[2]  # type: ignore[index]
    (served / DATA).write_text(json.dumps({**data, "generated": time.time()}))
    chromium.open(f"http://127.0.0.1:{port}{page}")
    chromium.wait(lambda: PAYLOADS[1] in chromium.text(), 10)
    text = chromium.text()
    assert PAYLOADS[0] in text and PAYLOADS[2] in text
    assert chromium.js("return window.pwned === undefined")
    # nothing the data holds became an element
    assert (
        chromium.js("return document.querySelectorAll('img, svg, script:not([src])').length") == 0
    )
    assert chromium.js("return document.querySelectorAll('[onerror], [onload]').length") == 0
    assert PAYLOADS[2] in machines_on_page(chromium)  # an attribute's value, as it was
    assert chromium.console_errors() == []


def test_the_page_reads_well_on_a_laptop_and_a_phone(
    served: Path, nginx_web: tuple[int, str, Path], chromium: browser_mod.Browser
) -> None:
    port, page, _ = nginx_web
    data = write_sample(served)
    first = data["machines"][0]  # type: ignore[index]
    for width, height in (browser_mod.LAPTOP, browser_mod.PHONE):
        chromium.size(width, height)
        chromium.open(f"http://127.0.0.1:{port}{page}")
        chromium.wait(lambda: first["mac"] in chromium.text(), 10)
        wide = chromium.js("return document.documentElement.scrollWidth")
        inner = chromium.js("return window.innerWidth")
        assert wide <= inner, f"{width}px: the page is {wide}px wide"
        chromium.screenshot(ARTEFACTS / f"status-page-{width}.png")
        assert chromium.console_errors() == []
    # every stage the sample's first machine reached is marked on its row
    reached = chromium.js(
        "return Array.from(document.querySelector('.machine').querySelectorAll("
        "'.stage.reached')).map(s => s.getAttribute('data-stage'))"
    )
    assert reached == [s["stage"] for s in first["timeline"]]


def test_the_page_says_what_is_wrong(
    served: Path, nginx_web: tuple[int, str, Path], chromium: browser_mod.Browser
) -> None:
    port, page, _ = nginx_web
    # no data yet
    (served / DATA).unlink(missing_ok=True)
    chromium.open(f"http://127.0.0.1:{port}{page}")
    chromium.wait(lambda: "No data yet" in chromium.text(), 10)
    # then data that stops changing: stale after three heartbeats
    write_sample(served, heartbeat=1)
    chromium.wait(lambda: "stale" in chromium.text(), 10)
    # a wrong token: nginx's 403, no page and no data
    chromium.open(f"http://127.0.0.1:{port}/pxeprov/{'B' * 43}/")
    text = chromium.text()
    assert "403" in text and "52:54:00" not in text


def test_a_page_open_in_a_browser_shows_a_new_client_within_two_seconds(
    served: Path,
    nginx_web: tuple[int, str, Path],
    watcher: Watch,
    chromium: browser_mod.Browser,
) -> None:
    port, page, _ = nginx_web
    watcher.start()
    wait_data(served, '"machines"')
    chromium.open(f"http://127.0.0.1:{port}{page}")
    chromium.wait(lambda: A in machines_on_page(chromium), 10)
    for i in range(3):
        mac = f"52:54:00:aa:00:{i:02x}"
        start = time.monotonic()
        watcher.offer(mac)
        chromium.wait(lambda m=mac: m in machines_on_page(chromium), 2.0, step=0.05)  # type: ignore[misc]
        assert time.monotonic() - start < 2.0
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(served / DATA, ARTEFACTS / "status-live.json")
