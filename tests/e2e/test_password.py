"""Encrypted repositories: a wrong or missing password is a clear error and writes nothing."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_plan

REPO = {"url": "file://repo", "password": "${env:RESTORER_PASSWORD}"}


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def test_wrong_password_fails_clearly_and_writes_nothing(plan_dir: Path, cli) -> None:
    (plan_dir / "src" / "a.txt").write_text("secret data")
    plan = write_plan(plan_dir / "plan.yaml", repository=REPO)
    good = {"RESTORER_PASSWORD": "right one"}
    assert cli("backup", "--init", plan, env=good).rc == 0
    before = listing(plan_dir / "repo")
    bad = {"RESTORER_PASSWORD": "wrong one"}
    for args in (("backup", plan), ("snapshots", plan), ("check", plan, "--read-data"),
                 ("restore", plan, "latest", "--to", plan_dir / "out")):
        r = cli(*args, env=bad)
        assert r.rc == 1, (args, r.text)
        assert "wrong password" in r.err
        assert "wrong one" not in r.text and "right one" not in r.text
    assert listing(plan_dir / "repo") == before
    assert not (plan_dir / "out").exists()


def test_missing_password_secret_is_a_plan_error_naming_it(plan_dir: Path, cli) -> None:
    plan = write_plan(plan_dir / "plan.yaml", repository=REPO)
    r = cli("backup", "--init", plan, env={"RESTORER_PASSWORD": None})
    assert r.rc == 2, r.text
    assert "RESTORER_PASSWORD" in r.err and "repository.password" in r.err
    assert not (plan_dir / "repo").exists()


def test_password_from_file_reference(plan_dir: Path, cli) -> None:
    (plan_dir / "src" / "a.txt").write_text("x")
    (plan_dir / "pw").write_text("from a file\n")
    plan = write_plan(plan_dir / "plan.yaml",
                      repository={"url": "file://repo", "password": "${file:pw}"})
    assert cli("backup", "--init", plan).rc == 0
    (plan_dir / "pw").write_text("changed\n")
    r = cli("snapshots", plan)
    assert r.rc == 1 and "wrong password" in r.err
