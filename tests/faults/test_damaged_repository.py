"""One damaged metadata file must not take the repository down: the damaged record is named and
skipped, everything else lists, restores and backs up, prune refuses to delete on top of it,
and `restorer repair` mends it without deleting anything that could be kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_same_tree, run_cli, write_plan

ENV = {"RESTORER_PASSWORD": "pw"}


def _repo_with_three_snapshots(tmp_path: Path, encrypted: bool) -> tuple[Path, Path, list]:
    """A plan over src/, three backups of changing content; each backup's source kept aside
    as the bytes its snapshot must restore."""
    src = tmp_path / "src"
    src.mkdir()
    extra = {"password": "${env:RESTORER_PASSWORD}"} if encrypted else {}
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      repository={"url": "file://repo", **extra})
    kept = []
    for i in range(3):
        (src / f"f{i}.txt").write_text(f"version {i}\n" * (i + 1))
        (src / "common.bin").write_bytes(bytes(range(256)) * (40 + i))
        r = run_cli("backup", "--init", plan, env=ENV)
        assert r.rc == 0, r.text
        copy = tmp_path / f"orig{i}"
        shutil.copytree(src, copy / "src")
        kept.append(copy)
    snaps = json.loads(run_cli("snapshots", plan, "--json", env=ENV).out)
    assert len(snaps) == 3
    return plan, tmp_path / "repo", [(s["id"], k) for s, k in zip(snaps, kept, strict=True)]


def _last_run(plan: Path) -> dict:
    return json.loads(run_cli("history", plan, "--json").out)[0]


@pytest.mark.parametrize(("damage", "encrypted"), [("edited", False),
                                                   ("older_copied_over", True)],
                         ids=["edited-plain", "older_copied_over-encrypted"])
def test_one_damaged_snapshot_record_hides_nothing_else(tmp_path: Path, damage: str,
                                                        encrypted: bool) -> None:
    plan, repo, snaps = _repo_with_three_snapshots(tmp_path, encrypted)
    (s0, orig0), (s1, _), (s2, orig2) = snaps
    victim = repo / "snapshots" / s1
    if damage == "edited":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        victim.write_bytes(bytes(raw))
    else:
        shutil.copyfile(repo / "snapshots" / s0, victim)
    damaged_bytes = victim.read_bytes()

    r = run_cli("snapshots", plan, "--json", env=ENV)
    assert r.rc == 0, r.text
    assert [s["id"] for s in json.loads(r.out)] == [s0, s2]
    assert f"snapshot {s1[:8]} cannot be read" in r.err and "repair snapshots" in r.err
    for sid, orig in ((s0, orig0), (s2, orig2)):
        out = tmp_path / f"out-{sid[:8]}"
        r = run_cli("restore", plan, sid, "--to", out, env=ENV)
        assert r.rc == 0, r.text
        assert_same_tree(orig / "src", out / "src")
    r = run_cli("restore", plan, "latest", "--to", tmp_path / "latest", env=ENV)
    assert r.rc == 0, r.text
    assert_same_tree(orig2 / "src", tmp_path / "latest" / "src")
    (tmp_path / "src" / "new.txt").write_text("after the damage")
    r = run_cli("backup", plan, env=ENV)
    assert r.rc == 0, r.text

    r = run_cli("check", plan, "--json", env=ENV)
    assert r.rc == 1, r.text
    res = json.loads(r.out)
    assert [d["snapshot"] for d in res["damaged_snapshots"]] == [s1]
    assert res["repairs"] == ["snapshots"]
    r = run_cli("check", plan, env=ENV)
    assert "restorer repair snapshots" in r.err
    # prune would decide on an incomplete list of snapshots: it refuses and deletes nothing
    packs = sorted(p.name for p in (repo / "data").rglob("*") if p.is_file())
    r = run_cli("prune", plan, env=ENV)
    assert r.rc == 1, r.text
    assert f"snapshot {s1[:8]} cannot be read" in r.err and "repair snapshots" in r.err
    assert sorted(p.name for p in (repo / "data").rglob("*") if p.is_file()) == packs

    # repair: a dry run changes nothing; off a terminal it needs --yes; then it moves aside
    r = run_cli("repair", "snapshots", plan, "--dry-run", env=ENV)
    assert r.rc == 0, r.text
    assert f"damaged snapshot {s1[:8]}" in r.err and "nothing was changed" in r.out
    assert victim.read_bytes() == damaged_bytes
    r = run_cli("repair", "snapshots", plan, env=ENV)
    assert r.rc == 2, r.text
    assert "--yes" in r.err and victim.exists()
    # refused before it began, as rollback is: not a run of its own, and never a failure
    assert _last_run(plan)["command"] == "repair snapshots --dry-run"
    r = run_cli("repair", "snapshots", plan, "--yes", "--json", env=ENV)
    assert r.rc == 0, r.text
    moved = json.loads(r.out)["moved_aside"]
    assert moved == [{"snapshot": s1, "to": f"damaged/snapshots/{s1}"}]
    assert not victim.exists()
    assert (repo / "damaged" / "snapshots" / s1).read_bytes() == damaged_bytes
    last = _last_run(plan)
    assert (last["command"], last["outcome"], last["exit_code"]) == ("repair snapshots", "ok", 0)
    r = run_cli("check", plan, "--read-data", env=ENV)
    assert r.rc == 0, r.text
    r = run_cli("prune", plan, env=ENV)
    assert r.rc == 0, r.text
    r = run_cli("repair", "snapshots", plan, "--yes", env=ENV)
    assert r.rc == 0 and "nothing to repair" in r.out, r.text


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_two_swapped_index_files_lose_nothing_and_repair_index_rebuilds(
        tmp_path: Path, encrypted: bool) -> None:
    plan, repo, snaps = _repo_with_three_snapshots(tmp_path, encrypted)
    index = sorted((repo / "index").iterdir())
    assert len(index) == 3
    a, b = index[0], index[1]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)

    # every snapshot still restores: the packs' own headers stand in for the lost index
    for sid, orig in snaps:
        out = tmp_path / f"out-{sid[:8]}"
        r = run_cli("restore", plan, sid, "--to", out, env=ENV)
        assert r.rc == 0, r.text
        assert_same_tree(orig / "src", out / "src")
        assert a.name in r.err and b.name in r.err and "repair index" in r.err
    data_before = sorted(p.name for p in (repo / "data").rglob("*") if p.is_file())
    r = run_cli("backup", plan, env=ENV)
    assert r.rc == 0, r.text
    # nothing changed in src: the blobs were found through the headers, nothing re-uploaded
    assert sorted(p.name for p in (repo / "data").rglob("*") if p.is_file()) == data_before

    r = run_cli("check", plan, "--json", env=ENV)
    assert r.rc == 1, r.text
    res = json.loads(r.out)
    assert sorted(d["file"] for d in res["damaged_index_files"]) == \
        sorted(f"index/{p.name}" for p in (a, b))
    assert "index" in res["repairs"]
    r = run_cli("prune", plan, env=ENV)
    assert r.rc == 1, r.text
    assert "repair index" in r.err
    assert sorted(p.name for p in (repo / "data").rglob("*") if p.is_file()) == data_before
    # copy would carry the damage into the copy: it stops, naming the repair
    r = run_cli("copy", plan, "--to", f"file://{tmp_path / 'copy'}", env=ENV)
    assert r.rc == 1, r.text
    assert "does not match its name" in r.err and "repair index" in r.err, r.err
    assert not list((tmp_path / "copy").glob("snapshots/*"))

    r = run_cli("repair", "index", plan, "--dry-run", "--json", env=ENV)
    assert r.rc == 0, r.text
    dry = json.loads(r.out)
    assert dry["packs_read"] == len(data_before) and dry["index_files_written"] == []
    assert sorted(p.name for p in (repo / "index").iterdir()) == [p.name for p in index]
    r = run_cli("repair", "index", plan, "--yes", "--json", env=ENV)
    assert r.rc == 0, r.text
    done = json.loads(r.out)
    assert sorted(done["moved_aside"]) == sorted(f"damaged/index/{p.name}" for p in (a, b))
    assert (repo / "damaged" / "index" / a.name).read_bytes() == db
    assert done["unreadable_packs"] == []
    last = _last_run(plan)
    assert (last["command"], last["outcome"]) == ("repair index", "ok")

    r = run_cli("check", plan, "--read-data", env=ENV)
    assert r.rc == 0, r.text
    for sid, orig in snaps:
        out = tmp_path / f"again-{sid[:8]}"
        r = run_cli("restore", plan, sid, "--to", out, env=ENV)
        assert r.rc == 0, r.text
        assert "index" not in r.err, r.err
        assert_same_tree(orig / "src", out / "src")
    r = run_cli("prune", plan, env=ENV)
    assert r.rc == 0, r.text
    r = run_cli("check", plan, "--read-data", env=ENV)
    assert r.rc == 0, r.text


def test_repair_index_declined_at_the_prompt_changes_nothing(tmp_path: Path) -> None:
    from tests.e2e.test_journeys import _on_terminal

    plan, repo, _snaps = _repo_with_three_snapshots(tmp_path, False)
    before = sorted(p.name for p in (repo / "index").iterdir())
    rc, out = _on_terminal(["repair", "index", str(plan)], "n")
    assert rc == 0, out
    assert "Write the new index" in out and "declined at the prompt; nothing was changed" in out
    assert sorted(p.name for p in (repo / "index").iterdir()) == before
    last = _last_run(plan)
    assert (last["command"], last["outcome"], last["exit_code"]) == ("repair index", "declined", 0)


def test_repair_index_replaces_a_damaged_file_that_bears_the_rebuilt_name(
        tmp_path: Path) -> None:
    """In a plain repository the rebuilt index can have the very name (and size) of the
    damaged file: the damaged bytes must not be kept as 'already there'."""
    plan, repo, snaps = _repo_with_three_snapshots(tmp_path, False)
    assert run_cli("repair", "index", plan, "--yes").rc == 0  # the index in its rebuilt form
    (only,) = list((repo / "index").iterdir())
    raw = bytearray(only.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size, wrong content
    only.write_bytes(bytes(raw))
    assert run_cli("check", plan).rc == 1
    r = run_cli("repair", "index", plan, "--yes", "--json")
    assert r.rc == 0, r.text
    assert json.loads(r.out)["moved_aside"] == [f"damaged/index/{only.name}"]
    assert only.read_bytes() != bytes(raw)
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    sid, orig = snaps[-1]
    r = run_cli("restore", plan, sid, "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert_same_tree(orig / "src", tmp_path / "out" / "src")
