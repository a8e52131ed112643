"""Progress for people: a rich bar with rate and ETA on a terminal, sparse plain lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from restorer.progress import NoProgress

log = logging.getLogger("restorer.progress")


def _binary_speed_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    from restorer.cli.render import human_bytes

    class BinarySpeed(ProgressColumn):
        """Transfer speed in the binary units the summaries use (MiB/s)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_bytes(speed)}/s",
                        style="progress.data.speed")

    return BinarySpeed()


class TerminalProgress:
    wants_total = True

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._p: Any = None
        self._task: Any = None
        self._files = 0
        self._total_files: int | None = None

    def start(self, label: str, total_bytes: int | None = None,
              total_files: int | None = None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._total_files = total_files
        self._files = 0
        self._p = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            DownloadColumn(binary_units=True), _binary_speed_column(),
            TextColumn("{task.fields[files]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self._p.start()
        self._task = self._p.add_task(label, total=total_bytes, files="")

    def advance(self, nbytes: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, nbytes)

    def set_files(self, files: int) -> None:
        self._files = files
        if self._p is not None:
            tf = f"/{self._total_files}" if self._total_files is not None else ""
            self._p.update(self._task, files=f"{files}{tf} files")

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


class QuietProgress:
    """Under cron: one log line per minute at most, so a long run still shows it is alive."""

    wants_total = False
    EVERY = 60.0

    def __init__(self) -> None:
        self._label = ""
        self._bytes = 0
        self._files = 0
        self._t0 = self._last = 0.0

    def start(self, label: str, total_bytes: int | None = None,
              total_files: int | None = None) -> None:
        self._label, self._bytes, self._files = label, 0, 0
        self._t0 = self._last = time.monotonic()
        log.info("%s: started", label)

    def advance(self, nbytes: int) -> None:
        self._bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.EVERY:
            self._last = now
            rate = self._bytes / max(now - self._t0, 1e-6) / (1 << 20)
            log.info("%s: %d files, %.1f MiB done, %.1f MiB/s", self._label, self._files,
                     self._bytes / (1 << 20), rate)

    def set_files(self, files: int) -> None:
        self._files = files

    def stop(self) -> None:
        if not self._label:
            return
        took = max(time.monotonic() - self._t0, 1e-6)
        log.info("%s: %d files, %.1f MiB in %.1fs (%.1f MiB/s)", self._label, self._files,
                 self._bytes / (1 << 20), took, self._bytes / (1 << 20) / took)
        self._label = ""


def make_progress(enabled: bool) -> TerminalProgress | QuietProgress | NoProgress:
    if not enabled:
        return NoProgress()
    if sys.stderr.isatty():
        return TerminalProgress()
    return QuietProgress()
