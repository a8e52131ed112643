"""rollback: put targets back to a known good snapshot in one step, reversibly.

Order, chosen so the service is down for as short a time as possible and nothing written
before the swap is lost:
  decide        per target, the newest verified snapshot (or the one asked for)
  restore       into a sibling of the live target (a directory next to it, a new database);
                the service is still running and nothing live has changed
  before hooks  rollback.before (stop the app)
  safety        a backup of every target's current state, tagged pre-rollback; taken with
                the app stopped, so it holds everything the swap replaces
  swap          renameat2(RENAME_EXCHANGE) for directories, two renames in one transaction
                for databases; a failed swap swaps back the targets already swapped
  after hooks   rollback.after (start the app), always once before hooks ran
  checks        the plan's checks against the live targets
A failure before the swap leaves every target as it was; after it, every target is fully
rolled back. Either way the result says which, and `--undo` returns to the safety snapshots.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from restorer import clock
from restorer.actions.backup import backup_one
from restorer.actions.checks import run_checks
from restorer.actions.context import locked, open_repository, target_context
from restorer.actions.hooks import HookRun, hooks_around
from restorer.actions.verify import verified_records
from restorer.errors import RestoreError, RestorerError, UsageError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.targets import kind_named, kind_of
from restorer.targets.base import Swap, TargetContext, TargetRollback

SAFETY_TAG = "pre-rollback"


@dataclass
class Recovery:
    """A rollback that was killed before it finished, and what was done about it: every
    target it may have half swapped is put back as it was (all targets or none)."""

    run_id: str
    reached: str  # the last step its records name: "started" (nothing live changed yet),
    #               "prepared" (safety snapshots taken, swapping: put back) or "swapped"
    #               (every target swapped: finished as it is)
    targets: dict[str, str] = field(default_factory=dict)  # target -> what was found / done
    error: str | None = None
    unresolved: bool = False  # a target a person must look at (AWS kinds)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RollbackResult:
    plan: str
    run_id: str
    dry_run: bool
    undo_of: str | None
    targets: list[TargetRollback]
    before_hooks: list[str]
    after_hooks: list[str]
    unverified: bool = False
    # --undo of cloud targets: what the undone rollback kept (the old volume or instance),
    # put back as it was instead of restoring the safety snapshot
    undo_kept: dict[str, list[str]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth reading, not a failure
    declined: bool = False  # "no" at the confirmation prompt: nothing was changed
    hooks: list[HookRun] = field(default_factory=list)  # rollback.before/after as they ran
    stamp: str = ""
    # killed rollbacks this run found unfinished and put back first
    recovered: list[Recovery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.error is None and not self.warnings
                and all(t.state == "rolled back" for t in self.targets)
                and all(c["passed"] for c in self.checks))

    @property
    def outcome(self) -> Outcome:
        """ok (a dry run too) | declined | checks_failing (an undo done, its checks
        failing) | failed."""
        if self.dry_run:
            return Outcome.OK
        if self.declined:
            return Outcome.DECLINED
        if self.ok:
            return Outcome.OK
        if self.undo_of and self.checks_failing_only:
            return Outcome.CHECKS_FAILING
        return Outcome.FAILED

    @property
    def checks_failing_only(self) -> bool:
        """Every target swapped as asked and nothing else went wrong, but the plan's checks
        fail on the result: for an undo, the state the responder chose to return to."""
        return (self.error is None and not self.warnings and bool(self.targets)
                and all(t.state == "rolled back" for t in self.targets)
                and not all(c["passed"] for c in self.checks))

    @property
    def state(self) -> str:
        states = {t.state for t in self.targets}
        return states.pop() if len(states) == 1 else "mixed"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, state=self.state,
                 outcome="dry_run" if self.dry_run else str(self.outcome))
        return d


# --- deciding -----------------------------------------------------------------------------


def _records(repo: Repository, folder: str, strict: bool = False) -> list[dict[str, Any]]:
    return [rec for _name, rec in repo.read_records(folder, strict)]


def _targets(lp: LoadedPlan, names: tuple[str, ...]) -> list[Any]:
    if names:
        targets = lp.targets(names)
    elif lp.plan.rollback.targets:
        targets = lp.targets(lp.plan.rollback.targets)
    else:
        targets = lp.targets()
    for t in targets:
        kind = kind_of(t)
        if not kind.can("rollback", t).can:
            raise UsageError(kind.refusal("rollback", t),
                             hint="name the targets to roll back with --target, or list them "
                             "in rollback.targets (`restorer kinds` shows which kinds can)")
    return targets


def _chosen_snapshots(lp: LoadedPlan, repo: Repository, targets: list[Any], to: str,
                      allow_unverified: bool, snaps: list[Snapshot]
                      ) -> tuple[list[tuple[Any, Snapshot, str | None]], bool]:
    """(target, snapshot, verified at) per target, and whether any is unverified."""
    verified: dict[str, str] = {}
    for sid, recs in verified_records(repo).items():
        good = sorted(r.get("time", "") for r in recs if r.get("passed"))
        if good:
            verified[sid] = good[-1]
    mine = [s for s in snaps if s.plan == lp.name and SAFETY_TAG not in s.tags]
    out: list[tuple[Any, Snapshot, str | None]] = []
    unverified = False
    if to not in ("latest-verified", "latest"):
        snap = repo.find_snapshot(to, None, snapshots=[s for s in snaps if s.plan == lp.name])
        chosen = [t for t in targets if t.name == snap.target]
        if not chosen:
            raise UsageError(f"snapshot {snap.short_id} is of target {snap.target}, which is "
                             "not among the targets to roll back")
        if snap.id not in verified and not allow_unverified:
            raise UsageError(f"snapshot {snap.short_id} was never verified",
                             hint="verify it first (`restorer verify PLAN --snapshot ID`), or "
                             "pass --allow-unverified")
        return [(chosen[0], snap, verified.get(snap.id))], snap.id not in verified
    for t in targets:
        ts = [s for s in mine if s.target == t.name]
        good = [s for s in ts if s.id in verified]
        if to == "latest-verified" and good:
            out.append((t, good[-1], verified[good[-1].id]))
        elif ts and (allow_unverified or (to == "latest" and ts[-1].id in verified)):
            out.append((t, ts[-1], verified.get(ts[-1].id)))
            unverified = unverified or ts[-1].id not in verified
        elif not ts:
            raise UsageError(f"target {t.name} has no snapshot to roll back to",
                             hint="run `restorer backup PLAN` first")
        else:
            raise UsageError(f"target {t.name} has no verified snapshot",
                             hint="run `restorer verify PLAN` to verify one, or pass "
                             "--allow-unverified to take the newest snapshot unverified")
    return out, unverified


def _reuses_kept(kind_name: Any) -> bool:
    """Whether --undo of a target of this kind puts back what the rollback kept."""
    kind = kind_named(str(kind_name))
    return kind is not None and kind.undo_reuses_kept


# --- acting -------------------------------------------------------------------------------


@contextmanager
def _timed(result: RollbackResult, name: str, run: RunRecorder | None,
           target: str | None = None) -> Iterator[Any]:
    t0 = time.monotonic()
    try:
        if run:
            with run.phase(name, target=target) as ph:
                yield ph
        else:
            yield None
    finally:
        key = f"{name}_s"
        result.timings[key] = result.timings.get(key, 0.0) + time.monotonic() - t0


def run_rollback(lp: LoadedPlan, names: tuple[str, ...] = (), *, to: str = "latest-verified",
                 allow_unverified: bool = False, dry_run: bool = False, undo: bool = False,
                 confirm: Callable[[RollbackResult], bool] | None = None,
                 run: RunRecorder | None = None) -> RollbackResult:
    start = time.monotonic()
    repo = open_repository(lp)
    run_id = run.run_id if run else os.urandom(16).hex()
    # unique per run: two rollbacks within one second must never share a database name
    stamp = clock.now().strftime("%Y%m%dT%H%M%S") + "_" + run_id[:6]
    r = lp.plan.rollback
    ctx = target_context(lp)
    with locked(repo, exclusive=True, label=f"restorer rollback {lp.name}") as lock:
        if run:
            run.record_phase("lock", lock.waited)
        repo.load_index()
        snaps = repo.list_snapshots()
        result = RollbackResult(lp.name, run_id, dry_run, None, [], list(r.before),
                                list(r.after), stamp=stamp)
        # a killed rollback first: its targets go back to as they were, whole
        result.recovered = recover(lp, ctx, repo, snaps, run_id, dry_run=dry_run, run=run)
        for rv in result.recovered:
            if not rv.ok:
                raise RestoreError(f"rollback {rv.run_id[:8]} was killed half way and could "
                                   f"not be put back: {rv.error}; nothing else was done",
                                   hint="fix the cause and run `restorer rollback PLAN "
                                   "--cleanup`")
        with _timed(result, "decide", run):
            chosen, result.unverified = _snapshots_to_roll_back(
                lp, repo, names, to, allow_unverified, undo, snaps, result)
            swaps = []
            for t, snap, verified_at in chosen:
                kind = kind_of(t)
                record = TargetRollback(t.name, kind.name, kind.live(ctx, t), snap.id,
                                        snap.time,
                                     verified_at)
                sw = kind.swap(ctx, repo, t, snap, stamp, record,
                               reuse=(result.undo_kept.get(t.name) or [None])[0])
                record.changes = sw.preview()
                result.targets.append(record)
                swaps.append(sw)
        if dry_run:
            result.timings["total_s"] = time.monotonic() - start
            return result
        if confirm is not None and not confirm(result):
            result.declined = True
            return result
        _write_record(repo, result, "started", swaps)  # names what it will make
        _restore_swap_and_check(lp, ctx, repo, result, swaps, snaps, run)
    result.timings["total_s"] = time.monotonic() - start
    return result


def _snapshots_to_roll_back(lp: LoadedPlan, repo: Repository, names: tuple[str, ...],
                            to: str, allow_unverified: bool, undo: bool,
                            snaps: list[Snapshot], result: RollbackResult
                            ) -> tuple[list[tuple[Any, Snapshot, str | None]], bool]:
    if not undo:
        return _chosen_snapshots(lp, repo, _targets(lp, names), to, allow_unverified, snaps)
    recs = [x for x in _records(repo, "rollbacks") if x.get("plan") == lp.name
            and x.get("safety") and x.get("status") != "reverted"]
    if not recs:
        raise UsageError(f"plan {lp.name} has no rollback to undo")
    last = recs[-1]
    result.undo_of = last["run_id"]
    result.undo_kept = {t["target"]: t.get("kept", []) for t in last.get("targets", [])
                        if _reuses_kept(t.get("kind")) and t.get("state") == "rolled back"}
    by_id = {s.id: s for s in snaps}
    out = []
    for name, sid in last["safety"].items():
        if names and name not in names:
            continue
        if sid not in by_id:
            raise RestorerError(f"the safety snapshot {sid[:8]} of target {name} is gone from "
                                "the repository; the rollback cannot be undone")
        out.append((lp.targets([name])[0], by_id[sid], None))
    return out, False


def _write_record(repo: Repository, result: RollbackResult, status: str,
                  swaps: list[Swap] | None = None) -> None:
    _put_record(repo, {
        "run_id": result.run_id, "plan": result.plan, "status": status,
        "stamp": result.stamp, "journal": {sw.t.name: sw.journal() for sw in swaps or []},
        "undo_of": result.undo_of,
        "safety": {t.target: t.safety_snapshot for t in result.targets if t.safety_snapshot},
        "targets": [asdict(t) for t in result.targets]})


def _put_record(repo: Repository, rec: dict[str, Any]) -> None:
    """One rollback record, stamped with restorer's time, the real write time (which orders
    records of one drill time) and this host."""
    rec = {**rec, "time": clock.iso(), "written_ns": time.time_ns(),
           "host": socket.gethostname()}
    repo.write_file("rollbacks", json.dumps(rec, sort_keys=True).encode())


def _restore_swap_and_check(lp: LoadedPlan, ctx: TargetContext, repo: Repository,
                            result: RollbackResult, swaps: list[Swap], snaps: list[Snapshot],
                            run: RunRecorder | None) -> None:
    # 1. restore every target beside its live copy; nothing live changes
    try:
        for sw in swaps:
            t0 = time.monotonic()
            with _timed(result, "restore", run, sw.t.name) as ph:
                sw.restore()
                if ph is not None:
                    ph.detail.update(snapshot=sw.snap.id)
            sw.record.restore_s = time.monotonic() - t0
    except RestorerError as e:
        result.error = f"restore failed, nothing was changed: {e.message}" + (
            f"\nHint: {e.hint}" if e.hint else "")
        _discard(swaps, result)
        return
    r = lp.plan.rollback
    env = {"RESTORER_PLAN": lp.name, "RESTORER_ROLLBACK": result.run_id}
    swapped = False
    try:
        def heard(h: HookRun) -> None:
            result.hooks.append(h)
            if run:
                run.record_phase("hook", h.duration_s, hook=h.phase, command=h.command,
                                 exit_code=h.exit_code, output=h.output,
                                 outcome="ok" if h.error is None else "failed", error=h.error)

        with hooks_around(r.before, r.after, [], what=f"rollback of plan {lp.name}",
                          timeout=lp.plan.hooks.timeout, env=env, on_hook=heard) as outcome:
            # 2. the safety snapshots, with the app stopped
            for sw in swaps:
                with _timed(result, "safety_snapshot", run, sw.t.name) as ph:
                    b = backup_one(lp, ctx, repo, sw.t, snaps,
                                   (SAFETY_TAG, f"rollback-{result.run_id[:8]}"))
                    if not b.ok:
                        raise RestoreError(f"the safety snapshot failed: {b.error}", b.hint)
                    sw.record.safety_snapshot = b.snapshot
                    if ph is not None:
                        ph.detail.update(snapshot=b.snapshot)
            # what no backup holds stays live: planned (and refused when it cannot be
            # carried over) before anything moves, and written down for a killed run
            by_id = {s.id: s for s in snaps}
            for sw in swaps:
                safety = by_id.get(sw.record.safety_snapshot or "")
                if safety is None:
                    continue
                try:
                    sw.prepare(safety)
                except OSError as e:
                    raise RestoreError(f"target {sw.t.name}: cannot read the live tree: "
                                       f"{e}") from None
            _write_record(repo, result, "prepared", swaps)
            # 3. the swap: all targets or none. SIGTERM/SIGHUP/SIGINT wait until the record
            # says it happened, so a terminated run is never put back under a running app
            blocked = _block_signals()
            with _timed(result, "swap", run):
                try:
                    for sw in swaps:
                        t0 = time.monotonic()
                        sw.swap()
                        sw.record.swap_s = time.monotonic() - t0
                        sw.record.state = "rolled back"
                except BaseException as e:
                    _swap_back(swaps, result)
                    _unblock_signals(blocked)
                    if isinstance(e, OSError):
                        raise RestoreError(f"the swap failed: {e}") from None
                    raise
            swapped = True
            try:
                # from here a killed run is finished, not reverted: the app may write again
                _write_record(repo, result, "swapped", swaps)
            finally:
                _unblock_signals(blocked)
    except RestorerError as e:
        result.error = (f"{e.message}; " + ("every target is rolled back" if swapped else
                                            "nothing was changed")
                        + (f"\nHint: {e.hint}" if e.hint else ""))
        if not swapped:
            _discard(swaps, result)
        _write_record(repo, result, "failed", swaps)
        return
    result.warnings += outcome.warnings
    # 4. the plan's checks against the live targets
    with _timed(result, "checks", run):
        for sw in swaps:
            result.checks += _check_live(sw, run)
    if result.ok:
        for sw in swaps:
            why = sw.after_success()
            if why:
                result.notes.append(f"target {sw.t.name}: {why}")
    _write_record(repo, result, "done" if result.ok else "failed", swaps)


_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


def _block_signals() -> set[int] | None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK,
                                      {getattr(signal, n) for n in _SIGNALS}))


def _unblock_signals(before: set[int] | None) -> None:
    import signal

    if before is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _discard(swaps: list[Swap], result: RollbackResult) -> None:
    for sw in swaps:
        if sw.record.state == "unknown":  # its sibling may hold live data: kept for a person
            result.warnings.append(f"target {sw.t.name}: its sibling copies are kept (the "
                                   "swap back did not finish); look at them before removing")
            continue
        try:
            sw.discard()
        except RestorerError as e:
            result.warnings.append(f"target {sw.t.name}: could not remove the sibling copy: "
                                   f"{e.message}")


def _swap_back(swaps: list[Swap], result: RollbackResult) -> None:
    for sw in swaps:
        if not sw.touched:
            sw.record.state = "as before"
            continue
        try:
            sw.swap_back()
            sw.record.state = "as before"
        except (RestorerError, OSError) as e:
            sw.record.state = "unknown"
            sw.record.error = (f"could not be swapped back: {getattr(e, 'message', e)}; run "
                            "`restorer rollback PLAN --undo`")


def _check_live(sw: Swap, run: RunRecorder | None) -> list[dict[str, Any]]:
    checks = run_checks(sw.check_subject(), sw.t.checks, manifest=sw.live_manifest,
                        target=sw.t.name, run=run)
    return [{"target": sw.t.name, **asdict(cr)} for cr in checks]


# --- killed rollbacks and leftovers -----------------------------------------------------

FINISHED = ("done", "failed", "reverted", "finished", "unresolved")
PROGRESS = {"started": 0, "prepared": 1, "swapped": 2}


def _local(rec: dict[str, Any]) -> bool:
    """Written on this host (records from before hosts were recorded count as local)."""
    return rec.get("host") in (None, socket.gethostname())
def _unfinished(repo: Repository, plan: str, strict: bool) -> list[dict[str, Any]]:
    """The newest record of each rollback of `plan` that never wrote an end record. The
    caller holds the exclusive lock, which a rollback holds for its whole run: such a
    rollback was killed."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for rec in _records(repo, "rollbacks", strict):
        if rec.get("plan") == plan and rec.get("run_id"):
            by_run.setdefault(rec["run_id"], []).append(rec)
    # the furthest step a run's records name (not the newest by time: drills fix the clock)
    return [max(recs, key=lambda r: PROGRESS.get(str(r.get("status")), -1))
            for recs in by_run.values()
            if not any(r.get("status") in FINISHED for r in recs) and all(map(_local, recs))]


