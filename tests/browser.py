"""A real headless browser for the status page's tests: Debian's chromium, driven by Debian's
chromedriver through Selenium (nothing is downloaded: the driver's path is given).

`Browser` is used in the test process (pages on loopback). A page served inside a lab's network
namespace is only reachable from that namespace: `python -m tests.browser ...` runs there (`ip
netns exec`), waits for text on the page, saves a screenshot and prints what it found as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAPTOP = (1280, 800)
PHONE = (375, 812)


def missing() -> str:
    """What this machine lacks to run the browser ("" nothing)."""
    gone = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        gone.append("selenium (pip)")
    return ", ".join(gone)


@dataclass
class Browser:
    driver: Any  # selenium.webdriver.Chrome

    def open(self, url: str) -> None:
        self.driver.get(url)

    def size(self, width: int, height: int) -> None:
        self.driver.set_window_size(width, height)

    def js(self, script: str, *args: object) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self) -> str:
        return str(self.js("return document.body ? document.body.innerText : ''"))

    def wait(self, what: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
        """Seconds until `what()` held; raises AssertionError with the page's text after
        `timeout`."""
        start = time.monotonic()
        while not what():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not on the page after {timeout} s:\n{self.text()}")
            time.sleep(step)
        return time.monotonic() - start

    def console_errors(self) -> list[str]:
        logs = self.driver.get_log("browser")
        return [str(e.get("message")) for e in logs if e.get("level") == "SEVERE"]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))


@contextlib.contextmanager
def browser(width: int = LAPTOP[0], height: int = LAPTOP[1]) -> Iterator[Browser]:
    """A headless chromium; its profile in a temporary directory, removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="pxeprov-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def stage_reached(b: Browser, mac: str, stage: str) -> bool:
    script = ("return Array.from(document.querySelectorAll('.machine')).some(m => "
              "m.getAttribute('data-mac') === arguments[0] && "
              "Array.from(m.querySelectorAll('.stage.reached')).some("
              "s => s.getAttribute('data-stage') === arguments[1]))")  # fmt: skip
    return bool(b.js(script, mac, stage))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--wait-text", action="append", default=[])
    parser.add_argument(
        "--wait-stage",
        action="append",
        default=[],
        metavar="MAC=STAGE",
        help="wait until the machine's row marks that stage reached",
    )
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    found: dict[str, Any] = {"waited": {}, "ok": True}
    with browser() as b:
        b.open(args.url)
        for text in args.wait_text:
            try:
                found["waited"][text] = b.wait(lambda t=text: t in b.text(), args.timeout)
            except AssertionError:
                found["ok"] = False
                break
        for item in args.wait_stage if found["ok"] else []:
            mac, _, stage = item.partition("=")
            try:
                found["waited"][item] = b.wait(lambda m=mac, s=stage: stage_reached(b, m, s),
                                               args.timeout)  # fmt: skip
            except AssertionError:
                found["ok"] = False
                break
        found["text"] = b.text()
        found["stages"] = b.js(
            "return Array.from(document.querySelectorAll('.machine')).map(m => ["
            "m.getAttribute('data-mac'), Array.from(m.querySelectorAll('.stage.reached'))"
            ".map(s => s.getAttribute('data-stage'))])"
        )
        found["errors"] = b.console_errors()
        if args.screenshot is not None:
            b.screenshot(args.screenshot)
    json.dump(found, sys.stdout)
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
