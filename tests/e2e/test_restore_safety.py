"""A restore never writes outside --to, whatever a (crafted) snapshot says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from restorer.repo.blobs import DATA
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.storage.local import LocalBackend


def _node(name: str, type_: str, **kw) -> dict:
    return {"name": name, "type": type_, "mode": 0o644 if type_ != "dir" else 0o755,
            "uid": 0, "gid": 0, "mtime_ns": 1_600_000_000_000_000_000, **kw}


def _craft(repo_dir: Path, root_nodes_fn) -> str:
    """Save a snapshot whose root tree is built by root_nodes_fn(writer)."""
    repo = Repository.open(LocalBackend(repo_dir), None)
    repo.load_index()
    with BlobWriter(repo) as w:
        root = w.add_tree(root_nodes_fn(w))
        w.flush()
    snap = Snapshot(time="2026-01-01T00:00:00+00:00", plan="test", target="data", kind="files",
                    hostname="attacker", username="x", paths=["/src"], tree=root)
    return repo.save_snapshot(snap)


def _file(w: BlobWriter, name: str, data: bytes) -> dict:
    return _node(name, "file", size=len(data), content=[w.add(DATA, data).hex()])


@pytest.fixture
def repo(plan_dir: Path, cli):
    (plan_dir / "src" / "ok.txt").write_text("ok")
    assert cli("backup", "--init", plan_dir / "plan.yaml").rc == 0
    return plan_dir


CRAFTED = {
    "dotdot-name": lambda w: [_file(w, "../escaped.txt", b"pwned")],
    "absolute-name": lambda w: [_file(w, "/tmp/escaped-abs.txt", b"pwned")],
    "dotdot-dir": lambda w: [_node("..", "dir", subtree=w.add_tree([_file(w, "escaped.txt",
                                                                          b"pwned")]))],
    "symlink-then-dir-of-same-name": lambda w: [
        _node("link", "symlink", target="../outside"),
        _node("link", "dir", subtree=w.add_tree([_file(w, "escaped.txt", b"pwned")])),
    ],
    "nul-in-name": lambda w: [_file(w, "a\x00b", b"pwned")],
    "empty-name": lambda w: [_file(w, "", b"pwned")],
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_snapshot_is_refused_and_nothing_is_written_outside(repo: Path, cli,
                                                                     case: str) -> None:
    outside = repo / "outside"
    outside.mkdir()
    sid = _craft(repo / "repo", CRAFTED[case])
    dest = repo / "dest"
    r = cli("restore", repo / "plan.yaml", sid[:12], "--to", dest)
    assert r.rc == 1, r.text
    assert "refusing to restore" in r.err and "crafted or damaged" in r.err
    assert not (repo / "escaped.txt").exists()
    assert not Path("/tmp/escaped-abs.txt").exists()
    assert not list(outside.iterdir())
    assert not dest.exists() or not list(dest.rglob("escaped*"))


def test_symlink_in_destination_is_never_written_through(repo: Path, cli) -> None:
    outside = repo / "outside"
    outside.mkdir()
    dest = repo / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "src")  # where the snapshot's directory 'src' would go
    r = cli("restore", repo / "plan.yaml", "latest", "--to", dest)
    assert r.rc == 1 and "already exist" in r.err
    assert not list(outside.iterdir())
    r = cli("restore", repo / "plan.yaml", "latest", "--to", dest, "--overwrite")
    assert r.rc == 0, r.text
    assert not list(outside.iterdir()), "wrote through a symlink"
    assert not (dest / "src").is_symlink() and (dest / "src" / "ok.txt").read_text() == "ok"


def test_snapshot_symlinks_pointing_outside_are_restored_as_links_not_followed(
        repo: Path, cli) -> None:
    outside = repo / "outside"
    outside.mkdir()
    sid = _craft(repo / "repo", lambda w: [
        _node("src", "dir", subtree=w.add_tree([
            _node("abs", "symlink", target=str(outside)),
            _node("rel", "symlink", target="../../outside"),
            _file(w, "zz-after-links.txt", b"inside"),
        ]))])
    dest = repo / "dest"
    r = cli("restore", repo / "plan.yaml", sid[:12], "--to", dest)
    assert r.rc == 0, r.text
    assert os.readlink(dest / "src" / "abs") == str(outside)
    assert os.readlink(dest / "src" / "rel") == "../../outside"
    assert (dest / "src" / "zz-after-links.txt").read_bytes() == b"inside"
    assert not list(outside.iterdir())
