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
