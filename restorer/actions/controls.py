"""The report's controls: for each target, the questions an auditor asks (SOC 2 A1.3, ISO
27001 A.8.13, DORA Art. 12), each with a verdict and the ledger rows behind it.

Like the rest of the report, every control reads the plan and the ledger only (what the
store said about a snapshot's Object Lock and encryption is recorded in the backup's ledger
row when it is written), so the same plans, period and ledger give the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from restorer.actions.ledger_run import NOTIFY_COMMANDS, Run
from restorer.plan.durations import format_duration as fd
from restorer.plan.load import LoadedPlan

Verdict = Literal["pass", "fail", "n/a"]
# a cron schedule finer than this many slots in the period is counted, not listed slot by slot
MAX_SLOTS = 5000
LISTED = 20


@dataclass
class Control:
    id: str
    name: str
    verdict: Verdict
    detail: str
    evidence: list[str] = field(default_factory=list)  # run ids the verdict rests on
    findings: list[str] = field(default_factory=list)  # what fails, one line each

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "verdict": self.verdict,
                "detail": self.detail, "evidence": self.evidence[:50],
                "evidence_total": len(self.evidence), "findings": self.findings[:LISTED],
                "findings_total": len(self.findings)}


def _t(iso: str) -> datetime:
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


@dataclass
class Inputs:
    """What every control of one target reads."""

    lp: LoadedPlan
    target: Any
    history: list[Run]  # the plan's runs, oldest first
    start: datetime  # the period, from the target's birth when that is later
    end: datetime
    tests: list[dict[str, Any]]  # restore tests up to the period's end, oldest first
    objectives: Any

    def backups(self) -> list[tuple[datetime, Run, dict[str, Any]]]:
        return [(_t(r.started), r, ph) for r in self.history for ph in r.phases
                if ph.get("phase") == "backup" and ph.get("target") == self.target.name
                and ph.get("outcome") == "ok" and self.start <= _t(r.started) <= self.end]

    def in_period(self, tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [x for x in tests if self.start <= _t(x["time"]) <= self.end]


def target_controls(i: Inputs) -> list[Control]:
    return [_backup_frequency(i), _restore_tested(i), _recovery_time(i), _data_loss(i),
            _separation(i), _immutability(i), _encryption(i), _offsite(i), _monitoring(i)]


def _backup_frequency(i: Inputs) -> Control:
    name = "backup frequency"
    backups = i.backups()
    ids = [r.run_id for _, r, _ in backups]
    cron = i.lp.plan.schedule.backup
    if cron is None:
        return Control("backup_frequency", name, "fail", f"no schedule.backup is declared; "
                       f"{len(backups)} backup(s) in the period", ids)
    tz = ZoneInfo(i.lp.plan.schedule.timezone or "UTC")
    # a slot at the very start counts (croniter gives the next one strictly after)
    it = croniter(cron, (i.start - timedelta(seconds=1)).astimezone(tz))
    slots: list[datetime] = []
    nxt = it.get_next(datetime)
    while nxt <= i.end and len(slots) <= MAX_SLOTS:
        slots.append(nxt)
        nxt = it.get_next(datetime)
    if len(slots) > MAX_SLOTS:
        return Control("backup_frequency", name, "n/a", f"'{cron}' has more than "
                       f"{MAX_SLOTS} slots in the period; {len(backups)} backup(s) observed",
                       ids)
    times = sorted(t for t, _, _ in backups)
    # a slot is kept when a backup ran between it and the next slot; the last slot is owed
    # only once the next one has come
    owed = [(a, b) for a, b in zip(slots, [*slots[1:], nxt]) if b <= i.end]  # noqa: B905
    missed = [_iso(a) for a, b in owed if not any(a <= t < b for t in times)]
    kept = len(owed) - len(missed)
    detail = (f"schedule '{cron}' ({i.lp.plan.schedule.timezone or 'UTC'}): {kept} slot(s) "
              f"kept, {len(missed)} missed; {len(backups)} backup(s) in the period")
    return Control("backup_frequency", name, "fail" if missed else "pass", detail, ids,
                   [f"no backup for the slot at {m}" for m in missed])


def _restore_tested(i: Inputs) -> Control:
    name = "restore tested"
    every = i.objectives.verify_every
    mine = i.in_period(i.tests)
    passed = [x for x in mine if x["passed"]]
    ids = [x["run_id"] for x in mine]
    count = f"{len(mine)} restore test(s) in the period, {len(passed)} passed"
    if every is None:
        return Control("restore_tested", name, "pass" if passed else "fail",
                       f"{count}; objectives.verify_every is not declared", ids,
                       [] if passed else ["no passing restore test in the period"])
    passes = sorted(_t(x["time"]) for x in i.tests if x["passed"])
    before = [p for p in passes if p < i.start]
    last = before[-1] if before else i.start  # nothing is owed before the target existed
    overdue = []
    for p in [p for p in passes if p >= i.start] + [None]:
        due = last + timedelta(seconds=every)
        until = i.end if p is None else p
        if due < until:
            overdue.append(f"overdue from {_iso(due)} to "
                           f"{'the end of the period' if p is None else _iso(p)}")
        if p is not None:
            last = p
    return Control("restore_tested", name, "fail" if overdue else "pass",
                   f"{count}; a passing test is due every {fd(every)}", ids, overdue)


def _recovery_time(i: Inputs) -> Control:
    name = "recovery time"
    rto = i.objectives.rto
    measured = [x for x in i.in_period(i.tests) if x["restore_s"] is not None]
    ids = [x["run_id"] for x in measured]
    if not measured:
        return Control("recovery_time", name, "fail", "no restore was measured in the period",
                       ids, ["no restore measured"])
    worst = max(x["restore_s"] for x in measured)
    if rto is None:
        return Control("recovery_time", name, "n/a", f"no RTO is declared; {len(measured)} "
                       f"restore(s) measured, the slowest {worst:.1f}s", ids)
    over = [f"{x['time']}: restore took {x['restore_s']:.1f}s" for x in measured
            if x["restore_s"] > rto]
    return Control("recovery_time", name, "fail" if over else "pass",
                   f"RTO {fd(rto)}: {len(measured) - len(over)} of {len(measured)} restore(s) "
                   f"within it, the slowest {worst:.1f}s", ids, over)


def _data_loss(i: Inputs) -> Control:
    name = "data loss"
    rpo = i.objectives.rpo
    tested = [x for x in i.in_period(i.tests)
              if x["restored"] and x["snapshot_age_s"] is not None]
    ids = [x["run_id"] for x in tested]
    if not tested:
        return Control("data_loss", name, "fail", "no restore in the period to measure the "
                       "age of restored data", ids, ["no restore measured"])
    worst = max(x["snapshot_age_s"] for x in tested)
    if rpo is None:
        return Control("data_loss", name, "n/a", f"no RPO is declared; the oldest data "
                       f"restored was {fd(worst)} old", ids)
    over = [f"{x['time']}: restored data was {fd(x['snapshot_age_s'])} old" for x in tested
            if x["snapshot_age_s"] > rpo]
    return Control("data_loss", name, "fail" if over else "pass",
                   f"RPO {fd(rpo)}: {len(tested) - len(over)} of {len(tested)} test(s) "
                   f"restored data within it, the oldest {fd(worst)} old", ids, over)


def _separation(i: Inputs) -> Control:
    verdict, why = i.target.separation()
    return Control("separation", "separation", verdict, why,
                   findings=[why] if verdict == "fail" else [])


def _stored(i: Inputs) -> list[tuple[Run, dict[str, Any]]]:
    return [(r, ph["stored"]) for _, r, ph in i.backups() if isinstance(ph.get("stored"), dict)]


def _immutability(i: Inputs) -> Control:
    name = "immutability"
    days = i.lp.plan.repository.object_lock_days
    stored = _stored(i)
    ids = [r.run_id for r, _ in stored]
    if not days:
        return Control("immutability", name, "fail", "the repository keeps no retention "
                       "(repository.object_lock_days is not set): whoever can write it can "
                       "delete its snapshots", ids, ["no Object Lock retention configured"])
    if not stored:
        return Control("immutability", name, "fail", f"Object Lock {days} days configured; "
                       "no backup in the period to read it back from", ids,
                       ["retention not observed in the period"])
    locked = [(r, s) for r, s in stored if s.get("lock_mode") and s.get("retain_until")]
    unlocked = [f"snapshot of run {r.run_id[:8]} at {_iso(_t(r.started))} is stored without "
                f"a retention{': ' + s['error'] if s.get('error') else ''}"
                for r, s in stored if (r, s) not in locked]
    latest = max((s["retain_until"] for _, s in locked), default=None)
    mode = sorted({s["lock_mode"] for _, s in locked})
    return Control("immutability", name, "fail" if unlocked else "pass",
                   f"Object Lock {days} days configured; {len(locked)} of {len(stored)} "
                   f"snapshot(s) written in the period read back locked"
                   + (f" ({', '.join(mode)}, the latest retained until {latest})"
                      if latest else ""), ids, unlocked)


def _encryption(i: Inputs) -> Control:
    name = "encryption"
    rc = i.lp.plan.repository
    stored = _stored(i)
    ids = [r.run_id for r, _ in stored]
    configured = [w for w, on in (("client-side (repository.password)", rc.password),
                                  (f"server-side ({rc.sse})", rc.sse)) if on]
    if not configured:
        return Control("encryption", name, "fail", "the repository is not encrypted: no "
                       "repository.password, no sse", ids, ["no encryption configured"])
    if not stored:
        return Control("encryption", name, "fail", f"{' and '.join(configured)} configured; "
                       "no backup in the period to observe it on", ids,
                       ["encryption not observed in the period"])
    plain = [f"snapshot of run {r.run_id[:8]} at {_iso(_t(r.started))} is stored unencrypted"
             for r, s in stored if not (s.get("encrypted") or s.get("sse"))]
    return Control("encryption", name, "fail" if plain else "pass",
                   f"{' and '.join(configured)} configured; {len(stored) - len(plain)} of "
                   f"{len(stored)} snapshot(s) written in the period observed encrypted",
                   ids, plain)


def _offsite(i: Inputs) -> Control:
    copies = [r for r in i.history if r.command == "copy" and r.outcome == "ok"
              and i.start <= _t(r.started) <= i.end]
    ids = [r.run_id for r in copies]
    if not copies:
        return Control("offsite_copy", "off-site copy", "fail", "no `restorer copy` to another "
                       "repository succeeded in the period", ids, ["no off-site copy"])
    return Control("offsite_copy", "off-site copy", "pass", f"{len(copies)} successful "
                   f"cop{'y' if len(copies) == 1 else 'ies'} in the period, the latest at "
                   f"{_iso(_t(copies[-1].started))}", ids)


def _monitoring(i: Inputs) -> Control:
    name = "monitoring"
    if not i.lp.plan.notify:
        return Control("monitoring", name, "fail", "no failure notification is configured "
                       "(notify:)", findings=["no notification configured"])
    failed = [r for r in i.history if r.command in NOTIFY_COMMANDS
              and r.outcome in ("failed", "partial", "terminated")
              and i.start <= _t(r.started) <= i.end]
    ids = [r.run_id for r in failed]
    unheard = []
    for r in failed:
        sent = [p for p in r.phases if p.get("phase") == "notify"]
        if not any(p.get("outcome") == "ok" for p in sent):
            why = "; ".join(str(p.get("error")) for p in sent if p.get("error")) or \
                "no notification was sent"
            unheard.append(f"{r.command} failed at {_iso(_t(r.started))} (run "
                           f"{r.run_id[:8]}) and was not delivered: {why}")
    return Control("monitoring", name, "fail" if unheard else "pass",
                   f"{len(i.lp.plan.notify)} notification destination(s) configured; "
                   f"{len(failed) - len(unheard)} of {len(failed)} failed run(s) in the period "
                   "were delivered", ids, unheard)


def summary(targets: list[dict[str, Any]]) -> dict[str, Any]:
    """How many controls pass, and the failing ones first."""
    every = [(t["name"], c) for t in targets for c in t["controls"]]
    failing = [f"{name}: {c['name']}" for name, c in every if c["verdict"] == "fail"]
    return {"total": len(every), "passed": sum(c["verdict"] == "pass" for _, c in every),
            "failed": len(failing), "not_applicable": sum(c["verdict"] == "n/a"
                                                          for _, c in every),
            "failing": failing}
