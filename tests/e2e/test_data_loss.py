"""Regressions for the ways prune could destroy a backup: an index deleted because the new
one has the same name, a listing error read as "no snapshots", and a retention policy that
forgets every snapshot of a target."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_same_tree, run_cli, write_plan

# root keeps reading unreadable folders through these capabilities: drop them for the run
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _quickstart(tmp_path: Path, encrypted: bool) -> Path:
    work = tmp_path / "qs"
    shutil.copytree(ROOT / "plans", work, ignore=shutil.ignore_patterns(".quickstart"))
    plan = work / "quickstart.yaml"
    if encrypted:
        text = plan.read_text().replace(
            "  url: file://.quickstart/repo        # relative to this file's folder\n",
            "  url: file://.quickstart/repo\n  password: ${env:RESTORER_PASSWORD}\n")
        assert "password" in text
        plan.write_text(text)
    return plan


def _all_snapshots_restore(plan: Path, src: Path, out: Path, env: dict) -> list[str]:
    r = run_cli("check", plan, "--read-data", env=env)
    assert r.rc == 0, r.text
    assert "harmless" not in r.text
    ids = [s["id"] for s in json.loads(run_cli("snapshots", plan, "--json", env=env).out)]
    assert ids
    for sid in ids:
        dest = out / sid[:8]
        r = run_cli("restore", plan, sid, "--to", dest, env=env)
        assert r.rc == 0, r.text
    return ids


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_prune_with_nothing_to_forget_keeps_the_index(tmp_path: Path, encrypted: bool) -> None:
    env = {"RESTORER_PASSWORD": "pw"} if encrypted else {}
    plan = _quickstart(tmp_path, encrypted)
    src = plan.parent / "sample"
    r = run_cli("backup", "--init", plan, env=env)
    assert r.rc == 0, r.text
    for i in range(2):
        r = run_cli("prune", plan, env=env)
        assert r.rc == 0, r.text
        assert list((plan.parent / ".quickstart" / "repo" / "index").iterdir()), \
            f"prune {i + 1} left no index"
        _all_snapshots_restore(plan, src, tmp_path / f"out{i}", env)
    r = run_cli("restore", plan, "latest", "--to", tmp_path / "latest", env=env)
    assert r.rc == 0, r.text
    # the quickstart excludes *.tmp; everything else comes back
    assert (tmp_path / "latest" / "sample" / "docs" / "README.txt").read_bytes() == \
        (src / "docs" / "README.txt").read_bytes()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_prune_keep_last_one_over_two_snapshots(tmp_path: Path, encrypted: bool) -> None:
    env = {"RESTORER_PASSWORD": "pw"} if encrypted else {}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(100_000))
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_last": 1},
                      repository={"url": "file://repo", **(
                          {"password": "${env:RESTORER_PASSWORD}"} if encrypted else {})})
    assert run_cli("backup", "--init", plan, env=env).rc == 0
    (tmp_path / "src" / "b.bin").write_bytes(os.urandom(50_000))
    assert run_cli("backup", plan, env=env).rc == 0
    for i in range(2):
        r = run_cli("prune", plan, "--json", env=env)
        assert r.rc == 0, r.text
        ids = _all_snapshots_restore(plan, tmp_path / "src", tmp_path / f"out{i}", env)
        assert len(ids) == 1
        assert_same_tree(tmp_path / "src", tmp_path / f"out{i}" / ids[0][:8] / "src")


def test_check_does_not_call_lost_index_harmless(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    plan = write_plan(tmp_path / "plan.yaml")
    assert run_cli("backup", "--init", plan).rc == 0
    for f in (tmp_path / "repo" / "index").iterdir():
        f.unlink()
    r = run_cli("check", plan)
    assert r.rc == 1, r.text
    assert "harmless" not in r.text
    assert "do not prune" in r.text


# --- listing errors ---------------------------------------------------------------------


def test_unreadable_snapshot_folder_is_an_error_and_prune_deletes_nothing(
        tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(200_000))
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_last": 5})
    assert run_cli("backup", "--init", plan).rc == 0
    repo = tmp_path / "repo"
    packs = sorted(p.name for p in (repo / "data").rglob("*") if p.is_file())
    os.chmod(repo / "snapshots", 0)
    try:
        r = _no_dac("snapshots", plan)
        assert r.rc == 1, r.text
        assert "no snapshots" not in r.text and "snapshots" in r.err
        assert "Permission denied" in r.err
        r = _no_dac("prune", plan)
        assert r.rc == 1, r.text
        r = _no_dac("backup", plan)  # a backup cannot find its parent: it says so
        assert r.rc == 1, r.text
    finally:
        os.chmod(repo / "snapshots", 0o700)
    assert sorted(p.name for p in (repo / "data").rglob("*") if p.is_file()) == packs
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text


def _no_dac(*args: str | Path):
    import subprocess
    import sys

    p = subprocess.run([*NO_DAC, sys.executable, "-m", "restorer", *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    from tests.conftest import Result

    return Result(p.returncode, p.stdout, p.stderr)


def test_unreadable_verification_record_stops_prune(tmp_path: Path) -> None:
    """A verification record that cannot be read may be the one that protects a snapshot."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_last": 1},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                "staging": {"path": "staging"}}])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    (tmp_path / "src" / "a.txt").write_text("b")
    assert run_cli("backup", plan).rc == 0
    rec = next((tmp_path / "repo" / "verifications").iterdir())
    os.chmod(rec, 0)
    try:
        r = _no_dac("prune", plan)
    finally:
        os.chmod(rec, 0o600)
    assert r.rc == 1, r.text
    assert rec.name[:8] in r.err
    assert len(json.loads(run_cli("snapshots", plan, "--json").out)) == 2


# --- retention that would forget everything ---------------------------------------------


@pytest.mark.parametrize("policy", [{"keep_tags": ["never-used-tag"]},
                                    {"keep_tags": ["never-used-tag"], "keep_last": 0}])
def test_prune_refuses_to_forget_every_snapshot_of_a_target(tmp_path: Path,
                                                            policy: dict) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    plan = write_plan(tmp_path / "plan.yaml", retention=policy, ledger="sqlite:///ledger.db")
    assert run_cli("backup", "--init", plan, env={"RESTORER_NOW": "2026-01-01T00:00:00Z"}).rc == 0
    assert run_cli("backup", plan, env={"RESTORER_NOW": "2026-01-02T00:00:00Z"}).rc == 0
    r = run_cli("prune", plan, "--dry-run")
    assert r.rc == 2, r.text
    assert "every snapshot of target data" in r.err and "--allow-remove-all" in r.err
    r = run_cli("prune", plan)
    assert r.rc == 2, r.text
    assert len(json.loads(run_cli("snapshots", plan, "--json").out)) == 2
    r = run_cli("prune", plan, "--allow-remove-all", "--json")
    assert r.rc == 0, r.text
    assert json.loads(run_cli("snapshots", plan, "--json").out) == []


def test_keep_within_zero_is_refused_at_validation(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_within": "0s"})
    r = run_cli("validate", plan)
    assert r.rc == 2, r.text
    assert "plan.yaml" in r.err and "keep_within" in r.err
