"""Regressions for rollbacks that lost data: excluded paths deleted with the replaced tree, a
rollback killed between the swaps of two paths left half done (and its old tree removed by
--cleanup), and a --cleanup --dry-run that deleted for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import describe_tree, run_cli, tree_digest, write_plan
from tests.e2e.test_rollback import app_db  # noqa: F401 - a fixture

EXCLUDE = ["uploads/", "*.tmp"]


def _excluded(root: Path) -> dict[bytes, tuple]:
    """The entries of `root` that the excludes keep out of backups, with their subtrees."""
    out = {}
    for rel, d in describe_tree(root).items():
        parts = rel.split(b"/")
        if b"uploads" in parts[:-1] or (parts[-1] == b"uploads") or rel.endswith(b".tmp"):
            out[rel] = d
    return out


def _held(root: Path) -> dict[bytes, tuple]:
    ex = _excluded(root)
    return {k: v for k, v in describe_tree(root).items() if k not in ex}


def _make_site(site: Path) -> None:
    (site / "a" / "b").mkdir(parents=True)
    (site / "index.html").write_text("<h1>good</h1>")
    (site / "a" / "page.html").write_text("page")
    (site / "a" / "b" / "keep.txt").write_text("keep")
    (site / "uploads").mkdir()
    (site / "uploads" / "u1.bin").write_bytes(os.urandom(20_000))
    (site / "a" / "uploads" / "deep").mkdir(parents=True)
    (site / "a" / "uploads" / "deep" / "u2.bin").write_bytes(os.urandom(10_000))
    (site / "x.tmp").write_text("scratch 1")
    (site / "a" / "b" / "y.tmp").write_text("scratch 2")


def _files_plan(tmp_path: Path, paths: list[str], **extra) -> Path:
    return write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "site", "kind": "files", "paths": paths, "exclude": EXCLUDE,
        "staging": {"path": "staging"},
        "checks": [{"files": {"exist": ["index.html"] if len(paths) == 1 else []}}]}],
        **extra)


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".restorer-rollback-")]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_rollback_keeps_excluded_paths_and_undo_brings_the_rest_back(
        tmp_path: Path, encrypted: bool, monkeypatch) -> None:
    site = tmp_path / "site"
    _make_site(site)
    repo: dict = {"url": "file://repo"}
    if encrypted:
        monkeypatch.setenv("RESTORER_PASSWORD", "rollback-pw")
        repo["password"] = "${env:RESTORER_PASSWORD}"
    plan = _files_plan(tmp_path, ["site"], repository=repo)
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    good = _held(site)
    # a bad deploy, and the excluded data goes on living: new and changed files in it
    (site / "index.html").write_text("<h1>bad</h1>")
    (site / "a" / "new.js").write_text("oops")
    (site / "uploads" / "after-backup.bin").write_bytes(os.urandom(5_000))
    (site / "a" / "uploads" / "deep" / "u3.bin").write_bytes(b"new upload")
    (site / "x.tmp").write_text("scratch changed")
    (site / "a" / "b" / "z.tmp").write_text("a tmp file made after the backup")
    bad_all = describe_tree(site)
    excluded = _excluded(site)
    assert len(excluded) >= 8

    r = run_cli("rollback", plan, "--dry-run")
    assert r.rc == 0, r.text
    assert "kept as they are" in r.out and "site/uploads" in r.out and "site/x.tmp" in r.out
    assert describe_tree(site) == bad_all  # a dry run changes nothing

    r = run_cli("rollback", plan, "--yes", "--json")
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    assert res["ok"], res
    assert _held(site) == good  # what the backup holds is back, byte for byte
    assert _excluded(site) == excluded  # what it never held is exactly as it was
    assert not (site / "a" / "new.js").exists()
    assert not _leftovers(tmp_path)

    r = run_cli("rollback", plan, "--undo", "--yes")
    assert r.rc == 0, r.text
    assert describe_tree(site) == bad_all  # the undo is exact, excluded paths included
    assert run_cli("check", plan, "--read-data").rc == 0


# --- killed between the swaps of two paths ----------------------------------------------


def _two_paths(tmp_path: Path) -> tuple[Path, list[Path]]:
    roots = [tmp_path / "one", tmp_path / "two"]
    for i, r in enumerate(roots):
        (r / "sub").mkdir(parents=True)
        (r / "index.html").write_text(f"good {i}")
        (r / "sub" / "data.bin").write_bytes(os.urandom(30_000))
        (r / "cache.tmp").write_text(f"excluded {i}")
    plan = _files_plan(tmp_path, ["one", "two"])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    return plan, roots


def _break(roots: list[Path]) -> None:
    for i, r in enumerate(roots):
        (r / "index.html").write_text(f"bad {i}")
        (r / "new.txt").write_text("new")
        (r / "cache.tmp").write_text(f"excluded, changed {i}")


def _rollback_killed_at(plan: Path, n: int) -> subprocess.CompletedProcess:
    """`rollback --yes` killed (SIGKILL) on entering its n-th renameat2: each carry of an
    excluded entry and each exchange of a path is one."""
    return subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "-e", "trace=renameat2",
         "-e", f"inject=renameat2:signal=KILL:when={n}",
         sys.executable, "-m", "restorer", "rollback", str(plan), "--yes"],
        capture_output=True, text=True, timeout=180)


def _states(roots: list[Path], good: list[str], bad: list[str]) -> list[str]:
    out = []
    for r, g, b in zip(roots, good, bad, strict=True):
        d = tree_digest(r)
        out.append("new" if d == g else "old" if d == b else "MIXED")
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_rollback_killed_at_each_rename_ends_old_or_new_and_cleanup_loses_nothing(
        tmp_path: Path, n: int) -> None:
    plan, roots = _two_paths(tmp_path)
    _break(roots)
    bad = [tree_digest(r) for r in roots]
    p = _rollback_killed_at(plan, n)
    assert p.returncode in (-9, 137), p.stdout + p.stderr
    r = run_cli("rollback", plan, "--cleanup", "--dry-run")
    assert r.rc == 0, r.text
    assert "was killed" in r.out and "would be put back" in r.out
    r = run_cli("rollback", plan, "--cleanup", "--yes")
    assert r.rc == 0, r.text
    assert [tree_digest(x) for x in roots] == bad, "the killed rollback was not put back whole"
    assert not _leftovers(tmp_path)
    # the next rollback goes through, and keeps the excluded files
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 0, r.text
    for i, x in enumerate(roots):
        assert (x / "index.html").read_text() == f"good {i}"
        assert (x / "cache.tmp").read_text() == f"excluded, changed {i}"
        assert not (x / "new.txt").exists()


def test_next_rollback_puts_a_half_done_one_back_first(tmp_path: Path) -> None:
    plan, roots = _two_paths(tmp_path)
    _break(roots)
    bad = [tree_digest(r) for r in roots]
    # 1 carry + 1 exchange for the first path, then killed at the second path's carry
    p = _rollback_killed_at(plan, 3)
    assert p.returncode in (-9, 137), p.stdout + p.stderr
    assert tree_digest(roots[0]) != bad[0] and tree_digest(roots[1]) == bad[1]  # half done
    r = run_cli("rollback", plan, "--yes", "--json")
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    assert res["recovered"] and res["recovered"][0]["reached"] == "prepared"
    for i, x in enumerate(roots):
        assert (x / "index.html").read_text() == f"good {i}"
        assert (x / "cache.tmp").read_text() == f"excluded, changed {i}"
    r = run_cli("rollback", plan, "--undo", "--yes")
    assert r.rc == 0, r.text
    assert [tree_digest(x) for x in roots] == bad
    history = json.loads(run_cli("history", plan, "--json").out)
    recover = [ph for run in history for ph in run["phases"] if ph["phase"] == "recover"]
    assert recover and recover[0]["outcome"] == "ok"


# --- --cleanup honours --dry-run, asks, and is recorded ---------------------------------


def test_cleanup_dry_run_lists_and_changes_nothing_and_needs_yes(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _make_site(site)
    # a check that fails after the swap: the replaced tree is kept for --cleanup
    flag = tmp_path / "fail-now"
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "site", "kind": "files", "paths": ["site"], "exclude": EXCLUDE,
        "staging": {"path": "staging"}, "checks": [{"command": {"run": f"test ! -e {flag}"}}]}])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    flag.write_text("")
    (site / "index.html").write_text("<h1>bad</h1>")
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 1, r.text
    kept = _leftovers(tmp_path)
    assert len(kept) == 1
    before = describe_tree(tmp_path / kept[0])

    r = run_cli("rollback", plan, "--cleanup", "--dry-run")
    assert r.rc == 0, r.text
    assert f"would remove site: {tmp_path / kept[0]}" in r.out
    assert describe_tree(tmp_path / kept[0]) == before
    r = run_cli("rollback", plan, "--cleanup")  # no terminal, no --yes: refused
    assert r.rc == 2, r.text
    assert "--yes" in r.err and _leftovers(tmp_path) == kept
    r = run_cli("rollback", plan, "--cleanup", "--yes", "--json")
    assert r.rc == 0, r.text
    assert json.loads(r.out)["removed"] == [f"site: {tmp_path / kept[0]}"]
    assert not _leftovers(tmp_path)
    runs = json.loads(run_cli("history", plan, "--json").out)
    cmds = [(x["command"], x["outcome"]) for x in runs[:2]]
    assert cmds == [("rollback --cleanup", "ok"), ("rollback --cleanup --dry-run", "ok")]
    assert runs[0]["phases"][0]["phase"] == "lock"


def test_killed_after_a_database_swapped_puts_the_database_back_too(
        tmp_path: Path, pg_server, app_db) -> None:  # noqa: F811 - the fixture
    """All targets or none, across kinds: killed at the folder's first rename, after the
    PostgreSQL target had already swapped; the recovery renames the databases back."""
    from tests.e2e.test_rollback import _db_state, _psql

    dsn, name = app_db
    site = tmp_path / "site"
    _make_site(site)
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", rollback={
        "terminate_connections": True}, targets=[
        {"name": "db", "kind": "postgres", "dsn": dsn,
         "staging": {"dsn": f"{pg_server}/{name}_verify"}},
        {"name": "site", "kind": "files", "paths": ["site"], "exclude": EXCLUDE,
         "staging": {"path": "staging"}}])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    good_db = _db_state(dsn)
    _psql(dsn, "DELETE FROM items WHERE id % 2 = 0")
    (site / "index.html").write_text("<h1>bad</h1>")
    bad = (_db_state(dsn), tree_digest(site))
    p = _rollback_killed_at(plan, 1)
    assert p.returncode in (-9, 137), p.stdout + p.stderr
    assert _db_state(dsn) == good_db  # the database had swapped before the kill
    r = run_cli("rollback", plan, "--cleanup", "--yes")
    assert r.rc == 0, r.text
    assert (_db_state(dsn), tree_digest(site)) == bad
    left = [d for d in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database").split()
            if d.startswith(f"{name}_") and not d.endswith("_verify")]
    assert left == [], left
    assert not _leftovers(tmp_path)


def test_replaced_tree_written_to_during_the_rollback_is_kept(tmp_path: Path) -> None:
    """An app that was not stopped writes into the tree being replaced (here an after hook
    stands in for it): that file is in no backup, so the replaced tree is kept, not deleted."""
    site = tmp_path / "site"
    _make_site(site)
    hook = f"for d in {tmp_path}/.restorer-rollback-*; do echo late > $d/site/late.txt; done"
    plan = _files_plan(tmp_path, ["site"], rollback={"after": [hook]})
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    (site / "index.html").write_text("<h1>bad</h1>")
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 0, r.text
    assert "no backup has as they are now (first: late.txt" in r.out
    kept = _leftovers(tmp_path)
    assert len(kept) == 1 and (tmp_path / kept[0] / "site" / "late.txt").read_text() == "late\n"
    r = run_cli("rollback", plan, "--cleanup", "--dry-run")
    assert r.rc == 0 and kept[0] in r.out, r.text
