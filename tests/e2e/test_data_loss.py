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


# --- a backup that lost its lock --------------------------------------------------------


def _stopped_backup(tmp_path: Path):
    """A repository whose only kept snapshot no longer holds big.bin, and a backup of a
    tree holding big.bin again, stopped (SIGSTOP) right after it took its lock and read the
    index: it will dedup big.bin against a pack that prune is about to delete."""
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(600_000)
    (src / "big.bin").write_bytes(big)
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_last": 1},
                      ledger="sqlite:///ledger.db")
    assert run_cli("backup", "--init", plan).rc == 0
    (src / "big.bin").unlink()
    (src / "small.txt").write_text("small")
    assert run_cli("backup", plan).rc == 0
    (src / "big.bin").write_bytes(big)
    # the plan's before hook stops restorer itself (the hook's parent) once it holds the lock
    write_plan(plan, retention={"keep_last": 1}, ledger="sqlite:///ledger.db",
               hooks={"before": ["kill -STOP $PPID"]})
    proc = subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(plan), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("T"):
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the backup never stopped")
    return plan, proc


@pytest.mark.parametrize("clock", ["faketime", "RESTORER_NOW"])
def test_backup_that_lost_its_lock_commits_nothing(tmp_path: Path, clock: str) -> None:
    import signal
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    plan, proc = _stopped_backup(tmp_path)
    try:
        before = {s["id"] for s in json.loads(run_cli("snapshots", plan, "--json").out)}
        # the pruning process lives an hour ahead: the stopped backup's lock looks stale
        if clock == "faketime":
            cmd = ["faketime", "-f", "+1h", sys.executable, "-m", "restorer", "prune",
                   str(plan)]
            env = dict(os.environ)
        else:
            cmd = [sys.executable, "-m", "restorer", "prune", str(plan)]
            ahead = datetime.now(UTC) + timedelta(hours=1)
            env = {**os.environ, "RESTORER_NOW": ahead.isoformat()}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "stale lock" in p.stderr
        assert len(json.loads(run_cli("snapshots", plan, "--json").out)) == 1
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "lost the repository lock" in err and "nothing was committed" in err
    after = {s["id"] for s in json.loads(run_cli("snapshots", plan, "--json").out)}
    assert after <= before  # no new snapshot
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    # the next backup (without the stopping hook) works and restores
    write_plan(plan, retention={"keep_last": 1}, ledger="sqlite:///ledger.db")
    r = run_cli("backup", plan, "--json")
    assert r.rc == 0, r.text
    assert run_cli("check", plan, "--read-data").rc == 0
    r = run_cli("restore", plan, "latest", "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert_same_tree(tmp_path / "src", tmp_path / "out" / "src")
