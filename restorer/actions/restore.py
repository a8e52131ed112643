"""restore: a snapshot into a destination directory, under a shared lock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from restorer.actions.context import open_repository, reading, target_context
from restorer.errors import RestoreError, UsageError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.progress import NoProgress, Progress
from restorer.targets import kind_of_snapshot
from restorer.targets.base import RestoreRequest


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

    @property
    def outcome(self) -> Outcome:
        return Outcome.OK if self.ok else Outcome.FAILED

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
    dest: str | Path,
    *,
    target: str | None = None,
    include: list[str] | None = None,
    overwrite: bool = False,
    lock_wait: float = 0.0,
    progress: Progress | None = None,
    run: RunRecorder | None = None,
    no_lock: bool = False,
) -> RestoreResult:
    """Restore one snapshot; with `run`, the restore is a ledger phase with its timing.
    `no_lock` reads the repository without a lock (a read-only repository)."""
    if run is None:
        return _run_restore(lp, snapshot_ref, dest, target=target, include=include,
                            overwrite=overwrite, lock_wait=lock_wait, progress=progress,
                            no_lock=no_lock)
    with run.phase("restore", target=target) as ph:
        res = _run_restore(lp, snapshot_ref, dest, target=target, include=include,
                           overwrite=overwrite, lock_wait=lock_wait, progress=progress,
                           no_lock=no_lock)
        ph.bytes, ph.files = res.bytes_written, res.files
        ph.detail.update(snapshot=res.snapshot, target=res.target,
                         outcome="ok" if res.ok else "failed",
                         failed_files=len(res.failed))
    return res


def _run_restore(
    lp: LoadedPlan,
    snapshot_ref: str,
    dest: str | Path,
    *,
    target: str | None = None,
    include: list[str] | None = None,
    overwrite: bool = False,
    lock_wait: float = 0.0,
    progress: Progress | None = None,
    no_lock: bool = False,
) -> RestoreResult:
    progress = progress or NoProgress()
    if target is not None:
        lp.targets([target])  # an unknown name is a plan error, not "no snapshot"
    repo = open_repository(lp)
    with reading(repo, lock_wait, no_lock, label=f"restorer restore {lp.name}"):
        repo.load_index()
        snaps = repo.list_snapshots()
        if snapshot_ref == "latest":  # latest of this plan (plans may share a repository)
            snaps = [s for s in snaps if s.plan == lp.name]
        snap = repo.find_snapshot(snapshot_ref, target, snapshots=snaps)
        if snap.plan != lp.name:
            raise UsageError(f"snapshot {snap.short_id} belongs to plan '{snap.plan}', "
                             f"not '{lp.name}'")
        kind = kind_of_snapshot(snap)
        if kind is None:
            raise RestoreError(f"snapshots of kind '{snap.kind}' cannot be restored by this "
                               "version of restorer")
        known = {t.name: t for t in lp.plan.targets}
        start = time.monotonic()
        done = kind.restore(target_context(lp), repo, snap, known.get(snap.target),
                            RestoreRequest(str(dest), overwrite, include), progress)
        return RestoreResult(snap.id, snap.target, str(dest), time.monotonic() - start,
                             done.files, done.dirs, done.links, done.bytes_written,
                             done.failed, done.skipped)


