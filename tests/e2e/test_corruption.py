"""Damaged packs are named with the snapshots and files they affect; restores never write
wrong bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import write_plan


@pytest.fixture
def repo_with_two_targets(tmp_path: Path, cli):
    rng = random.Random(5)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    (tmp_path / "a" / "one.bin").write_bytes(rng.randbytes(3 << 20))
    (tmp_path / "b" / "two.bin").write_bytes(rng.randbytes(3 << 20))
    (tmp_path / "b" / "three.txt").write_text("untouched\n")
    # one pack per file: a damaged pack then touches exactly one target
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "pack_size": "1MiB"},
                      targets=[{"name": "a", "kind": "files", "paths": ["a"]},
                               {"name": "b", "kind": "files", "paths": ["b"]}])
    r = cli("backup", "--init", plan, "--target", "a", "--json")
    snap_a = json.loads(r.out)["targets"][0]["snapshot"]
    packs_a = {p.name for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()}
    r = cli("backup", plan, "--target", "b", "--json")
    snap_b = json.loads(r.out)["targets"][0]["snapshot"]
    packs_b = {p.name for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()} - packs_a
    return tmp_path, plan, snap_a, snap_b, packs_a, packs_b


def _data_pack_of(tmp_path: Path, names: set[str]) -> Path:
    # the largest pack among these holds file data (trees are small)
    paths = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.name in names]
    return max(paths, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_check_read_data_names_damaged_pack_snapshot_and_files(
        repo_with_two_targets, cli, damage: str) -> None:
    tmp_path, plan, snap_a, snap_b, _packs_a, packs_b = repo_with_two_targets
    pack = _data_pack_of(tmp_path, packs_b)
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0x01
        pack.write_bytes(bytes(data))
    elif damage == "truncate":
        pack.write_bytes(bytes(data[: len(data) // 2]))
    else:
        pack.unlink()
    r = cli("check", plan, "--read-data", "--json")
    assert r.rc == 1, r.text
    res = json.loads(r.out)
    assert not res["ok"]
    assert [d["pack"] for d in res["damaged_packs"]] == [pack.name]
    affected = {a["snapshot"]: a["paths"] for a in res["affected"]}
    assert list(affected) == [snap_b], "only the snapshot that uses the pack is affected"
    assert any("two.bin" in p for p in affected[snap_b])
    if damage != "delete":  # a small file sharing the pack keeps its intact bytes
        assert not any("three.txt" in p for p in affected[snap_b])
    # human output names them too
    r = cli("check", plan, "--read-data")
    assert r.rc == 1
    assert pack.name in r.err and snap_b[:8] in r.err and "two.bin" in r.err
    # the other target still checks out and restores
    dest = tmp_path / "ok"
    assert cli("restore", plan, snap_a[:8], "--to", dest).rc == 0
    assert (dest / "a" / "one.bin").read_bytes() == (tmp_path / "a" / "one.bin").read_bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_restore_touching_damage_fails_loudly_and_writes_no_wrong_bytes(
        repo_with_two_targets, cli, damage: str) -> None:
    tmp_path, plan, _snap_a, snap_b, _packs_a, packs_b = repo_with_two_targets
    pack = _data_pack_of(tmp_path, packs_b)
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[100] ^= 0x80
        pack.write_bytes(bytes(data))
    elif damage == "truncate":
        pack.write_bytes(bytes(data[:200]))
    else:
        pack.unlink()
    dest = tmp_path / "out"
    r = cli("restore", plan, snap_b[:8], "--to", dest)
    assert r.rc == 1, r.text
    assert "two.bin" in r.err and "NOT RESTORED" in r.err
    assert "could not be restored" in r.err
    # the damaged file is absent (not partially written); the intact one is exact
    assert not (dest / "b" / "two.bin").exists()
    three = dest / "b" / "three.txt"
    if damage == "delete" and not three.exists():  # it shared the deleted pack
        assert "three.txt" in r.err
    else:
        assert three.read_text() == "untouched\n"
    assert not [p for p in dest.rglob("*") if ".restorer-tmp-" in p.name]


def test_check_without_read_data_finds_missing_pack(repo_with_two_targets, cli) -> None:
    tmp_path, plan, snap_a, _snap_b, packs_a, _packs_b = repo_with_two_targets
    _data_pack_of(tmp_path, packs_a).unlink()
    r = cli("check", plan)
    assert r.rc == 1
    assert "missing" in r.err and snap_a[:8] in r.err


def test_read_data_subset_reads_some_packs(repo_with_two_targets, cli) -> None:
    _tmp_path, plan, *_ = repo_with_two_targets
    r = cli("check", plan, "--read-data-subset", "50", "--json")
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    total = res["packs_indexed"]
    assert 0 < res["packs_read"] < total