def recover(lp: LoadedPlan, ctx: TargetContext, repo: Repository, snaps: list[Snapshot],
            by_run: str, *,
            dry_run: bool = False, strict: bool = False,
            run: RunRecorder | None = None) -> list[Recovery]:
    """Put back what killed rollbacks half did: each target it touched is swapped back (a
    path whose live tree is the restored one, carried entries returned, a renamed database
    renamed back), so every target ends as it was before that rollback, as a whole."""
    out = []
    by_id = {s.id: s for s in snaps}
    # strict for --cleanup: an unreadable record may be the one naming a half-done swap
    for rec in _unfinished(repo, lp.name, strict):
        rv = Recovery(rec["run_id"], str(rec.get("status")))
        t0 = time.monotonic()
        for t in rec.get("targets", []):
            name = t.get("target", "?")
            if rv.reached == "swapped":
                rv.targets[name] = ("rolled back (the killed run had swapped every target; "
                                    "its after hooks and checks may not have run)")
                continue
            if rv.reached != "prepared":
                rv.targets[name] = "as before (the killed run had not swapped anything)"
                continue
            kind = kind_named(str(t.get("kind")))
            if kind is None or not kind.recoverable or not rec.get("stamp"):
                # AWS targets: their state is AWS's to tell; a person decides, nothing blocks
                rv.unresolved = True
                rv.targets[name] = ("not put back automatically: check it by hand "
                                    "(`restorer rollback PLAN --undo` returns to the safety "
                                    "snapshot)")
                continue
            try:
                rv.targets[name] = _put_back(lp, ctx, repo, rec, t, by_id, dry_run)
            except (RestorerError, OSError) as e:
                rv.error = f"target {name}: {getattr(e, 'message', e)}"
                rv.targets[name] = "unknown"
                break
        if not dry_run and rv.ok:
            end = {**rec, "recovered_by": by_run}
            if rv.unresolved:
                end["status"] = "unresolved"
            elif rv.reached == "swapped":
                end["status"] = "finished"
            else:
                end.update(status="reverted", targets=[
                    {**t, "state": "as before", "kept": []} for t in rec.get("targets", [])])
            _put_record(repo, end)
        if run and not dry_run:
            run.record_phase("recover", time.monotonic() - t0, rollback=rv.run_id,
                             outcome="ok" if rv.ok else "failed", targets=rv.targets,
                             error=rv.error)
        out.append(rv)
    return out


