"""restore: a snapshot into a destination directory, under a shared lock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from restorer.actions.context import locked, open_repository
from restorer.actions.progress import NoProgress, Progress
from restorer.errors import RestoreError, UsageError
from restorer.plan.load import LoadedPlan
from restorer.sources.files_restore import FilesWriter


@dataclass
class RestoreResult:
    snapshot: str
    target: str
    destination: str
    duration: float
    files: int
    dirs: int
    links: int
    bytes_written: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "snapshot": self.snapshot, "target": self.target,
            "destination": self.destination, "duration_s": round(self.duration, 3),
            "files": self.files, "dirs": self.dirs, "symlinks": self.links,
            "bytes_written": self.bytes_written,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def run_restore(
    lp: LoadedPlan,
    snapshot_ref: str,
    dest: Path,
    *,
    target: str | None = None,
    include: list[str] | None = None,
    overwrite: bool = False,
    lock_wait: float = 0.0,
    progress: Progress | None = None,
) -> RestoreResult:
    progress = progress or NoProgress()
    if target is not None:
        lp.targets([target])  # an unknown name is a plan error, not "no snapshot"
    repo = open_repository(lp)
    with locked(repo, exclusive=False, wait=lock_wait):
        repo.load_index()
        snap = repo.find_snapshot(snapshot_ref, target)
        if snap.plan != lp.name:
            raise UsageError(f"snapshot {snap.short_id} belongs to plan '{snap.plan}', "
                             f"not '{lp.name}'")
        writer = FilesWriter(repo, dest, overwrite=overwrite, include=include,
                             on_progress=progress.advance)
        start = time.monotonic()
        total = int(snap.summary.get("total_bytes", 0)) if not include else None
        progress.start(f"restore {snap.target} {snap.short_id}", total,
                       snap.summary.get("total_files") if not include else None)
        try:
            st = writer.restore(snap)
        finally:
            progress.stop()
        if include and st.files + st.dirs + st.links + st.other == 0:
            raise RestoreError(
                f"--include {' '.join(include)} matched nothing in snapshot {snap.short_id}",
                hint="paths are relative to the snapshot root, e.g. 'uploads/2024/*'",
            )
        return RestoreResult(snap.id, snap.target, str(dest), time.monotonic() - start,
                             st.files, st.dirs, st.links, st.bytes_written, st.failed,
                             st.skipped)
