"""verify: restore snapshots into staging, run the plan's checks, record the verdict.

Measured RTO = wall time of the restore into staging; measured RPO = age of the newest
verified snapshot of the target. A verdict is written to the repository as a small
write-once record (`verifications/<id>`), so rollback and status can prefer verified
snapshots, and every step goes to the ledger.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from restorer import __version__, clock
from restorer.actions.checks import CheckResult, run_checks
from restorer.actions.context import locked, open_repository, target_context
from restorer.errors import RestorerError, UsageError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.targets import kind_of_snapshot
from restorer.targets.base import Stage, TargetContext


@dataclass
class TargetVerification:
    target: str
    snapshot: str | None
    snapshot_time: str | None
    passed: bool
    restore_s: float | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    data_age_s: float | None = None
    rto_breached: bool = False
    rpo_breached: bool = False
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None
    staging: str | None = None
    kept: bool = False

    @property
    def ok(self) -> bool:
        return self.passed and not self.rto_breached and not self.rpo_breached

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def verified_records(repo: Repository, strict: bool = False) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _name, rec in repo.read_records("verifications", strict):
        out.setdefault(str(rec.get("snapshot")), []).append(rec)
    return out


def newest_verified(repo: Repository, target: str, snaps: list[Snapshot]) -> Snapshot | None:
    records = verified_records(repo)
    for s in reversed(snaps):
        if s.target == target and any(r.get("passed") for r in records.get(s.id, ())):
            return s
    return None


class Verifications(list[TargetVerification]):
    """A verify's results, one per target."""

    @property
    def outcome(self) -> Outcome:
        """failed when any target's restore test failed or breached an objective."""
        return Outcome.FAILED if any(not r.ok for r in self) else Outcome.OK


class Statuses(list["TargetStatus"]):
    """`status` rows, one per target."""

    @property
    def outcome(self) -> Outcome:
        """failed when any objective is breached."""
        return Outcome.FAILED if any(r.rpo_breached or r.rto_breached or r.verify_breached
                                     for r in self) else Outcome.OK


def run_verify(lp: LoadedPlan, target_names: tuple[str, ...] = (), *,
               snapshot_ref: str = "latest", keep: bool = False,
               run: RunRecorder | None = None) -> Verifications:
    targets = lp.targets(target_names)
    repo = open_repository(lp)
    ctx = target_context(lp)
    results = []
    with locked(repo, exclusive=False, label=f"restorer verify {lp.name}"):
        repo.load_index()
        snaps = repo.list_snapshots()
        for t in targets:
            results.append(_verify_target(lp, ctx, repo, t, snaps, snapshot_ref, keep, run))
    if run:
        for r in results:
            from restorer.plan.durations import format_duration as fd

            if r.rto_breached and r.restore_s is not None and r.rto_s is not None:
                run.events.append(("objective_breach", r.target,
                                   f"restore took {fd(r.restore_s)}, RTO is {fd(r.rto_s)}"))
            if r.rpo_breached and r.rpo_s is not None:
                age = "no verified snapshot" if r.data_age_s is None else \
                    f"newest verified snapshot is {fd(r.data_age_s)} old"
                run.events.append(("objective_breach", r.target,
                                   f"{age}, RPO is {fd(r.rpo_s)}"))
    return Verifications(results)


def _verify_target(lp: LoadedPlan, ctx: TargetContext, repo: Repository, t: Any,
                   snaps: list[Snapshot], ref: str, keep: bool,
                   run: RunRecorder | None) -> TargetVerification:
    obj = t.objectives or lp.plan.objectives
    try:
        snap = repo.find_snapshot(ref, t.name, snapshots=[s for s in snaps
                                                          if s.plan == lp.name])
    except UsageError as e:
        res = TargetVerification(t.name, None, None, False, error=e.message,
                                 rto_s=obj.rto, rpo_s=obj.rpo)
        if run:  # a target that cannot even be restored is a failed restore test
            run.record_phase("restore", 0.0, target=t.name, outcome="failed", error=e.message)
        _rpo(res, repo, t.name, snaps, obj.rpo)
        return res
    res = TargetVerification(t.name, snap.id, snap.time, False, rto_s=obj.rto, rpo_s=obj.rpo)
    try:
        kind = kind_of_snapshot(snap)
        if kind is None:
            raise UsageError(f"snapshot {snap.short_id} is of kind {snap.kind}, which this "
                             "version of restorer does not know")
        if not kind.can("verify", t).can:
            raise UsageError(kind.refusal("verify", t))
        stage = kind.stage(ctx, repo, t, snap)
    except RestorerError as e:
        res.error = e.message + (f" (hint: {e.hint})" if e.hint else "")
        if run:
            run.record_phase("restore", 0.0, target=t.name, outcome="failed",
                             error=res.error, snapshot=snap.id, snapshot_time=snap.time)
        _rpo(res, repo, t.name, snaps, obj.rpo)
        return res
    res.staging = stage.location
    keep = keep or bool(t.staging and t.staging.keep)
    try:
        _restore_and_check(stage, res, t, snap, run)
        if obj.rto is not None and res.restore_s is not None and res.restore_s > obj.rto:
            res.rto_breached = True
    finally:
        d0 = time.monotonic()
        removed = False
        if keep:
            res.kept = True
        else:
            try:
                removed = stage.teardown()
            except RestorerError as e:
                res.error = (res.error + "; " if res.error else "") + \
                    f"staging teardown failed: {e.message}"
            if not removed:
                res.passed = False
                res.error = res.error or f"staging {stage.location} could not be removed"
        if run:
            run.record_phase("teardown", time.monotonic() - d0, target=t.name,
                             kept=keep, removed=removed,
                             outcome="ok" if keep or removed else "failed")
    _record(repo, res, snap)
    _rpo(res, repo, t.name, snaps, obj.rpo)
    return res


