"""The shared ledger in PostgreSQL: runs from several machines (plans) in one hash chain,
concurrent appends, tampering found, passwords never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import unique_name, write_plan
from tests.e2e.test_dumps import _psql

PASSWORD = "ledger-pw-never-shown"


@pytest.fixture
def ledger_db(pg_server):
    db = unique_name("ledger").replace("-", "_")
    role = unique_name("lu").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {db} OWNER {role}")
    u = urlsplit(pg_server)
    yield f"postgresql://{role}:${{env:LEDGER_PW}}@{u.hostname}:{u.port}/{db}", db
    _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    _psql(f"{pg_server}/postgres", f"DROP ROLE IF EXISTS {role}")


def _machine(root: Path, name: str, ledger: str) -> Path:
    d = root / name
    (d / "src").mkdir(parents=True)
    (d / "src" / "f.txt").write_text(f"data of {name}\n" * 1000)
    return write_plan(d / "plan.yaml", name=name, ledger=ledger)


def test_plans_on_several_machines_share_one_chain(tmp_path: Path, cli, pg_server,
                                                   ledger_db) -> None:
    url, db = ledger_db
    env = {"LEDGER_PW": PASSWORD}
    plans = [_machine(tmp_path, f"host{i}", url) for i in range(3)]
    for p in plans:
        assert cli("init", p, env=env).rc == 0
    # three backups at once append to the same chain
    procs = [subprocess.Popen([sys.executable, "-m", "restorer", "backup", str(p)],
                              env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in plans]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for p in plans:
        runs = json.loads(cli("history", p, "--json", env=env).out)
        # init is a ledger run too, so each machine's history holds its own two
        assert [r["command"] for r in runs] == ["backup", "init"]
        assert all(r["outcome"] == "ok" and r["phases"] for r in runs)
    r = cli("history", plans[0], "--verify-chain", "--json", env=env)
    assert r.rc == 0, r.text
    info = json.loads(r.out)
    rows = int(_psql(f"{pg_server}/{db}", "SELECT count(*) FROM restorer_ledger"))
    assert info["intact"] and info["rows"] == rows >= 12
    assert info["last_hash"] == _psql(f"{pg_server}/{db}", "SELECT hash FROM restorer_ledger "
                                                           "ORDER BY seq DESC LIMIT 1")
    assert PASSWORD not in r.text and "***" in info["ledger"]
    # an edited row is found, and named
    seq = int(_psql(f"{pg_server}/{db}", "SELECT min(seq) FROM restorer_ledger WHERE seq >= 5 "
                                         "AND data LIKE '%\"ok\"%'"))
    _psql(f"{pg_server}/{db}", "UPDATE restorer_ledger SET data = replace(data, '\"ok\"', "
                               f"'\"failed\"') WHERE seq = {seq}")
    r = cli("history", plans[1], "--verify-chain", env=env)
    assert r.rc == 1 and f"row {seq} was changed after it was written" in r.err
    assert PASSWORD not in r.text


def test_unreachable_ledger_never_fails_the_backup(tmp_path: Path, cli, pg_server) -> None:
    u = urlsplit(pg_server)
    url = f"postgresql://nobody:${{env:LEDGER_PW}}@127.0.0.1:{u.port + 1}/ledger"
    plan = _machine(tmp_path, "lonely", url)
    env = {"LEDGER_PW": PASSWORD}
    r = cli("backup", "--init", plan, env=env)
    assert r.rc == 0, r.text
    assert "cannot open it" in r.err and "this run is not recorded" in r.err
    assert PASSWORD not in r.text
    r = cli("history", plan, env=env)
    assert r.rc == 1 and "ledger postgresql://nobody:***@" in r.err


def test_clear_text_password_in_ledger_url_is_refused(tmp_path: Path, cli) -> None:
    plan = _machine(tmp_path, "m", "postgresql://u:hunter2@db/ledger")
    r = cli("validate", plan)
    assert r.rc == 2 and "'ledger'" in r.err and "clear text" in r.err
    assert "${env:LEDGER_PASSWORD}" in r.err


def test_signed_fleet_ledger_finds_a_rewritten_row(tmp_path: Path, cli, pg_server,
                                                   ledger_db) -> None:
    """Two machines, each with its own signing key, in one PostgreSQL ledger: each verifies
    its own runs; a row rewritten with every later hash recomputed is named by both."""
    from restorer.ledger.chain import row_hash

    url, db = ledger_db
    env = {"LEDGER_PW": PASSWORD}
    plans = []
    for name in ("web1", "web2"):
        assert cli("ledger", "keygen", "--out", tmp_path / f"{name}.key").rc == 0
        plans.append(_machine(tmp_path, name, {"url": url,
                                                "signing_key": f"${{file:../{name}.key}}"}))
    for p in plans:
        assert cli("backup", "--init", p, env=env).rc == 0
    for p in plans:
        assert cli("backup", p, env=env).rc == 0
    for p in plans:
        r = cli("ledger", "verify", p, "--json", env=env)
        assert r.rc == 0, r.text
        v = json.loads(r.out)
        assert v["status"] == "signed" and v["anchors"] == 2, v
        assert PASSWORD not in r.text and "***" in v["ledger"]
    # each machine's report calls the shared ledger signed, the other's rows included
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    out = tmp_path / "r.json"
    r = cli("report", plans[0], "--format", "json", "-o", out, "--from",
            (now - timedelta(days=1)).isoformat(), "--to", (now + timedelta(hours=1)).isoformat(),
            env=env)
    assert r.rc == 0, r.text
    led = json.loads(out.read_text())["evidence"]["ledgers"][0]
    assert led["status"] == "signed" and led["chain_intact"], led
    dsn = f"{pg_server}/{db}"
    seq = int(_psql(dsn, "SELECT min(seq) FROM restorer_ledger WHERE kind = 'phase' AND "
                         "data LIKE '%\"plan\":\"web1\"%'"))
    import psycopg

    # the forger's rewrite: one row changed, every hash after it recomputed
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute("SELECT seq, time, run_id, kind, data, prev_hash FROM "
                           "restorer_ledger WHERE seq >= %s ORDER BY seq", (seq,)).fetchall()
        prev = rows[0][5]
        for s, t, run_id, kind, data, _ in rows:
            if s == seq:
                data = data.replace('"outcome":"ok"', '"outcome":"failed"')
            h = row_hash(prev, s, t, run_id, kind, data)
            con.execute("UPDATE restorer_ledger SET data = %s, prev_hash = %s, hash = %s "
                        "WHERE seq = %s", (data, prev, h, s))
            prev = h
    # the machine whose row it was names it; the other machine's anchors cover only the rows
    # since its predecessor's signature, so it names the latest row it can show changed
    r = cli("ledger", "verify", plans[0], env=env)
    assert r.rc == 1 and f"row {seq} was rewritten" in r.err, r.text
    r = cli("history", plans[0], "--verify-chain", env=env)
    assert r.rc == 1 and f"row {seq} was rewritten" in r.err
    r = cli("ledger", "verify", plans[1], "--json", env=env)
    first = json.loads(r.out)["first_problem"]
    assert r.rc == 1 and first["what"] == "edited" and seq <= first["seq"] <= seq + 3, first
    assert "or one before it was rewritten" in first["message"]
