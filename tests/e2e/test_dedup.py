"""Deduplication: unchanged data adds (almost) nothing; an insert mid-file adds about a chunk."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conftest import write_plan


def repo_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_second_backup_of_unchanged_data_adds_almost_nothing(plan_dir: Path, cli) -> None:
    rng = random.Random(1)
    src = plan_dir / "src"
    (src / "big.bin").write_bytes(rng.randbytes(12 << 20))
    for i in range(30):
        (src / f"small{i}.txt").write_bytes(rng.randbytes(3000))
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    before = repo_size(plan_dir / "repo")
    r = json.loads(cli("backup", plan, "--json").out)["targets"][0]
    after = repo_size(plan_dir / "repo")
    assert r["summary"]["data_added"] == 0
    # only the new snapshot manifest and a lock-free index: a few KiB at most
    assert after - before < 8 * 1024, after - before


def test_even_a_fresh_read_dedups_against_the_repository(tmp_path: Path, cli) -> None:
    """A second target holding the same bytes (no parent to skip by) stores no new data."""
    rng = random.Random(2)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    data = rng.randbytes(6 << 20)
    (tmp_path / "a" / "x.bin").write_bytes(data)
    (tmp_path / "b" / "y.bin").write_bytes(data)
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "a", "kind": "files", "paths": ["a"]},
        {"name": "b", "kind": "files", "paths": ["b"]}])
    res = json.loads(cli("backup", "--init", plan, "--target", "a", "--json").out)
    assert res["targets"][0]["summary"]["data_added"] >= 6 << 20
    res = json.loads(cli("backup", plan, "--target", "b", "--json").out)
    s = res["targets"][0]["summary"]
    assert s["bytes_read"] == 6 << 20
    assert s["data_added"] < 4096  # only the two small trees


def test_insert_in_the_middle_of_a_large_file_adds_about_one_chunk(plan_dir: Path, cli) -> None:
    rng = random.Random(3)
    big = plan_dir / "src" / "big.bin"
    data = rng.randbytes(32 << 20)
    big.write_bytes(data)
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    before = repo_size(plan_dir / "repo")
    mid = len(data) // 2
    big.write_bytes(data[:mid] + rng.randbytes(5000) + data[mid:])
    r = json.loads(cli("backup", plan, "--json").out)["targets"][0]
    added = repo_size(plan_dir / "repo") - before
    # the whole file is 32 MiB; chunks average ~1 MiB and are at most 8 MiB
    assert r["summary"]["bytes_read"] == (32 << 20) + 5000
    assert r["summary"]["data_added"] < 3 << 20, r["summary"]
    assert added < 3 << 20, added
