#!/bin/bash
# Builds the test suite's live system from Debian 12 packages (mmdebstrap), the way Debian live
# and Clonezilla live are made: a root filesystem (linux-image-amd64, live-boot, live-config,
# systemd) whose initramfs carries live-boot's scripts, squashed to live/filesystem.squashfs.
# It stands in for three real systems the tests cannot download:
#   - a Debian live / Clonezilla live ISO (live/vmlinuz, live/initrd.img, live/filesystem.squashfs,
#     plus Clonezilla-Live-Version): live-boot fetches the squashfs (fetch=) and boots to userspace;
#   - Clonezilla live's unattended jobs: clonezilla, partclone, drbl and the clients of image
#     repositories (cifs-utils, nfs-common, sshfs) are in it, and a oneshot unit (the smallest
#     stand-in for Clonezilla live's start-ocs-live + ocs-live-run-menu) runs ocs_prerun*,
#     mounts ocs_repository, runs ocs_live_run and ocs_postrun* from the kernel command line;
#   - a Fedora-style live system: a dracut initramfs with livenet (livenet-initrd.img), which
#     boots the same squashfs from root=live:http://... .
# Once multi-user.target is reached, it prints "LIVE-USERSPACE-OK ..." on the serial console.
#
# usage: bash build-live-image.sh OUTDIR   (root; Debian's archive through apt; a few minutes)
#   OUTDIR/clonezilla-live.iso   OUTDIR/debian-live.iso (same files, no version file)
#   OUTDIR/livenet-initrd.img    OUTDIR/vmlinuz   OUTDIR/filesystem.squashfs   OUTDIR/MANIFEST
set -euo pipefail
OUT=${1:?usage: build-live-image.sh OUTDIR}
MIRROR=${LIVE_IMAGE_MIRROR:-http://deb.debian.org}
[ "$(id -u)" = 0 ] || { echo "build-live-image: must run as root" >&2; exit 1; }
for tool in mmdebstrap mksquashfs xorriso; do
  command -v "$tool" >/dev/null || { echo "build-live-image: $tool is missing" >&2; exit 1; }
done

W=$(mktemp -d /var/tmp/pxeprov-live-build.XXXXXX)
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
ROOTFS=$W/rootfs
ISO=$W/iso
mkdir -p "$ISO/live" "$OUT"

cat > "$W/marker.sh" <<'EOF'
#!/bin/sh
root=$(findmnt -no SOURCE,FSTYPE / | tr -s ' ' ' ')
sq=$(grep -m1 squashfs /proc/mounts | cut -d' ' -f1,2)
msg="LIVE-USERSPACE-OK pid1=$(cat /proc/1/comm) root=[$root] squashfs=[$sq] uptime=$(cut -d' ' -f1 /proc/uptime)s"
for t in /dev/ttyS0 /dev/console; do [ -w "$t" ] && { printf '\r\n%s\r\n' "$msg" > "$t"; break; }; done
echo "$msg"
EOF
cat > "$W/marker.service" <<'EOF'
[Unit]
Description=Userspace marker on the serial console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/live-userspace-marker

[Install]
WantedBy=multi-user.target
EOF
# Clonezilla live runs its jobs from tty1 (autologin, ocs-live-run-menu); the same parameters,
# read by the same helpers, without a terminal. The job runs after the marker, so it is wanted by
# the marker's unit, not by multi-user.target: a unit multi-user.target wants is ordered before
# it, and "after the marker, which is after multi-user.target" would be an ordering cycle, which
# systemd breaks by dropping one of the two jobs (either one, from boot to boot).
cat > "$W/ocs-job.sh" <<'EOF'
#!/bin/bash
DRBL_SCRIPT_PATH=/usr/share/drbl
. $DRBL_SCRIPT_PATH/sbin/drbl-conf-functions
. /etc/drbl/drbl-ocs.conf
. $DRBL_SCRIPT_PATH/sbin/ocs-functions
export LANG=en_US.UTF-8 TERM=linux
mkdir -p /var/lib/clonezilla "$ocsroot" "$ocs_log_dir"
parse_cmdline_option "ocs_live_run ocs_live_batch ocs_final_action"
[ -n "$ocs_live_run" ] || exit 0
[ "$ocs_live_run" = ocs-live-general ] && exit 0  # interactive: nothing to do unattended
say() { printf '\r\n%s\r\n' "$*" > /dev/ttyS0 2>/dev/null; echo "$*"; }
say "PXEPROV-OCS-START ocs_live_run=[$ocs_live_run]"
rc=""
ocs-run-boot-param -b ocs_prerun
if grep -q 'ocs_repository=' /proc/cmdline; then
  # ocs-live-repository asks "again? [Y/n]" in a loop when the mount fails: answer n.
  yes n | ocs-live-repository || { say "PXEPROV-OCS-RESULT repository-failed"; rc=1; }
fi
if [ -z "$rc" ]; then
  eval "$ocs_live_run" </dev/null > /dev/ttyS0 2>&1
  rc=$?
  say "PXEPROV-OCS-RESULT rc=$rc"
fi
ocs-run-boot-param -b ocs_postrun
sync
case "$ocs_final_action" in reboot|poweroff) systemctl --no-block "$ocs_final_action" ;; esac
EOF
cat > "$W/ocs-job.service" <<'EOF'
[Unit]
Description=Unattended Clonezilla job from the kernel command line (ocs_live_run, ...)
ConditionKernelCommandLine=boot=live
After=live-config.service network-online.target systemd-udev-settle.service live-userspace-marker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ocs-job
StandardInput=null
TimeoutStartSec=infinity

