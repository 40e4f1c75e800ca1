#!/bin/bash
# Installs pxeprov on this Debian/Ubuntu machine and runs `pxeprov init`, which makes this box a
# proxyDHCP + TFTP network-boot server on its LAN (it starts answering PXE clients).
# Arguments are passed to `pxeprov init` (e.g. --interface eth1 --dry-run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -q
    apt-get install -y -q python3 python3-venv
fi
python3 -m venv /opt/pxeprov
/opt/pxeprov/bin/pip install -q --upgrade "$here"
ln -sf /opt/pxeprov/bin/pxeprov /usr/local/bin/pxeprov
exec /usr/local/bin/pxeprov init "$@"
