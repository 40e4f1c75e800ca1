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
# dnsmasq-base: the binary only. Services the packages would start (nginx's default site) are
# kept from starting: the tests start their own servers, inside network namespaces or on
# loopback. (invoke-rc.d(8): a policy-rc.d exiting 101 forbids the action.)
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    ours=1
    trap 'rm -f "$policy"' EXIT
fi
# grub-common: grub-script-check validates grub.cfg; strace: the kill-at-every-write tests;
# memtest86+ and the installer: images the tests boot; grub-pc-bin, grub-efi-amd64-bin, mtools:
# grub-mkrescue, for a bootable ISO booted as it is; mmdebstrap, squashfs-tools: the live image
# the userspace tests boot (built once, cached in /var/cache/pxeprov-tests); nftables, iptables:
# the firewall rules `pxeprov doctor` is tested against (ufw's too, loaded for real); clonezilla,
# drbl, partclone, parted, gdisk, dosfstools: the disk image the restore test saves (ocs-sr
# savedisk), and the multicast sessions' feeder (drbl's ocs-functions); udpcast: udp-sender and
# udp-receiver of those sessions; samba: its repository; chromium, chromium-driver and a font:
# the real headless browser the status page is tested in (driven by selenium from the venv);
# qemu-system-arm, qemu-efi-aarch64 (AAVMF), debian-installer-12-netboot-arm64: the ARM64
# client and the arm64 installer it boots.
apt-get install -y -q --no-install-recommends \
    dnsmasq-base pxelinux syslinux-common ipxe grub-common \
    qemu-system-x86 ovmf debian-installer-12-netboot-amd64 memtest86+ \
    grub-pc-bin grub-efi-amd64-bin mtools mmdebstrap squashfs-tools nftables iptables \
    clonezilla drbl partclone udpcast parted samba smbclient gdisk dosfstools e2fsprogs \
    nginx-light xorriso curl tftp-hpa iproute2 strace openssl python3 python3-venv \
    chromium chromium-driver fonts-dejavu-core \
    qemu-system-arm qemu-efi-aarch64 debian-installer-12-netboot-arm64
if [ -n "$ours" ]; then
    rm -f "$policy"
    trap - EXIT
fi
python3 -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt -e .
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict pxeprov
exec .venv/bin/python -m pytest "$@"
