"""Stream targets through the real CLI: SQLite (online backup API), commands, PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import unique_name, write_plan

# --- SQLite -----------------------------------------------------------------------------

WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
i = int(sys.argv[2])
while True:
    db.execute("INSERT INTO t(id, payload) VALUES (?, ?)", (i, "x" * 200))
    i += 1
    time.sleep(0.001)
"""


def _make_db(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
    db.execute("CREATE INDEX t_payload ON t(payload)")
    db.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"row {i} " * 20) for i in range(rows)))
    db.commit()
    db.close()


def test_sqlite_backup_while_another_process_writes(tmp_path: Path, cli) -> None:
    live = tmp_path / "live.db"
    _make_db(live, 5000)
    plan = write_plan(tmp_path / "plan.yaml",
                      targets=[{"name": "db", "kind": "sqlite", "path": "live.db"}])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(live), "100000"])
    try:
        time.sleep(0.5)  # the writer is committing rows
        probe = sqlite3.connect(live, timeout=30)
        committed_before = probe.execute("SELECT max(id) FROM t").fetchone()[0]
        probe.close()
        r = cli("backup", "--init", plan, "--json")
        assert r.rc == 0, r.text
    finally:
        writer.kill()
        writer.wait()
    assert committed_before >= 100000
    out = tmp_path / "restored.db"
    r = cli("restore", plan, "latest", "--to", out)
    assert r.rc == 0, r.text
    db = sqlite3.connect(out)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {row[0] for row in db.execute("SELECT id FROM t")}
    assert set(range(5000)) <= ids
    assert set(range(100000, committed_before + 1)) <= ids
    # restoring over an existing file needs --overwrite
    r = cli("restore", plan, "latest", "--to", out)
    assert r.rc == 1 and "--overwrite" in r.err


def test_sqlite_second_backup_of_barely_changed_db_adds_little(tmp_path: Path, cli) -> None:
    live = tmp_path / "live.db"
    _make_db(live, 120000)
    plan = write_plan(tmp_path / "plan.yaml",
                      targets=[{"name": "db", "kind": "sqlite", "path": "live.db"}])
    first = json.loads(cli("backup", "--init", plan, "--json").out)["targets"][0]["summary"]
    db = sqlite3.connect(live)
    db.execute("UPDATE t SET payload = 'changed' WHERE id = 60000")
    db.commit()
    db.close()
    second = json.loads(cli("backup", plan, "--json").out)["targets"][0]["summary"]
    ratio = second["data_added"] / first["data_added"]
    print(f"sqlite: first dump stored {first['data_added']} B, second added "
          f"{second['data_added']} B ({ratio:.1%})")
    assert ratio < 0.35


# --- command ----------------------------------------------------------------------------


def test_command_target_round_trip_and_failure(tmp_path: Path, cli) -> None:
    (tmp_path / "state.bin").write_bytes(os.urandom(3 << 20))
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "state", "kind": "command", "backup": f"cat {tmp_path / 'state.bin'}",
        "restore": 'cat > "$RESTORER_TO"'}])
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    out = tmp_path / "restored.bin"
    r = cli("restore", plan, "latest", "--to", out)
    assert r.rc == 0, r.text
    assert out.read_bytes() == (tmp_path / "state.bin").read_bytes()
    bad = write_plan(tmp_path / "bad.yaml", targets=[{
        "name": "state", "kind": "command",
        "backup": "head -c 100000 /dev/zero; echo 'disk on fire' >&2; exit 7",
        "restore": "cat > /dev/null"}])
    before = len(json.loads(cli("snapshots", bad, "--json").out))
    r = cli("backup", bad)
    assert r.rc == 1
    assert "target state: FAILED" in r.err and "exited with status 7" in r.err
    assert "disk on fire" in r.err
    assert len(json.loads(cli("snapshots", bad, "--json").out)) == before


# --- PostgreSQL -------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     amount numeric(10,2), placed timestamptz DEFAULT '2026-01-01');
CREATE INDEX orders_customer ON orders(customer_id);
CREATE SEQUENCE invoice_no START 1000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500;
INSERT INTO customers(name, email)
  SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO orders(customer_id, amount)
  SELECT 1 + (g % 500), (g * 37 % 1000)::numeric / 1.7 FROM generate_series(1, 600000) g;
