"""run: a plan's jobs (backup, prune, verify, check, report) in that order, each only when due.

A job is due when a slot of its cron expression (`schedule:`, in `schedule.timezone`) has
come since its last successful run, as the ledger records it; a job that never succeeded is
due. So one crontab line `*/5 * * * * restorer run --due /etc/restorer/plans` serves every
plan, a failed job is tried again at the next call, and slots missed while the machine was
down are caught up once, not once per slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from restorer import clock
from restorer.actions.ledger_run import recorded_run, runs
from restorer.errors import LockError, PartialError, RestorerError, UsageError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.durations import format_duration as fd
from restorer.plan.load import LoadedPlan
from restorer.targets import load_checked

log = logging.getLogger("restorer.run")
JOBS = ("backup", "prune", "verify", "check", "report")


@dataclass
class JobResult:
    plan: str
    job: str
    outcome: str  # ok | partial | failed | skipped (locked) | not due
    time: str
    duration_s: float = 0.0
    reason: str = ""
    error: str | None = None
    run_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "partial")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_files(paths: tuple[str, ...]) -> list[Path]:
    """Plan files named, and the *.yaml / *.yml files of the folders named."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml")
                          and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such plan file or folder")
    return out


def last_success(lp: LoadedPlan, job: str) -> datetime | None:
    for r in runs(lp):  # newest first
        if r.command == job and r.outcome == "ok":
            return datetime.fromisoformat(r.started)
    return None


def due(lp: LoadedPlan, job: str, now: datetime) -> tuple[bool, str]:
    cron = getattr(lp.plan.schedule, job)
    if cron is None:
        return False, "no schedule"
    tz = ZoneInfo(lp.plan.schedule.timezone or "UTC")
    last = last_success(lp, job)
    if last is None:
        return True, "never succeeded"
    slot = croniter(cron, last.astimezone(tz)).get_next(datetime)
    if slot <= now:
        return True, f"slot {slot.isoformat()} since the last success at {last.isoformat()}"
    return False, f"next slot {slot.isoformat()}"


def _job_backup(lp: LoadedPlan, run: RunRecorder) -> dict[str, Any]:
    from restorer.actions.backup import run_backup

    res = run_backup(lp, run=run)
    failed = [t for t in res.targets if not t.ok]
    detail = {"snapshots": {t.target: t.snapshot for t in res.targets if t.ok},
              "failed_targets": {t.target: t.error for t in failed},
              "bytes_added": sum(int(t.summary.get("data_added", 0)) for t in res.targets)}
    if failed and len(failed) == len(res.targets):
        raise RestorerError("; ".join(t.error or "failed" for t in failed))
    if failed or any(t.warnings for t in res.targets):
        raise PartialError("; ".join(t.error or "incomplete" for t in failed) or
                           "some files could not be saved")
    return detail


def _job_prune(lp: LoadedPlan, run: RunRecorder) -> dict[str, Any]:
    from restorer.actions.prune import run_prune

    res = run_prune(lp, run=run)
    return {"snapshots_forgotten": len(res.forgotten),
            "bytes_freed": res.repo.bytes_freed if res.repo else 0}


def _job_verify(lp: LoadedPlan, run: RunRecorder) -> dict[str, Any]:
    from restorer.actions.verify import run_verify

    results = run_verify(lp, run=run)
    detail = {"targets": {r.target: {"ok": r.ok, "snapshot": r.snapshot,
                                     "restore_s": r.restore_s, "error": r.error}
                          for r in results}}
    bad = [r for r in results if not r.ok]
    if bad:
        raise RestorerError("verification failed for " + ", ".join(
            f"{r.target} ({r.error or 'checks or objectives failed'})" for r in bad))
    return detail


def _job_check(lp: LoadedPlan, run: RunRecorder) -> dict[str, Any]:
    from restorer.actions.inspect import check_repository

    res = check_repository(lp, 0.0, run=run)
    if not res.ok:
        raise RestorerError("the repository check found damage: "
                            + "; ".join(res.errors[:3] + list(res.damaged_packs)[:3]))
    return {"snapshots": res.snapshots}


def _job_report(lp: LoadedPlan, run: RunRecorder) -> dict[str, Any]:
    from restorer.actions.report import write_scheduled

    with run.phase("report") as ph:
        written = write_scheduled(lp)
        ph.files = len(written)
        ph.detail["written"] = written
    return {"written": written}


RUNNERS: dict[str, Callable[[LoadedPlan, RunRecorder], dict[str, Any]]] = {
    "backup": _job_backup, "prune": _job_prune, "verify": _job_verify, "check": _job_check,
    "report": _job_report}


def run_plan(lp: LoadedPlan, *, only_due: bool,
             on_result: Callable[[LoadedPlan, JobResult], None] | None = None
             ) -> list[JobResult]:
    """Each job of the plan in order. With only_due, a job runs when due; without, backup
    always runs, prune when a retention rule exists, verify and check when due."""
    from restorer.actions.retention import has_rules

    out = []
    for job in JOBS:
        now = clock.now()
        is_due, reason = due(lp, job, now)
        if not only_due and job == "backup":
            is_due, reason = True, "asked for"
        elif not only_due and job == "prune" and not is_due and lp.plan.schedule.prune is None:
            rules = any(has_rules(t.retention or lp.plan.retention) for t in lp.plan.targets)
            is_due, reason = rules, "after the backup" if rules else "no retention rule"
        if not is_due:
            out.append(JobResult(lp.name, job, "not due", now.isoformat(), reason=reason))
            continue
        res = _run_job(lp, job, reason)
        out.append(res)
        if on_result:
            on_result(lp, res)
    watched = watch_restore_tests(lp)
    if watched is not None:
        out.append(watched)
        if on_result:
            on_result(lp, watched)
    return out


