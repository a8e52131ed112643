"""verify of database snapshots (scratch PostgreSQL/MariaDB databases, SQLite files), sql
and http checks, and staging that can never be production."""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.conftest import unique_name, write_plan
from tests.e2e.test_dumps import _my, _psql
from tests.services import free_port

PG_SCHEMA = """
CREATE TABLE orders (id serial PRIMARY KEY, amount numeric NOT NULL, note text);
INSERT INTO orders(amount, note) SELECT g, 'order ' || g FROM generate_series(1, 1500) g;
"""


def _pg_databases(server: str) -> set[str]:
    return set(_psql(f"{server}/postgres", "SELECT datname FROM pg_database").split())


@pytest.fixture
def pg_db(pg_server):
    name = unique_name("vsrc").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {name}")
    _psql(f"{pg_server}/{name}", PG_SCHEMA)
    yield name
    _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _pg_plan(tmp_path: Path, server: str, src: str, staging: str, checks: list) -> Path:
    return write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      objectives={"rto": "10m", "rpo": "1h"}, targets=[{
                          "name": "db", "kind": "postgres", "dsn": f"{server}/{src}",
                          "staging": {"dsn": f"{server}/{staging}"}, "checks": checks}])


def test_verify_good_postgres_snapshot_passes_with_timings(tmp_path: Path, cli, pg_server,
                                                           pg_db) -> None:
    staging = unique_name("vstage").replace("-", "_")
    plan = _pg_plan(tmp_path, pg_server, pg_db, staging, [
        {"sql": {"query": "select count(*) from orders", "min": 1000, "equals": 1500}},
        {"sql": {"query": "select note from orders where id = 7", "equals": "order 7"}},
        {"command": {"run": 'test "$(psql -X -At -d "$RESTORER_STAGING_DSN" '
                            '-c "select max(amount) from orders")" = 1500'}}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 0, r.text
    v = json.loads(r.out)[0]
    assert v["ok"] and v["restore_s"] > 0 and v["staging"].endswith(f"/{staging}")
    checks = {c["name"] + str(i): c for i, c in enumerate(v["checks"])}
    assert [c["name"] for c in v["checks"]] == ["manifest", "sql", "sql", "command"]
    assert all(c["passed"] for c in v["checks"]), v["checks"]
    assert "'1500'" in checks["sql1"]["detail"] and "'order 7'" in checks["sql2"]["detail"]
    assert "applied by psql" in checks["manifest0"]["detail"]
    assert staging not in _pg_databases(pg_server)  # torn down
    run = json.loads(cli("history", plan, "--json").out)[0]
    assert run["command"] == "verify" and run["outcome"] == "ok"
    phases = run["phases"]
    assert [p["phase"] for p in phases] == ["restore", "check", "check", "check", "check",
                                            "teardown"]
    assert phases[0]["duration_s"] > 0 and phases[0]["bytes"] > 0
    assert [p["check"] for p in phases[1:5]] == ["manifest", "sql", "sql", "command"]
    assert all(p["duration_s"] >= 0 and p["outcome"] == "ok" for p in phases[1:5])
    assert phases[-1]["removed"] is True
    status = json.loads(cli("status", plan, "--json").out)[0]
    assert status["verified_snapshot"] == v["snapshot"] and not status["rpo_breached"]


def test_failing_sql_check_fails_target_and_staging_db_is_dropped(tmp_path: Path, cli,
                                                                   pg_server, pg_db) -> None:
    staging = unique_name("vstage").replace("-", "_")
    plan = _pg_plan(tmp_path, pg_server, pg_db, staging, [
        {"sql": {"query": "select count(*) from orders", "min": 5000}},
        {"sql": {"query": "select count(*) from orders where amount > 1400", "max": 100}},
        {"command": {"run": "exit 3"}}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 1, r.text
    v = json.loads(r.out)[0]
    assert not v["ok"] and not v["passed"]
    sql1, sql2, cmd = v["checks"][1:]
    assert not sql1["passed"] and "'1500'" in sql1["detail"] and ">= 5000" in sql1["detail"]
    assert sql2["passed"] and "'100'" in sql2["detail"]  # the other checks still ran
    assert not cmd["passed"] and "exited 3" in cmd["detail"]
    assert staging not in _pg_databases(pg_server)
    text = cli("verify", plan)
    assert text.rc == 1 and "check sql FAILED" in text.err and "FAIL" in text.out
    # --keep leaves the scratch database for inspection; the next verify replaces it
    assert cli("verify", plan, "--keep").rc == 1
    assert staging in _pg_databases(pg_server)
    assert _psql(f"{pg_server}/{staging}", "select count(*) from orders") == "1500"
    assert cli("verify", plan).rc == 1
    assert staging not in _pg_databases(pg_server)


def test_existing_database_at_staging_name_is_never_touched(tmp_path: Path, cli, pg_server,
                                                            pg_db) -> None:
    staging = unique_name("vbusy").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {staging}")
    try:
        _psql(f"{pg_server}/{staging}", "CREATE TABLE precious(x int); INSERT INTO precious "
                                        "VALUES (42)")
        plan = _pg_plan(tmp_path, pg_server, pg_db, staging, [])
        assert cli("backup", "--init", plan).rc == 0
        r = cli("verify", plan, "--json")
        assert r.rc == 1
        v = json.loads(r.out)[0]
        assert "was not created by restorer verify" in v["error"]
        assert _psql(f"{pg_server}/{staging}", "select x from precious") == "42"
    finally:
        _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {staging} WITH (FORCE)")


def test_verify_mariadb_snapshot(tmp_path: Path, cli, mariadb_server) -> None:
    src = unique_name("vsrc").replace("-", "_")
    staging = unique_name("vstage").replace("-", "_")
    _my(mariadb_server, f"CREATE DATABASE {src}")
    try:
        _my(mariadb_server, "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20)); "
            "INSERT INTO t SELECT seq, CONCAT('n', seq) FROM seq_1_to_300;", src)
        plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
            "name": "db", "kind": "mysql", "dsn": f"{mariadb_server}/{src}",
            "staging": {"dsn": f"{mariadb_server}/{staging}"},
            "checks": [{"sql": {"query": "SELECT COUNT(*) FROM t", "equals": 300}},
                       {"sql": {"query": "SELECT name FROM t WHERE id = 5", "equals": "n6"}}]}])
        assert cli("backup", "--init", plan).rc == 0
        r = cli("verify", plan, "--json")
        assert r.rc == 1, r.text
        v = json.loads(r.out)[0]
        manifest, good, bad = v["checks"]
        assert manifest["passed"] and good["passed"] and "'300'" in good["detail"]
        assert not bad["passed"] and "'n5'" in bad["detail"] and "expected 'n6'" in bad["detail"]
        assert _my(mariadb_server, f"SHOW DATABASES LIKE '{staging}'") == ""  # dropped
    finally:
        _my(mariadb_server, f"DROP DATABASE IF EXISTS {src}; DROP DATABASE IF EXISTS {staging}")


def test_verify_sqlite_snapshot(tmp_path: Path, cli) -> None:
    db = sqlite3.connect(tmp_path / "app.db")
    db.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT)")
    db.executemany("INSERT INTO users(email) VALUES (?)", [(f"u{i}@x",) for i in range(250)])
    db.commit()
    db.close()
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "app", "kind": "sqlite", "path": "app.db", "staging": {"path": "staging"},
        "checks": [{"sql": {"query": "select count(*) from users", "equals": 250}},
                   {"sql": {"query": "select email from users where id = 999",
                            "non_empty": True}},
                   {"command": {"run": 'test -s "$RESTORER_STAGING"'}}]}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 1, r.text
    v = json.loads(r.out)[0]
    manifest, count, empty, cmd = v["checks"]
    assert manifest["passed"] and "integrity_check: ok" in manifest["detail"]
    assert count["passed"] and cmd["passed"]
    assert not empty["passed"] and "no rows" in empty["detail"]
    assert list((tmp_path / "staging").iterdir()) == []


SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path == "/broken" else 200
        body = open("index.html", "rb").read() if code == 200 else b"internal error"
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_http_checks_serve_the_restored_copy(tmp_path: Path, cli) -> None:
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("<h1>restored shop</h1>")
    (tmp_path / "serve.py").write_text(SERVER)
    port = free_port()
    serve = f"{sys.executable} {tmp_path / 'serve.py'} {port}"
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "site", "kind": "files", "paths": ["site"], "staging": {"path": "staging"},
        "checks": [
            {"http": {"serve": serve, "url": f"http://127.0.0.1:{port}/",
                      "contains": "restored shop", "timeout": "20s"}},
            {"http": {"serve": serve, "url": f"http://127.0.0.1:{port}/broken",
                      "timeout": "20s"}},
            {"http": {"url": f"http://127.0.0.1:{free_port()}/", "timeout": "1s"}},
            {"files": {"exist": ["index.html"]}}]}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 1, r.text
    _, ok, broken, nobody, files = json.loads(r.out)[0]["checks"]
    assert ok["passed"] and "-> 200" in ok["detail"] and "restored shop" in ok["detail"]
    assert not broken["passed"] and "-> 500" in broken["detail"]
    assert "expected status 200" in broken["detail"]
    assert not nobody["passed"] and "no answer" in nobody["detail"]
    assert files["passed"]
    # the serving commands were stopped: nothing listens on the port any more
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_staging_equal_to_source_is_rejected_at_validation(tmp_path: Path, cli) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "db", "kind": "postgres", "dsn": "postgresql://app@db1/shop",
        "staging": {"dsn": "postgresql://postgres@db1:5432/shop"}}])
    r = cli("validate", plan)
    assert r.rc == 2
    assert "targets[0].staging.dsn" in r.err and "destroy production" in r.err
    assert "plan.yaml:" in r.err
    # loopback spellings are one server
    plan = write_plan(tmp_path / "plan2.yaml", targets=[{
        "name": "db", "kind": "mysql", "dsn": "mysql://app@127.0.0.1/shop",
        "staging": {"dsn": "${env:STAGING_DSN}"}}])
    r = cli("validate", plan, env={"STAGING_DSN": "mysql://root@localhost:3306/shop"})
    assert r.rc == 2 and "targets[0].staging.dsn" in r.err
    assert cli("validate", plan, env={"STAGING_DSN": "mysql://root@localhost/shop_test"}).rc == 0
    # a sql check on a files target cannot run
    (tmp_path / "d").mkdir()
    plan = write_plan(tmp_path / "plan3.yaml", targets=[{
        "name": "d", "kind": "files", "paths": ["d"],
        "checks": [{"sql": {"query": "select 1"}}]}])
    r = cli("validate", plan)
    assert r.rc == 2 and "targets[0].checks[0].sql" in r.err and "database target" in r.err


def test_staging_password_never_reaches_check_details(tmp_path: Path, cli, pg_server,
                                                      pg_db) -> None:
    staging = unique_name("vstage").replace("-", "_")
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "db", "kind": "postgres", "dsn": f"{pg_server}/{pg_db}",
        "staging": {"dsn": f"{pg_server}/{staging}", "password": "${env:STG_PW}"},
        "checks": [{"command": {"run": 'echo "connecting with $PGPASSWORD to '
                                       'postgresql://u:$PGPASSWORD@h/db"'}}]}])
    env = {"STG_PW": "stg-s3cret-pw"}
    assert cli("backup", "--init", plan, env=env).rc == 0
    r = cli("verify", plan, "--json", env=env)
    assert r.rc == 0, r.text
    detail = json.loads(r.out)[0]["checks"][1]["detail"]
    assert "connecting with *** to postgresql://u:***@h/db" in detail
    assert "stg-s3cret-pw" not in r.text
    assert b"stg-s3cret-pw" not in (tmp_path / "ledger.db").read_bytes()
