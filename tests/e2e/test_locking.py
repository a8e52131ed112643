"""Concurrent runs serialise or fail with exit 4 naming the holder; stale locks are taken over."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_plan


def _write_lock(repo: Path, pid: int, age: float = 0.0, exclusive: bool = True) -> Path:
    (repo / "locks").mkdir(exist_ok=True)
    p = repo / "locks" / ("f" * 32)
    p.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "exclusive": exclusive,
                             "time": time.time() - age, "command": "restorer backup other.yaml"}))
    return p


@pytest.fixture
def ready(plan_dir: Path, cli):
    (plan_dir / "src" / "a.txt").write_text("a")
    plan = plan_dir / "plan.yaml"
    assert cli("init", plan).rc == 0
    return plan_dir, plan


def test_live_lock_makes_backup_exit_4_naming_the_holder(ready, cli) -> None:
    plan_dir, plan = ready
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(plan_dir / "repo", holder.pid)
        r = cli("backup", plan)
        assert r.rc == 4, r.text
        assert f"pid {holder.pid}" in r.err and socket.gethostname() in r.err
        assert "restorer unlock" in r.err
        assert not list((plan_dir / "repo").glob("snapshots/*"))
        # unlock without --all keeps a live lock
        r = cli("unlock", plan)
        assert r.rc == 0 and "kept live" in r.out
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(ready, cli) -> None:
    plan_dir, plan = ready
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = _write_lock(plan_dir / "repo", dead.pid)
    r = cli("backup", plan)
    assert r.rc == 0, r.text
    assert "stale lock" in r.err
    assert not lock.exists()


def test_lock_older_than_its_limit_is_stale(ready, cli) -> None:
    plan_dir, plan = ready
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(plan_dir / "repo", holder.pid, age=3600)
        r = cli("backup", plan)
        assert r.rc == 0, r.text
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_backups_serialise_with_lock_wait(ready) -> None:
    plan_dir, plan = ready
    rng = random.Random(9)
    for i in range(6):
        (plan_dir / "src" / f"b{i}.bin").write_bytes(rng.randbytes(4 << 20))
    procs = [subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(plan),
                               "--lock-wait", "2m", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(os.listdir(plan_dir / "repo" / "snapshots")) == 2
    assert not os.listdir(plan_dir / "repo" / "locks")


def test_concurrent_backups_without_wait_never_both_write_unsafely(ready) -> None:
    plan_dir, plan = ready
    rng = random.Random(10)
    for i in range(6):
        (plan_dir / "src" / f"b{i}.bin").write_bytes(rng.randbytes(4 << 20))
    procs = [subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(plan)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 4]), outs
    for p, (_out, err) in zip(procs, outs, strict=True):
        if p.returncode == 4:
            assert "is locked" in err and "pid" in err
    assert len(os.listdir(plan_dir / "repo" / "snapshots")) == codes.count(0)


def test_backups_share_the_lock_and_prune_waits_for_them(ready, cli) -> None:
    plan_dir, plan = ready
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(plan_dir / "repo", holder.pid, exclusive=False)  # a backup running
        r = cli("backup", plan)
        assert r.rc == 0, r.text  # another backup may run beside it
        r = cli("prune", plan)
        assert r.rc == 4 and f"pid {holder.pid}" in r.err  # prune may not
        runs = json.loads(cli("history", plan, "--json").out)
        assert runs[0]["command"] == "prune" and runs[0]["outcome"] == "locked"
    finally:
        holder.kill()
        holder.wait()
    r = cli("prune", plan)  # the holder is dead: its lock is stale and taken over
    assert r.rc == 0 and "stale lock" in r.err


def test_a_taken_lock_names_the_command_and_plan_holding_it(plan_dir: Path, cli) -> None:
    # the label comes from the action (who holds the lock), not from this process's argv
    (plan_dir / "src" / "a.txt").write_text("a")
    flag = plan_dir / "in-hook"
    plan = write_plan(plan_dir / "plan.yaml", hooks={
        "before": [f"touch {flag} && sleep 20"], "timeout": "60s"})
    assert cli("init", plan).rc == 0
    backup = subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(plan)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), "the backup never reached its before hook"
        r = cli("prune", plan)
        assert r.rc == 4, r.text
        assert "shared lock held by pid" in r.err and "(restorer backup test)" in r.err, r.err
    finally:
        backup.kill()
        backup.communicate()