def overdue_tests(lp: LoadedPlan, history: list[Any], now: datetime
                  ) -> list[tuple[str, str | None, str]]:
    """(target, its last passing restore test or None, when the next one was due) of each
    target past objectives.verify_every. Nothing is owed before the target's first backup."""
    from restorer.actions.report import restore_tests

    out = []
    for t in lp.plan.targets:
        every = (t.objectives or lp.plan.objectives).verify_every
        if every is None:
            continue
        passes = sorted(x["time"] for r in history if r.command == "verify"
                        for name, x in restore_tests(r, lp.digest).items()
                        if name == t.name and x["passed"])
        born = min((r.started for r in history for ph in r.phases
                    if ph.get("phase") == "backup" and ph.get("target") == t.name),
                   default=None)
        last = passes[-1] if passes else None
        since = last or born
        if since is None:
            continue
        due_at = datetime.fromisoformat(since).timestamp() + every
        if due_at < now.timestamp():
            out.append((t.name, last, datetime.fromtimestamp(due_at, now.tzinfo).isoformat(
                timespec="seconds")))
    return out


def watch_restore_tests(lp: LoadedPlan) -> JobResult | None:
    """The dead-man switch on restore testing: a target past objectives.verify_every is an
    objective breach, sent once per lapse (until a restore test passes again) to the plan's
    notify destinations and recorded as a `watch` run."""
    if not lp.plan.notify or not any((t.objectives or lp.plan.objectives).verify_every
                                     for t in lp.plan.targets):
        return None
    try:
        history = runs(lp)
    except RestorerError as e:
        log.error("plan %s: restore tests cannot be watched: %s", lp.name, e.message)
        return None
    told = {(ph.get("target"), ph.get("last_pass")) for r in history if r.command == "watch"
            and r.outcome not in ("failed", "interrupted") for ph in r.phases
            if ph.get("phase") == "watch"}
    now = clock.now()
    fresh = [o for o in overdue_tests(lp, history, now) if (o[0], o[1]) not in told]
    if not fresh:
        return None
    res = JobResult(lp.name, "watch", "overdue", now.isoformat(),
                    reason=", ".join(target for target, _, _ in fresh))
    with recorded_run(lp, "watch") as run:
        res.run_id = run.run_id
        for target, last, due_at in fresh:
            every = (lp.plan.target(target).objectives or lp.plan.objectives).verify_every
            msg = (f"no passing restore test of {target} since "
                   f"{last or 'its first backup'}; one was due by {due_at} "
                   f"(objectives.verify_every {fd(every)})")
            log.error("plan %s: %s", lp.name, msg,
                      extra={"plan": lp.name, "event": "restore_test_overdue"})
            run.events.append(("objective_breach", target, msg))
            run.record_phase("watch", 0.0, target=target, last_pass=last, due=due_at)
        run.outcome = Outcome.CHECKS_FAILING
    res.error = "; ".join(e[2] for e in run.events)
    return res


def _run_job(lp: LoadedPlan, job: str, reason: str) -> JobResult:
    started = clock.now().isoformat()
    t0 = time.monotonic()
    res = JobResult(lp.name, job, "ok", started, reason=reason)
    log.info("plan %s: %s started (%s)", lp.name, job, reason,
             extra={"plan": lp.name, "event": "job_start"})
    try:
        with recorded_run(lp, job) as run:
            res.run_id = run.run_id
            res.detail = RUNNERS[job](lp, run)
    except LockError as e:
        # another run has the repository: not a failure, this job is still due next time
        res.outcome, res.error = "skipped (locked)", e.message
    except PartialError as e:
        res.outcome, res.error = "partial", e.message
    except RestorerError as e:
        res.outcome, res.error = "failed", e.message
    res.duration_s = time.monotonic() - t0
    level = logging.ERROR if res.failed else logging.INFO
    log.log(level, "plan %s: %s %s in %.1fs%s", lp.name, job, res.outcome, res.duration_s,
            f": {res.error}" if res.error else "",
            extra={"plan": lp.name, "run_id": res.run_id, "event": "job_end"})
    return res


class Jobs(list[JobResult]):
    """What `run` did: one result per plan and job."""

    @property
    def outcome(self) -> Outcome:
        if any(r.outcome == "failed" for r in self):
            return Outcome.FAILED
        if any(r.outcome == "partial" for r in self):
            return Outcome.PARTIAL
        return Outcome.OK


def run_paths(paths: tuple[str, ...], *, only_due: bool,
              on_result: Callable[[LoadedPlan, JobResult], None] | None = None
              ) -> Jobs:
    out = Jobs()
    for f in plan_files(paths):
        try:
            lp = load_checked(f)
        except RestorerError as e:  # one broken plan must not stop the others
            out.append(JobResult(str(f), "load", "failed", clock.now().isoformat(),
                                 error=e.message))
            log.error("%s: %s", f, e.message, extra={"event": "plan_unreadable"})
            continue
        out += run_plan(lp, only_due=only_due, on_result=on_result)
    return out