[Install]
WantedBy=live-userspace-marker.service
EOF

SOURCES="deb $MIRROR/debian bookworm main
deb $MIRROR/debian bookworm-updates main
deb $MIRROR/debian-security bookworm-security main"
PACKAGES=linux-image-amd64,live-boot,live-boot-initramfs-tools,busybox,initramfs-tools,systemd-sysv
PACKAGES+=,udev,live-config,live-config-systemd,user-setup,sudo,iproute2,procps,kmod,zstd
# Clonezilla's tools and what they call without declaring it, and the repositories' clients
PACKAGES+=,clonezilla,drbl,partclone,pigz,dialog,parted,gdisk,dosfstools,lvm2,net-tools,udpcast
PACKAGES+=,cifs-utils,nfs-common,sshfs,openssh-client,locales,isc-dhcp-client,psmisc
# dracut's livenet initramfs (built below, outside the live initramfs) needs curl
PACKAGES+=,curl

mmdebstrap --variant=minbase --components=main --include="$PACKAGES" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='echo live > "$1/etc/hostname"' \
  --customize-hook='sed -i "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/" "$1/etc/locale.gen" && chroot "$1" locale-gen' \
  --customize-hook="install -m 0755 '$W/marker.sh' \"\$1/usr/local/sbin/live-userspace-marker\"" \
  --customize-hook="install -m 0644 '$W/marker.service' \"\$1/etc/systemd/system/live-userspace-marker.service\"" \
  --customize-hook="install -m 0755 '$W/ocs-job.sh' \"\$1/usr/local/sbin/ocs-job\"" \
  --customize-hook="install -m 0644 '$W/ocs-job.service' \"\$1/etc/systemd/system/ocs-job.service\"" \
  --customize-hook='mkdir -p "$1/etc/systemd/system/multi-user.target.wants" "$1/etc/systemd/system/live-userspace-marker.service.wants" && ln -sf /etc/systemd/system/live-userspace-marker.service "$1/etc/systemd/system/multi-user.target.wants/" && ln -sf /etc/systemd/system/ocs-job.service "$1/etc/systemd/system/live-userspace-marker.service.wants/"' \
  --customize-hook='chroot "$1" update-initramfs -u -k all' \
  --customize-hook='chroot "$1" apt-get install -y -q --no-install-recommends dracut-core dracut-network dracut-live' \
  --customize-hook='kver=$(ls "$1/lib/modules" | sort -V | tail -1); chroot "$1" dracut --no-hostonly --force --kver "$kver" --add "livenet dmsquash-live network-legacy" --omit "plymouth" /boot/livenet-initrd.img' \
  --customize-hook='chroot "$1" apt-get purge -y -q dracut-core dracut-network dracut-live && chroot "$1" apt-get autoremove -y -q' \
  --customize-hook='rm -rf "$1/var/cache/apt/"*.bin "$1/var/lib/apt/lists/"* "$1/var/log/"*.log' \
  bookworm "$ROOTFS" "$SOURCES" >&2

kernel=$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$ROOTFS"/boot/initrd.img-* | sort -V | tail -1)
cp "$kernel" "$ISO/live/vmlinuz"
cp "$initrd" "$ISO/live/initrd.img"
cp "$ROOTFS/boot/livenet-initrd.img" "$W/livenet-initrd.img"
chroot "$ROOTFS" lsinitramfs "/boot/${initrd##*/}" > "$W/initrd.list"  # (no pipe: grep -q + pipefail)
if ! grep -q 'scripts/live' "$W/initrd.list"; then
  echo "build-live-image: the initrd has no live-boot scripts" >&2
  exit 1
fi
rm -f "$ROOTFS"/boot/initrd.img-* "$ROOTFS/boot/livenet-initrd.img"
mksquashfs "$ROOTFS" "$ISO/live/filesystem.squashfs" -comp zstd -noappend -quiet >&2

mkiso() {  # mkiso OUT VOLID
  xorriso -as mkisofs -R -J -V "$2" -o "$1.tmp" "$ISO" >&2
  mv "$1.tmp" "$1"
}
mkiso "$OUT/debian-live.iso" DEBIAN_LIVE
echo "clonezilla-live-3.1.2-22-amd64" > "$ISO/Clonezilla-Live-Version"
mkiso "$OUT/clonezilla-live.iso" CLONEZILLA
cp "$ISO/live/vmlinuz" "$OUT/vmlinuz"
cp "$ISO/live/filesystem.squashfs" "$OUT/filesystem.squashfs"
cp "$W/livenet-initrd.img" "$OUT/livenet-initrd.img"
{
  echo "kernel ${kernel##*/vmlinuz-}"
  echo "squashfs $(stat -c %s "$OUT/filesystem.squashfs")"
  echo "initrd $(stat -c %s "$ISO/live/initrd.img")"
  echo "livenet-initrd $(stat -c %s "$OUT/livenet-initrd.img")"
} > "$OUT/MANIFEST"
chmod 0644 "$OUT"/*
echo "build-live-image: $(cat "$OUT/MANIFEST" | tr '\n' ' ')" >&2
