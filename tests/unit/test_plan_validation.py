"""Bad plans give one clear message each (file, line, key, fix) and exit 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from restorer.plan.durations import parse_duration
from tests.conftest import run_cli


def _plan(tmp_path: Path, body: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    p = tmp_path / "plan.yaml"
    p.write_text(textwrap.dedent(body))
    return p


BASE = """\
version: 1
name: web
repository: {url: file://repo}
targets:
  - name: up
    kind: files
    paths: [src]
"""


def test_valid_plan_passes(tmp_path: Path) -> None:
    r = run_cli("validate", _plan(tmp_path, BASE))
    assert r.rc == 0, r.text
    assert "ok" in r.out


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BASE.replace("paths: [src]", "pathz: [src]"),
         ["plan.yaml:7", "targets[0].pathz", "unknown key 'pathz'", "did you mean 'paths'"]),
        (BASE.replace("kind: files", "kind: postgress"),
         ["plan.yaml:6", "targets[0].kind", "must be one of", "postgres", "got 'postgress'"]),
        (BASE + "retry: {attempts: lots}\n",
         ["plan.yaml:8", "retry.attempts", "valid integer"]),
        (BASE + "objectives: {rpo: 1 day}\n",
         ["objectives.rpo", "not a duration", "24h"]),
        (BASE + "schedule: {backup: '61 * * *'}\n",
         ["schedule.backup", "5-field cron"]),
        (BASE.replace("repository: {url: file://repo}",
                      "repository: {url: file://repo, password: hunter2}"),
         ["repository.password", "clear text", "${env:NAME}"]),
        (BASE.replace("repository: {url: file://repo}", "repository: {url: ftp://x/y}"),
         ["repository.url", "unsupported repository URL scheme"]),
        (BASE.replace("version: 1\n", ""), ["'version'", "required"]),
        (BASE + "  - name: up\n    kind: files\n    paths: [src]\n",
         ["two targets are named 'up'"]),
        (BASE + "rollback: {targets: [db]}\n", ["rollback.targets names 'db'"]),
        (BASE + "    staging: {path: src/sub}\n", ["staging.path", "overlaps", "scratch"]),
        ("version: 1\nname: [unclosed\n", ["invalid YAML"]),
        ("- just\n- a list\n", ["a plan is a YAML mapping"]),
        (BASE + "    checks:\n      - filez: {exist: [a]}\n",
         ["targets[0].checks[0]", "one of: files, command, sql, http, manifest"]),
        (BASE + "ledger: {url: 'sqlite:///l.db', signin_key: '${file:k}'}\n",
         ["plan.yaml:8", "At 'ledger.signin_key': unknown key", "did you mean 'signing_key'"]),
        (BASE + "ledger: {signing_key: '-----BEGIN PRIVATE KEY-----'}\n",
         ["At 'ledger.signing_key'", "clear text"]),
        (BASE + "ledger: {public_keys: ['ed25519:abc']}\n",
         ["At 'ledger.public_keys'", "not an Ed25519 public key"]),
        (BASE + "ledger: 'ftp://x'\n", ["At 'ledger'", "not a ledger URL"]),
        (BASE + "objectives: {verify_every: weekly}\n",
         ["objectives.verify_every", "not a duration"]),
        (BASE + "report: {formats: [pdf]}\n", ["report.formats[0]", "'html', 'json'"]),
    ],
    ids=["unknown-key", "unknown-kind", "wrong-type", "bad-duration", "bad-cron",
         "clear-text-secret", "bad-scheme", "missing-key", "duplicate-target",
         "rollback-unknown-target", "staging-overlaps-source", "bad-yaml", "not-a-mapping",
         "unknown-check", "ledger-unknown-key", "ledger-key-in-clear", "ledger-bad-public-key",
         "ledger-bad-url", "bad-verify-every", "bad-report-format"],
)
def test_bad_plan_is_reported_with_file_key_and_hint(tmp_path: Path, body: str,
                                                     expected: list[str]) -> None:
    p = _plan(tmp_path, body)
    r = run_cli("validate", p)
    assert r.rc == 2, r.text
    for e in expected:
        assert e in r.err, f"{e!r} not in {r.err!r}"
    assert str(p) in r.err
    assert "Traceback" not in r.text
    # every acting command refuses the same plan the same way
    r2 = run_cli("backup", p)
    assert r2.rc == 2 and "Traceback" not in r2.text


def test_missing_secret_names_the_variable(tmp_path: Path) -> None:
    p = _plan(tmp_path, BASE.replace(
        "repository: {url: file://repo}",
        "repository: {url: file://repo, password: '${env:NO_SUCH_VAR_RESTORER}'}"))
    r = run_cli("validate", p, env={"NO_SUCH_VAR_RESTORER": None})
    assert r.rc == 2
    assert "NO_SUCH_VAR_RESTORER" in r.err and "repository.password" in r.err
    assert run_cli("validate", p, env={"NO_SUCH_VAR_RESTORER": "x"}).rc == 0


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    p = _plan(tmp_path, BASE.replace(
        "repository: {url: file://repo}",
        "repository: {url: file://repo, password: '${file:secrets/none.pass}'}"))
    r = run_cli("validate", p)
    assert r.rc == 2 and "secrets/none.pass" in r.err and "No such file" in r.err


def test_missing_source_path(tmp_path: Path) -> None:
    p = _plan(tmp_path, BASE.replace("paths: [src]", "paths: [src, nowhere]"))
    r = run_cli("validate", p)
    assert r.rc == 2
    assert "targets[0].paths[1]" in r.err and "does not exist" in r.err
    assert run_cli("validate", p, "--no-env").rc == 0


def test_validate_json_lists_every_problem(tmp_path: Path) -> None:
    p = _plan(tmp_path, BASE.replace("paths: [src]", "pathz: [src]\n    exclud: []"))
    r = run_cli("validate", p, "--json")
    assert r.rc == 2
    rep = json.loads(r.out)
    keys = sorted(x["key"] for x in rep[0]["problems"])
    assert keys == ["targets[0].exclud", "targets[0].paths", "targets[0].pathz"]


def test_plan_file_not_found(tmp_path: Path) -> None:
    r = run_cli("backup", tmp_path / "nope.yaml")
    assert r.rc == 2 and "nope.yaml" in r.err and "cannot read the plan" in r.err


def test_schema_is_json_schema_for_plans() -> None:
    r = run_cli("schema")
    assert r.rc == 0
    s = json.loads(r.out)
    assert s["title"] == "restorer plan"
    assert {"version", "name", "repository", "targets"} <= set(s["properties"])
    assert s["additionalProperties"] is False


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400),
                                               ("7d", 604800), ("1h30m", 5400), (45, 45)])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1 day", "h", "-5s", "5x"])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_missing_sqlite_database_is_reported(tmp_path: Path) -> None:
    p = _plan(tmp_path, BASE + "  - name: db\n    kind: sqlite\n    path: data/app.db\n")
    r = run_cli("validate", p)
    assert r.rc == 2 and "targets[1].path" in r.err and "app.db" in r.err


def test_validate_lists_every_problem_in_one_pass(tmp_path) -> None:
    """Regression: a duplicate target name hid a missing path until it was fixed."""
    from tests.conftest import write_plan

    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "data", "kind": "files", "paths": ["missing-one"]},
        {"name": "data", "kind": "files", "paths": ["missing-two"]}],
        rollback={"targets": ["nope"]})
    r = run_cli("validate", plan)
    assert r.rc == 2, r.text
    assert "two targets are named 'data'" in r.err and "targets[1].name" in r.err
    assert "rollback.targets names 'nope'" in r.err
    assert "missing-one does not exist" in r.err and "missing-two does not exist" in r.err


@pytest.mark.parametrize(("expr", "words"), [
    ("0 25 * * *", "the hour field '25' is out of range: hour goes from 0 to 23"),
    ("61 * * * *", "the minute field '61' is out of range"),
    ("0 0 32 * *", "day-of-month field '32'"),
    ("0 0 * 13 *", "the month field '13'"),
    ("0 0 30 2 *", "never fires"),
    ("0 3 * *", "not a 5-field cron expression"),
])
def test_cron_expression_errors_name_the_field(tmp_path, expr: str, words: str) -> None:
    from tests.conftest import write_plan

    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", schedule={"backup": expr})
    r = run_cli("validate", plan)
    assert r.rc == 2, r.text
    assert words in r.err and "schedule.backup" in r.err, r.err
