#!/bin/bash
# The whole test suite, on a fresh Debian 12 machine, as root: installs the Debian packages the
# tests use (dnsmasq, boot loaders, QEMU, OVMF, a Debian installer kernel), a venv in .venv with
# pxeprov and the test tools, then runs the linters, the type checker and every test, e2e included.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "error: the tests create network namespaces and QEMU taps: run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# dnsmasq-base: the binary only (no service that would start on this machine's interfaces).
apt-get install -y -q --no-install-recommends \
    dnsmasq-base pxelinux syslinux-common ipxe \
    qemu-system-x86 ovmf debian-installer-12-netboot-amd64 \
    xorriso curl iproute2 python3 python3-venv
python3 -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt -e .
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict pxeprov
exec .venv/bin/python -m pytest "$@"
