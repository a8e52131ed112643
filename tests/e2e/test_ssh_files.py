"""ssh-files targets: paths on another host read over SFTP (a real sshd on loopback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import write_plan


def _tree(root: Path) -> None:
    (root / "etc" / "app").mkdir(parents=True)
    (root / "etc" / "app" / "app.conf").write_text("listen = 8080\n")
    (root / "etc" / "app" / "secret.key").write_bytes(os.urandom(3000))
    os.chmod(root / "etc" / "app" / "secret.key", 0o600)
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "empty").mkdir()
    (root / "cache.tmp").write_text("skip me")
    os.symlink("etc/app/app.conf", root / "conf-link")
    for i, p in enumerate(sorted(root.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))


def test_ssh_files_round_trip_and_incremental(tmp_path: Path, cli, sshd) -> None:
    remote = tmp_path / "remote-host-data"
    _tree(remote)
    via = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
           "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "web1", "kind": "ssh-files", "host": via, "paths": [str(remote)],
         "exclude": ["*.tmp"]}])
    r = cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    s = json.loads(r.out)["targets"][0]["summary"]
    assert s["files_new"] == 3 and s["bytes_read"] > 3 << 20
    out = tmp_path / "out"
    r = cli("restore", plan, "latest", "--to", out)
    assert r.rc == 0, r.text
    got = out / remote.name
    for p in remote.rglob("*"):
        rel = p.relative_to(remote)
        q = got / rel
        if p.name == "cache.tmp":
            assert not q.exists()
            continue
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
            continue
        assert q.stat().st_mode == p.stat().st_mode, rel
        assert int(q.stat().st_mtime) == int(p.stat().st_mtime), rel
        if p.is_file():
            assert q.read_bytes() == p.read_bytes()
    # nothing changed: nothing read
    s = json.loads(cli("backup", plan, "--json").out)["targets"][0]["summary"]
    assert (s["files_unmodified"], s["bytes_read"]) == (3, 0)
    (remote / "etc" / "app" / "app.conf").write_text("listen = 9090\n")
    s = json.loads(cli("backup", plan, "--json").out)["targets"][0]["summary"]
    assert (s["files_changed"], s["bytes_read"]) == (1, len("listen = 9090\n"))


def test_ssh_files_unknown_host_fails_clearly(tmp_path: Path, cli, sshd) -> None:
    empty = tmp_path / "kh"
    empty.write_text("")
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "web1", "kind": "ssh-files", "paths": ["/etc"],
         "host": {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                  "key_file": str(sshd.key_file), "known_hosts": str(empty)}}])
    r = cli("backup", "--init", plan)
    assert r.rc == 1
    assert "target web1: FAILED" in r.err and "refusing to connect" in r.err


def test_ssh_files_restore_back_onto_the_host(tmp_path: Path, cli, sshd) -> None:
    remote = tmp_path / "remote-host-data"
    _tree(remote)
    via = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
           "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "web1", "kind": "ssh-files", "host": via, "paths": [str(remote)]}])
    assert cli("backup", "--init", plan).rc == 0
    back = tmp_path / "restored-on-host"
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{back}"
    r = cli("restore", plan, "latest", "--to", url)
    assert r.rc == 0, r.text
    for p in remote.rglob("*"):
        q = back / remote.name / p.relative_to(remote)
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
        elif p.is_file():
            assert q.read_bytes() == p.read_bytes()
            assert q.stat().st_mode == p.stat().st_mode
            assert int(q.stat().st_mtime) == int(p.stat().st_mtime)
    # a second restore does not replace files without --overwrite
    r = cli("restore", plan, "latest", "--to", url)
    assert r.rc == 1 and "already exist" in r.err
    # a symlink planted in the destination is never written through
    outside = tmp_path / "outside"
    outside.mkdir()
    trap = tmp_path / "trap"
    trap.mkdir()
    os.symlink(outside, trap / remote.name)
    r = cli("restore", plan, "latest", "--to",
            f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{trap}", "--overwrite")
    assert r.rc == 1 and "refusing to write through it" in r.err
    assert not list(outside.iterdir())
