"""End to end: the status page in a real headless browser while a real client boots.

The server's namespace runs dnsmasq (proxy), nginx (payloads and the page, under its token)
and pxeprov-watch (`watch --fire`), which writes the page's data. Debian's chromium, in that
namespace too (the page is served on the lab's address), opens the page first; then a QEMU BIOS
client boots through iPXE over HTTP to its kernel, and the page must show its MAC with every
stage to the kernel. Its screenshot is kept as the test's artefact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxeprov.bootlog import STAGE_WORDS

from .. import browser as browser_mod
from .conftest import MakeDir
from .netlab import NetLab, stop_process
from .pxeserver import REPO, UNDIONLY, OneAtATime, Served, build_root, pxeprov, watching

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAC = "52:54:00:77:20:01"
KERNEL_LIMIT = 90.0
ARTEFACTS = Path(os.environ.get("PXEPROV_ARTEFACTS", "/tmp/pxeprov-artefacts"))


def test_the_page_shows_a_booting_client_and_its_stages(lab: NetLab, make_dir: MakeDir) -> None:
    if browser_mod.missing():
        pytest.fail(f"the browser test needs {browser_mod.missing()} (tests/run-all.sh)")
    root = make_dir("pxeprov-e2e-web-")
    build_root(root, {UNDIONLY: UNDIONLY})
    pxeprov(lab, root, "init", "--no-install-packages", "--menu-timeout", "1")
    pxeprov(lab, root, "assign", MAC, "--entry", "d-i")  # boots the installer, no menu wait
    url = pxeprov(lab, root, "web", "url").stdout.strip()
    assert url.startswith("http://10.77.0.") and "/pxeprov/" in url, url
    one = OneAtATime(lab)
    try:
        served = one.serve(Served.of("web", root))
        out = lab.workdir / "web-watch.out"
        shot = ARTEFACTS / "status-page-e2e.png"
        with watching(lab, root, served, out):
            argv = ["ip", "netns", "exec", lab.ns_b, sys.executable, "-m", "tests.browser",
                    "--url", url, "--wait-stage", f"{MAC}=kernel", "--timeout",
                    str(KERNEL_LIMIT + 30), "--screenshot", str(shot)]  # fmt: skip
            page = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            try:
                ev = lab.boot("bios", MAC, served.running, limit=KERNEL_LIMIT)
                assert ev.kernel_after is not None, ev.summary()
                booted = time.monotonic()
                stdout, stderr = page.communicate(timeout=KERNEL_LIMIT + 60)
            finally:
                stop_process(page)  # type: ignore[arg-type]
        assert page.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}\n{out.read_text()}"
        found = json.loads(stdout)
        stages = dict(found["stages"])[MAC]
        # QEMU's BIOS ROM is iPXE: it takes boot.ipxe at once, with no loader of its own
        assert stages[:3] == ["offer", "menu", "kernel"], found["stages"]
        # the page says what `pxeprov watch` said, stage for stage
        said = [line for line in out.read_text().splitlines() if f"  {MAC}  " in line]
        for stage in stages:
            assert any(f" {STAGE_WORDS[stage]}" in line for line in said), (stage, said)
        assert MAC in found["text"] and found["errors"] == [], found
        assert "Boot d-i" in found["text"], found["text"]  # its plan, beside its stages
        # the page had the kernel by the time QEMU's serial console showed it, or very soon
        assert time.monotonic() - booted < 60
        assert shot.stat().st_size > 10_000
    finally:
        one.stop()
