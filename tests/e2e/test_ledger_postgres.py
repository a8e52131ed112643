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
