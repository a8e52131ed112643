"""Read-only actions: list snapshots, diff two of them, check the repository."""

from __future__ import annotations

from restorer.actions.context import open_repository, reading
from restorer.errors import UsageError
from restorer.ledger import RunRecorder
from restorer.plan.load import LoadedPlan
from restorer.progress import NoProgress, Progress
from restorer.repo.checker import Checker, CheckResult
from restorer.repo.diff import Change, diff_trees
from restorer.repo.snapshot import Snapshot
from restorer.targets import kind_of_snapshot


def list_snapshots(lp: LoadedPlan, target: str | None = None) -> list[Snapshot]:
    if target is not None:
        lp.targets([target])
    repo = open_repository(lp)
    snaps = repo.list_snapshots()
    # per plan: plans may share a repository, and each sees its own snapshots
    return [s for s in snaps if s.plan == lp.name and (target is None or s.target == target)]


def diff_snapshots(lp: LoadedPlan, a: str, b: str) -> tuple[Snapshot, Snapshot, list[Change]]:
    repo = open_repository(lp)
    repo.load_index()
    snaps = repo.list_snapshots()
    sa, sb = repo.find_snapshot(a, snapshots=snaps), repo.find_snapshot(b, snapshots=snaps)
    for s in (sa, sb):
        kind = kind_of_snapshot(s)
        if s.tree is None or (kind is not None and not kind.in_repository):
            raise UsageError(f"snapshot {s.short_id} is an {s.kind} snapshot in AWS; it holds "
                             "no files to compare")
    return sa, sb, list(diff_trees(repo, sa.tree, sb.tree))


def check_repository(lp: LoadedPlan, read_data_percent: float = 0.0,
                     progress: Progress | None = None, lock_wait: float = 0.0,
                     run: RunRecorder | None = None, no_lock: bool = False) -> CheckResult:
    if run is None:
        return _check(lp, read_data_percent, progress, lock_wait, no_lock)
    with run.phase("check") as ph:
        res = _check(lp, read_data_percent, progress, lock_wait, no_lock)
        ph.bytes = res.bytes_read
        ph.detail.update(outcome="ok" if res.ok else "failed", read_data=read_data_percent,
                         damaged_packs=len(res.damaged_packs),
                         affected_snapshots=sorted(res.affected))
    return res


def _check(lp: LoadedPlan, read_data_percent: float, progress: Progress | None,
           lock_wait: float, no_lock: bool) -> CheckResult:
    progress = progress or NoProgress()
    repo = open_repository(lp)
    with reading(repo, lock_wait, no_lock, label=f"restorer check {lp.name}"):
        total = None
        if read_data_percent > 0 and progress.wants_total:
            total = sum(o.size for o in repo.backend.list("data/"))
            total = int(total * min(read_data_percent, 100) / 100)
        progress.start("check", total)
        try:
            return Checker(repo, on_progress=progress.advance).run(read_data_percent)
        finally:
            progress.stop()
