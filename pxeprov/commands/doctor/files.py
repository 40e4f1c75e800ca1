"""doctor's checks of the files the menus name: there, readable by dnsmasq's user, nothing
stray under the TFTP root, and real TFTP and HTTP fetches from this server's address."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pxeprov import (
    boot,
    pipeline,
    system,
)
from pxeprov.commands.doctor.report import Check, restart_fix
from pxeprov.pipeline import Machine
from pxeprov.state import State

FETCH_TIMEOUT = 10


# ---------------------------------------------------------------- the files


def _served_files(state: State, decision: boot.Decision) -> dict[str, str]:
    """Every file a client may ask for, relative to the TFTP root -> what it is."""
    files: dict[str, str] = {}
    for c in decision.chains(state):
        for f in c.files:
            files[f.name] = f"boot loader for {c.client} clients"
        name, _template = c.menu
        files[name] = f"menu of {c.client} clients"
    for image in state.images:
        files[image.kernel] = f"kernel of image {image.name}"
        if image.initrd:
            files[image.initrd] = f"initrd of image {image.name}"
        if image.rootfs:
            files[image.rootfs] = f"root filesystem of image {image.name}"
        for extra in image.files:  # a tree ("…/") is looked at as its directory
            files[extra.rstrip("/")] = f"{'tree' if extra.endswith('/') else 'file'} of image " + (
                image.name
            )
    return files


def _unreadable(tftp_root: Path, path: Path) -> str:
    """Why dnsmasq's user (not root, not the owner) cannot read `path`, or ""."""
    try:
        st = path.stat()
    except OSError as exc:
        return exc.strerror or "cannot be read"
    if not st.st_mode & stat.S_IROTH:
        return f"mode {stat.filemode(st.st_mode)}: only its owner can read it"
    for parent in [p for p in path.parents if p == tftp_root or tftp_root in p.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return f"its directory {parent} is not searchable by others"
    return ""


def served(machine: Machine, state: State, decision: boot.Decision) -> Iterator[Check]:
    tftp_root = machine.root.path(state.tftp_root)
    problems = 0
    files = _served_files(state, decision)
    for rel, what in sorted(files.items()):
        path = tftp_root / rel
        shown = state.tftp_root / rel
        if not (path.is_dir() if what.startswith("tree") else path.is_file()):
            problems += 1
            image = what.rsplit(" ", 1)[-1]
            fix = (
                f"pxeprov add-image <its ISO> --name {image} --replace"
                if "image" in what
                else "pxeprov init"
            )
            yield Check("files.missing", "fail", f"{shown} ({what}) is missing", fix)
            continue
        why = _unreadable(tftp_root, path)
        if why:
            problems += 1
            yield Check(
                "files.readable",
                "fail",
                f"{shown} ({what}) cannot be read by dnsmasq's user: {why}",
                f"chmod a+r {shown}; chmod a+rx $(dirname {shown})",
            )
    if not problems:
        yield Check(
            "files", "pass", f"the {len(files)} files the menus name are there and readable"
        )


def strays(machine: Machine, state: State) -> Iterator[Check]:
    """What TFTP would serve that HTTP refuses: links (dnsmasq follows them, out of the root
    too) and dot names (staging and hidden files)."""
    found = pipeline.strays(machine.root, state.tftp_root)
    if not found:
        yield Check(
            "files.served",
            "pass",
            f"nothing under {state.tftp_root} that TFTP would serve and HTTP refuses (no dot "
            "file, no symbolic link)",
        )
        return
    for stray in found[:10]:
        yield Check(
            "files.link-out" if stray.leaves else "files.hidden",
            "fail" if stray.leaves else "warn",
            f"{stray.path} is {stray.what}",
            f"rm -r {stray.path}" if "dot directory" in stray.what else f"rm {stray.path}",
        )
    if len(found) > 10:
        yield Check("files.hidden", "warn", f"and {len(found) - 10} more such files")


def _curl(url: str, *extra: str) -> tuple[int, str]:
    """(curl's exit code, what -w printed)."""
    done = system.run(
        [
            "curl",
            "-sS",
            "--max-time",
            str(FETCH_TIMEOUT),
            "-o",
            os.devnull,
            "-w",
            "%{http_code} %{size_download}",
            *extra,
            url,
        ],
        check=False,
        timeout=FETCH_TIMEOUT + 10,
    )
    return done.returncode, done.stdout.strip()


_CURL_TFTP = {
    68: "file not found",
    69: "permission denied",
    28: "no answer (timeout)",
    7: "connection refused",
}


def fetches(machine: Machine, state: State, decision: boot.Decision) -> Iterator[Check]:
    if not system.have("curl"):
        yield Check(
            "fetch",
            "warn",
            "curl is not installed: no real TFTP/HTTP fetch was tried",
            "apt-get install curl",
        )
        return
    assert state.network is not None
    address = state.network.address
    tftp_root = machine.root.path(state.tftp_root)
    loaders = [f.name for c in decision.chains(state) for f in c.files]
    menus = [c.menu[0] for c in decision.chains(state)]
    bad = 0
    names = list(dict.fromkeys([*loaders, *menus]))
    for index, name in enumerate(names):
        rc, out = _curl(f"tftp://{address}/{name}", "--tftp-blksize", "1428")
        size = (tftp_root / name).stat().st_size if (tftp_root / name).is_file() else -1
        got = int(out.split()[-1]) if out.split() else -1
        if rc != 0 or got != size:
            bad += 1
            why = _CURL_TFTP.get(rc, f"curl exit {rc}") if rc else f"{got} of {size} bytes"
            yield Check(
                "fetch.tftp",
                "fail",
                f"TFTP fetch of {name} from {address}: {why}",
                restart_fix(machine, "dnsmasq")
                if rc == 28
                else "pxeprov doctor's other findings say why",
            )
            if rc == 28 and index + 1 < len(names):  # no answer: the others would wait too
                yield Check(
                    "fetch.tftp",
                    "info",
                    f"not tried, as nothing answers TFTP: {', '.join(names[index + 1 :])}",
                )
                break
    if not bad:
        yield Check(
            "fetch.tftp",
            "pass",
            f"TFTP from {address}: {', '.join(dict.fromkeys([*loaders, *menus]))}",
        )
    base = state.payload_base
    if base is None:
        return
    http_bad = 0
    for image in state.images:
        for rel in (image.kernel, image.initrd):
            if not rel:
                continue
            rc, out = _curl(f"{base}/{rel}", "--head")
            code = out.split()[0] if out else ""
            if rc != 0 or code != "200":
                http_bad += 1
                why = f"HTTP {code}" if rc == 0 else f"curl exit {rc}"
                yield Check(
                    "fetch.http", "fail", f"HEAD {base}/{rel}: {why}", restart_fix(machine, "nginx")
                )
    if not http_bad and state.images:
        yield Check("fetch.http", "pass", f"kernels and initrds answer over HTTP from {base}/")