def _put_back(lp: LoadedPlan, ctx: TargetContext, repo: Repository, rec: dict[str, Any],
              t: dict[str, Any], by_id: dict[str, Snapshot], dry_run: bool) -> str:
    name = t["target"]
    target = lp.targets([name])[0]
    snap = by_id.get(t["snapshot"])
    if snap is None:
        raise RestoreError(f"snapshot {t['snapshot'][:8]} that the killed run restored is "
                           "gone from the repository")
    record = TargetRollback(name, t["kind"], t.get("live", ""), snap.id, snap.time, None)
    sw = kind_of(target).swap(ctx, repo, target, snap, rec["stamp"], record)
    sw.resume(rec.get("journal", {}).get(name, {}))
    found = sw.found()
    if dry_run:
        return f"{found}; would be put back as it was"
    if sw.touched:
        sw.swap_back()
    return f"{found}; put back as it was"


@dataclass
class CleanupResult:
    plan: str
    dry_run: bool
    recovered: list[Recovery] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # removed, or to remove on a dry run
    declined: bool = False

    @property
    def outcome(self) -> Outcome:
        return Outcome.DECLINED if self.declined else Outcome.OK

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "dry_run": self.dry_run, "declined": self.declined,
                ("would_remove" if self.dry_run or self.declined else "removed"): self.items,
                "recovered": [asdict(r) for r in self.recovered]}


