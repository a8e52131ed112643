"""`run --due` on a simulated calendar (RESTORER_NOW): schedule.report writes the day's
report in every format asked for, once per slot, into report.dir or the repository's
reports/, and the written report verifies; a target past objectives.verify_every is sent
as an objective breach once per lapse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import run_cli, write_plan
from tests.e2e.test_notify import Receiver, receiver  # noqa: F401 - the fixture

DAY0 = datetime(2026, 4, 1, tzinfo=UTC)


def _at(day: int, hour: int, minute: int = 0) -> str:
    return (DAY0 + timedelta(days=day, hours=hour, minutes=minute)).isoformat()


def _plan(root: Path, **extra) -> Path:
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "index.html").write_text("<h1>shop</h1>")
    extra.setdefault("schedule", {"backup": "0 3 * * *", "verify": "0 4 * * *",
                                  "report": "0 6 * * *"})
    return write_plan(
        root / "plan.yaml", ledger="sqlite:///ledger.db",
        targets=[{"name": "web", "kind": "files", "paths": ["src"],
                  "staging": {"path": "staging"},
                  "checks": [{"files": {"exist": ["index.html"]}}]}], **extra)


def _due(plan: Path, at: str) -> list[dict]:
    r = run_cli("run", "--due", plan, "--json", env={"RESTORER_NOW": at})
    assert r.rc == 0, r.text
    return json.loads(r.out)


def test_scheduled_report_goes_to_report_dir_once_per_slot(tmp_path: Path) -> None:
    plan = _plan(tmp_path, report={"formats": ["html", "json", "junit", "markdown"],
                                   "dir": "reports"})
    assert run_cli("init", plan, env={"RESTORER_NOW": _at(0, 2)}).rc == 0
    jobs = _due(plan, _at(0, 6, 5))
    assert [j["job"] for j in jobs if j["outcome"] == "ok"] == [
        "backup", "verify", "report"], jobs
    files = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert files == ["test-2026-04-01T060500Z.html", "test-2026-04-01T060500Z.json",
                     "test-2026-04-01T060500Z.md", "test-2026-04-01T060500Z.xml"]
    data = json.loads((tmp_path / "reports" / files[1]).read_text())
    assert data["schema"] == "restorer-report/2"
    assert data["period"] == {"from": "2026-03-31T06:05:00+00:00",
                              "to": "2026-04-01T06:05:00+00:00"}
    assert data["plans"][0]["targets"][0]["restore_tests"]["passed"] == 1
    for f in files:  # each one holds against the ledger
        r = run_cli("report", "--verify", tmp_path / "reports" / f)
        assert r.rc == 0, (f, r.text)
    # the same slot again: nothing new; the next day's slot: a new set
    assert [j["outcome"] for j in _due(plan, _at(0, 7)) if j["job"] == "report"] == ["not due"]
    assert len(list((tmp_path / "reports").iterdir())) == 4
    _due(plan, _at(1, 6, 1))
    assert len(list((tmp_path / "reports").iterdir())) == 8


def test_scheduled_report_defaults_to_the_repository(tmp_path: Path) -> None:
    plan = _plan(tmp_path)  # report: formats html and json, into the repository
    assert run_cli("init", plan, env={"RESTORER_NOW": _at(0, 2)}).rc == 0
    _due(plan, _at(0, 6, 5))
    names = sorted(p.name for p in (tmp_path / "repo" / "reports").iterdir())
    assert names == ["test-2026-04-01T060500Z.html", "test-2026-04-01T060500Z.json"]
    assert run_cli("check", plan).rc == 0  # reports/ does not upset the repository


def test_overdue_restore_test_is_sent_once_per_lapse(tmp_path: Path,
                                                     receiver: Receiver) -> None:  # noqa: F811
    plan = _plan(tmp_path, objectives={"verify_every": "2d"},
                 notify=[{"on": ["objective_breach"], "webhook": f"{receiver.url}/hook"}])
    # verify runs on day 0, then the restore-test job is dropped from the schedule
    assert run_cli("init", plan, env={"RESTORER_NOW": _at(0, 2)}).rc == 0
    _due(plan, _at(0, 5))
    assert receiver.to("/hook") == []
    _plan(tmp_path, objectives={"verify_every": "2d"},
          notify=[{"on": ["objective_breach"], "webhook": f"{receiver.url}/hook"}],
          schedule={"backup": "0 3 * * *"})
    _due(plan, _at(1, 5))
    assert receiver.to("/hook") == []  # not yet due
    jobs = _due(plan, _at(2, 6))  # the restore test passed at day 0 05:00: due by day 2 05:00
    (watch,) = [j for j in jobs if j["job"] == "watch"]
    assert watch["outcome"] == "overdue" and "no passing restore test of web" in watch["error"]
    (sent,) = receiver.to("/hook")
    assert sent["event"] == "objective_breach" and sent["target"] == "web"
    assert f"one was due by {_at(2, 5)[:16]}" in sent["message"]
    # the same lapse is not sent again at the next call, nor the day after
    _due(plan, _at(2, 6, 5))
    _due(plan, _at(3, 5))
    assert len(receiver.to("/hook")) == 1
    history = json.loads(run_cli("history", plan, "--json").out)
    assert [r["command"] for r in history].count("watch") == 1