SELECT setval('invoice_no', 1234);
"""


def _psql(dsn: str, sql: str) -> str:
    r = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "--dbname", dsn],
                       input=sql, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _fingerprint(dsn: str) -> dict:
    out = {}
    for table in ("customers", "orders"):
        out[table] = _psql(dsn, f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) "
                                f"FROM {table} t")
    out["seq"] = _psql(dsn, "SELECT last_value FROM invoice_no")
    out["view"] = _psql(dsn, "SELECT count(*) FROM big_orders")
    schema = subprocess.run(["pg_dump", "--schema-only", "--dbname", dsn], capture_output=True,
                            text=True, check=True).stdout
    # comments and the per-dump random \restrict key (pg_dump >= 15.14) differ by design
    out["schema"] = "\n".join(x for x in schema.splitlines()
                              if not x.startswith(("--", "\\restrict", "\\unrestrict")))
    return out


@pytest.fixture
def pg_source(pg_server):
    name = unique_name("src").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {name}")
    dsn = f"{pg_server}/{name}"
    _psql(dsn, SCHEMA)
    yield dsn
    _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgres_round_trip_into_a_new_database(tmp_path: Path, cli, pg_server,
                                                 pg_source) -> None:
    plan = write_plan(tmp_path / "plan.yaml",
                      targets=[{"name": "db", "kind": "postgres", "dsn": pg_source}])
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    first = json.loads(r.out)["targets"][0]["summary"]
    target_name = unique_name("dst").replace("-", "_")
    dest = f"{pg_server}/{target_name}"
    try:
        r = cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 0, r.text
        assert _fingerprint(dest) == _fingerprint(pg_source)
        # an existing, non-empty database is not replaced without --overwrite
        r = cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 1 and "not empty" in r.err and "--overwrite" in r.err
        r = cli("restore", plan, "latest", "--to", dest, "--overwrite")
        assert r.rc == 0, r.text
        assert _fingerprint(dest) == _fingerprint(pg_source)
    finally:
        _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {target_name} WITH (FORCE)")
    # a second dump of a barely changed database adds a small fraction
    _psql(pg_source, "UPDATE orders SET amount = 1 WHERE id = 300017")
    second = json.loads(cli("backup", plan, "--json").out)["targets"][0]["summary"]
    ratio = second["data_added"] / first["data_added"]
    print(f"postgres: first dump {first['data_added']} B, second added "
          f"{second['data_added']} B ({ratio:.1%})")
    assert ratio < 0.35


def test_postgres_dump_failure_leaves_no_snapshot_and_masks_password(tmp_path: Path, cli,
                                                                      pg_server) -> None:
    port = int(pg_server.rsplit(":", 1)[1]) + 1  # nothing listens there
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "db", "kind": "postgres", "dsn": f"postgresql://app@127.0.0.1:{port}/app",
        "password": "${env:PGPASS_TEST}"}])
    env = {"PGPASS_TEST": "pg-s3cret-never-shown"}
    assert cli("init", plan, env=env).rc == 0
    r = cli("backup", plan, env=env)
    assert r.rc == 1, r.text
    assert "target db: FAILED" in r.err and "exited with status" in r.err
    assert "pg-s3cret-never-shown" not in r.text
    assert json.loads(cli("snapshots", plan, "--json", env=env).out) == []


# --- MariaDB / MySQL --------------------------------------------------------------------

MY_SCHEMA = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,
                        email VARCHAR(100) UNIQUE) ENGINE=InnoDB;
CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT,
                     amount DECIMAL(10,2), note BLOB,
                     FOREIGN KEY (customer_id) REFERENCES customers(id),
                     INDEX orders_amount (amount)) ENGINE=InnoDB;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500;
INSERT INTO customers(name, email)
  SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com') FROM seq_1_to_500;
INSERT INTO orders(customer_id, amount, note)
  SELECT 1 + (seq % 500), (seq * 37 % 1000) / 1.7, UNHEX(MD5(seq)) FROM seq_1_to_4000;
"""


def _my(dsn: str, sql: str, db: str | None = None) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(dsn)
    argv = ["mariadb", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port), "-u",
            u.username, "-N", "-B"]
    if db:
        argv.append(db)
    return subprocess.run(argv, input=sql, capture_output=True, text=True,
                          check=True).stdout.strip()


