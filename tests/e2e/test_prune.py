"""prune: 40 snapshots over simulated months, kept exactly as each policy names; space freed;
the repository checks clean afterwards; a backup racing a prune stays restorable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import assert_same_tree, run_cli, write_plan

START = datetime(2026, 1, 3, 3, 0, tzinfo=UTC)
# 40 backups, 2 days 7 hours apart: about 90 days, crossing months, weeks and days
TIMES = [START + i * timedelta(days=2, hours=7) for i in range(40)]
RELEASES = {5, 17, 30}  # backed up with --tag release


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A repository with 40 snapshots of one target at the TIMES, the 12th verified."""
    root = tmp_path_factory.mktemp("prune")
    src = root / "src"
    src.mkdir()
    (src / "base.bin").write_bytes(os.urandom(200_000))
    plan = write_plan(root / "plan.yaml", ledger="sqlite:///ledger.db",
                      targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                "staging": {"path": "staging"}}])
    assert run_cli("init", plan).rc == 0
    ids = []
    for i, t in enumerate(TIMES):
        # each backup brings 60 KB of data no other snapshot has
        (src / f"day{i}.bin").write_bytes(os.urandom(60_000))
        if i:
            (src / f"day{i - 1}.bin").unlink()
        env = {"RESTORER_NOW": t.isoformat()}
        args = ["backup", plan, "--json"] + (["--tag", "release"] if i in RELEASES else [])
        r = run_cli(*args, env=env)
        assert r.rc == 0, r.text
        ids.append(json.loads(r.out)["targets"][0]["snapshot"])
        if i == 11:
            r = run_cli("verify", plan, "--snapshot", ids[-1], env=env)
            assert r.rc == 0, r.text
    return root, ids


def _newest_per(keyf, n: int) -> set[int]:
    seen: dict[tuple, int] = {}
    for i in reversed(range(len(TIMES))):
        k = keyf(TIMES[i])
        if k not in seen and len(seen) < n:
            seen[k] = i
    return set(seen.values())


VERIFIED = {11}
CASES = {
    "last": ({"keep_last": 5}, set(range(35, 40))),
    "daily": ({"keep_daily": 7}, _newest_per(lambda t: (t.year, t.month, t.day), 7)),
    "weekly": ({"keep_weekly": 6}, _newest_per(lambda t: tuple(t.isocalendar()[:2]), 6)),
    "monthly": ({"keep_monthly": 2}, _newest_per(lambda t: (t.year, t.month), 2)),
    "within": ({"keep_within": "10d"},
               {i for i, t in enumerate(TIMES) if TIMES[-1] - t < timedelta(days=10)}),
    "tags+last": ({"keep_tags": ["release"], "keep_last": 2}, RELEASES | {38, 39}),
    "combined": ({"keep_last": 1, "keep_weekly": 2, "keep_monthly": 3},
                 {39} | _newest_per(lambda t: tuple(t.isocalendar()[:2]), 2)
                 | _newest_per(lambda t: (t.year, t.month), 3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prune_keeps_exactly_what_the_policy_names(case: str, history, tmp_path: Path) -> None:
    root, ids = history
    policy, expected = CASES[case]
    expected = expected | VERIFIED  # verified snapshots are kept unless prune_verified
    work = tmp_path / "w"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("ledger.db*"))
    plan = write_plan(work / "plan.yaml", ledger="sqlite:///ledger.db", retention=policy,
                      targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    before = _du(work / "repo")
    dry = run_cli("prune", plan, "--dry-run", "--json")
    assert dry.rc == 0, dry.text
    assert _du(work / "repo") == before  # a dry run changes nothing
    r = run_cli("prune", plan, "--json")
    assert r.rc == 0, r.text
    assert json.loads(dry.out)["targets"] == json.loads(r.out)["targets"]
    kept = {s["id"] for s in json.loads(run_cli("snapshots", plan, "--json").out)}
    assert kept == {ids[i] for i in expected}, sorted(ids.index(k) for k in kept)
    freed = json.loads(r.out)["repository"]["bytes_freed"]
    after = _du(work / "repo")
    assert freed > 0 and after < before - 60_000 * (40 - len(expected)) * 0.8
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    # every kept snapshot restores
    newest = ids[max(expected)]
    r = run_cli("restore", plan, newest, "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert (tmp_path / "out" / "src" / "base.bin").read_bytes() == \
        (root / "src" / "base.bin").read_bytes()


def test_prune_verified_allows_old_verified_to_go_but_never_the_newest(history,
                                                                       tmp_path: Path) -> None:
    root, ids = history
    work = tmp_path / "w"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("ledger.db*"))
    plan = write_plan(work / "plan.yaml", retention={"keep_last": 3, "prune_verified": True},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    r = run_cli("prune", plan, "--json")
    assert r.rc == 0, r.text
    reasons = {d["snapshot"]: d["reasons"] for d in json.loads(r.out)["targets"]["data"]}
    assert reasons[ids[11]] == ["newest verified"]  # the only verified one: kept
    kept = {s["id"] for s in json.loads(run_cli("snapshots", plan, "--json").out)}
    assert kept == {ids[11], ids[37], ids[38], ids[39]}


def test_no_policy_keeps_everything(history, tmp_path: Path) -> None:
    root, _ids = history
    work = tmp_path / "w"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("ledger.db*"))
    plan = write_plan(work / "plan.yaml",
                      targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    r = run_cli("prune", plan)
    assert r.rc == 0 and "forgot 0 snapshot(s)" in r.out
    assert len(json.loads(run_cli("snapshots", plan, "--json").out)) == 40


def test_backup_racing_prune_waits_and_stays_restorable(history, tmp_path: Path) -> None:
    root, _ids = history
    work = tmp_path / "w"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("ledger.db*"))
    (work / "src" / "fresh.bin").write_bytes(os.urandom(3 << 20))
    plan = write_plan(work / "plan.yaml", retention={"keep_last": 2},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    cmd = [sys.executable, "-m", "restorer"]
    procs = [subprocess.Popen([*cmd, "prune", str(plan), "--lock-wait", "2m"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             subprocess.Popen([*cmd, "backup", str(plan), "--lock-wait", "2m", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    new = json.loads(outs[1][0])["targets"][0]["snapshot"]
    assert new in {s["id"] for s in json.loads(run_cli("snapshots", plan, "--json").out)}
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    r = run_cli("restore", plan, new, "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert_same_tree(work / "src", tmp_path / "out" / "src")


def test_prune_after_rollback_and_undo_keeps_repository_whole(tmp_path: Path, cli) -> None:
    """Regression: a rollback's safety snapshots store some blobs a second time; repacking
    then wrote a pack byte for byte equal to one on the delete list, and deleted it."""
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    (app / "a.txt").write_text("one\n")
    (app / "sub" / "b.txt").write_text("two\n")
    plan = write_plan(tmp_path / "plan.yaml", retention={"keep_last": 1},
                      targets=[{"name": "app", "kind": "files", "paths": ["app"]}])
    assert cli("backup", "--init", plan).rc == 0
    assert cli("verify", plan).rc == 0
    (app / "a.txt").write_text("changed\n")
    (app / "c.txt").write_text("new\n")
    (app / "sub" / "b.txt").unlink()
    assert cli("rollback", plan, "--yes").rc == 0
    assert cli("rollback", plan, "--undo", "--yes").rc == 0
    r = cli("prune", plan)
    assert r.rc == 0, r.text
    r = cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
