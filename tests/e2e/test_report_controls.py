"""The report's controls over a 90-day simulated timeline (RESTORER_NOW): restore tests that
stop after day 40 fail "restore tested" from day 47 under verify_every 7d, and status and the
metrics show the breach; staging on the source's own server fails "separation"; an
Object-Locked S3 repository passes "immutability" with the retention read back from its
objects; Chromium renders the controls (JavaScript off) and prints them on A4; neither the
repository password nor the signing key shows anywhere."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import run_cli, unique_name, write_plan

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
TESTED = (0, 6, 12, 18, 24, 30, 35, 40)  # backup at 03:00, restore test at 04:00
BACKED_UP = range(48, 89, 20)  # then backups only
REPO_PW = "repo-pw-never-shown"


def _at(day: float, hour: int = 0) -> str:
    return (DAY0 + timedelta(days=day, hours=hour)).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def timeline(tmp_path_factory) -> tuple[Path, Path, dict[str, str], str]:
    root = tmp_path_factory.mktemp("controls")
    key = json.loads(run_cli("ledger", "keygen", "--out", root / "ledger.key", "--json").out)
    (root / "web").mkdir()
    (root / "web" / "index.html").write_text("<h1>shop</h1>")
    plan = write_plan(
        root / "shop.yaml", name="shop",
        repository={"url": "repo", "password": "${env:REPO_PW}"},
        ledger={"url": "sqlite:///ledger.db", "signing_key": "${file:ledger.key}"},
        objectives={"rpo": "15d", "rto": "10m", "verify_every": "7d"},
        schedule={"backup": "0 3 * * *"},
        targets=[{"name": "web", "kind": "files", "paths": ["web"],
                  "staging": {"path": "staging"},
                  "checks": [{"files": {"exist": ["index.html"]}}]}])
    # never run: where its restore tests would land is the plan's to say
    other = write_plan(
        root / "db.yaml", name="db", ledger="sqlite:///ledger.db",
        targets=[{"name": "orders", "kind": "postgres",
                  "dsn": "postgresql://app@127.0.0.1:5432/shop",
                  "staging": {"dsn": "postgresql://app@localhost/shop_restoretest"}},
                 {"name": "carts", "kind": "mysql", "dsn": "mysql://app@127.0.0.1/carts",
                  "staging": {"dsn": "mysql://app@10.20.0.7/carts_restoretest"}}])
    env = {"REPO_PW": REPO_PW, "RESTORER_STATE_DIR": str(root / "state")}
    assert run_cli("init", plan, env={**env, "RESTORER_NOW": _at(0, 2)}).rc == 0
    for d in TESTED:
        assert run_cli("backup", plan, env={**env, "RESTORER_NOW": _at(d, 3)}).rc == 0
        r = run_cli("verify", plan, env={**env, "RESTORER_NOW": _at(d, 4)})
        assert r.rc == 0, r.text
    for d in BACKED_UP:
        assert run_cli("backup", plan, env={**env, "RESTORER_NOW": _at(d, 3)}).rc == 0
    return plan, other, env, (root / "ledger.key").read_text().strip() + key["public_key"]


def _report(plan: Path, env: dict[str, str], to: str, out: Path, fmt: str = "json",
            *more: Path) -> str:
    r = run_cli("report", plan, *more, "--from", _at(0), "--to", to, "--format", fmt,
                "-o", out, env={**env, "RESTORER_NOW": _at(90)})
    assert r.rc == 0, r.text
    return out.read_text()


def _controls(data: dict, plan: str, target: str) -> dict[str, dict]:
    p = next(p for p in data["plans"] if p["name"] == plan)
    t = next(t for t in p["targets"] if t["name"] == target)
    return {c["id"]: c for c in t["controls"]}


def test_restore_tested_fails_from_day_47_and_status_and_metrics_show_it(timeline,
                                                                         tmp_path: Path) -> None:
    plan, _, env, _ = timeline
    before = json.loads(_report(plan, env, _at(47, 3), tmp_path / "d47.json"))
    after = json.loads(_report(plan, env, _at(47, 5), tmp_path / "d47b.json"))
    assert before["schema"] == "restorer-report/2"
    c = _controls(before, "shop", "web")["restore_tested"]
    assert c["verdict"] == "pass", c
    assert c["detail"].startswith(f"{len(TESTED)} restore test(s) in the period, "
                                  f"{len(TESTED)} passed; a passing test is due every 7d")
    c = _controls(after, "shop", "web")["restore_tested"]
    assert c["verdict"] == "fail"
    assert c["findings"] == [f"overdue from {_at(47, 4)} to the end of the period"]
    # the evidence is the restore tests' runs
    tests = next(p for p in after["plans"] if p["name"] == "shop")["targets"][0]["tests"]
    assert sorted(c["evidence"]) == sorted(t["run_id"] for t in tests)
    assert len(tests) == len(TESTED)
    assert "web: restore tested" in after["plans"][0]["controls"]["failing"]
    assert {"plan": "shop", "target": "web", "finding": f"restore test overdue from "
            f"{_at(47, 4)} to the end of the period"} in after["findings"]
    assert before["findings"] == []
    # the dead-man switch outside the report: status fails, the metric says overdue
    ok = run_cli("status", plan, "--json", env={**env, "RESTORER_NOW": _at(46)})
    late = run_cli("status", plan, "--json", env={**env, "RESTORER_NOW": _at(48)})
    assert ok.rc == 0 and not json.loads(ok.out)[0]["verify_breached"], ok.text
    assert late.rc == 1 and json.loads(late.out)[0]["verify_breached"], late.text
    assert json.loads(late.out)[0]["last_test_time"].startswith(_at(40, 4)[:16])
    metrics = tmp_path / "m.prom"
    r = run_cli("run", "--due", plan, "--metrics-file", metrics,
                env={**env, "RESTORER_NOW": _at(48, 3)})
    assert r.rc == 0, r.text
    text = metrics.read_text()
    assert 'restorer_restore_test_overdue{plan="shop",target="web"} 1.0' in text
    assert 'restorer_restore_test_objective_seconds{plan="shop",target="web"} 604800.0' in text


def test_the_other_controls_over_the_timeline(timeline, tmp_path: Path) -> None:
    plan, other, env, _ = timeline
    data = json.loads(_report(plan, env, _at(89, 23), tmp_path / "r.json", "json", other))
    c = _controls(data, "shop", "web")
    # daily schedule, backups every 5-6 then 20 days: the slots without one are listed
    kept = len(TESTED) + len(BACKED_UP)
    slots = 89  # 03:00 on days 0..88 whose next slot came before the end
    assert c["backup_frequency"]["verdict"] == "fail"
    assert c["backup_frequency"]["findings_total"] == slots - kept
    assert c["backup_frequency"]["findings"][0] == f"no backup for the slot at {_at(1, 3)}"
    assert f"{kept} slot(s) kept, {slots - kept} missed" in c["backup_frequency"]["detail"]
    assert c["recovery_time"]["verdict"] == "pass" and "RTO 10m" in c["recovery_time"]["detail"]
    assert c["data_loss"]["verdict"] == "pass"
    assert f"{len(TESTED)} of {len(TESTED)} test(s)" in c["data_loss"]["detail"]
    assert c["separation"]["verdict"] == "fail"  # staged on the machine that holds it
    assert c["immutability"]["verdict"] == "fail"  # a local folder keeps no retention
    assert c["encryption"]["verdict"] == "pass"
    assert f"{kept} of {kept} snapshot(s)" in c["encryption"]["detail"]
    assert c["offsite_copy"]["verdict"] == "fail" and c["monitoring"]["verdict"] == "fail"
    db = _controls(data, "db", "orders")["separation"]
    assert db["verdict"] == "fail" and "source's own server (loopback:5432)" in db["detail"]
    assert _controls(data, "db", "carts")["separation"]["verdict"] == "pass"
    summary = next(p for p in data["plans"] if p["name"] == "shop")["controls"]
    assert summary["total"] == 9 and summary["passed"] + summary["failed"] + summary[
        "not_applicable"] == 9
    assert summary["failing"][0].startswith("web: ")
    # the ledger behind it is signed and anchored
    led = next(x for x in data["evidence"]["ledgers"] if x["plan"] == "shop")
    assert led["status"] == "signed" and led["chain_intact"]


def test_chromium_renders_the_controls_and_prints_them_on_a4(timeline, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    plan, other, env, secrets = timeline
    text = _report(plan, env, _at(89, 23), tmp_path / "r.html", "html", other)
    chromium = shutil.which("chromium")
    assert chromium, "tests/run.sh installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 1300},
                                java_script_enabled=False)
        page.goto((tmp_path / "r.html").as_uri())
        summary = page.locator("#summary")
        assert summary.is_visible() and "web: restore tested" in summary.inner_text()
        table = page.locator("#controls-shop table")
        assert table.is_visible() and (table.bounding_box() or {}).get("width", 0) > 500
        rows = table.locator("tr")
        assert rows.count() == 10  # a header and nine controls
        # failing controls first, in red
        first = rows.nth(1).locator("td.verdict span")
        assert first.inner_text() == "FAIL"
        assert first.evaluate("e => getComputedStyle(e).color") == "rgb(192, 57, 43)"
        assert page.locator("#controls-db").is_visible()
        pdf = page.pdf(format="A4")
        browser.close()
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) >= 2
    # A4 (210 x 297 mm: 595 x 842 points, as Chromium rounds it) on every page
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert boxes and all(round(float(w)) in (595, 596) and round(float(h)) in (842, 843)
                         for w, h in boxes), boxes
    for out in (text, run_cli("ledger", "verify", plan, "--json", env=env).text,
                run_cli("status", plan, env=env).text,
                run_cli("history", plan, "--json", env=env).text):
        assert REPO_PW not in out
        assert "PRIVATE KEY" not in out and secrets.splitlines()[1] not in out


def test_object_locked_s3_repository_passes_immutability(tmp_path: Path, moto_server) -> None:
    bucket = moto_server.make_bucket(unique_name("ctl"), object_lock=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", repository={
        "url": f"s3://{bucket}/r", "endpoint_url": moto_server.url, "region": "us-east-1",
        "object_lock_days": 30, "sse": "AES256"})
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("backup", plan).rc == 0
    now = datetime.now(UTC)
    out = tmp_path / "r.json"
    r = run_cli("report", plan, "--from", (now - timedelta(days=1)).isoformat(),
                "--to", (now + timedelta(hours=1)).isoformat(), "--format", "json", "-o", out)
    assert r.rc == 0, r.text
    c = _controls(json.loads(out.read_text()), "test", "data")
    im = c["immutability"]
    assert im["verdict"] == "pass", im
    # the date is the one the store holds for the snapshot objects, read back
    client = moto_server.client()
    snaps = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="r/snapshots/")[
        "Contents"]]
    until = max(client.head_object(Bucket=bucket, Key=k)["ObjectLockRetainUntilDate"]
                for k in snaps)
    assert ("Object Lock 30 days configured; 2 of 2 snapshot(s) written in the period read "
            "back locked (GOVERNANCE, the latest retained until "
            f"{until.astimezone(UTC).isoformat(timespec='seconds')})") == im["detail"]
    assert c["encryption"]["verdict"] == "pass"  # SSE, observed on the objects


def test_nothing_is_owed_before_the_first_backup(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      objectives={"verify_every": "1d"})
    assert run_cli("init", plan).rc == 0
    r = run_cli("status", plan, "--json", env={"RESTORER_NOW": _at(400)})
    assert r.rc == 0 and not json.loads(r.out)[0]["verify_breached"], r.text
    assert run_cli("backup", plan, env={"RESTORER_NOW": _at(400)}).rc == 0
    r = run_cli("status", plan, "--json", env={"RESTORER_NOW": _at(402)})
    assert r.rc == 1 and json.loads(r.out)[0]["verify_breached"], r.text
