"""The one exception hierarchy of pxeprov.

The CLI catches `PxeprovError` only, prints `error: <message>` (plus a hint) on one line and exits
with the error's `exit_code`. Exit codes are documented in README.md ("Exit codes").
"""

from __future__ import annotations


class PxeprovError(Exception):
    """Root of every error pxeprov reports to the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if self.hint is None else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class InputError(PxeprovError):
    """A value given on the command line or in the state file is not valid."""

    exit_code = 2


class ConflictError(PxeprovError):
    """A managed file was changed by hand since pxeprov wrote it. `diff`: what the hand edit
    was (a unified diff of the file on disk against what pxeprov would write), for the CLI."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None, diff: str = "") -> None:
        super().__init__(message, hint)
        self.diff = diff


class MissingFileError(PxeprovError):
    """A boot-loader file (or another file pxeprov needs) is not there."""

    exit_code = 4


class CommandError(PxeprovError):
    """An external program (apt-get, dnsmasq --test, systemctl, ip) failed."""

    exit_code = 5


class LockedError(PxeprovError):
    """Another pxeprov run holds the lock."""

    exit_code = 6


class FilesystemError(PxeprovError):
    """Reading or writing under the root failed (unwritable root, full disk, ...)."""

    exit_code = 7


class DownloadError(PxeprovError):
    """A download failed: unreachable server, HTTP error, connection lost after every retry."""

    exit_code = 8


class ChecksumError(PxeprovError):
    """A file does not match its expected SHA-256 (it was deleted)."""

    exit_code = 9


class ImageError(PxeprovError):
    """An ISO cannot be used: not an ISO, truncated, unknown layout, name taken, ..."""

    exit_code = 10


class NotServingError(PxeprovError):
    """The changes were applied, but a service does not serve (it is not running or does not
    listen where it should)."""

    exit_code = 11


class LabError(PxeprovError):
    """`verify`'s private network (not the server under test) could not be set up or torn
    down (pxeprov/vlab.py)."""

    exit_code = 12
