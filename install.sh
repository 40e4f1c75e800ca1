#!/bin/bash
# Installs pxeprov on this Debian/Ubuntu machine and runs `pxeprov init`, which makes this box a
# proxyDHCP + TFTP network-boot server on its LAN (it starts answering PXE clients).
# Arguments are passed to `pxeprov init` (e.g. --interface eth1 --no-http --dry-run).
#
# --dry-run changes nothing on this machine: it says what it would install, and shows what
# `pxeprov init` would do (run from a throw-away venv, when python3-venv is there to make one).
# Re-running it with pxeprov already installed from this same checkout needs no network.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=/opt/pxeprov
link=/usr/local/bin/pxeprov
for arg in "$@"; do
    if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
        # Says what it does and changes nothing (no root needed).
        cat <<EOT
Usage: sudo $0 [--dry-run] [PXEPROV INIT OPTIONS...]

Installs pxeprov from this checkout into $venv (a venv; python3-venv is installed with
apt-get when missing), links $link to it, then runs \`pxeprov init\` with the options
given: this box becomes a proxyDHCP + TFTP network-boot server on its LAN, beside the DHCP
server already there. Running it again changes nothing that is already so.

  --dry-run   change nothing: say what would be installed, and what \`pxeprov init\` would do
  -h, --help  this text

Every other option is pxeprov init's (for example --interface eth1, --no-http, --uefi-loader
grub).
EOT
        if [ -x "$venv/bin/pxeprov" ]; then
            echo
            echo "pxeprov init's options (the pxeprov installed in $venv):"
            "$venv/bin/pxeprov" init --help
        else
            echo "Once it is installed, \`pxeprov init --help\` lists them."
        fi
        exit 0
    fi
done
if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (sudo $0)" >&2
    exit 1
fi
dry_run=""
for arg in "$@"; do
    [ "$arg" = "--dry-run" ] && dry_run=1
done
export DEBIAN_FRONTEND=noninteractive

# The checkout's own fingerprint: an installed pxeprov from the same sources is not reinstalled.
source_id() {
    (cd "$here" && find pxeprov templates pyproject.toml -type f -not -name '*.pyc' \
        -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
        sha256sum | cut -d' ' -f1
}

have_venv() { python3 -c 'import ensurepip, venv' 2>/dev/null; }

install_into() {  # install_into VENV: pxeprov from this checkout, offline when it can be
    local target=$1
    # Offline first: the build backend is kept in the venv, and the dependencies are there
    # already when only pxeprov's own code changed.
    if "$target/bin/python" -c 'import hatchling' 2>/dev/null &&
        "$target/bin/pip" install -q --no-index --no-build-isolation "$here" 2>/dev/null; then
        return 0
    fi
    "$target/bin/pip" install -q --upgrade hatchling "$here"
}

if [ -n "$dry_run" ]; then
    echo "install.sh --dry-run: nothing on this machine is changed."
    have_venv || echo "  would install: python3 python3-venv (apt-get)"
    if [ -x "$venv/bin/pxeprov" ] && [ "$(cat "$venv/.pxeprov-source" 2>/dev/null)" = "$(source_id)" ]; then
        echo "  unchanged: $venv (pxeprov from this checkout is installed)"
        exec "$venv/bin/pxeprov" init "$@"
    fi
    echo "  would create: $venv (a venv with pxeprov from $here) and the link $link"
    if ! have_venv; then
        echo "  (pxeprov init --dry-run needs python3-venv to run: apt-get install python3-venv)"
        exit 0
    fi
    tmp=$(mktemp -d /tmp/pxeprov-dry-run.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    export PIP_NO_CACHE_DIR=1  # no cache left behind either
    python3 -m venv "$tmp/venv"
    install_into "$tmp/venv"
    "$tmp/venv/bin/pxeprov" init "$@"
    exit $?
fi

if ! have_venv; then
    apt-get update -q
    apt-get install -y -q python3 python3-venv
fi
wanted=$(source_id)
if [ -x "$venv/bin/pxeprov" ] && [ "$(cat "$venv/.pxeprov-source" 2>/dev/null)" = "$wanted" ]; then
    echo "pxeprov is installed in $venv from this checkout already."
else
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    install_into "$venv"
    echo "$wanted" > "$venv/.pxeprov-source"
fi
ln -sf "$venv/bin/pxeprov" "$link"
exec "$link" init "$@"
