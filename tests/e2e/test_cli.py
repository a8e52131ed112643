"""The commands as a user meets them: ids, latest, diff, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_plan


def _two_snapshots(plan_dir: Path, cli) -> tuple[Path, str, str]:
    src = plan_dir / "src"
    (src / "keep.txt").write_text("same")
    (src / "edit.txt").write_text("before")
    (src / "gone.txt").write_text("bye")
    plan = plan_dir / "plan.yaml"
    a = json.loads(cli("backup", "--init", plan, "--json").out)["targets"][0]["snapshot"]
    (src / "edit.txt").write_text("after!")
    (src / "gone.txt").unlink()
    (src / "new").mkdir()
    (src / "new" / "n.txt").write_text("n")
    (src / "keep.txt").chmod(0o600)
    b = json.loads(cli("backup", plan, "--json").out)["targets"][0]["snapshot"]
    return plan, a, b


def test_snapshots_lists_and_json(plan_dir: Path, cli) -> None:
    plan, a, b = _two_snapshots(plan_dir, cli)
    r = cli("snapshots", plan)
    assert r.rc == 0 and a[:8] in r.out and b[:8] in r.out and "2 snapshots" in r.out
    js = json.loads(cli("snapshots", plan, "--json").out)
    assert [s["id"] for s in js] == [a, b]
    assert js[1]["parent"] == a and js[1]["target"] == "data"
    r = cli("snapshots", plan, "--target", "nope")
    assert r.rc == 2 and "no target named 'nope'" in r.err


def test_snapshot_id_prefixes_latest_and_errors(plan_dir: Path, cli) -> None:
    plan, a, b = _two_snapshots(plan_dir, cli)
    r = cli("restore", plan, a[:6], "--to", plan_dir / "o1")
    assert r.rc == 0 and (plan_dir / "o1" / "src" / "gone.txt").exists()
    r = cli("restore", plan, "latest", "--to", plan_dir / "o2", "--json")
    assert r.rc == 0 and json.loads(r.out)["snapshot"] == b
    r = cli("restore", plan, "ffffffffff", "--to", plan_dir / "o3")
    assert r.rc == 2 and "no snapshot id starts with 'ffffffffff'" in r.err
    r = cli("restore", plan, "", "--to", plan_dir / "o4")
    assert r.rc == 2 and "ambiguous" in r.err


def test_diff_shows_added_removed_modified_metadata(plan_dir: Path, cli) -> None:
    plan, a, b = _two_snapshots(plan_dir, cli)
    r = cli("diff", plan, a[:8], b[:8])
    assert r.rc == 0, r.text
    lines = set(r.out.splitlines())
    assert {"M  /src/edit.txt", "-  /src/gone.txt", "+  /src/new/", "+  /src/new/n.txt",
            "U  /src/keep.txt"} <= lines
    js = json.loads(cli("diff", plan, a[:8], b[:8], "--json").out)
    assert {"status": "M", "path": "/src/edit.txt", "type": "file"} in js["changes"]


def test_latest_needs_target_when_plan_has_several(tmp_path: Path, cli) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "f").write_text(d)
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "a", "kind": "files", "paths": ["a"]},
        {"name": "b", "kind": "files", "paths": ["b"]}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("restore", plan, "latest", "--to", tmp_path / "o")
    assert r.rc == 2 and "--target" in r.err
    r = cli("restore", plan, "latest", "--target", "b", "--to", tmp_path / "o")
    assert r.rc == 0 and (tmp_path / "o" / "b" / "f").read_text() == "b"


def test_partly_done_backup_exits_3(tmp_path: Path, cli) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("a")
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "a", "kind": "files", "paths": ["a"]},
        {"name": "vol", "kind": "command", "backup": "echo disk on fire >&2; exit 2",
         "restore": "cat >/dev/null"}])
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 3, r.text
    res = {t["target"]: t for t in json.loads(r.out)["targets"]}
    assert res["a"]["ok"] and not res["vol"]["ok"]
    assert "disk on fire" in res["vol"]["error"]
    r = cli("backup", plan, "--target", "vol")
    assert r.rc == 1 and "target vol: FAILED" in r.err


def test_backup_without_repository_says_how_to_create_it(plan_dir: Path, cli) -> None:
    r = cli("backup", plan_dir / "plan.yaml")
    assert r.rc == 1 and "no repository" in r.err and "restorer init" in r.err
    assert cli("init", plan_dir / "plan.yaml").rc == 0
    r = cli("init", plan_dir / "plan.yaml")
    assert r.rc == 1 and "already exists" in r.err


def test_log_lines_are_json_under_log_format_json(tmp_path: Path, cli) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "password": "${env:PW}"})
    assert cli("init", plan, env={"PW": "a"}).rc == 0
    r = cli("--log-format", "json", "snapshots", plan, env={"PW": "a"})
    assert r.rc == 0
    # an unencrypted-plan warning is one JSON object per line
    plan2 = write_plan(tmp_path / "plan2.yaml",
                       repository={"url": "file://repo2", "password": "${env:PW}"})
    assert cli("init", write_plan(tmp_path / "plain.yaml",
                                  repository={"url": "file://repo2"})).rc == 0
    r = cli("--log-format", "json", "snapshots", plan2, env={"PW": "a"})
    assert r.rc == 0
    line = json.loads(r.err.strip().splitlines()[0])
    assert line["level"] == "warning" and "not encrypted" in line["message"]


def test_restore_to_a_file_is_a_clear_error(plan_dir: Path, cli) -> None:
    (plan_dir / "src" / "a").write_text("a")
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    (plan_dir / "afile").write_text("x")
    r = cli("restore", plan, "latest", "--to", plan_dir / "afile")
    assert r.rc != 0 and "Traceback" not in r.text
    assert "afile" in r.err
    assert (plan_dir / "afile").read_text() == "x"
