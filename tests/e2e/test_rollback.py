"""rollback: a directory and a PostgreSQL database back to their verified snapshot, and
back again with --undo; dry runs, refusals and failures half-way leave things consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tree_digest, unique_name, write_plan
from tests.e2e.test_dumps import _psql

SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
INSERT INTO items(name, qty) SELECT 'item ' || g, g % 17 FROM generate_series(1, 2000) g;
"""


def _db_state(dsn: str) -> str:
    return _psql(dsn, "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) "
                      "FROM items t")


@pytest.fixture
def app_db(pg_server):
    name = unique_name("rbapp").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {name}")
    _psql(f"{pg_server}/{name}", SCHEMA)
    yield f"{pg_server}/{name}", name
    _psql(f"{pg_server}/postgres",
          f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE '{name}%'")
    for (db,) in [(x,) for x in _psql(f"{pg_server}/postgres", "SELECT datname FROM "
                                      f"pg_database WHERE datname LIKE '{name}%'").split()]:
        _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _site(root: Path) -> Path:
    site = root / "site"
    (site / "img").mkdir(parents=True)
    (site / "index.html").write_text("<h1>good</h1>")
    (site / "img" / "logo.bin").write_bytes(os.urandom(300_000))
    (site / "empty").mkdir()
    return site


def _plan(tmp_path: Path, dsn: str, server: str, name: str, *, before: list | None = None,
          after: list | None = None, site_checks: list | None = None,
          terminate: bool = True) -> Path:
    return write_plan(
        tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
        rollback={"before": before or [], "after": after or [],
                  "terminate_connections": terminate},
        targets=[
            {"name": "site", "kind": "files", "paths": ["site"],
             "staging": {"path": "staging"},
             "checks": site_checks or [{"files": {"exist": ["index.html"]}}]},
            {"name": "db", "kind": "postgres", "dsn": dsn,
             "staging": {"dsn": f"{server}/{name}_verify"},
             "checks": [{"sql": {"query": "select count(*) from items", "min": 1}}]}])


def _break_things(site: Path, dsn: str) -> None:
    (site / "index.html").write_text("<h1>bad deploy</h1>")
    (site / "img" / "logo.bin").unlink()
    (site / "new.js").write_text("oops")
    _psql(dsn, "DELETE FROM items WHERE id % 3 = 0; UPDATE items SET qty = -1 WHERE id < 50")


def _verified_backup(cli, plan: Path) -> None:
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    r = cli("verify", plan)
    assert r.rc == 0, r.text


def test_rollback_and_undo_files_and_postgres(tmp_path: Path, cli, pg_server, app_db) -> None:
    dsn, name = app_db
    site = _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name,
                 before=[f"echo stop >> {tmp_path / 'hooks.log'}"],
                 after=[f"echo start >> {tmp_path / 'hooks.log'}"])
    _verified_backup(cli, plan)
    good_site, good_db = tree_digest(site), _db_state(dsn)
    _break_things(site, dsn)
    bad_site, bad_db = tree_digest(site), _db_state(dsn)
    assert (bad_site, bad_db) != (good_site, good_db)

    r = cli("rollback", plan, "--yes")
    assert r.rc == 0, r.text
    assert tree_digest(site) == good_site and _db_state(dsn) == good_db
    assert (tmp_path / "hooks.log").read_text() == "stop\nstart\n"
    assert "done in" in r.out and "ROLLED BACK" in r.out and "Checks after the swap: 3/3" \
        in r.out
    assert f"Undo: restorer rollback {plan} --undo --yes" in r.out
    # the replaced database is kept until --cleanup; the replaced tree is gone
    kept = [d for d in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database").split()
            if d.startswith(f"{name}_pre_rb_")]
    assert len(kept) == 1 and f"kept at {kept[0]}" in r.out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restorer-rollback-")]

    r = cli("rollback", plan, "--undo", "--yes", "--json")
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    assert res["ok"] and res["undo_of"] and res["state"] == "rolled back"
    assert tree_digest(site) == bad_site and _db_state(dsn) == bad_db

    runs = json.loads(cli("history", plan, "--json").out)
    assert [x["command"] for x in runs[:2]] == ["rollback --undo", "rollback"]
    phases = [p["phase"] for p in runs[1]["phases"]]
    for step in ("decide", "restore", "safety_snapshot", "swap", "check", "checks"):
        assert step in phases, phases
    swap = next(p for p in runs[1]["phases"] if p["phase"] == "swap")
    assert swap["duration_s"] > 0 and runs[1]["outcome"] == "ok"

    r = cli("rollback", plan, "--cleanup", "--yes")
    assert r.rc == 0 and f"database {kept[0]}" in r.out
    assert kept[0] not in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database")