def _my_fingerprint(server: str, db: str) -> dict:
    out: dict = {}
    for t in ("customers", "orders"):
        count = _my(server, f"SELECT COUNT(*) FROM {t}", db)
        checksum = _my(server, f"CHECKSUM TABLE {t} EXTENDED", db).split("\t")[1]
        create = _my(server, f"SHOW CREATE TABLE {t}", db).split("\t", 1)[1]
        out[t] = (count, checksum, create)
    out["view"] = _my(server, "SELECT COUNT(*) FROM big_orders", db)
    return out


def test_mariadb_round_trip(tmp_path: Path, cli, mariadb_server) -> None:
    src = unique_name("src").replace("-", "_")
    dst = unique_name("dst").replace("-", "_")
    _my(mariadb_server, f"CREATE DATABASE {src}")
    try:
        _my(mariadb_server, MY_SCHEMA, src)
        plan = write_plan(tmp_path / "plan.yaml", targets=[
            {"name": "db", "kind": "mysql", "dsn": f"{mariadb_server}/{src}"}])
        r = cli("backup", "--init", plan, "--json")
        assert r.rc == 0, r.text
        r = cli("restore", plan, "latest", "--to", f"{mariadb_server}/{dst}")
        assert r.rc == 0, r.text
        assert _my_fingerprint(mariadb_server, dst) == _my_fingerprint(mariadb_server, src)
        r = cli("restore", plan, "latest", "--to", f"{mariadb_server}/{dst}")
        assert r.rc == 1 and "not empty" in r.err
    finally:
        _my(mariadb_server, f"DROP DATABASE IF EXISTS {src}; DROP DATABASE IF EXISTS {dst};")


def test_mariadb_wrong_password_fails_with_masked_message(tmp_path: Path, cli,
                                                          mariadb_server) -> None:
    user = unique_name("u").replace("-", "_")
    _my(mariadb_server, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-pass'; "
                        f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-pass';")
    try:
        server = mariadb_server.replace("root@", f"{user}@")
        plan = write_plan(tmp_path / "plan.yaml", targets=[
            {"name": "db", "kind": "mysql", "dsn": f"{server}/mysql",
             "password": "${env:MY_PW}"}])
        env = {"MY_PW": "my-wrong-s3cret"}
        assert cli("init", plan, env=env).rc == 0
        r = cli("backup", plan, env=env)
        assert r.rc == 1
        assert "target db: FAILED" in r.err and "Access denied" in r.err
        assert "my-wrong-s3cret" not in r.text
        assert json.loads(cli("snapshots", plan, "--json", env=env).out) == []
    finally:
        _my(mariadb_server, f"DROP USER IF EXISTS '{user}'@'%'; "
                            f"DROP USER IF EXISTS '{user}'@'localhost';")


# --- over SSH ---------------------------------------------------------------------------


def _via(sshd) -> dict:
    return {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}


def test_postgres_dump_runs_on_the_remote_end_over_ssh(tmp_path: Path, cli, sshd, pg_server,
                                                      pg_source) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "db", "kind": "postgres", "dsn": pg_source, "via_ssh": _via(sshd),
         "password": "${env:PG_REMOTE_PW}"}])
    env = {"PG_REMOTE_PW": "remote-pw-unused-by-trust"}
    r = cli("backup", "--init", plan, "--json", env=env)
    assert r.rc == 0, r.text
    assert "remote-pw-unused-by-trust" not in r.text
    target_name = unique_name("viassh").replace("-", "_")
    dest = f"{pg_server}/{target_name}"
    try:
        r = cli("restore", plan, "latest", "--to", dest, env=env)
        assert r.rc == 0, r.text
        assert _fingerprint(dest) == _fingerprint(pg_source)
    finally:
        _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {target_name} WITH (FORCE)")
    # no secret file is left on the "remote" host
    assert not list(Path("/tmp").glob(".restorer-*"))


