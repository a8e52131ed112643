"""Prometheus metrics for node_exporter's textfile collector: written to a temporary file in
the same folder and renamed into place, so the collector never reads half a file.

Every value comes from what restorer keeps anyway: the ledger (last runs, durations, bytes)
and the repository (snapshots, verified snapshots, restore times).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from restorer.actions.ledger_run import runs
from restorer.actions.run_due import JOBS, plan_files
from restorer.actions.verify import plan_status
from restorer.errors import RestorerError
from restorer.plan.load import LoadedPlan
from restorer.targets import load_checked

HELP = {
    "restorer_last_run_timestamp_seconds": ("gauge", "Start of the last run of the job"),
    "restorer_last_run_success": ("gauge", "1 if the last run of the job succeeded"),
    "restorer_last_run_duration_seconds": ("gauge", "Wall time of the last run of the job"),
    "restorer_last_success_timestamp_seconds": ("gauge", "Start of the last successful run"),
    "restorer_backup_bytes_added": ("gauge", "Bytes the target's last backup added"),
    "restorer_snapshots": ("gauge", "Snapshots of the target in the repository"),
    "restorer_last_verify_success": ("gauge", "1 if the target's last verify passed"),
    "restorer_rpo_seconds": ("gauge", "Age of the newest verified snapshot (measured RPO)"),
    "restorer_rpo_objective_seconds": ("gauge", "The plan's RPO objective"),
    "restorer_restore_test_age_seconds": ("gauge", "Time since the last passing restore test"),
    "restorer_restore_test_objective_seconds": (
        "gauge", "objectives.verify_every: the longest a target may go without one"),
    "restorer_restore_test_overdue": (
        "gauge", "1 when the target is past objectives.verify_every (or never tested)"),
    "restorer_rto_seconds": ("gauge", "Last measured restore time into staging (RTO)"),
    "restorer_rto_objective_seconds": ("gauge", "The plan's RTO objective"),
    "restorer_plan_up": ("gauge", "1 if the plan could be read and its repository opened"),
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def plan_metrics(lp: LoadedPlan) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    history = runs(lp)  # newest first
    for job in JOBS:
        # a usage mistake or a declined prompt is neither a success nor a failure of the job
        mine = [r for r in history if r.command == job
                and r.outcome not in ("running", "usage", "declined")]
        if mine:
            last = mine[0]
            lab = {"plan": lp.name, "job": job}
            out.append(("restorer_last_run_timestamp_seconds", lab, _ts(last.started)))
            out.append(("restorer_last_run_success", lab, float(last.outcome == "ok")))
            out.append(("restorer_last_run_duration_seconds", lab, last.duration_s or 0.0))
            ok = next((r for r in mine if r.outcome == "ok"), None)
            if ok:
                out.append(("restorer_last_success_timestamp_seconds", lab, _ts(ok.started)))
    added: dict[str, float] = {}
    verified: dict[str, float] = {}
    for r in reversed(history):  # oldest first, so the newest value wins
        for ph in r.phases:
            t = ph.get("target")
            if r.command == "backup" and ph.get("phase") == "backup" and t:
                added[t] = float(ph.get("data_added") or 0)
        if r.command == "verify":
            per_target: dict[str, bool] = {}
            for ph in r.phases:
                t = ph.get("target")
                if t and ph.get("phase") in ("restore", "check", "teardown"):
                    per_target[t] = per_target.get(t, True) and ph.get("outcome") == "ok"
            for t, good in per_target.items():
                verified[t] = float(good)
    for st in plan_status(lp):
        lab = {"plan": lp.name, "target": st.target}
        out.append(("restorer_snapshots", lab, float(st.snapshots)))
        if st.target in added:
            out.append(("restorer_backup_bytes_added", lab, added[st.target]))
        if st.target in verified:
            out.append(("restorer_last_verify_success", lab, verified[st.target]))
        if st.data_age_s is not None:
            out.append(("restorer_rpo_seconds", lab, st.data_age_s))
        if st.rpo_s is not None:
            out.append(("restorer_rpo_objective_seconds", lab, st.rpo_s))
        if st.last_restore_s is not None:
            out.append(("restorer_rto_seconds", lab, st.last_restore_s))
        if st.rto_s is not None:
            out.append(("restorer_rto_objective_seconds", lab, st.rto_s))
        if st.last_test_age_s is not None:
            out.append(("restorer_restore_test_age_seconds", lab, st.last_test_age_s))
        if st.verify_every_s is not None:
            out.append(("restorer_restore_test_objective_seconds", lab, st.verify_every_s))
            out.append(("restorer_restore_test_overdue", lab, float(st.verify_breached)))
    return out


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    lines = []
    for name, (kind, text) in HELP.items():
        mine = [s for s in samples if s[0] == name]
        if not mine:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for _, labels, value in mine:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value!r}")
    return "\n".join(lines) + "\n"


def write_metrics(path: str | os.PathLike[str], plan_paths: tuple[str, ...]) -> None:
    samples: list[tuple[str, dict[str, str], float]] = []
    for f in plan_files(plan_paths):
        try:
            lp = load_checked(f)
            samples += plan_metrics(lp)
            samples.append(("restorer_plan_up", {"plan": lp.name}, 1.0))
        except RestorerError:
            samples.append(("restorer_plan_up", {"plan": f.stem}, 0.0))
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(render(samples))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
