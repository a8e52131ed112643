"""verify: restore into staging, checks, objectives, records, teardown."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import write_plan


def _plan(tmp_path: Path, checks: list, objectives: dict | None = None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "index.html").write_text("<h1>ok</h1>")
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(70_000))
    extra = {"objectives": objectives} if objectives else {}
    return write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "data", "kind": "files", "paths": ["src"],
        "staging": {"path": "staging"}, "checks": checks}], **extra)


def test_verify_passes_records_timings_and_tears_down(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, [{"files": {"exist": ["index.html"], "min_count": 6}},
                            {"command": {"run": "grep -q ok index.html"}}],
                 {"rto": "5m", "rpo": "1h"})
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 0, r.text
    v = json.loads(r.out)[0]
    assert v["ok"] and v["passed"] and v["restore_s"] > 0
    assert [c["name"] for c in v["checks"]] == ["manifest", "files", "command"]
    assert all(c["passed"] and c["duration_s"] >= 0 for c in v["checks"])
    assert "6 files match the snapshot" in v["checks"][0]["detail"]
    assert not v["rto_breached"] and not v["rpo_breached"] and v["data_age_s"] < 3600
    assert list((tmp_path / "staging").iterdir()) == []  # torn down
    runs = json.loads(cli("history", plan, "--json").out)
    phases = [p["phase"] for p in runs[0]["phases"]]
    assert runs[0]["command"] == "verify" and phases == ["restore", "check", "check", "check",
                                                         "teardown"]
    assert runs[0]["phases"][0]["duration_s"] > 0
    text = cli("verify", plan).out
    assert "PASS" in text and "3/3" in text


def test_failing_check_marks_failed_and_other_checks_still_run(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, [{"command": {"run": "echo boom; exit 3"}},
                            {"files": {"exist": ["index.html"]}}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 1
    v = json.loads(r.out)[0]
    checks = {c["name"]: c for c in v["checks"]}
    assert not checks["command"]["passed"] and "exited 3" in checks["command"]["detail"]
    assert "boom" in checks["command"]["detail"]
    assert checks["files"]["passed"] and checks["manifest"]["passed"]
    assert list((tmp_path / "staging").iterdir()) == []  # torn down after a failure too
    # a failed verification does not count for RPO
    plan2 = _plan(tmp_path, [{"command": {"run": "exit 3"}}], {"rpo": "1h"})
    r = cli("verify", plan2, "--json")
    v = json.loads(r.out)[0]
    assert v["data_age_s"] is None and v["rpo_breached"]


def test_corrupted_snapshot_fails_verification_naming_files(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, [])
    assert cli("backup", "--init", plan).rc == 0
    pack = max((p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[50] ^= 0xFF
    pack.write_bytes(bytes(data))
    r = cli("verify", plan, "--json")
    assert r.rc == 1
    v = json.loads(r.out)[0]
    manifest = v["checks"][0]
    assert manifest["name"] == "manifest" and not manifest["passed"]
    assert "could not be restored" in manifest["detail"] and ".bin" in manifest["detail"]


def test_rto_breach_fails_even_when_checks_pass_and_keep(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, [], {"rto": "1ms"})
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--keep")
    assert r.rc == 1 and "BREACH" in r.out and "staging kept at" in r.out
    assert len(list((tmp_path / "staging").iterdir())) == 1


def test_status_shows_latest_and_verified_snapshots_and_breaches(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, [], {"rpo": "1h", "rto": "10m"})
    assert cli("backup", "--init", plan).rc == 0
    r = cli("status", plan, "--json")
    assert r.rc == 1  # nothing verified yet: the RPO is breached
    st = json.loads(r.out)[0]
    assert st["latest_snapshot"] and st["verified_snapshot"] is None and st["rpo_breached"]
    assert cli("verify", plan).rc == 0
    r = cli("status", plan, "--json")
    assert r.rc == 0, r.text
    st = json.loads(r.out)[0]
    assert st["verified_snapshot"] == st["latest_snapshot"]
    assert st["data_age_s"] < 3600 and 0 < st["last_restore_s"] < 600
    assert not st["rpo_breached"] and not st["rto_breached"]
    text = cli("status", plan).out
    assert "data" in text and "BREACH" not in text
