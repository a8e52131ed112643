"""Backups restore byte for byte, with metadata, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_same_tree, make_odd_tree, write_plan

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_round_trip_odd_tree_with_metadata(tmp_path: Path, cli, encrypted: bool) -> None:
    make_odd_tree(tmp_path / "src")
    repo = {"url": "file://repo"}
    env = {}
    if encrypted:
        repo["password"] = "${env:RESTORER_PASSWORD}"
        env["RESTORER_PASSWORD"] = PASSWORD
    plan = write_plan(tmp_path / "plan.yaml", repository=repo)
    r = cli("init", plan, env=env)
    assert r.rc == 0, r.text
    assert ("encrypted" in r.out) and (("not encrypted" in r.out) != encrypted)
    r = cli("backup", plan, "--json", env=env)
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    assert res["targets"][0]["ok"] and res["targets"][0]["complete"]
    dest = tmp_path / "restored"
    r = cli("restore", plan, "latest", "--to", dest, env=env)
    assert r.rc == 0, r.text
    assert_same_tree(tmp_path / "src", dest / "src")
    if encrypted:
        # nothing in the repository reveals file names or contents
        blob = b"".join(p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file())
        assert b"plain.txt" not in blob and b"tail" * 4 not in blob


def test_restore_refuses_to_overwrite_without_flag(plan_dir: Path, cli) -> None:
    (plan_dir / "src" / "a.txt").write_text("v1")
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    dest = plan_dir / "out"
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "a.txt").write_text("precious local edit")
    r = cli("restore", plan, "latest", "--to", dest)
    assert r.rc == 1
    assert "already exist" in r.err and "a.txt" in r.err and "--overwrite" in r.err
    assert (dest / "src" / "a.txt").read_text() == "precious local edit"
    r = cli("restore", plan, "latest", "--to", dest, "--overwrite")
    assert r.rc == 0, r.text
    assert (dest / "src" / "a.txt").read_text() == "v1"


def test_restore_include_only_matching_paths(plan_dir: Path, cli) -> None:
    src = plan_dir / "src"
    (src / "keep").mkdir()
    (src / "keep" / "x.txt").write_text("x")
    (src / "keep" / "empty" / "deeper").mkdir(parents=True)
    (src / "drop").mkdir()
    (src / "drop" / "y.txt").write_text("y")
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    dest = plan_dir / "out"
    r = cli("restore", plan, "latest", "--to", dest, "--include", "src/keep")
    assert r.rc == 0, r.text
    assert (dest / "src" / "keep" / "x.txt").read_text() == "x"
    # empty directories inside an included one come back too (regression)
    assert (dest / "src" / "keep" / "empty" / "deeper").is_dir()
    assert not (dest / "src" / "drop").exists()
    r = cli("restore", plan, "latest", "--to", plan_dir / "o2", "--include", "nothing/here")
    assert r.rc == 1 and "matched nothing" in r.err


def test_incremental_backup_reads_only_changed_files(plan_dir: Path, cli) -> None:
    src = plan_dir / "src"
    for i in range(50):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    plan = plan_dir / "plan.yaml"
    r1 = json.loads(cli("backup", "--init", plan, "--json").out)["targets"][0]
    assert r1["summary"]["files_new"] == 50
    (src / "f7.txt").write_text("changed\n")
    (src / "new.txt").write_text("new\n")
    os.unlink(src / "f9.txt")
    r2 = json.loads(cli("backup", plan, "--json").out)["targets"][0]
    s = r2["summary"]
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == (1, 1, 48)
    assert s["bytes_read"] == len("changed\n") + len("new\n")
    assert r2["parent"] == r1["snapshot"]
    # and the incremental snapshot is complete, not a delta
    dest = plan_dir / "out"
    assert cli("restore", plan, r2["snapshot"][:10], "--to", dest).rc == 0
    assert_same_tree(src, dest / "src")
    # the first snapshot still restores as it was
    dest1 = plan_dir / "out1"
    assert cli("restore", plan, r1["snapshot"][:8], "--to", dest1).rc == 0
    assert (dest1 / "src" / "f9.txt").exists() and not (dest1 / "src" / "new.txt").exists()


def test_excludes(plan_dir: Path, cli) -> None:
    src = plan_dir / "src"
    (src / "cache").mkdir()
    (src / "cache" / "c.bin").write_text("c")
    (src / "sub").mkdir()
    (src / "sub" / "x.tmp").write_text("t")
    (src / "sub" / "cache").write_text("a file named cache is kept")
    (src / "keep.txt").write_text("k")
    plan = write_plan(plan_dir / "plan.yaml", targets=[
        {"name": "data", "kind": "files", "paths": ["src"], "exclude": ["*.tmp", "/cache/"]}])
    assert cli("backup", "--init", plan).rc == 0
    dest = plan_dir / "out"
    assert cli("restore", plan, "latest", "--to", dest).rc == 0
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert got == ["src", "src/keep.txt", "src/sub", "src/sub/cache"]


def test_quickstart_plan_round_trip(tmp_path: Path, cli) -> None:
    from tests.conftest import ROOT

    plans = tmp_path / "plans"
    shutil.copytree(ROOT / "plans", plans, symlinks=True,
                    ignore=shutil.ignore_patterns(".quickstart"))
    plan = plans / "quickstart.yaml"
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    r = cli("snapshots", plan)
    assert r.rc == 0 and r.out.rstrip().endswith("1 snapshot")
    r = cli("restore", plan, "latest", "--to", tmp_path / "restored")
    assert r.rc == 0, r.text
    assert_same_tree(plans / "sample", tmp_path / "restored" / "sample")
