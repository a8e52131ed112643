"""run --due at simulated times (RESTORER_NOW): exactly the due jobs run; a second call right
after runs nothing; after a 3-day outage each missed job runs once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli, write_plan

SCHEDULE = {"backup": "0 3 * * *", "verify": "30 4 * * 0", "prune": "0 5 * * *",
            "check": "0 6 1 * *"}


def _ran(out: str) -> list[str]:
    return [r["job"] for r in json.loads(out) if r["outcome"] != "not due"]


def _at(plans: Path, when: str) -> list[str]:
    r = run_cli("run", "--due", plans, "--json", env={"RESTORER_NOW": when})
    assert r.rc == 0, r.text
    results = json.loads(r.out)
    assert all(x["outcome"] in ("ok", "not due") for x in results), results
    return _ran(r.out)


def test_run_due_runs_exactly_the_due_jobs(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("data\n")
    write_plan(plans / "web.yaml", ledger=f"sqlite:///{tmp_path}/ledger.db",
               repository={"url": str(tmp_path / "repo")}, schedule=SCHEDULE,
               retention={"keep_daily": 7},
               targets=[{"name": "data", "kind": "files", "paths": [str(tmp_path / "src")]}])
    (plans / "notes.txt").write_text("not a plan")  # only *.yaml files are plans
    assert run_cli("init", plans / "web.yaml").rc == 0

    # Monday 2 March 2026, 02:00 UTC: nothing ever succeeded, so everything is due
    assert _at(plans, "2026-03-02T02:00:00Z") == ["backup", "prune", "verify", "check"]
    assert _at(plans, "2026-03-02T02:01:00Z") == []
    assert _at(plans, "2026-03-02T03:10:00Z") == ["backup"]  # the 03:00 slot
    assert _at(plans, "2026-03-02T03:11:00Z") == []
    assert _at(plans, "2026-03-02T05:05:00Z") == ["prune"]
    # Sunday 8 March, 04:45: the week's backups and prunes once each, and the verify
    assert _at(plans, "2026-03-08T04:45:00Z") == ["backup", "prune", "verify"]
    # the machine is down for three days: each missed job runs once, not once per slot
    assert _at(plans, "2026-03-11T12:00:00Z") == ["backup", "prune"]
    assert _at(plans, "2026-03-11T12:05:00Z") == []
    # 1 April, 06:30: three Sundays went by (one verify), and the monthly check is due
    assert _at(plans, "2026-04-01T06:30:00Z") == ["backup", "prune", "verify", "check"]

    # the snapshots carry the simulated times
    snaps = json.loads(run_cli("snapshots", plans / "web.yaml", "--json").out)
    assert [s["time"][:10] for s in snaps] == ["2026-03-02", "2026-03-02", "2026-03-08",
                                              "2026-03-11", "2026-04-01"]


def test_failing_job_exits_1_and_stays_due(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      schedule={"backup": "0 3 * * *"},
                      targets=[{"name": "db", "kind": "command", "backup": "exit 5",
                                "restore": "cat >/dev/null"}])
    assert run_cli("init", plan).rc == 0
    r = run_cli("run", "--due", plan, env={"RESTORER_NOW": "2026-03-02T03:10:00Z"})
    assert r.rc == 1 and "backup failed" in r.out
    # not successful, so still due at the next call
    r = run_cli("run", "--due", plan, "--json", env={"RESTORER_NOW": "2026-03-02T03:15:00Z"})
    assert r.rc == 1 and _ran(r.out) == ["backup"]
    # cron wants quiet, one line per event: --log-format json gives JSON lines
    r = run_cli("--log-format", "json", "run", "--due", plan,
                env={"RESTORER_NOW": "2026-03-02T03:20:00Z"})
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert r.rc == 1 and [x["job"] for x in lines] == ["backup"]
    assert lines[0]["outcome"] == "failed" and "status 5" in lines[0]["error"]


def test_metrics_file_holds_the_last_run(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.bin").write_bytes(b"x" * 50_000)
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      objectives={"rpo": "1d", "rto": "10m"},
                      schedule={"verify": "0 4 * * *"},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"]},
                               # backed up from a folder that is not there: fails every time
                               {"name": "bad", "kind": "files", "paths": ["missing"]}])
    assert run_cli("init", plan).rc == 0
    metrics = tmp_path / "textfile" / "restorer.prom"
    r = run_cli("run", plan, "--metrics-file", metrics, "--json")
    assert r.rc == 1, r.text  # the backup was partial, and verify failed
    results = {x["job"]: x for x in json.loads(r.out)}
    assert results["backup"]["outcome"] == "partial"
    assert results["verify"]["outcome"] == "failed"  # the bad target has no snapshot
    samples = {}
    for fam in text_string_to_metric_families(metrics.read_text()):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def v(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"plan": "test", **labels}.items())))]

    assert v("restorer_last_run_success", job="backup") == 0.0
    assert v("restorer_last_run_duration_seconds", job="backup") > 0
    assert v("restorer_snapshots", target="data") == 1.0
    assert v("restorer_snapshots", target="bad") == 0.0
    added = json.loads(run_cli("snapshots", plan, "--json").out)[0]["summary"]["data_added"]
    assert v("restorer_backup_bytes_added", target="data") == added
    assert v("restorer_last_verify_success", target="data") == 1.0
    assert v("restorer_rpo_objective_seconds", target="data") == 86400.0
    assert 0 <= v("restorer_rpo_seconds", target="data") < 600
    assert 0 < v("restorer_rto_seconds", target="data") < 600
    assert v("restorer_plan_up") == 1.0
    assert not list(metrics.parent.glob(".restorer.prom.*"))  # no temporary file left
