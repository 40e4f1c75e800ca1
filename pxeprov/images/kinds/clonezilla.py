"""Clonezilla live: a Debian live-boot system with its own version file."""

from __future__ import annotations

from pxeprov.images.kinds._liveboot import LiveBootKind, fetch, lang
from pxeprov.images.kinds.registry import Served, register
from pxeprov.state import Image, Plan, Session, repo_parts


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

    def job_args(
        self, image: Image, served: Served, plan: Plan, repo: str, session: Session | None = None
    ) -> str | None:
        """Clonezilla's own boot parameters for an unattended job: ocs_live_run (ocs-sr in
        batch mode), ocs_live_batch=yes, the repository (ocs_repository, or for a share without
        credentials a guest mount in ocs_prerun: mount.cifs would ask for a password), and
        ocs_final_action. `-p true` leaves the end to ocs_final_action, after ocs_postrun."""
        ocs_sr = _RESTORE if plan.action == "restore" else _SAVE
        run = f"{ocs_sr} {plan.action}disk {plan.image} {plan.disk}"
        if session is not None and plan.action == "restore":
            # Clonezilla SE's client: udp-receiver for each partition from the port base up,
            # the image's other files from the repository; --max-time-to-wait bounds its pause
            # between partitions
            run = (f"{ocs_sr} --mcast-port {session.port} --max-time-to-wait {session.max_wait} "
                   f"multicast_restoredisk {plan.image} {plan.disk}")  # fmt: skip
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


# Where the job reports (the port of Clonezilla SE's own reports, OCSMGRD_PORT), and what: after
# ocs_live_run, whether it failed or not, ocs_postrun sends one line with Clonezilla's own
# ocs-socket. (Clonezilla SE's report, with ocs_server=, is not used: it also makes ocs-sr refuse
# to restore an image onto a disk of another name, sda saved, nvme0n1 restored.)
REPORT_PORT = 6461
MESSAGE = "pxeprov:{token}:{result}"  # result: done or failed
# ocs-sr writes /var/lib/clonezilla/ocs-vars only when it reaches its end (save_ocs_related_vars,
# before "Ending ocs-sr"), and logs these when a partition was not restored or saved: it goes on
# past them, so its end alone is no success.
_DONE_FILE = "/var/lib/clonezilla/ocs-vars"
_FAILED_LINES = (
    "Failed to use partclone",
    "Failed to restore partition",
    "Failed to save partition",
)
_LOG = "/var/log/clonezilla.log"


def _reports(served: Served, plan: Plan) -> str:
    """ocs_postrun: `done` when ocs-sr reached its end and logged no failed partition, else
    `failed`, to this server, naming the plan's token. No '$' (iPXE and GRUB read it), and the
    shell's && and || joined to their words (iPXE ends a command at a word of its own)."""
    if not plan.token:
        return ""
    server = served.tftp.removeprefix("tftp://")

    def send(result: str) -> str:
        message = MESSAGE.format(token=plan.token, result=result)
        return f"ocs-socket -h {server} -p {REPORT_PORT} -m {message}"

    failed = " ".join(f"-e '{line}'" for line in _FAILED_LINES)
    return (
        f'ocs_postrun="test -e {_DONE_FILE}&&! grep -qs {failed} {_LOG}&&{send("done")}'
        f'||{send("failed")}"'
    )


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
