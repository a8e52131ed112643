"""notify: a failed backup reaches a local HTTP server as a webhook, a PagerDuty-style
trigger is resolved by the next success, pings, retries, and a dead endpoint never fails the
backup."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import write_plan
from tests.services import free_port


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict | None]] = []
        self.fail_next: dict[str, int] = {}  # path -> how many 503s to answer first
        recv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                recv.requests.append((path, body))
                left = recv.fail_next.get(path, 0)
                if left:
                    recv.fail_next[path] = left - 1
                    self.send_response(503)
                else:
                    self.send_response(202)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict | None]:
        return [b for p, b in self.requests if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _plan(tmp_path: Path, receiver: Receiver, backup_cmd: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "f.txt").write_text("x")
    return write_plan(
        tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
        targets=[{"name": "files", "kind": "files", "paths": ["src"]},
                 {"name": "db", "kind": "command", "backup": backup_cmd,
                  "restore": "cat >/dev/null"}],
        notify=[
            {"on": ["failure"], "webhook": f"{receiver.url}/hook?token=s3cr3t"},
            {"on": ["failure", "recovered"], "webhook": f"{receiver.url}/pd",
             "format": "pagerduty", "routing_key": "${env:PD_KEY}"},
            {"on": ["success", "failure"], "ping": f"{receiver.url}/hc"},
            {"on": ["failure"], "webhook": f"{receiver.url}/slack", "format": "slack"},
        ])


def test_failure_then_recovery(tmp_path: Path, cli, receiver: Receiver) -> None:
    env = {"PD_KEY": "pd-routing-key"}
    plan = _plan(tmp_path, receiver, "echo dump broke >&2; exit 4")
    assert cli("init", plan, env=env).rc == 0
    receiver.fail_next["/hook"] = 1  # the first delivery is answered 503: retried
    r = cli("backup", plan, env=env)
    assert r.rc == 3, r.text
    run_id = json.loads(cli("history", plan, "--json", env=env).out)[0]["run_id"]

    hooks = receiver.to("/hook")
    assert len(hooks) == 2 and hooks[0] == hooks[1]  # once refused, then delivered
    body = hooks[1]
    assert body["event"] == "failure" and body["plan"] == "test" and body["target"] == "db"
    assert body["run_id"] == run_id and "dump broke" in body["error"]
    assert body["command"] == "backup" and body["host"]

    (trigger,) = receiver.to("/pd")
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "pd-routing-key"
    assert trigger["dedup_key"] == "restorer/test/backup/db"
    assert trigger["payload"]["severity"] == "critical" and "dump broke" in \
        trigger["payload"]["summary"]
    assert receiver.to("/hc/start") == [None] and receiver.to("/hc/fail") == [None]
    assert "dump broke" in receiver.to("/slack")[0]["text"]

    # the next backup succeeds: the incident is resolved under the same key; pings say ok
    plan = _plan(tmp_path, receiver, "echo fine")
    receiver.requests.clear()
    r = cli("backup", plan, env=env)
    assert r.rc == 0, r.text
    resolves = [b for b in receiver.to("/pd") if b["event_action"] == "resolve"]
    assert "restorer/test/backup/db" in {b["dedup_key"] for b in resolves}
    assert all(b["routing_key"] == "pd-routing-key" for b in resolves)
    assert receiver.to("/hook") == [] and receiver.to("/slack") == []  # failure-only entries
    assert receiver.to("/hc/start") == [None] and receiver.to("/hc") == [None]
    # a further success is not a recovery: nothing more to resolve
    receiver.requests.clear()
    assert cli("backup", plan, env=env).rc == 0
    assert receiver.to("/pd") == []

    # every delivery is in the ledger, the token in the URL is not
    ledger_text = (tmp_path / "ledger.db").read_bytes()
    assert b"s3cr3t" not in ledger_text
    phases = json.loads(cli("history", plan, "--json", env=env).out)[2]["phases"]
    notes = [p for p in phases if p["phase"] == "notify"]
    assert {p["outcome"] for p in notes} == {"ok"}
    assert any(p["destination"].endswith(f":{receiver.server.server_port}/...") for p in notes)


def test_dead_endpoint_never_fails_the_backup(tmp_path: Path, cli) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x")
    dead = f"http://127.0.0.1:{free_port()}"
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      notify=[{"on": ["success"], "webhook": f"{dead}/hook"}])
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    assert "notify[0] success to http://127.0.0.1" in r.err and "failed after 3" in r.err
    run = json.loads(cli("history", plan, "--json").out)[0]
    assert run["outcome"] == "ok"
    (note,) = [p for p in run["phases"] if p["phase"] == "notify"]
    assert note["outcome"] == "failed" and note["error"]