def test_dry_run_changes_nothing_and_no_terminal_needs_yes(tmp_path: Path, cli, pg_server,
                                                           app_db) -> None:
    dsn, name = app_db
    site = _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name, before=["echo stop-app"])
    _verified_backup(cli, plan)
    _break_things(site, dsn)
    before = (tree_digest(site), _db_state(dsn))
    snaps_before = json.loads(cli("snapshots", plan, "--json").out)
    r = cli("rollback", plan, "--dry-run")
    assert r.rc == 0, r.text
    assert "dry run" in r.out and "1 added, 1 changed, 1 removed" in r.out
    assert "site/img/logo.bin" in r.out and "site/new.js" in r.out
    assert "is replaced by a restore" in r.out and "echo stop-app" in r.out
    assert "safety snapshot" in r.out and "verified" in r.out
    r = cli("rollback", plan)  # stdin is not a terminal
    assert r.rc == 2 and "--yes" in r.err
    assert (tree_digest(site), _db_state(dsn)) == before
    assert json.loads(cli("snapshots", plan, "--json").out) == snaps_before


def test_failures_half_way_leave_targets_consistent(tmp_path: Path, cli, pg_server,
                                                    app_db) -> None:
    dsn, name = app_db
    site = _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name)
    _verified_backup(cli, plan)
    _break_things(site, dsn)
    broken = (tree_digest(site), _db_state(dsn))

    # a before hook fails: nothing changes, and the after hooks still run
    plan = _plan(tmp_path, dsn, pg_server, name, before=["echo cannot stop >&2; exit 7"],
                 after=[f"touch {tmp_path / 'started'}"])
    r = cli("rollback", plan, "--yes")
    assert r.rc == 1 and "exited with status 7" in r.err and "nothing was changed" in r.err
    assert (tree_digest(site), _db_state(dsn)) == broken
    assert (tmp_path / "started").exists() and "AS BEFORE" in r.out

    # a check fails after the swap: every target is fully rolled back, exit 1, undo works
    plan = _plan(tmp_path, dsn, pg_server, name,
                 site_checks=[{"files": {"exist": ["missing.html"]}}])
    r = cli("rollback", plan, "--yes")
    assert r.rc == 1, r.text
    assert "FAILED" in r.out and "missing: missing.html" in r.out
    assert "targets: rolled back" in r.out
    assert _db_state(dsn) != broken[1] and tree_digest(site) != broken[0]
    r = cli("rollback", plan, "--undo", "--yes")
    # the failing check runs after the undo too: the undo is done, its checks fail (exit 3)
    assert r.rc == 3, r.text
    assert "ROLLED BACK" in r.out and "checks fail on the state it returned to" in r.out
    assert (tree_digest(site), _db_state(dsn)) == broken

    # the restore source is damaged: nothing changes (the trees the failed runs above
    # replaced are kept beside the site until `rollback --cleanup`)
    def siblings() -> set[str]:
        return {p.name for p in tmp_path.iterdir() if p.name.startswith(".restorer-rollback-")}

    kept = siblings()
    assert len(kept) == 2
    plan = _plan(tmp_path, dsn, pg_server, name)
    for pack in (tmp_path / "repo" / "data").rglob("*"):
        if pack.is_file() and pack.stat().st_size > 100_000:
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    r = cli("rollback", plan, "--yes")
    assert r.rc == 1 and "restore failed, nothing was changed" in r.err
    assert (tree_digest(site), _db_state(dsn)) == broken
    assert not [d for d in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database"
                                 ).split() if d.startswith(f"{name}_rb_")]
    assert siblings() == kept
    r = cli("rollback", plan, "--cleanup", "--yes")
    assert r.rc == 0 and siblings() == set()


