"""What a plan may ask of each kind, refused before anything runs: staging keys the kind does
not use, and (through the registry) capabilities it lacks, by every command that loads the
plan, with the file, line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_plan

# (kind's target, a staging key it does not take, a kind that does)
CASES = [
    ({"name": "data", "kind": "files", "paths": ["src"]}, {"instance_class": "db.t3.micro"},
     "rds"),
    ({"name": "db", "kind": "sqlite", "path": "app.db"}, {"dsn": "postgresql://x@h/s"},
     "postgres, mysql, rds"),
    ({"name": "pg", "kind": "postgres", "dsn": "postgresql://u@127.0.0.1/app"},
     {"path": "/srv/staging"}, "files, ssh-files, sqlite"),
    ({"name": "vol", "kind": "ebs", "volume_id": "vol-0123456789abcdef0",
      "region": "eu-west-1"}, {"subnet_group": "g"}, "rds"),
]


@pytest.mark.parametrize(("target", "staging", "users"), CASES,
                         ids=[c[0]["kind"] for c in CASES])
def test_a_staging_key_the_kind_does_not_use_is_refused(tmp_path: Path, cli, target: dict,
                                                       staging: dict, users: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "app.db").write_bytes(b"")
    plan = write_plan(tmp_path / "plan.yaml", targets=[{**target, "staging": staging}])
    key = next(iter(staging))
    r = cli("validate", "--no-env", plan)
    assert r.rc == 2, r.text
    line = next(i for i, text in enumerate(plan.read_text().splitlines(), 1)
                if text.strip().startswith(f"{key}:"))
    assert f"{plan}:{line}: At 'targets[0].staging.{key}'" in r.err
    assert f"a {target['kind']} target's staging takes" in r.err
    assert f"{key} is for {users} targets" in r.err
    assert f"remove staging.{key}" in r.err
    # the same plan is refused by a command that acts, and nothing is made
    r = cli("backup", "--init", plan)
    assert r.rc == 2 and f"targets[0].staging.{key}" in r.err, r.text
    assert not (tmp_path / "repo").exists()


def test_the_keys_a_kind_takes_are_accepted(tmp_path: Path, cli) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "data", "kind": "files", "paths": ["src"],
         "staging": {"path": "staging", "keep": True}},
        {"name": "pg", "kind": "postgres", "dsn": "postgresql://u@127.0.0.1/app",
         "staging": {"dsn": "postgresql://u@127.0.0.1/app_restore_test", "keep": False}}])
    r = cli("validate", "--no-env", plan)
    assert r.rc == 0, r.text


@pytest.mark.parametrize("command", [["backup", "--init"], ["snapshots"], ["prune"],
                                     ["restore", "latest", "--to", "out"], ["check"]])
def test_every_command_refuses_a_plan_asking_a_kind_what_it_cannot(tmp_path: Path, cli,
                                                                   command: list[str]) -> None:
    # rollback.targets names a sqlite target, which cannot roll back: the plan is invalid
    # for every command (like an unknown key), not only for validate and rollback
    (tmp_path / "app.db").write_bytes(b"")
    plan = write_plan(tmp_path / "plan.yaml",
                      targets=[{"name": "db", "kind": "sqlite", "path": "app.db"}],
                      rollback={"targets": ["db"]})
    r = cli(command[0], plan, *command[1:])
    assert r.rc == 2, r.text
    line = next(i for i, text in enumerate(plan.read_text().splitlines(), 1)
                if text.strip() == "- db")
    assert f"{plan}:{line}: At 'rollback.targets[0]'" in r.err
    assert "target db: kind sqlite cannot roll back: not built yet" in r.err
    assert "remove it from rollback.targets" in r.err
    assert not (tmp_path / "repo").exists() and not (tmp_path / "out").exists()
