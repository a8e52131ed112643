"""The three journeys as people run them: a responder answering the prompt, an SRE's cron
line, an auditor's report. Each test is a regression for something that read wrong."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli, tree_digest, write_plan


def _on_terminal(args: list[str], answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run `restorer ARGS` with a pseudo-terminal as stdin/stdout/stderr, type `answer`
    once it asks, and return (exit code, everything it printed)."""
    primary, secondary = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "restorer", *args], stdin=secondary,
                         stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the other side closed: the process is done
                    break
                if not chunk:
                    break
                out += chunk
                if not answered and b"[y/N]" in out:
                    os.write(primary, answer.encode() + b"\n")
                    answered = True
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
        os.close(primary)
    return rc, out.decode(errors="replace")


def test_declined_prompt_is_declined_not_failed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("good")
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "site", "kind": "files", "paths": ["site"], "staging": {"path": "staging"}}])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    (site / "index.html").write_text("bad")
    before = tree_digest(site)
    rc, out = _on_terminal(["rollback", str(plan)], "n")
    assert rc == 0, out
    assert "declined at the prompt; nothing was changed" in out
    assert "FAILED" not in out
    assert tree_digest(site) == before
    last = json.loads(run_cli("history", plan, "--json").out)[0]
    assert (last["command"], last["outcome"], last["exit_code"]) == ("rollback", "declined", 0)
    # a usage mistake is recorded as one; neither is a failure in the report
    r = run_cli("restore", plan, "no-such-id", "--to", tmp_path / "out")
    assert r.rc == 2, r.text
    last = json.loads(run_cli("history", plan, "--json").out)[0]
    assert (last["command"], last["outcome"], last["exit_code"]) == ("restore", "usage", 2)
    report = json.loads(run_cli("report", plan, "--format", "json").out)
    assert report["plans"][0]["failures"] == []


def test_rollback_hooks_are_in_the_summary_and_the_ledger(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("good")
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", rollback={
        "before": ["echo stopping app; echo app stopped"],
        "after": ["echo starting app; echo 'port busy' >&2; exit 7"]},
        targets=[{"name": "site", "kind": "files", "paths": ["site"],
                  "staging": {"path": "staging"}}])
    assert run_cli("backup", "--init", plan).rc == 0
    assert run_cli("verify", plan).rc == 0
    (site / "index.html").write_text("bad")
    r = run_cli("rollback", plan, "--yes")
    assert r.rc == 1, r.text  # a failing after hook leaves the run incomplete
    assert (site / "index.html").read_text() == "good"
    assert "Hook rollback.before: `echo stopping app; echo app stopped`: exit 0 in" in r.out
    assert "  | app stopped" in r.out
    assert "Hook rollback.after: `echo starting app; echo 'port busy' >&2; exit 7`: exit 7" \
        in r.out and "  | port busy" in r.out
    phases = json.loads(run_cli("history", plan, "--json").out)[0]["phases"]
    hooks = [p for p in phases if p["phase"] == "hook"]
    assert [(h["hook"], h["exit_code"], h["outcome"]) for h in hooks] == \
        [("before", 0, "ok"), ("after", 7, "failed")]
    assert "app stopped" in hooks[0]["output"] and "port busy" in hooks[1]["output"]
    assert all(h["duration_s"] > 0 for h in hooks)


