"""report: the evidence auditors ask for, computed from the plans and the ledger.

Ledger rows are the data (never the repository's snapshots, which prune changes), so the same
plans, period and ledger always give the same report: `report --verify` builds it again and
compares, and verifies the ledger (chain, signatures, anchors), so an edited report or an
edited ledger row is found. Per target it holds the restore tests, RTO and RPO, and the
controls (controls.py) with their verdicts. The data is the JSON format itself (schema
`restorer-report/2`, documented in the README); HTML, JUnit and Markdown are renderings of
it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restorer import __version__, clock
from restorer.actions.controls import Inputs, target_controls
from restorer.actions.controls import summary as controls_summary
from restorer.actions.ledger_run import Run, last_seq, runs
from restorer.errors import RestorerError, UsageError
from restorer.plan.load import LoadedPlan
from restorer.sources.postgres import safe_dsn
from restorer.targets import load_checked

SCHEMA = "restorer-report/2"


@dataclass
class Period:
    start: datetime
    end: datetime

    def __contains__(self, t: datetime) -> bool:
        return self.start <= t <= self.end


def _t(iso: str) -> datetime:
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _mask(text: str | None) -> str | None:
    """DSN passwords out of details and errors (a check's detail may quote a DSN)."""
    return safe_dsn(text) if text else text


def restore_tests(run: Run, plan_digest: str) -> dict[str, dict[str, Any]]:
    """One verify run's restore test per target."""
    out: dict[str, dict[str, Any]] = {}
    for ph in run.phases:
        t = ph.get("target")
        if not t:
            continue
        test = out.setdefault(t, {
            "run_id": run.run_id, "time": _iso(_t(run.started)), "snapshot": None,
            "snapshot_time": None, "snapshot_age_s": None, "host": run.host, "user": run.user,
            "version": run.version, "plan_digest": run.plan_digest or plan_digest,
            "restored": False, "passed": False, "restore_s": None, "checks": [],
            "teardown": "unknown", "error": None})
        if ph["phase"] == "restore":
            test["snapshot"] = ph.get("snapshot")
            test["snapshot_time"] = ph.get("snapshot_time")
            test["restored"] = ph.get("outcome") == "ok"
            test["restore_s"] = ph.get("duration_s") if test["restored"] else None
            test["error"] = _mask(ph.get("error"))
            if test["snapshot_time"]:
                test["snapshot_age_s"] = round(
                    (_t(run.started) - _t(test["snapshot_time"])).total_seconds(), 3)
        elif ph["phase"] == "check":
            test["checks"].append({"name": ph.get("check"), "passed": ph.get("outcome") == "ok",
                                   "duration_s": ph.get("duration_s"),
                                   "detail": _mask(ph.get("detail"))})
        elif ph["phase"] == "teardown":
            test["teardown"] = ("kept" if ph.get("kept") else
                                "removed" if ph.get("removed") else "failed")
    for test in out.values():
        test["passed"] = bool(test["restored"] and test["checks"]
                              and all(c["passed"] for c in test["checks"]))
    return out


def _rpo(tests: list[dict[str, Any]], rpo: float | None, period: Period,
         born: datetime | None = None) -> dict[str, Any]:
    """Age of the newest verified snapshot over the period, and when it exceeded the RPO.
    A verified snapshot counts from the moment its verification passed. Nothing is owed
    before the target existed (`born`: its first backup): no breach starts earlier."""
    if born is not None and born > period.start:
        period = Period(min(born, period.end), period.end)
    passes = sorted((_t(x["time"]), _t(x["snapshot_time"])) for x in tests
                    if x["passed"] and x["snapshot_time"])
    newest: datetime | None = None
    for when, snap in passes:
        if when < period.start:
            newest = snap if newest is None or snap > newest else newest
    points = [(when, snap) for when, snap in passes if when in period]
    breaches: list[list[datetime]] = []
    worst = 0.0
    edges = [period.start] + [w for w, _ in points] + [period.end]
    for i in range(len(edges) - 1):
        a, b = edges[i], edges[i + 1]
        if i > 0:
            snap = points[i - 1][1]
            newest = snap if newest is None or snap > newest else newest
        if newest is not None:
            worst = max(worst, (b - newest).total_seconds())
        if rpo is None:
            continue
        start = a if newest is None else max(a, datetime.fromtimestamp(
            newest.timestamp() + rpo, UTC))
        if start < b:
            if breaches and breaches[-1][1] >= start:
                breaches[-1][1] = b
            else:
                breaches.append([start, b])
    return {
        "objective_s": rpo,
        "age_at_end_s": None if newest is None else round(
            (period.end - newest).total_seconds(), 3),
        "worst_age_s": round(worst, 3) if newest is not None else None,
        "breaches": [{"start": _iso(a), "end": _iso(b), "ongoing": b == period.end,
                      "duration_s": round((b - a).total_seconds(), 3)} for a, b in breaches],
    }


def _rto(tests: list[dict[str, Any]], rto: float | None) -> dict[str, Any]:
    series = [{"time": x["time"], "restore_s": x["restore_s"]} for x in tests
              if x["restore_s"] is not None]
    values = [s["restore_s"] for s in series]
    return {"objective_s": rto, "series": series,
            "worst_s": max(values) if values else None,
            "median_s": statistics.median(values) if values else None,
            "latest_s": values[-1] if values else None,
            "breaches": sum(1 for v in values if rto is not None and v > rto)}


def _reason(r: Run) -> str | None:
    """Why a run failed, from its failed phases when it ended without an error message (a
    verify whose checks failed exits 1 without raising)."""
    why = []
    for p in r.phases:
        if p.get("outcome") in ("failed", "partial"):
            where = p["phase"] + (f" {p['target']}" if p.get("target") else "") + (
                f" {p['check']}" if p.get("check") else "")
            why.append(f"{where}: {p.get('error') or p.get('detail') or p.get('outcome')}")
    if r.outcome == "interrupted" and not why:
        return "the process ended without recording an outcome (killed?)"
    return "; ".join(why)[:500] or None


def _born(history: list[Run], target: str) -> datetime | None:
    """When the target began to exist for restorer: its first backup, else the plan's
    first run (history is oldest first)."""
    for r in history:
        if any(ph.get("phase") == "backup" and ph.get("target") == target for ph in r.phases):
            return _t(r.started)
    return _t(history[0].started) if history else None


def plan_report(lp: LoadedPlan, period: Period, through: int | None = None) -> dict[str, Any]:
    history = sorted(runs(lp, through=through), key=lambda r: r.started)  # oldest first
    in_period = [r for r in history if _t(r.started) in period]
    verify_runs = [r for r in history if r.command == "verify" and _t(r.started) <= period.end]
    targets = []
    for t in lp.plan.targets:
        obj = t.objectives or lp.plan.objectives
        every = [x for r in verify_runs for name, x in restore_tests(r, lp.digest).items()
                 if name == t.name]
        mine = [x for x in every if _t(x["time"]) in period]
        passed = sum(x["passed"] for x in mine)
        born = _born(history, t.name)
        start = max(period.start, born) if born else period.start
        controls = target_controls(Inputs(lp, t, history, min(start, period.end), period.end,
                                          sorted(every, key=lambda x: x["time"]), obj))
        targets.append({
            "name": t.name, "kind": t.kind, "covered": passed > 0,
            "restore_tests": {"total": len(mine), "passed": passed,
                              "failed": len(mine) - passed},
            "tests": mine, "rto": _rto(mine, obj.rto),
            "rpo": _rpo(every, obj.rpo, period, born),
            "controls": [c.to_json() for c in controls],
        })
    rollbacks = [{
        "run_id": r.run_id, "time": _iso(_t(r.started)), "command": r.command,
        "outcome": r.outcome, "duration_s": r.duration_s, "host": r.host, "user": r.user,
        "error": _mask(r.error or _reason(r)),
        "targets": [{"target": p["target"], "snapshot": p.get("snapshot")} for p in r.phases
                    if p["phase"] == "restore" and p.get("target")],
        "steps": {p["phase"] + (f" {p['target']}" if p.get("target") else ""):
                  p.get("duration_s") for p in r.phases
                  if p["phase"] in ("decide", "restore", "safety_snapshot", "swap", "checks")},
    } for r in in_period if r.command.startswith("rollback") and "--dry-run" not in r.command]
    failures = []
    for i, r in enumerate(history):
        if _t(r.started) not in period or r.outcome not in ("failed", "partial", "interrupted",
                                                            "terminated"):
            continue
        nxt = next((s for s in history[i + 1:] if s.command == r.command and s.outcome == "ok"),
                   None)
        failures.append({
            "run_id": r.run_id, "time": _iso(_t(r.started)), "command": r.command,
            "outcome": r.outcome, "error": _mask(r.error or _reason(r)),
            "recovered_at": _iso(_t(nxt.started)) if nxt else None,
            "time_to_recover_s": round((_t(nxt.started) - _t(r.started)).total_seconds(), 3)
            if nxt else None})
    return {"name": lp.name, "file": str(lp.path), "digest": lp.digest,
            "controls": controls_summary(targets),
            "targets": targets, "rollbacks": rollbacks, "failures": failures}


def _digest(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in ("generated_at", "evidence")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _evidence(plans: list[LoadedPlan], period: Period,
              through: dict[str, int]) -> dict[str, Any]:
    """The ledger as it stood at the period's end, verified (rows, chain, signatures,
    anchors), with its last row in the period named by its hash; and the first thing wrong
    with the ledger as it is now, if anything is."""
    from restorer.actions.evidence import ledger_evidence

    out = []
    for lp in plans:
        then, now = ledger_evidence(lp, period.end, through.get(lp.name))
        first = then.first or now.first
        out.append({"plan": lp.name, "ledger": then.where, "rows": then.rows,
                    "chain_intact": first is None, "status": then.status,
                    "signed_through": then.signed_through, "signed_by": then.keys,
                    "trusted_keys": then.expected, "anchors": then.anchors,
                    "summary": then.summary(),
                    "problem": None if first is None else first.message,
                    "last_seq": then.last_seq, "last_hash": then.last_hash})
    return {"ledgers": out}


def build(plan_paths: list[str], period: Period, generated_at: str | None = None,
          untested: str = "fail", through: dict[str, int] | None = None) -> dict[str, Any]:
    """`untested`: how JUnit shows a target with no restore test in the period ("fail", so
    CI goes red, or "skip"). `through`: per plan, the last ledger row the report reads
    (default: the ledger's last row now); it is kept in the report, so rebuilding it later
    reads the same rows even when runs since share the period (a frozen RESTORER_NOW)."""
    # whole seconds, as the report shows them: rebuilding it from its own text gives the same
    period = Period(period.start.replace(microsecond=0), period.end.replace(microsecond=0))
    if period.end <= period.start:
        raise UsageError("the report period ends before it starts")
    plans = [load_checked(p) for p in plan_paths]
    if through is None:
        through = {lp.name: last_seq(lp) for lp in plans}
    data: dict[str, Any] = {
        "schema": SCHEMA, "tool_version": __version__,
        "generated_at": generated_at or _iso(clock.now()),
        "period": {"from": _iso(period.start), "to": _iso(period.end)},
        "plan_files": [str(Path(p).resolve()) for p in plan_paths],
        "plans": [plan_report(lp, period, through.get(lp.name)) for lp in plans],
        "options": {"untested": untested, "through": through},
    }
    data["findings"] = [
        {"plan": p["name"], "target": t["name"],
         "finding": "no passing restore test in the period" if t["restore_tests"]["total"]
         else "never restore-tested in the period"}
        for p in data["plans"] for t in p["targets"] if not t["covered"]] + [
        # past objectives.verify_every: the dead-man switch on restore testing
        {"plan": p["name"], "target": t["name"], "finding": f"restore test {f}"}
        for p in data["plans"] for t in p["targets"] for c in t["controls"]
        if c["id"] == "restore_tested" for f in c["findings"] if f.startswith("overdue")]
    data["evidence"] = {**_evidence(plans, period, through), "data_digest": _digest(data)}
    return data


def verify_file(text: str) -> list[str]:
    """Problems found when building the report in `text` again from the ledger (empty: it
    holds). The file must be byte for byte what the same parameters give today."""
    from restorer.report import find_params, render

    params = find_params(text)
    if params is None:
        return ["the file holds no restorer report parameters (not a restorer report, or "
                "they were removed)"]
    try:
        period = Period(_t(params["period"]["from"]), _t(params["period"]["to"]))
        # a report made before the option existed skipped untested targets
        options = params.get("options") or {}
        untested = options.get("untested", "skip")
        again = build(params["plan_files"], period, params["generated_at"], untested,
                      options.get("through"))
    except (KeyError, ValueError, TypeError) as e:
        return [f"the report's parameters cannot be read ({e})"]
    except RestorerError as e:
        return [f"the report cannot be built again: {e.message}"]
    problems = []
    for led in again["evidence"]["ledgers"]:
        if not led["chain_intact"]:
            problems.append(f"ledger of plan {led['plan']} ({led['ledger']}): "
                            f"{led['problem']}")
    expected = render(again, params["format"])
    if expected != text:
        mine, theirs = text.splitlines(), expected.splitlines()
        n = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                 min(len(mine), len(theirs)))
        shown = (mine[n][:160] if n < len(mine) else "(end of file)",
                 theirs[n][:160] if n < len(theirs) else "(end of report)")
        problems.append("the file differs from the report the ledger gives for the same plans "
                        f"and period (the file or the ledger was edited); first at line {n + 1}: "
                        f"the file has {shown[0]!r}, the ledger gives {shown[1]!r}")
    return problems


# report.formats as the plan spells them, and the file extension of each
_FORMATS = {"html": ("html", "html"), "json": ("json", "json"), "junit": ("junit", "xml"),
            "markdown": ("md", "md")}


def write_scheduled(lp: LoadedPlan) -> list[str]:
    """The report `schedule.report` asks for: the plan's last `report.period`, in each of
    `report.formats`, written once into `report.dir` or the repository's reports/ (under
    Object Lock when the repository has it). Where each went."""
    from restorer.actions.context import backend_for
    from restorer.report import render

    cfg = lp.plan.report
    end = clock.now()
    start = datetime.fromtimestamp(end.timestamp() - cfg.period, UTC)
    data = build([str(lp.path)], Period(start, end))
    stamp = end.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out = []
    for f in cfg.formats:
        fmt, ext = _FORMATS[f]
        name = f"{lp.name}-{stamp}.{ext}"
        text = render(data, fmt).encode()
        if cfg.dir is not None:
            folder = lp.resolve_path(cfg.dir)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with (folder / name).open("xb") as fh:  # never over an earlier report
                    fh.write(text)
            except OSError as e:
                raise RestorerError(f"cannot write the report {folder / name}: "
                                    f"{e.strerror}") from None
            out.append(str(folder / name))
        else:
            backend = backend_for(lp)
            try:
                backend.write(f"reports/{name}", text)
            finally:
                backend.close()
            out.append(f"{backend.location}/reports/{name}")
    return out
