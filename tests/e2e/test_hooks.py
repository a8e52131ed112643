"""Plan and target hooks around backups."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_plan


def _plan(tmp_path: Path, plan_hooks: dict | None = None, target_hooks: dict | None = None,
          **target) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "f").write_text("x")
    t = {"name": "data", "kind": "files", "paths": ["src"], **target}
    if target_hooks:
        t["hooks"] = target_hooks
    extra = {"hooks": plan_hooks} if plan_hooks else {}
    return write_plan(tmp_path / "plan.yaml", targets=[t], **extra)


def test_hooks_run_in_order_around_the_backup(tmp_path: Path, cli) -> None:
    log = tmp_path / "log"
    plan = _plan(tmp_path,
                 plan_hooks={"before": [f"echo plan-before $RESTORER_PLAN >> {log}"],
                             "after": [f"echo plan-after >> {log}"]},
                 target_hooks={"before": [f"echo target-before $RESTORER_TARGET >> {log}"],
                               "after": [f"echo target-after >> {log}"]})
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    assert log.read_text().splitlines() == [
        "plan-before test", "target-before data", "target-after", "plan-after"]


def test_failing_before_hook_aborts_the_target_and_after_still_runs(tmp_path: Path, cli) -> None:
    log = tmp_path / "log"
    plan = _plan(tmp_path, target_hooks={
        "before": ["echo 'app refused to stop' >&2; exit 5"],
        "after": [f"echo after-ran >> {log}"],
        "on_error": [f"echo \"on-error: $RESTORER_ERROR\" >> {log}"]})
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 1
    res = json.loads(r.out)["targets"][0]
    assert not res["ok"] and "before hook" in res["error"] and "status 5" in res["error"]
    assert "app refused to stop" in res["error"]
    text = log.read_text()
    assert "after-ran" in text and "on-error:" in text and "app refused to stop" in text
    assert json.loads(cli("snapshots", plan, "--json").out) == []


def test_on_error_and_after_run_when_the_backup_itself_fails(tmp_path: Path, cli) -> None:
    log = tmp_path / "log"
    plan = _plan(tmp_path, target_hooks={
        "after": [f"echo after-ran >> {log}"], "on_error": [f"echo on-error-ran >> {log}"]},
        paths=["does-not-exist"])
    r = cli("backup", "--init", plan)
    assert r.rc == 1
    assert log.read_text().splitlines() == ["on-error-ran", "after-ran"]


def test_hook_timeout_and_failing_after_hook(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path, target_hooks={"before": ["sleep 10"], "timeout": "1s"})
    r = cli("backup", "--init", plan)
    assert r.rc == 1 and "did not finish within 1s" in r.err
    plan = _plan(tmp_path, target_hooks={"after": ["exit 9"]})
    r = cli("backup", plan, "--json")
    assert r.rc == 3, r.text  # the snapshot is saved; the run is not complete
    res = json.loads(r.out)["targets"][0]
    assert res["ok"] and any("after hook" in w for w in res["warnings"])


def test_target_hooks_run_on_the_remote_host(tmp_path: Path, cli, sshd) -> None:
    log = tmp_path / "remote-log"
    via = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
           "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "svc", "kind": "command", "via_ssh": via, "backup": "echo state",
        "restore": "cat >/dev/null",
        "hooks": {"remote": True, "before": [f"echo before $RESTORER_TARGET $SSH_CONNECTION"
                                             f" >> {log}"],
                  "after": [f"echo after $RESTORER_PHASE >> {log}"]}}])
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    lines = log.read_text().splitlines()
    # SSH_CONNECTION is set only in a session sshd started: the hook ran over SSH
    assert lines[0].startswith("before svc 127.0.0.1") and lines[1] == "after after"
    bad = write_plan(tmp_path / "bad.yaml", targets=[{
        "name": "svc", "kind": "command", "via_ssh": via, "backup": "echo state",
        "restore": "cat >/dev/null",
        "hooks": {"remote": True, "before": ["echo 'cannot quiesce' >&2; exit 3"]}}])
    r = cli("backup", "--init", bad)
    assert r.rc == 1 and "cannot quiesce" in r.err and "status 3" in r.err