def test_two_plans_sharing_a_repository_each_see_their_own_latest(tmp_path: Path) -> None:
    for name in ("root", "slash"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text(name)
        write_plan(tmp_path / f"{name}.yaml", name=name, repository={"url": "file://repo"},
                   targets=[{"name": "t", "kind": "files", "paths": [name],
                             "staging": {"path": f"staging-{name}"}}])
    assert run_cli("backup", "--init", tmp_path / "root.yaml").rc == 0
    assert run_cli("backup", tmp_path / "slash.yaml").rc == 0
    assert run_cli("backup", tmp_path / "root.yaml").rc == 0  # the newest is root's
    r = run_cli("restore", tmp_path / "slash.yaml", "latest", "--target", "t",
                "--to", tmp_path / "out")
    assert r.rc == 0, r.text
    assert (tmp_path / "out" / "slash" / "f.txt").read_text() == "slash"
    listed = json.loads(run_cli("snapshots", tmp_path / "slash.yaml", "--json").out)
    assert [s["plan"] for s in listed] == ["slash"]
    r = run_cli("verify", tmp_path / "slash.yaml", "--json")
    assert r.rc == 0, r.text


def test_sftp_repository_takes_host_port_and_user_from_its_url(tmp_path: Path, sshd) -> None:
    from tests.conftest import unique_name

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("over sftp")
    root = sshd.root / unique_name("urlhost")
    ssh = {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    plan = write_plan(tmp_path / "plan.yaml", repository={"url": sshd.url(root), "ssh": ssh})
    r = run_cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    assert list((root / "snapshots").iterdir())
    # a value that contradicts the URL is refused, naming the key
    for key, value in (("host", "192.0.2.1"), ("port", 2), ("user", "somebody-else")):
        write_plan(plan, repository={"url": sshd.url(root), "ssh": {**ssh, key: value}})
        r = run_cli("validate", plan)
        assert r.rc == 2, r.text
        assert "At 'repository'" in r.err and f"ssh.{key}" in r.err and "URL" in r.err, r.err
    # one that repeats it is fine
    write_plan(plan, repository={"url": sshd.url(root), "ssh": {**ssh, "host": "127.0.0.1"}})
    assert run_cli("backup", plan).rc == 0


# --- what cron's log holds --------------------------------------------------------------


def _json_lines(text: str) -> list[dict]:
    from datetime import datetime

    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)  # every line: one JSON object
        assert isinstance(d, dict), line
        for k in ("time", "level", "event", "message"):
            assert k in d, (k, line)
        assert d["time"].endswith("Z") and datetime.fromisoformat(d["time"][:-1]), line
        out.append(d)
    return out


def test_run_due_json_lines_have_one_shape(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(plans / "good.yaml", name="good", repository={"url": "file://../repo-good"},
               targets=[{"name": "data", "kind": "files", "paths": ["../src"]}],
               schedule={"backup": "0 3 * * *"})
    write_plan(plans / "bad.yaml", name="bad", repository={"url": "file://../repo-bad"},
               targets=[{"name": "data", "kind": "files", "paths": ["../src"]}],
               schedule={"backup": "0 3 * * *"})
    assert run_cli("init", plans / "good.yaml").rc == 0  # bad's repository is missing
    r = run_cli("--log-format", "json", "run", "--due", plans)
    assert r.rc == 1, r.text
    lines = _json_lines(r.out) + _json_lines(r.err)
    jobs = [d for d in lines if d["event"] == "job"]
    assert {(d["plan"], d["outcome"]) for d in jobs} == {("good", "ok"), ("bad", "failed")}
    assert all(d.get("run_id") for d in jobs)
    assert any(d["event"] == "job_end" and d["level"] == "error" and d["plan"] == "bad"
               for d in lines)
    # a fatal error is a JSON line too, and the option may follow the command
    r = run_cli("backup", tmp_path / "missing.yaml", "--log-format", "json")
    assert r.rc == 2, r.text
    (fatal,) = _json_lines(r.err)
    assert fatal["level"] == "error" and fatal["exit_code"] == 2 and "missing.yaml" in \
        fatal["message"]


def test_global_options_after_the_command_and_progress_lines_under_v(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(os.urandom(300_000))
    plan = write_plan(tmp_path / "plan.yaml")
    r = run_cli("backup", "--init", plan, "-q")
    assert r.rc == 0 and r.err == "", r.text
    r = run_cli("backup", plan, "-v")  # stderr is no terminal here: plain progress lines
    assert r.rc == 0, r.text
    assert "backup data: started" in r.err and "MiB in" in r.err, r.err
    r = run_cli("snapshots", plan, "--log-format", "json", "-v", "--json")
    assert r.rc == 0 and len(json.loads(r.out)) == 2
    _json_lines(r.err)


def test_history_text_and_summaries_read_as_a_person_writes(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    con = sqlite3.connect(tmp_path / "app.db")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[
        {"name": "data", "kind": "files", "paths": ["src"], "staging": {"path": "staging"},
         "checks": [{"files": {"exist": ["nope.txt"]}}]},
        {"name": "db", "kind": "sqlite", "path": "app.db", "staging": {"path": "st-db"}}])
    r = run_cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    assert "dump: " in r.out and "files: 1 new" in r.out  # the database is a dump
    assert r.out.count("files: ") == 1
    r = run_cli("snapshots", plan)
    assert r.out.rstrip().endswith("2 snapshots"), r.out
    r = run_cli("restore", plan, "latest", "--target", "data", "--to", tmp_path / "out")
    assert r.rc == 0 and "1 file, 1 dir, 0 symlinks" in r.out, r.out
    r = run_cli("verify", plan, "--target", "data")
    assert r.rc == 1, r.text
    text = run_cli("history", plan).out
    verify_line = next(x for x in text.splitlines() if " verify " in x)
    assert "failed" in verify_line and "exit 1" in verify_line
    check = next(x for x in text.splitlines() if "check data files" in x)
    assert "failed" in check, text
    assert "nope.txt" in text  # the failed phase's reason
