"""Signals: SIGTERM and SIGHUP end a run as SIGINT does: the message names the signal, the
lock is released, the ledger says `terminated`, the exit code is 128 + the signal, nothing
partial is kept; a second signal during clean-up ends the process at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, tree_digest, write_plan


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "restorer", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_child(proc: subprocess.Popen[str], name: str, timeout: float = 30) -> None:
    """Until `proc` has a child process running `name` (a hook it is waiting on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", name],
                              capture_output=True, text=True).stdout.split()
        if kids:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it reached {name}: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"no {name} child appeared")


def _last_run(plan: Path) -> dict:
    return json.loads(run_cli("history", plan, "--json").out)[0]


def _locks(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "locks").iterdir()) if (repo / "locks").exists() \
        else []


@pytest.fixture
def files_plan(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(100_000))
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                "staging": {"path": "staging"}}])
    assert run_cli("init", plan).rc == 0
    return plan


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: s.name)
def test_signal_during_backup(files_plan: Path, sig: signal.Signals) -> None:
    write_plan(files_plan, ledger="sqlite:///ledger.db", hooks={"before": ["sleep 30"]},
               targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    proc = _start("backup", files_plan)
    _wait_for_child(proc, "sleep 30")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, out + err
    assert f"terminated by {sig.name}" in err and "lock was released" in err
    assert "Traceback" not in err
    repo = files_plan.parent / "repo"
    assert _locks(repo) == [] and not list((repo / "snapshots").glob("*"))
    last = _last_run(files_plan)
    assert (last["command"], last["outcome"], last["exit_code"]) == \
        ("backup", "terminated", 128 + sig)
    assert sig.name in last["error"]
    # the next run is not hindered
    write_plan(files_plan, ledger="sqlite:///ledger.db",
               targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    assert run_cli("backup", files_plan).rc == 0


@pytest.mark.parametrize(("command", "sig"), [("prune", signal.SIGTERM),
                                              ("restore", signal.SIGHUP)])
def test_signal_while_waiting_for_the_lock(files_plan: Path, command: str,
                                           sig: signal.Signals) -> None:
    assert run_cli("backup", files_plan).rc == 0
    repo = files_plan.parent / "repo"
    holder = subprocess.Popen(["sleep", "60"])
    lock = repo / "locks" / ("e" * 32)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                "exclusive": True, "time": time.time(),
                                "command": "restorer something else"}))
    try:
        args = ["prune", files_plan] if command == "prune" else \
            ["restore", files_plan, "latest", "--to", files_plan.parent / "out"]
        proc = _start(*args, "--lock-wait", "2m")
        time.sleep(1.5)  # it is waiting for the holder's lock now
        assert proc.poll() is None
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 128 + sig, out + err
    assert f"terminated by {sig.name}" in err
    assert _locks(repo) == ["e" * 32]  # only the other run's lock: ours is gone
    last = _last_run(files_plan)
    assert (last["command"], last["outcome"]) == (command, "terminated")
    assert not (files_plan.parent / "out").exists()


def test_signal_during_rollback_leaves_targets_as_before_and_runs_after_hooks(
        files_plan: Path) -> None:
    plan = files_plan
    src = plan.parent / "src"
    assert run_cli("backup", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    (src / "a.bin").write_bytes(b"changed")
    before = tree_digest(src)
    started = plan.parent / "app-started"
    write_plan(plan, ledger="sqlite:///ledger.db",
               rollback={"before": ["sleep 30"], "after": [f"touch {started}"]},
               targets=[{"name": "data", "kind": "files", "paths": ["src"],
                         "staging": {"path": "staging"}}])
    proc = _start("rollback", plan, "--yes")
    _wait_for_child(proc, "sleep 30")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    assert tree_digest(src) == before and started.exists()
    assert _locks(plan.parent / "repo") == []
    assert _last_run(plan)["outcome"] == "terminated"
    # nothing is left half made: cleanup finds the killed run's sibling, the next one works
    write_plan(plan, ledger="sqlite:///ledger.db",
               targets=[{"name": "data", "kind": "files", "paths": ["src"],
                         "staging": {"path": "staging"}}])
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 0, r.text
    assert (src / "a.bin").read_bytes() != b"changed"


def test_second_signal_during_clean_up_ends_at_once(files_plan: Path) -> None:
    write_plan(files_plan, ledger="sqlite:///ledger.db",
               hooks={"before": ["sleep 30"], "after": ["sleep 40"]},
               targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    proc = _start("backup", files_plan)
    _wait_for_child(proc, "sleep 30")
    proc.send_signal(signal.SIGTERM)
    _wait_for_child(proc, "sleep 40")  # clean-up: the after hook runs
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 143 and time.monotonic() - t0 < 5