def cleanup(lp: LoadedPlan, *, dry_run: bool = False,
            confirm: Callable[[CleanupResult], bool] | None = None,
            run: RunRecorder | None = None) -> CleanupResult:
    """Put back what killed rollbacks half did, then remove what rollbacks kept (replaced
    databases, volumes, instances, trees of failed runs) and what killed ones left half made
    (sibling folders, new databases). Lists it all first: `dry_run` stops there, and
    `confirm` may decline."""
    repo = open_repository(lp)
    ctx = target_context(lp)
    res = CleanupResult(lp.name, dry_run)
    with locked(repo, exclusive=True,
                label=f"restorer rollback --cleanup {lp.name}") as lock:
        if run:
            run.record_phase("lock", lock.waited)
        repo.load_index()
        snaps = repo.list_snapshots()
        by_run = run.run_id if run else os.urandom(16).hex()
        res.recovered = recover(lp, ctx, repo, snaps, by_run, dry_run=True, strict=True)
        stuck = {rv.run_id for rv in res.recovered if not rv.ok}
        found = _leftovers(lp, ctx, repo, skip=stuck)
        res.items = [f"{target.name}: {what}" for target, _name, what in found]
        if dry_run:
            return res
        if confirm is not None and (res.items or res.recovered) and not confirm(res):
            res.declined = True
            return res
        res.recovered = recover(lp, ctx, repo, snaps, by_run, strict=True, run=run)
        if any(not rv.ok for rv in res.recovered):
            bad = next(rv for rv in res.recovered if not rv.ok)
            raise RestoreError(f"rollback {bad.run_id[:8]} was killed half way and could not "
                               f"be put back: {bad.error}; its leftovers are kept")
        # what recovery put back may have made more leftovers removable (the siblings)
        found = _leftovers(lp, ctx, repo, skip=set())
        res.items = []
        for target, name, what in found:
            kind_of(target).remove_kept(ctx, target, name)
            res.items.append(f"{target.name}: {what}")
    return res


def _leftovers(lp: LoadedPlan, ctx: TargetContext, repo: Repository,
               skip: set[str]) -> list[tuple[Any, str, str]]:
    """(target, name, what it is) for every leftover that exists and may go. Leftovers of a
    killed run that is not put back yet (`skip`) stay: its sibling may hold the live tree."""
    seen: set[tuple[str, str]] = set()
    out = []
    for rec in _records(repo, "rollbacks", strict=True):
        if rec.get("plan") != lp.name or rec.get("run_id") in skip or not _local(rec):
            continue  # another host's folders are not ours to look at
        for t in rec.get("targets", []):
            if t.get("state") == "unknown":
                continue  # a swap back that did not finish: its copies may be live data
            try:
                target = lp.targets([t["target"]])[0]
            except RestorerError:
                continue
            for name in [*t.get("kept", []), *t.get("scratch", [])]:
                what = kind_of(target).remove_kept(ctx, target, name, dry_run=True)
                if what and (target.name, what) not in seen:
                    seen.add((target.name, what))
                    out.append((target, name, what))
    return out
