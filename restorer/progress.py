"""What actions report progress through; the CLI supplies a terminal or a quiet implementation."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    #: whether totals are worth computing (a bar with an ETA on a terminal)
    wants_total: bool

    def start(self, label: str, total_bytes: int | None = None,
              total_files: int | None = None) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def set_files(self, files: int) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    wants_total = False

    def start(self, label: str, total_bytes: int | None = None,
              total_files: int | None = None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def set_files(self, files: int) -> None:
        pass

    def stop(self) -> None:
        pass
