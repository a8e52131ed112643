"""verify onto a staging host over SSH (a real sshd on loopback): restore into a scratch
directory there, checks run there, and the directory is removed afterwards."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import write_plan
from tests.services import free_port


def test_verify_on_a_staging_host(tmp_path: Path, cli, sshd) -> None:
    remote = tmp_path / "web-root"
    (remote / "static").mkdir(parents=True)
    (remote / "index.html").write_text("<h1>shop on staging</h1>")
    (remote / "static" / "app.js").write_bytes(os.urandom(900_000))
    host = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    staging_root = tmp_path / "staging-host-scratch"
    port = free_port()
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", targets=[{
        "name": "web", "kind": "ssh-files", "host": host, "paths": [str(remote)],
        "staging": {"host": host, "path": str(staging_root)},
        "checks": [
            {"files": {"exist": ["index.html", "static/app.js"], "min_count": 2}},
            {"command": {"run": 'pwd; test "$RESTORER_STAGING" = "$(pwd)"'}},
            {"http": {"serve": f"{sys.executable} -m http.server {port} --bind 127.0.0.1",
                      "url": f"http://127.0.0.1:{port}/index.html",
                      "contains": "shop on staging", "timeout": "20s"}},
            {"command": {"run": "echo nope >&2; exit 3"}}]}])
    assert cli("backup", "--init", plan).rc == 0
    r = cli("verify", plan, "--json")
    assert r.rc == 1, r.text
    v = json.loads(r.out)[0]
    assert v["staging"].startswith(f"{sshd.user}@127.0.0.1:{staging_root}/restorer-verify-web-")
    manifest, files, where, http, failing = v["checks"]
    assert manifest["passed"] and "2 files match" in manifest["detail"], manifest
    assert files["passed"] and "2 files, 900024 bytes" in files["detail"], files
    assert where["passed"] and f"{staging_root}/restorer-verify-web-" in where["detail"]
    assert where["detail"].rstrip().endswith("/web-root"), where
    assert http["passed"] and "-> 200" in http["detail"], http
    assert not failing["passed"] and "exited 3" in failing["detail"]
    assert "nope" in failing["detail"]
    assert list(staging_root.iterdir()) == []  # torn down, logs included
    with pytest.raises(ConnectionRefusedError):  # the server was stopped
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_staging_host_path_overlapping_the_source_is_rejected(tmp_path: Path, cli) -> None:
    host = {"host": "web1", "user": "deploy"}
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "web", "kind": "ssh-files", "host": host, "paths": ["/srv/www"],
        "staging": {"host": {"host": "web1", "port": 22}, "path": "/srv/www/tmp"}}])
    r = cli("validate", plan)
    assert r.rc == 2 and "targets[0].staging.path" in r.err and "overlaps" in r.err
    plan = write_plan(tmp_path / "plan.yaml", targets=[{
        "name": "web", "kind": "ssh-files", "host": host, "paths": ["/srv/www"],
        "staging": {"host": {"host": "staging1"}, "path": "/srv/www"}}])
    assert cli("validate", plan).rc == 0  # another machine