def test_busy_database_without_terminate_is_left_as_before(tmp_path: Path, cli, pg_server,
                                                           app_db) -> None:
    dsn, name = app_db
    site = _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name, terminate=False)
    _verified_backup(cli, plan)
    _break_things(site, dsn)
    broken = (tree_digest(site), _db_state(dsn))
    app = subprocess.Popen(["psql", "-X", "-q", "--dbname", dsn, "-c", "SELECT pg_sleep(60)"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        r = cli("rollback", plan, "--yes")
    finally:
        app.kill()
        app.wait()
    assert r.rc == 1 and "other session(s) are connected" in r.err
    assert "terminate_connections" in r.err
    assert (tree_digest(site), _db_state(dsn)) == broken  # the files were swapped back too
    assert _psql(dsn, "SELECT 1") == "1"  # connections are allowed again


def test_unverified_needs_consent_and_two_rollbacks_collide(tmp_path: Path, cli, pg_server,
                                                            app_db) -> None:
    dsn, name = app_db
    _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name, before=["sleep 6"])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("rollback", plan, "--yes")
    assert r.rc == 2 and "no verified snapshot" in r.err and "--allow-unverified" in r.err
    first = subprocess.Popen([sys.executable, "-m", "restorer", "rollback", str(plan), "--yes",
                              "--allow-unverified"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ})
    try:
        time.sleep(3)
        r = cli("rollback", plan, "--yes", "--allow-unverified")
        assert r.rc == 4, r.text
        assert "rollback" in r.err and f"pid {first.pid}" in r.err
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert b"NOT VERIFIED" in out
    assert b"never verified" in err


def test_mariadb_rollback_and_undo(tmp_path: Path, cli, mariadb_server) -> None:
    from tests.e2e.test_dumps import _my

    db = unique_name("rbmy").replace("-", "_")
    _my(mariadb_server, f"CREATE DATABASE {db}")
    try:
        _my(mariadb_server, "CREATE TABLE c (id INT PRIMARY KEY, name VARCHAR(30)) "
            "ENGINE=InnoDB; CREATE TABLE o (id INT PRIMARY KEY, c INT, amount INT, "
            "FOREIGN KEY (c) REFERENCES c(id)) ENGINE=InnoDB; "
            "INSERT INTO c SELECT seq, CONCAT('c', seq) FROM seq_1_to_200; "
            "INSERT INTO o SELECT seq, 1 + seq % 200, seq FROM seq_1_to_1000;", db)

        def state() -> str:
            return _my(mariadb_server, "SELECT (SELECT COUNT(*) FROM c), (SELECT SUM(amount) "
                       "FROM o), (SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM "
                       f"information_schema.tables WHERE table_schema = '{db}' "
                       "AND table_type = 'BASE TABLE')", db)

        plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
            "name": "db", "kind": "mysql", "dsn": f"{mariadb_server}/{db}",
            "staging": {"dsn": f"{mariadb_server}/{db}_verify"},
            "checks": [{"sql": {"query": "SELECT COUNT(*) FROM o", "equals": 1000}}]}])
        _verified_backup(cli, plan)
        good = state()
        _my(mariadb_server, "DELETE FROM o WHERE id > 500; CREATE TABLE junk (x INT);", db)
        bad = state()
        r = cli("rollback", plan, "--yes")
        assert r.rc == 0, r.text
        assert state() == good and "Checks after the swap: 1/1 passed" in r.out
        r = cli("rollback", plan, "--undo", "--yes")
        # done: the data is back as it was, and the check says it is not the good state
        assert r.rc == 3, r.text
        assert "ROLLED BACK" in r.out and "FAILED after" not in r.out, r.text
        assert "1 of 1 checks fail on the state it returned to" in r.out
        undo_run = json.loads(cli("history", plan, "--json").out)[0]
        assert (undo_run["command"], undo_run["outcome"], undo_run["exit_code"]) == \
            ("rollback --undo", "checks_failing", 3)
        assert state() == bad and "expected 1000" in r.out
        # a database with a view cannot be swapped table by table: refused, nothing changed
        _my(mariadb_server, "CREATE VIEW big AS SELECT * FROM o WHERE amount > 100", db)
        r = cli("rollback", plan, "--yes")
        assert r.rc == 2 and "1 views" in r.err and "restorer restore" in r.err
        assert state() == bad
        assert cli("rollback", plan, "--cleanup", "--yes").rc == 0
        left = _my(mariadb_server, f"SHOW DATABASES LIKE '{db}%'").split()
        assert left == [db], left
    finally:
        for name in _my(mariadb_server, f"SHOW DATABASES LIKE '{db}%'").split():
            _my(mariadb_server, f"DROP DATABASE IF EXISTS {name}")


def test_killed_rollback_changes_nothing_and_cleanup_removes_its_leftovers(
        tmp_path: Path, cli, pg_server, app_db) -> None:
    dsn, name = app_db
    site = _site(tmp_path)
    plan = _plan(tmp_path, dsn, pg_server, name)
    _verified_backup(cli, plan)
    _break_things(site, dsn)
    broken = (tree_digest(site), _db_state(dsn))
    # the process is killed after restoring beside the live copies, before any swap
    plan = _plan(tmp_path, dsn, pg_server, name, before=["kill -9 $PPID"])
    r = cli("rollback", plan, "--yes")
    assert r.rc == -9, r.text
    assert (tree_digest(site), _db_state(dsn)) == broken
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".restorer-rollback-")]
    dbs = [d for d in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database").split()
           if d.startswith(f"{name}_rb_")]
    assert len(leftovers) == 1 and len(dbs) == 1
    plan = _plan(tmp_path, dsn, pg_server, name)
    r = cli("rollback", plan, "--cleanup", "--yes")
    assert r.rc == 0, r.text
    assert "stale lock" in r.err  # the dead run's lock is taken over
    assert f"database {dbs[0]}" in r.out and leftovers[0] in r.out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restorer-rollback-")]
    assert dbs[0] not in _psql(f"{pg_server}/postgres", "SELECT datname FROM pg_database")
    assert _db_state(dsn) == broken[1]  # the live database is never touched by cleanup
    r = cli("rollback", plan, "--yes")  # and a rollback goes through afterwards
    assert r.rc == 0, r.text
    assert (tree_digest(site), _db_state(dsn)) != broken
