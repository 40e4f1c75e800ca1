"""Clonezilla live: a Debian live-boot system with its own version file."""

from __future__ import annotations

from pxeprov.images.kinds._liveboot import LiveBootKind, fetch, lang
from pxeprov.images.kinds.registry import Served, register
from pxeprov.state import Image, Plan, repo_parts


class Clonezilla(LiveBootKind):
    name = "clonezilla"
    label = "Clonezilla live"
    product = "clonezilla"
    recognized_by = (
        "`Clonezilla-Live-Version` (or the volume id), `live/vmlinuz`, `live/initrd.img`, "
        "`live/filesystem.squashfs`"
    )
    arguments = (
        "`boot=live union=overlay username=user config components noswap edd=on nomodeset "
        'noprompt locales=… keyboard-layouts=… ocs_live_run="ocs-live-general" '
        'ocs_live_extra_param="" ocs_live_batch=no net.ifnames=0 nosplash '
        "fetch=<tftp or http>://<server>/images/<name>/filesystem.squashfs`"
    )
    detect_order = 10

    def boot_args(self, image: Image) -> str:
        return (
            "boot=live union=overlay username=user config components noswap edd=on nomodeset "
            f'noprompt {lang(image)} ocs_live_run="ocs-live-general" ocs_live_extra_param="" '
            "ocs_live_batch=no net.ifnames=0 nosplash"
        )

    def job_args(self, image: Image, served: Served, plan: Plan, repo: str) -> str | None:
        """Clonezilla's own boot parameters for an unattended job: ocs_live_run (ocs-sr in
        batch mode), ocs_live_batch=yes, the repository (ocs_repository, or for a share without
        credentials a guest mount in ocs_prerun: mount.cifs would ask for a password), and
        ocs_final_action. `-p true` leaves the end to ocs_final_action, after ocs_postrun."""
        ocs_sr = _RESTORE if plan.action == "restore" else _SAVE
        run = f"{ocs_sr} {plan.action}disk {plan.image} {plan.disk}"
        final = "poweroff" if plan.then == "poweroff" else "reboot"
        return (
            "boot=live union=overlay username=user config components noswap edd=on nomodeset "
            f"noprompt {lang(image)} {_repository(repo, plan.action == 'restore')} "
            f'ocs_live_run="{run}" ocs_live_batch=yes ocs_final_action={final} '
            f"{_reports(served, plan)} "
            f"net.ifnames=0 nosplash {fetch(image, served.url(image.rootfs))}"
        ).strip()


# ocs-sr in batch mode, text only, no confirmation (Clonezilla's documented options). A restore
# writes the partition table, the boot code and the partitions as saved (-k0 -j2), checks the
# image first (-scr off: its own check runs at save time) and leaves the restored system as it
# was saved: no grub reinstall, resize or initramfs/syslinux/udev updates (the machines of a
# room are alike). A save: partclone (-q2), parallel gzip (-z1p), no split, images readable by
# the repository's read-only (guest) share (-noabo), no fsck or encryption prompt.
_RESTORE = "ocs-sr -batch -nogui -e1 auto -e2 -j2 -scr -icds -k0 -irhr -ius -iui -p true"
_SAVE = "ocs-sr -batch -nogui -q2 -j2 -z1p -i 0 -sfsck -scs -senc -noabo -p true"


# Clonezilla SE's own report port (OCSMGRD_PORT in drbl-ocs.conf): with ocs_server=<address>
# on its command line, ocs-sr sends "<ip> <mac> <what it did, each partition's status>" there
# at the end of a job (ocs-functions' task_notify_job_is_done, with Clonezilla's ocs-socket).
REPORT_PORT = 6461
END_MESSAGE = "pxeprov:{token}:end"  # after the job, whatever its outcome (ocs_postrun)


def _reports(served: Served, plan: Plan) -> str:
    """Where the job reports: Clonezilla's own result (ocs_server), and after the job, a line
    naming the plan's token (ocs_postrun runs after ocs_live_run, whether it failed or not), so
    that a job that stopped before Clonezilla's report is known to have ended."""
    server = served.tftp.removeprefix("tftp://")
    if not plan.token:
        return f"ocs_server={server}"
    message = END_MESSAGE.format(token=plan.token)
    return f'ocs_server={server} ocs_postrun="ocs-socket -h {server} -p {REPORT_PORT} -m {message}"'


def _repository(url: str, read_only: bool) -> str:
    """The repository for ocs-live-repository (ocs_repository=URL), or, for an SMB share
    without an account, a guest mount run before the job (ocs_prerun)."""
    parts = repo_parts(url)
    if parts["scheme"] in ("smb", "smb3") and not parts["user"]:
        options = "guest,ro,vers=3.0" if read_only else "guest,vers=3.0"
        share = f"//{parts['host']}{parts['path'].rstrip('/')}"
        return f'ocs_prerun="mount -t cifs -o {options} {share} /home/partimag"'
    return f'ocs_repository="{url}"'


register(Clonezilla())
