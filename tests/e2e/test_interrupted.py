"""Regression: a run interrupted after writing packs must not block the next run."""

from __future__ import annotations

import json
from pathlib import Path


def test_backup_after_an_interrupted_run_that_left_identical_packs(plan_dir: Path, cli) -> None:
    (plan_dir / "src" / "a.bin").write_bytes(b"same bytes every time " * 50_000)
    plan = plan_dir / "plan.yaml"
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    repo = plan_dir / "repo"
    # simulate a crash after the packs were written: index and snapshot never made it
    for d in ("index", "snapshots"):
        for f in (repo / d).iterdir():
            f.unlink()
    r = cli("backup", plan, "--json")
    assert r.rc == 0, r.text
    assert json.loads(r.out)["targets"][0]["ok"]
    r = cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    r = cli("restore", plan, "latest", "--to", plan_dir / "out")
    assert r.rc == 0, r.text
    assert (plan_dir / "out" / "src" / "a.bin").read_bytes() == b"same bytes every time " * 50_000


def test_failed_target_does_not_leave_later_targets_referencing_unindexed_data(
        tmp_path: Path, cli) -> None:
    """Regression: data uploaded for a target that then failed was deduplicated against by the
    next target of the same run, although no index file named it."""
    import random

    from tests.conftest import write_plan

    data = random.Random(4).randbytes(3 << 20)
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.bin").write_bytes(data)
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "pack_size": "1MiB"},
                      targets=[{"name": "broken", "kind": "files", "paths": ["one", "missing"]},
                               {"name": "copy", "kind": "files", "paths": ["two"]}])
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 3, r.text
    res = {t["target"]: t for t in json.loads(r.out)["targets"]}
    assert not res["broken"]["ok"] and "missing" in res["broken"]["error"]
    assert res["copy"]["ok"]
    r = cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    r = cli("restore", plan, "latest", "--target", "copy", "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert (tmp_path / "out" / "two" / "same.bin").read_bytes() == data
