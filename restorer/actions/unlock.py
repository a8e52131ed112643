"""unlock: remove the repository's stale locks (a dead process, or not refreshed in time)."""

from __future__ import annotations

from dataclasses import dataclass, field

from restorer.actions.context import open_repository
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.repo.lock import LockInfo, is_stale, read_locks


@dataclass
class UnlockResult:
    removed: list[LockInfo] = field(default_factory=list)
    kept: list[LockInfo] = field(default_factory=list)  # live: their runs are still going

    @property
    def outcome(self) -> Outcome:
        return Outcome.OK


def run_unlock(lp: LoadedPlan, *, remove_all: bool = False,
               run: RunRecorder | None = None) -> UnlockResult:
    """Stale locks removed; with `remove_all`, every lock (the user says no run is active)."""
    repo = open_repository(lp)
    res = UnlockResult()
    for lk in read_locks(repo.backend):
        if remove_all or is_stale(lk):
            repo.backend.delete(lk.name)
            res.removed.append(lk)
        else:
            res.kept.append(lk)
    if run:
        run.record_phase("unlock", 0.0, removed=len(res.removed), kept=len(res.kept),
                         remove_all=remove_all)
    return res
