"""copy: snapshots mirrored to an off-site repository as they are, incrementally."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conftest import assert_same_tree, unique_name, write_plan

ENV = {"RESTORER_PASSWORD": "copy-password"}


def _source(tmp_path: Path, cli) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(random.Random(8).randbytes(3 << 20))
    (src / "b.txt").write_text("b\n")
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "password": "${env:RESTORER_PASSWORD}",
                                  "pack_size": "1MiB"})
    assert cli("backup", "--init", plan, env=ENV).rc == 0
    return plan


def test_copy_to_s3_then_incremental_then_restore_from_the_copy(tmp_path: Path, cli,
                                                                 moto_server) -> None:
    plan = _source(tmp_path, cli)
    bucket = moto_server.make_bucket(unique_name("copy"))
    off = write_plan(tmp_path / "offsite.yaml", repository={
        "url": f"s3://{bucket}/mirror", "endpoint_url": moto_server.url,
        "region": "us-east-1", "password": "${env:RESTORER_PASSWORD}"})
    r = cli("copy", plan, "--to", off, "--json", env=ENV)
    assert r.rc == 0, r.text
    res = json.loads(r.out)
    assert res["created"] and len(res["snapshots_copied"]) == 1 and res["packs_copied"] >= 3
    # nothing new: nothing copied
    r = cli("copy", plan, "--to", off, "--json", env=ENV)
    res = json.loads(r.out)
    assert (res["packs_copied"], res["snapshots_copied"], res["snapshots_already_present"]) == (
        0, [], 1)
    (tmp_path / "src" / "c.txt").write_text("c\n")
    assert cli("backup", plan, env=ENV).rc == 0
    res = json.loads(cli("copy", plan, "--to", off, "--json", env=ENV).out)
    assert len(res["snapshots_copied"]) == 1 and res["bytes_copied"] < 100_000
    # the copy is a repository in its own right
    assert cli("check", off, "--read-data", env=ENV).rc == 0
    r = cli("restore", off, "latest", "--to", tmp_path / "out", env=ENV)
    assert r.rc == 0, r.text
    assert_same_tree(tmp_path / "src", tmp_path / "out" / "src")
    ids = [s["id"] for s in json.loads(cli("snapshots", off, "--json", env=ENV).out)]
    assert ids == [s["id"] for s in json.loads(cli("snapshots", plan, "--json", env=ENV).out)]


def test_copy_to_sftp_url(tmp_path: Path, cli, sshd) -> None:
    plan = _source(tmp_path, cli)
    root = sshd.root / unique_name("copy")
    off = write_plan(tmp_path / "offsite.yaml", repository={
        "url": sshd.url(root), "password": "${env:RESTORER_PASSWORD}",
        "ssh": {"host": "127.0.0.1", "key_file": str(sshd.key_file),
                "known_hosts": str(sshd.known_hosts)}})
    r = cli("copy", plan, "--to", off, env=ENV)
    assert r.rc == 0, r.text
    assert "copied 1 snapshot(s)" in r.out
    r = cli("restore", off, "latest", "--to", tmp_path / "out", env=ENV)
    assert r.rc == 0, r.text
    assert_same_tree(tmp_path / "src", tmp_path / "out" / "src")


def test_copy_refuses_a_different_repository_and_damaged_packs(tmp_path: Path, cli) -> None:
    plan = _source(tmp_path, cli)
    other = write_plan(tmp_path / "other.yaml", repository={"url": "file://other"})
    assert cli("init", other).rc == 0
    r = cli("copy", plan, "--to", f"file://{tmp_path / 'other'}", env=ENV)
    assert r.rc == 2 and "different repository" in r.err
    pack = max((p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[10] ^= 1
    pack.write_bytes(bytes(data))
    dest = tmp_path / "mirror"
    r = cli("copy", plan, "--to", f"file://{dest}", env=ENV)
    assert r.rc == 1 and pack.name in r.err and "damaged" in r.err
    assert not list(dest.glob("snapshots/*")), "a snapshot was copied over damaged data"
