"""prune: forget the snapshots the retention policy does not keep, then remove the data only
they needed. Under the repository's exclusive lock: backups wait (--lock-wait) or exit 4."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from restorer.actions.context import locked, open_repository, target_context
from restorer.actions.retention import Decision, decide
from restorer.actions.verify import verified_records
from restorer.errors import SourceError, UsageError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.repo.prune import PrunePlan, execute, plan_prune
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.targets import kind_of_snapshot

log = logging.getLogger("restorer.prune")


@dataclass
class PruneResult:
    plan: str
    dry_run: bool
    decisions: dict[str, list[Decision]] = field(default_factory=dict)
    untouched: list[str] = field(default_factory=list)  # snapshots of targets not in the plan
    kept_after_error: list[str] = field(default_factory=list)
    repo: PrunePlan | None = None
    duration_s: float = 0.0

    @property
    def outcome(self) -> Outcome:
        # a snapshot whose AWS snapshots could not be deleted is kept for the next prune
        # and logged as an error; the prune itself did what it could (as before)
        return Outcome.OK

    @property
    def forgotten(self) -> list[Snapshot]:
        return [d.snapshot for ds in self.decisions.values() for d in ds if not d.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan, "dry_run": self.dry_run, "duration_s": round(self.duration_s, 3),
            "targets": {t: [{"snapshot": d.snapshot.id, "time": d.snapshot.time,
                             "keep": d.keep, "reasons": d.reasons} for d in ds]
                        for t, ds in self.decisions.items()},
            "untouched": self.untouched,
            "repository": self.repo.to_json() if self.repo else None,
        }


def _last_rollback_safety(repo: Repository, plan: str) -> set[str]:
    mine = [r for _name, r in repo.read_records("rollbacks", strict=True)
            if r.get("plan") == plan and r.get("safety")]
    return set(mine[-1]["safety"].values()) if mine else set()


def run_prune(lp: LoadedPlan, *, dry_run: bool = False, lock_wait: float = 0.0,
              allow_remove_all: bool = False, run: RunRecorder | None = None) -> PruneResult:
    start = time.monotonic()
    repo = open_repository(lp)
    res = PruneResult(lp.name, dry_run)
    with locked(repo, exclusive=True, wait=lock_wait,
                label=f"restorer prune {lp.name}") as lock:
        if run:
            run.record_phase("lock", lock.waited)
        # strict: a damaged index or snapshot record would make what it protects look unused
        repo.load_index(strict=True)
        snaps = repo.list_snapshots(strict=True)
        # strict: an unreadable record may be the one that protects a snapshot
        records = verified_records(repo, strict=True)
        verified = {sid for sid, rs in records.items() if any(r.get("passed") for r in rs)}
        protected = _last_rollback_safety(repo, lp.name)
        targets = {t.name: t for t in lp.plan.targets}
        t0 = time.monotonic()
        for name in sorted({s.target for s in snaps if s.plan == lp.name}):
            mine = [s for s in snaps if s.plan == lp.name and s.target == name]
            t = targets.get(name)
            if t is None:
                res.untouched += [s.id for s in mine]
                continue
            policy = t.retention or lp.plan.retention
            res.decisions[name] = decide(mine, policy, verified, protected,
                                         lp.plan.schedule.timezone)
            if not allow_remove_all and not any(d.keep for d in res.decisions[name]):
                raise UsageError(
                    f"the retention policy of target {name} would forget every snapshot of "
                    f"target {name} ({len(mine)}); prune refuses to leave a target with no "
                    "snapshot", hint="check the policy (a keep_tags tag that no snapshot "
                    "carries keeps nothing), or pass --allow-remove-all if that is meant")
        forget = res.forgotten
        if not dry_run:
            forget = _delete_cloud(lp, res, forget)
        gone = {s.id for s in forget}
        keep = [s for s in snaps if s.id not in gone]
        res.repo = plan_prune(repo, keep, forget)
        if run:
            run.record_phase("decide", time.monotonic() - t0, forget=len(forget),
                             keep=len(keep), bytes_freed=res.repo.bytes_freed,
                             dry_run=dry_run)
        if not dry_run:
            if run:
                with run.phase("prune") as ph:
                    execute(repo, res.repo)
                    ph.bytes = res.repo.bytes_freed
                    ph.detail.update(snapshots_forgotten=len(forget),
                                     packs_deleted=len(res.repo.delete_packs)
                                     + len(res.repo.orphan_packs),
                                     packs_repacked=len(res.repo.repack_packs))
            else:
                execute(repo, res.repo)
            _drop_verdicts(repo, gone)
    res.duration_s = time.monotonic() - start
    return res


def _delete_cloud(lp: LoadedPlan, res: PruneResult, forget: list[Snapshot]) -> list[Snapshot]:
    """What forgotten snapshots hold outside the repository (the AWS snapshots of ebs/rds
    manifests, in every region) goes first; a snapshot whose outside data could not all be
    deleted is kept, so the next prune tries again."""
    ctx = target_context(lp)
    out = []
    for s in forget:
        kind = kind_of_snapshot(s)
        if kind is not None and not kind.in_repository:
            try:
                kind.forget(ctx, s)
            except SourceError as e:
                log.error("snapshot %s of %s is kept: %s", s.short_id, s.target, e.message)
                res.kept_after_error.append(s.id)
                for d in res.decisions.get(s.target, []):
                    if d.snapshot.id == s.id:
                        d.reasons.append("AWS delete failed")
                continue
        out.append(s)
    return out


def _drop_verdicts(repo: Repository, gone: set[str]) -> None:
    """Verification records of forgotten snapshots go with them."""
    for name, rec in repo.read_records("verifications"):
        if rec.get("snapshot") in gone:
            repo.backend.delete(name)
