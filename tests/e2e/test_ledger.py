"""The ledger: runs and phases with timings, interrupted runs, and a hash chain that shows
tampering."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_plan


def _plan(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a.bin").write_bytes(b"a" * 200_000)
    return write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")


def test_runs_and_phases_are_recorded_with_timings(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path)
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    snap = json.loads(r.out)["targets"][0]["snapshot"]
    assert cli("restore", plan, "latest", "--to", tmp_path / "out").rc == 0
    assert cli("check", plan, "--read-data").rc == 0
    assert cli("restore", plan, "nope", "--to", tmp_path / "o2").rc == 2
    runs = json.loads(cli("history", plan, "--json").out)
    assert [r["command"] for r in runs] == ["restore", "check", "restore", "backup"]
    failed, check, restore, backup = runs
    # a usage mistake (no such snapshot id) is recorded as one, not as a failure
    assert failed["outcome"] == "usage" and failed["exit_code"] == 2
    assert "nope" in failed["error"]
    assert backup["outcome"] == "ok" and backup["exit_code"] == 0
    phases = {p["phase"]: p for p in backup["phases"]}
    assert phases["backup"]["target"] == "data" and phases["backup"]["snapshot"] == snap
    assert phases["backup"]["bytes"] == 200_000 and phases["backup"]["duration_s"] > 0
    assert "lock" in phases
    rp = restore["phases"][0]
    assert rp["phase"] == "restore" and rp["snapshot"] == snap and rp["bytes"] == 200_000
    assert rp["duration_s"] > 0
    assert check["phases"][0]["phase"] == "check" and check["phases"][0]["bytes"] > 0
    for run in runs:
        assert run["host"] and run["user"] and run["version"] and len(run["plan_digest"]) == 64
    text = cli("history", plan).out
    assert "backup data: ok" in text and "restore data: ok" in text


def test_a_killed_run_shows_as_interrupted(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path)
    assert cli("init", plan).rc == 0
    hook = {"before": ["sleep 30"]}
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", hooks=hook)
    p = subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(plan)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    runs = json.loads(cli("history", plan, "--json").out)
    assert runs[0]["command"] == "backup" and runs[0]["outcome"] == "interrupted"


def test_editing_or_deleting_a_row_breaks_the_chain(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path)
    for _ in range(3):
        assert cli("backup", "--init", plan).rc == 0
    r = cli("history", plan, "--verify-chain")
    assert r.rc == 0 and "chain intact" in r.out
    db = sqlite3.connect(tmp_path / "ledger.db")
    # an auditor's nightmare: someone makes a failed run look fine
    seq = db.execute("SELECT seq FROM entries WHERE data LIKE '%\"bytes\":200000%' "
                     "ORDER BY seq LIMIT 1").fetchone()[0]
    n = db.execute("UPDATE entries SET data = replace(data, '\"bytes\":200000', "
                   "'\"bytes\":1') WHERE seq = ?", (seq,)).rowcount
    db.commit()
    assert n == 1
    r = cli("history", plan, "--verify-chain")
    assert r.rc == 1 and f"row {seq} was changed after it was written" in r.err
    db.execute("DELETE FROM entries WHERE seq = ?", (seq,))
    db.commit()
    r = cli("history", plan, "--verify-chain", "--json")
    assert r.rc == 1
    assert json.loads(r.out)["first_broken_row"] == seq and f"row {seq} is missing" in r.err


def test_init_copy_and_unlock_are_ledger_runs(tmp_path: Path, cli) -> None:
    # every command that acts on a repository is recorded, with the outcome its result
    # says and the exit code that outcome maps to
    plan = _plan(tmp_path)
    assert cli("init", plan).rc == 0
    assert cli("backup", plan).rc == 0
    assert cli("copy", plan, "--to", f"file://{tmp_path / 'offsite'}").rc == 0
    assert cli("unlock", plan).rc == 0
    runs = json.loads(cli("history", plan, "--json").out)
    assert [r["command"] for r in runs] == ["unlock", "copy", "backup", "init"]
    unlock, copy, _backup, init = runs
    assert all(r["outcome"] == "ok" and r["exit_code"] == 0 for r in runs), runs
    assert {p["phase"] for p in init["phases"]} == {"init"}
    (copied,) = [p for p in copy["phases"] if p["phase"] == "copy"]
    assert copied["snapshots_copied"] == 1 and copied["bytes"] > 0
    (unlocked,) = [p for p in unlock["phases"] if p["phase"] == "unlock"]
    assert unlocked["removed"] == 0 and unlocked["kept"] == 0
    # a second init fails, and is recorded as a failure with its message
    r = cli("init", plan)
    assert r.rc != 0
    last = json.loads(cli("history", plan, "--json").out)[0]
    assert last["command"] == "init" and last["outcome"] == "failed"
    assert last["exit_code"] == r.rc and last["error"]