def test_command_over_ssh_round_trip_and_remote_failure(tmp_path: Path, cli, sshd) -> None:
    state = tmp_path / "remote-state.bin"
    state.write_bytes(os.urandom(2 << 20))
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "etcd", "kind": "command", "via_ssh": _via(sshd),
        "backup": f"cat {state}", "restore": 'cat > "$RESTORER_TO"'}])
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    out = tmp_path / "restored-on-remote.bin"
    r = cli("restore", plan, "latest", "--to", out)
    assert r.rc == 0, r.text
    assert out.read_bytes() == state.read_bytes()
    bad = write_plan(tmp_path / "bad.yaml", targets=[{
        "name": "etcd", "kind": "command", "via_ssh": _via(sshd),
        "backup": "echo 'etcdctl: context deadline exceeded' >&2; exit 4",
        "restore": "cat >/dev/null"}])
    r = cli("backup", bad)
    assert r.rc == 1
    assert "remote command exited with status 4" in r.err and "deadline exceeded" in r.err


def test_mariadb_dump_over_ssh_with_a_password(tmp_path: Path, cli, sshd,
                                               mariadb_server) -> None:
    db = unique_name("sshsrc").replace("-", "_")
    user = unique_name("bk").replace("-", "_")
    dst = unique_name("sshdst").replace("-", "_")
    _my(mariadb_server, f"CREATE DATABASE {db}")
    _my(mariadb_server, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pa:ss\"word'; "
                        f"GRANT ALL ON *.* TO '{user}'@'%';")
    try:
        _my(mariadb_server, MY_SCHEMA, db)
        dsn = mariadb_server.replace("root@", f"{user}@")
        plan = write_plan(tmp_path / "plan.yaml", targets=[
            {"name": "db", "kind": "mysql", "dsn": f"{dsn}/{db}", "via_ssh": _via(sshd),
             "password": "${env:MY_PW}"}])
        env = {"MY_PW": 'pa:ss"word'}
        r = cli("backup", "--init", plan, env=env)
        assert r.rc == 0, r.text
        r = cli("restore", plan, "latest", "--to", f"{dsn}/{dst}", env=env)
        assert r.rc == 0, r.text
        assert _my_fingerprint(mariadb_server, dst) == _my_fingerprint(mariadb_server, db)
        assert not list(Path("/tmp").glob(".restorer-*"))
    finally:
        _my(mariadb_server, f"DROP DATABASE IF EXISTS {db}; DROP DATABASE IF EXISTS {dst}; "
                            f"DROP USER IF EXISTS '{user}'@'%';")


def test_postgres_custom_format_round_trip(tmp_path: Path, cli, pg_server, pg_source) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "db", "kind": "postgres", "dsn": pg_source, "format": "custom"}])
    assert cli("backup", "--init", plan).rc == 0
    target_name = unique_name("cust").replace("-", "_")
    dest = f"{pg_server}/{target_name}"
    try:
        r = cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 0, r.text
        assert _fingerprint(dest) == _fingerprint(pg_source)
    finally:
        _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {target_name} WITH (FORCE)")


def test_missing_dump_tool_is_named(tmp_path: Path, cli) -> None:
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "db", "kind": "postgres", "dsn": "postgresql://u@127.0.0.1:5432/app"}])
    assert cli("init", plan).rc == 0
    empty = tmp_path / "empty-path"
    empty.mkdir()
    r = cli("backup", plan, env={"PATH": str(empty)})
    assert r.rc == 1
    assert "pg_dump is not installed or not on PATH" in r.err
    assert json.loads(cli("snapshots", plan, "--json").out) == []


def test_postgres_cluster_dump_restores_roles_and_databases(tmp_path: Path, cli) -> None:
    from tests.services import start_postgres

    a, stop_a = start_postgres(tmp_path / "a", force_new=True)
    b, stop_b = start_postgres(tmp_path / "b", force_new=True)
    try:
        _psql(f"{a}/postgres", "CREATE ROLE reporting LOGIN; CREATE DATABASE shop;")
        _psql(f"{a}/shop", SCHEMA + "GRANT SELECT ON customers TO reporting;")
        plan = write_plan(tmp_path / "plan.yaml", targets=[
            {"name": "cluster", "kind": "postgres", "dsn": f"{a}/postgres",
             "all_databases": True}])
        r = cli("backup", "--init", plan)
        assert r.rc == 0, r.text
        r = cli("restore", plan, "latest", "--to", f"{b}/postgres")
        assert r.rc == 0, r.text
        assert _psql(f"{b}/postgres",
                     "SELECT rolname FROM pg_roles WHERE rolname = 'reporting'") == "reporting"
        assert _fingerprint(f"{b}/shop") == _fingerprint(f"{a}/shop")
    finally:
        stop_a()
        stop_b()
