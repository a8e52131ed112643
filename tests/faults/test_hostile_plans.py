"""Hostile plans: each is refused with a clear message, exit 2, in well under a second of
work, and never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_plan

HEAD = "version: 1\nname: x\nrepository: {url: 'file://repo'}\n"

LAUGHS = HEAD + "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + \
    "\ntargets: []\n"

CASES = {
    "billion-laughs": (LAUGHS, "billion laughs"),
    "recursive-alias": (HEAD + "targets: &t [*t]\n", "recursive alias"),
    "deep-nesting": (HEAD + "targets: " + "[" * 20_000 + "]" * 20_000 + "\n",
                     "nested deeper than"),
    "duplicate-key": (HEAD + "targets:\n  - name: a\n    kind: files\n    paths: [src]\n"
                      "    paths: [/etc]\n", "key 'paths' is given twice"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_yaml_is_refused_quickly_and_clearly(tmp_path: Path, case: str) -> None:
    text, words = CASES[case]
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    t0 = time.monotonic()
    r = run_cli("validate", plan, timeout=60)
    took = time.monotonic() - t0
    assert r.rc == 2, r.text
    assert words in r.err and "plan.yaml" in r.err, r.err
    assert "Traceback" not in r.text
    assert took < 5, took  # the process start included; the refusal itself is instant


def test_huge_plan_is_refused_by_size(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    with open(plan, "w") as f:
        f.write(HEAD + "targets: []\n")
        f.write("# padding\n" * 5_000_000)  # 50 MB
    t0 = time.monotonic()
    r = run_cli("validate", plan, timeout=60)
    assert r.rc == 2 and "limited to 1024 KiB" in r.err, r.text
    assert time.monotonic() - t0 < 5


def test_password_in_a_dsn_is_refused(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "db", "kind": "postgres", "dsn": "postgresql://app:s3cret@127.0.0.1/app"},
        {"name": "my", "kind": "mysql", "dsn": "mysql://app@127.0.0.1/app?password=s3cret"}])
    r = run_cli("validate", plan, "--no-env")
    assert r.rc == 2, r.text
    assert r.err.count("the DSN holds a password") == 2
    assert "targets[0].dsn" in r.err and "targets[1].dsn" in r.err
    assert "password: ${file:" in r.err
    assert "s3cret" not in r.err


def test_plans_whose_paths_cannot_work_together_are_refused(tmp_path: Path) -> None:
    for d in ("a/site", "b/site", "src", "other"):
        (tmp_path / d).mkdir(parents=True)
    plan = write_plan(tmp_path / "plan.yaml", repository={"url": "file://src/repo"}, targets=[
        {"name": "two", "kind": "files", "paths": ["a/site", "b/site"]},
        {"name": "main", "kind": "files", "paths": ["src"]},
        {"name": "other", "kind": "files", "paths": ["other"],
         "staging": {"path": "src/staging"}}])
    r = run_cli("validate", plan)
    assert r.rc == 2, r.text
    assert "both end in 'site'" in r.err and "targets[0].paths[1]" in r.err
    assert "is inside" in r.err and "targets[2].staging.path" in r.err
    assert "copy the repository into itself" in r.err and "repository.url" in r.err


def test_empty_repository_password_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "password": "${env:EMPTY_PW}"})
    r = run_cli("init", plan, env={"EMPTY_PW": ""})
    assert r.rc == 2 and "resolves to an empty value" in r.err, r.text
    assert not (tmp_path / "repo").exists()


def test_an_excluded_repository_inside_a_source_is_fine(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", repository={"url": "file://src/.backup/repo"},
                      targets=[{"name": "main", "kind": "files", "paths": ["src"],
                                "exclude": [".backup/"]}])
    r = run_cli("validate", plan)
    assert r.rc == 0, r.text
