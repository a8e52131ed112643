"""report: 90 simulated days of backups and restore tests (passing, failing, missing) in a
PostgreSQL ledger; the JSON figures match what the test works out from the same timeline;
HTML renders in headless Chromium; JUnit validates; edits are found; no password shows."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import run_cli, unique_name, write_plan
from tests.e2e.test_dumps import _psql

DAY0 = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = list(range(0, 90, 10))  # a backup at 03:00 and a restore test at 04:00 on these days
DB_FAILS = {30, 40, 80}  # the db's restore test fails on these days (rows missing)
ROLLBACK_DAY = 60
PASSWORD = "ledger-pw-not-in-any-report"
END = DAY0 + timedelta(days=89, hours=23, minutes=59, seconds=59)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, pg_server):
    root = tmp_path_factory.mktemp("report")
    db = unique_name("rledger").replace("-", "_")
    _psql(f"{pg_server}/postgres", f"CREATE DATABASE {db}")
    u = urlsplit(pg_server)
    ledger = f"postgresql://{u.username}:${{env:LEDGER_PW}}@{u.hostname}:{u.port}/{db}"
    (root / "web").mkdir()
    (root / "web" / "index.html").write_text("<h1>shop</h1>")
    (root / "cache").mkdir()
    (root / "cache" / "c.bin").write_bytes(os.urandom(5000))
    app_db = root / "app.db"
    con = sqlite3.connect(app_db)
    con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY)")
    con.executemany("INSERT INTO orders VALUES (?)", [(i,) for i in range(100)])
    con.commit()
    con.close()
    plan = write_plan(
        root / "shop.yaml", name="shop", ledger=ledger,
        objectives={"rpo": "15d", "rto": "5s"},
        targets=[
            {"name": "web", "kind": "files", "paths": ["web"], "staging": {"path": "st"},
             "checks": [{"files": {"exist": ["index.html"]}}]},
            {"name": "db", "kind": "sqlite", "path": "app.db", "staging": {"path": "st"},
             "checks": [{"sql": {"query": "select count(*) from orders", "min": 100}}]},
            {"name": "cache", "kind": "files", "paths": ["cache"]}])
    (root / "billing-data").mkdir()
    (root / "billing-data" / "b.txt").write_text("invoices")
    plan2 = write_plan(root / "billing.yaml", name="billing", ledger=ledger,
                       repository={"url": "repo2"},
                       targets=[{"name": "invoices", "kind": "files",
                                 "paths": ["billing-data"]}])
    env = {"LEDGER_PW": PASSWORD}
    assert run_cli("init", plan, env=env).rc == 0
    assert run_cli("init", plan2, env=env).rc == 0
    snapshot_time: dict[tuple[str, int], str] = {}
    for d in DAYS:
        con = sqlite3.connect(app_db)
        if d in DB_FAILS:
            con.execute("DELETE FROM orders WHERE id >= 50")
        else:
            con.executemany("INSERT OR IGNORE INTO orders VALUES (?)",
                            [(i,) for i in range(100)])
        con.commit()
        con.close()
        at = {**env, "RESTORER_NOW": _iso(DAY0 + timedelta(days=d, hours=3))}
        r = run_cli("backup", plan, "--json", env=at)
        assert r.rc == 0, r.text
        for t in json.loads(r.out)["targets"]:
            snapshot_time[(t["target"], d)] = _iso(DAY0 + timedelta(days=d, hours=3))
        at["RESTORER_NOW"] = _iso(DAY0 + timedelta(days=d, hours=4))
        r = run_cli("verify", plan, "--target", "web", "--target", "db", "--json", env=at)
        # the RTO is far above these restores' times: the failure timeline below is the
        # failed checks' alone (a 20 ms RTO was breached at random on a busy machine, and
        # each breach failed a verify; test_verify covers breaches)
        assert not any(v["rto_breached"] for v in json.loads(r.out)), r.out
        assert r.rc == (1 if d in DB_FAILS else 0), r.text
        if d == 0:
            at["RESTORER_NOW"] = _iso(DAY0 + timedelta(hours=5))
            assert run_cli("backup", plan2, env=at).rc == 0
            assert run_cli("verify", plan2, env=at).rc == 0
        if d == ROLLBACK_DAY:
            at["RESTORER_NOW"] = _iso(DAY0 + timedelta(days=d, hours=5))
            r = run_cli("rollback", plan, "--target", "web", "--yes", env=at)
            assert r.rc == 0, r.text
    report_env = {**env, "RESTORER_NOW": _iso(DAY0 + timedelta(days=90, hours=1))}
    yield root, plan, plan2, pg_server, db, report_env
    _psql(f"{pg_server}/postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _report(scenario, fmt: str, out: Path) -> tuple[int, str]:
    _root, plan, plan2, *_rest, env = scenario
    r = run_cli("report", plan, plan2, "--from", "2026-06-01", "--to", "2026-08-29",
                "--format", fmt, "-o", out, env=env)
    assert r.rc == 0, r.text
    return r.rc, out.read_text()


def test_json_figures_match_the_timeline(scenario, tmp_path: Path) -> None:
    _root, plan, _plan2, *_rest, env = scenario
    _, text = _report(scenario, "json", tmp_path / "r.json")
    data = json.loads(text)
    assert data["schema"] == "restorer-report/2"
    assert data["period"] == {"from": "2026-06-01T00:00:00+00:00",
                              "to": _iso(END)}
    shop = next(p for p in data["plans"] if p["name"] == "shop")
    t = {x["name"]: x for x in shop["targets"]}
    # coverage and counts
    assert [(f["plan"], f["target"]) for f in data["findings"]] == [("shop", "cache")]
    assert t["web"]["covered"] and t["db"]["covered"] and not t["cache"]["covered"]
    assert t["web"]["restore_tests"] == {"total": 9, "passed": 9, "failed": 0}
    assert t["db"]["restore_tests"] == {"total": 9, "passed": 6, "failed": 3}
    assert t["cache"]["restore_tests"] == {"total": 0, "passed": 0, "failed": 0}
    failed_days = [x["time"][:10] for x in t["db"]["tests"] if not x["passed"]]
    assert failed_days == [(DAY0 + timedelta(days=d)).date().isoformat()
                           for d in sorted(DB_FAILS)]
    bad = next(x for x in t["db"]["tests"] if not x["passed"])
    assert "'50'" in bad["checks"][1]["detail"] and not bad["checks"][1]["passed"]
    assert all(x["teardown"] == "removed" for x in t["web"]["tests"] + t["db"]["tests"])
    # RTO: the restore phases of the verify runs, as history reads them from the ledger
    history = json.loads(run_cli("history", plan, "--json", env=env).out)
    for name in ("web", "db"):
        restores = [p["duration_s"] for run in reversed(history) if run["command"] == "verify"
                    for p in run["phases"] if p["phase"] == "restore" and p["target"] == name]
        rto = t[name]["rto"]
        assert rto["worst_s"] == max(restores) and rto["latest_s"] == restores[-1]
        assert rto["median_s"] == statistics.median(restores)
        assert rto["breaches"] == sum(1 for x in restores if x > 5.0)
        assert rto["objective_s"] == 5.0
    # RPO: nothing is owed before a target exists, so no breach starts before its first
    # backup (day 0, 03:00; the period starts at 00:00); no verified snapshot until the first
    # test passed (day 0, 04:00); the db's newest verified snapshot (day 20, 03:00) aged
    # past 15 days on day 35 until day 50's pass; and from day 85 (day 70's snapshot + 15 d)
    # to the end; cache never verified
    day = lambda d, h: _iso(DAY0 + timedelta(days=d, hours=h))  # noqa: E731
    assert [(b["start"], b["end"], b["ongoing"]) for b in t["db"]["rpo"]["breaches"]] == [
        (day(0, 3), day(0, 4), False), (day(35, 3), day(50, 4), False),
        (day(85, 3), _iso(END), True)]
    assert [(b["start"], b["end"]) for b in t["web"]["rpo"]["breaches"]] == [
        (day(0, 3), day(0, 4))]
    assert [(b["start"], b["end"], b["ongoing"]) for b in t["cache"]["rpo"]["breaches"]] == [
        (day(0, 3), _iso(END), True)]
    db_breach = t["db"]["rpo"]["breaches"][1]
    assert db_breach["duration_s"] == (15 * 86400 + 3600)
    # failures and how long until the next success of the same command
    fails = [(f["time"], f["command"], f["recovered_at"]) for f in shop["failures"]]
    assert fails == [(day(30, 4), "verify", day(50, 4)), (day(40, 4), "verify", day(50, 4)),
                     (day(80, 4), "verify", None)]
    assert shop["failures"][0]["time_to_recover_s"] == 20 * 86400
    # the rollback of day 60
    # each failure carries its reason (a verify whose check failed records no error itself)
    assert all("check db sql" in f["error"] and "'50'" in f["error"] for f in shop["failures"])
    (rb,) = shop["rollbacks"]
    assert rb["time"] == day(ROLLBACK_DAY, 5) and rb["outcome"] == "ok"
    assert [x["target"] for x in rb["targets"]] == ["web"] and rb["targets"][0]["snapshot"]
    assert rb["user"] and rb["host"]
    assert {"decide", "restore web", "safety_snapshot web", "swap", "checks"} <= set(rb["steps"])
    # the second plan is in the same report
    billing = next(p for p in data["plans"] if p["name"] == "billing")
    assert billing["targets"][0]["covered"]
    # evidence: the chain is intact and the last row named
    for led in data["evidence"]["ledgers"]:
        assert led["chain_intact"] and led["last_hash"] and len(led["last_hash"]) == 64
    assert PASSWORD not in text and "***" in data["evidence"]["ledgers"][0]["ledger"]


def test_html_renders_in_chromium_without_requests(scenario, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "tests/run.sh installs Debian's chromium"
    _, text = _report(scenario, "html", tmp_path / "r.html")
    assert PASSWORD not in text
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 1300},
                                java_script_enabled=False)
        page.on("request", lambda req: requests.append(req.url))
        page.goto((tmp_path / "r.html").as_uri())
        page.screenshot(path=str(tmp_path / "r.png"), full_page=True)
        findings = page.locator("#findings")
        assert findings.is_visible() and "shop / cache" in findings.inner_text()
        box = findings.bounding_box()
        assert box and box["height"] > 30
        border = findings.evaluate("e => getComputedStyle(e).borderTopColor")
        assert border == "rgb(192, 57, 43)"  # red
        charts = page.locator("svg.rto-chart")
        assert charts.count() == 4  # one per target of both plans
        first = charts.first
        assert first.is_visible() and (first.bounding_box() or {}).get("width", 0) > 400
        assert page.locator("svg.rto-chart circle").count() >= 18
        assert page.locator("text=hash chain intact").count() == 2
        pdf = page.pdf(format="A4")
        browser.close()
    assert requests == [(tmp_path / "r.html").as_uri()]  # nothing but the file itself
    assert (tmp_path / "r.png").stat().st_size > 20_000
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert pages >= 2, pages  # A4, and each plan starts on a page of its own


def test_junit_validates_and_fails_the_failing_target(scenario, tmp_path: Path) -> None:
    import xmlschema
    from junitparser import JUnitXml

    _, text = _report(scenario, "junit", tmp_path / "r.xml")
    xmlschema.XMLSchema(Path(__file__).parent.parent / "data" / "junit.xsd").validate(
        str(tmp_path / "r.xml"))
    xml = JUnitXml.fromfile(str(tmp_path / "r.xml"))
    cases = {(s.name, c.name): c for s in xml for c in s}
    failing = [k for k, c in cases.items() if any(r._tag == "failure" for r in c.result)]
    skipped = [k for k, c in cases.items() if any(r._tag == "skipped" for r in c.result)]
    # a target never restore-tested fails: CI must go red on it
    assert failing == [("restore tests of plan shop", "db"), ("restore tests of plan shop",
                                                                "cache")]
    assert skipped == []
    assert "sql" in cases[failing[0]].result[0].message
    assert cases[failing[1]].result[0].message == "never restore-tested in the period"
    assert PASSWORD not in text
    # times are plain seconds, never exponents
    assert not re.search(r"\d[eE]-\d", text), re.findall(r".{20}\d[eE]-\d.{10}", text)
    assert all(re.fullmatch(r"\d+\.\d{3}", t) for t in re.findall(r'time="([^"]*)"', text))
    # --untested skip keeps the old behaviour for those who ask for it
    _root, plan, plan2, *_rest, env = scenario
    r = run_cli("report", plan, plan2, "--from", "2026-06-01", "--to", "2026-08-29",
                "--format", "junit", "--untested", "skip", "-o", tmp_path / "s.xml", env=env)
    assert r.rc == 0, r.text
    xml = JUnitXml.fromfile(str(tmp_path / "s.xml"))
    cases = {(s.name, c.name): c for s in xml for c in s}
    assert [k for k, c in cases.items() if any(r._tag == "skipped" for r in c.result)] == [
        ("restore tests of plan shop", "cache")]
    assert run_cli("report", "--verify", tmp_path / "s.xml", env=env).rc == 0


def test_markdown_and_verify_finds_edits(scenario, tmp_path: Path) -> None:
    _root, _plan, _plan2, pg_server, db, env = scenario
    _, text = _report(scenario, "md", tmp_path / "r.md")
    assert PASSWORD not in text and "**shop / cache**" in text
    for fmt in ("md", "json", "html", "junit"):
        path = tmp_path / f"v.{fmt}"
        _report(scenario, fmt, path)
        r = run_cli("report", "--verify", path, env=env)
        assert r.rc == 0, r.text
    # an edited report is found
    edited = tmp_path / "v.md"
    edited.write_text(edited.read_text().replace("| 9 | 6 | 3 |", "| 9 | 9 | 0 |"))
    r = run_cli("report", "--verify", edited, env=env)
    assert r.rc == 1 and "differs" in r.err
    # an edited ledger row is found (kept last: it breaks the shared ledger)
    seq = int(_psql(f"{pg_server}/{db}", "SELECT min(seq) FROM restorer_ledger WHERE data "
                                         "LIKE '%\"failed\"%'"))
    _psql(f"{pg_server}/{db}", "UPDATE restorer_ledger SET data = replace(data, "
                               f"'\"failed\"', '\"ok\"') WHERE seq = {seq}")
    r = run_cli("report", "--verify", tmp_path / "v.json", env=env)
    assert r.rc == 1 and f"row {seq} was changed after it was written" in r.err
    assert PASSWORD not in r.text
