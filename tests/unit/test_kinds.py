"""The capability matrix: `restorer kinds` prints it, the README shows it, and a plan that asks
a kind for what it cannot do is refused by validate, schedule, verify and rollback before
anything runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, write_plan


def test_kinds_json_is_the_readme_table() -> None:
    r = run_cli("kinds", "--json")
    assert r.rc == 0, r.text
    rows = json.loads(r.out)
    caps = ["backup", "restore", "verify", "rollback", "prune"]
    want = {row["kind"]: ["yes" if row["capabilities"][c]["can"] else "no" for c in caps]
            for row in rows}
    readme = (ROOT / "README.md").read_text()
    shown = {m.group(1): [c.strip() for c in m.group(2).split("|")]
             for m in re.finditer(r"^\| `([a-z-]+)` \| ((?:(?:yes|no) \| ){4}(?:yes|no)) \|$",
                                  readme, re.M)}
    assert shown == want
    # every gap says why
    for row in rows:
        for c in caps:
            assert row["capabilities"][c]["how"], (row["kind"], c)
    text = run_cli("kinds").out
    assert "command cannot verify:" in text and "sqlite cannot roll back:" in text


@pytest.mark.parametrize(("target", "why"), [
    ({"name": "app", "kind": "sqlite", "path": "app.db"}, "kind sqlite cannot roll back"),
    ({"name": "app", "kind": "command", "backup": "echo x", "restore": "cat"},
     "kind command cannot roll back"),
    ({"name": "app", "kind": "postgres", "dsn": "postgresql://u@db.example/app",
      "via_ssh": {"host": "db.example"}}, "not built yet for a target reached over via_ssh"),
    ({"name": "app", "kind": "postgres", "dsn": "postgresql://u@db.example/postgres",
      "all_databases": True}, "a pg_dumpall snapshot (all_databases)"),
])
def test_rollback_targets_that_cannot_roll_back_are_refused_by_validate(
        tmp_path: Path, target: dict, why: str) -> None:
    (tmp_path / "app.db").write_bytes(b"")
    plan = write_plan(tmp_path / "plan.yaml", targets=[target],
                      rollback={"targets": ["app"]})
    r = run_cli("validate", plan, "--no-env")
    assert r.rc == 2, r.text
    assert "rollback.targets[0]" in r.err and why in r.err, r.err
    assert re.search(r"plan\.yaml:\d+: At 'rollback.targets\[0\]'", r.err), r.err
    # rollback refuses before anything runs; a backup still runs (a plan whose
    # rollback.targets is wrong must not stop its backups)
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 2 and why in r.err, r.text
    assert not (tmp_path / "repo").exists()


def test_schedule_verify_over_a_target_that_cannot_be_verified_is_refused(
        tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", schedule={"verify": "30 4 * * 0"}, targets=[
        {"name": "src", "kind": "files", "paths": ["src"]},
        {"name": "export", "kind": "command", "backup": "echo x", "restore": "cat"}])
    r = run_cli("validate", plan, "--no-env", "--json")
    assert r.rc == 2, r.text
    problems = json.loads(r.out)[0]["problems"]
    assert [(p["key"], "kind command cannot verify" in p["message"]) for p in problems] == \
        [("schedule.verify", True)]
    assert problems[0]["line"] and "target export" in problems[0]["message"]


def test_verify_of_a_kind_that_cannot_says_so_in_the_one_wording(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "export", "kind": "command", "backup": "echo hello", "restore": "cat"}])
    assert run_cli("backup", "--init", plan).rc == 0
    r = run_cli("verify", plan)
    assert r.rc != 0, r.text
    assert "target export: kind command cannot verify:" in r.text, r.text
