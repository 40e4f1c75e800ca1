"""The one progress type: the core reports, the CLI draws (a bar on a terminal, nothing else)."""

from __future__ import annotations

from collections.abc import Callable

# (what, bytes done so far, bytes in all or None when unknown)
Progress = Callable[[str, int, int | None], None]


class Counter:
    """Adds up the bytes of one task (copying an image's files, ...) and reports the sum."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def add(self, what: str, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(what, self.done, self.total)