def _restore_and_check(stage: Stage, res: TargetVerification, t: Any, snap: Snapshot,
                       run: RunRecorder | None) -> None:
    t0 = time.monotonic()
    try:
        if run:
            with run.phase("restore", target=t.name) as ph:
                ph.detail.update(snapshot=snap.id, snapshot_time=snap.time,
                                 staging=stage.location)
                st = stage.restore()
                ph.bytes, ph.files = st.bytes, st.files
                ph.detail.update(outcome="ok" if not st.failed else "failed")
        else:
            stage.restore()
    except RestorerError as e:
        res.error = f"restore into staging failed: {e.message}"
        return
    res.restore_s = time.monotonic() - t0
    res.staging = stage.location  # now naming what was made (a volume id, an instance)
    res.checks += run_checks(stage, t.checks, manifest=True, target=t.name, run=run)
    res.passed = all(c.passed for c in res.checks)


def _record(repo: Repository, res: TargetVerification, snap: Snapshot) -> None:
    rec = {"snapshot": snap.id, "target": res.target, "passed": res.passed,
           "time": clock.iso(),
           "restore_s": res.restore_s, "checks": [asdict(c) for c in res.checks],
           "program_version": __version__}
    repo.write_file("verifications", json.dumps(rec, sort_keys=True).encode())


def _rpo(res: TargetVerification, repo: Repository, target: str, snaps: list[Snapshot],
         rpo: float | None) -> None:
    s = newest_verified(repo, target, snaps)
    if s is not None:
        res.data_age_s = clock.timestamp() - s.datetime.timestamp()
    if rpo is not None and (res.data_age_s is None or res.data_age_s > rpo):
        res.rpo_breached = True


@dataclass
class TargetStatus:
    plan: str
    target: str
    kind: str
    latest_snapshot: str | None
    latest_time: str | None
    latest_age_s: float | None
    verified_snapshot: str | None
    verified_time: str | None
    data_age_s: float | None
    last_restore_s: float | None
    rpo_s: float | None
    rto_s: float | None
    rpo_breached: bool
    rto_breached: bool
    snapshots: int = 0
    # the dead-man switch on restore testing: the last passing test, and objectives.verify_every
    last_test_time: str | None = None
    last_test_age_s: float | None = None
    verify_every_s: float | None = None
    verify_breached: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_status(lp: LoadedPlan) -> Statuses:
    """Per target: the latest backup, the newest verified snapshot, and both objectives."""
    repo = open_repository(lp)
    snaps = repo.list_snapshots()
    records = verified_records(repo)
    now = clock.timestamp()
    out = []
    for t in lp.plan.targets:
        obj = t.objectives or lp.plan.objectives
        mine = [s for s in snaps if s.target == t.name and s.plan == lp.name]
        latest = mine[-1] if mine else None
        verified = next((s for s in reversed(mine)
                         if any(r.get("passed") for r in records.get(s.id, ()))), None)
        last_restore = None
        if verified is not None:
            good = sorted((r for r in records[verified.id] if r.get("passed")),
                          key=lambda r: r.get("time", ""))
            last_restore = good[-1].get("restore_s") if good else None
        age = now - verified.datetime.timestamp() if verified else None
        tested = max((str(r.get("time")) for s in mine for r in records.get(s.id, ())
                      if r.get("passed") and r.get("time")), default=None)
        tested_age = now - _when(tested) if tested else None
        out.append(TargetStatus(
            lp.name, t.name, t.kind, latest.id if latest else None,
            latest.time if latest else None,
            now - latest.datetime.timestamp() if latest else None,
            verified.id if verified else None, verified.time if verified else None, age,
            last_restore, obj.rpo, obj.rto,
            obj.rpo is not None and (age is None or age > obj.rpo),
            obj.rto is not None and last_restore is not None and last_restore > obj.rto,
            len(mine), tested, tested_age, obj.verify_every,
            # nothing is owed before the target's first backup
            obj.verify_every is not None and bool(mine) and (
                tested_age if tested_age is not None
                else now - mine[0].datetime.timestamp()) > obj.verify_every))
    return Statuses(out)


def _when(iso: str) -> float:
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
