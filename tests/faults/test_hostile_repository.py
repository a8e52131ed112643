"""Hostile repository content gives errors, never tracebacks: crafted trees with wrong types and
deep nesting, written into a real repository, then restored and checked through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from restorer.repo.blobs import TREE
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.storage.local import LocalBackend
from tests.conftest import run_cli, write_plan

GOOD = {"name": "f.txt", "type": "file", "mode": 0o644, "uid": 0, "gid": 0,
        "mtime_ns": 1_700_000_000_000_000_000, "size": 0, "content": []}

# (case, what the entry holds instead, words the error must carry)
CRAFTED: list[tuple[str, Any, str]] = [
    ("mode_as_text", {**GOOD, "mode": "0777"}, "mode must be an integer"),
    ("mtime_past_2262", {**GOOD, "mtime_ns": 10**30}, "entry 'f.txt': mtime_ns"),
    ("mtime_just_past_int64", {**GOOD, "mtime_ns": 2**63}, "mtime_ns is out of range"),
    ("negative_uid", {**GOOD, "uid": -1}, "uid is out of range"),
    ("non_hex_content", {**GOOD, "size": 3, "content": ["zz" * 32]}, "content [0] must be a"),
    ("content_as_map", {**GOOD, "content": {"a": 1}}, "content must be a list"),
    ("bad_base64_xattr", {**GOOD, "xattrs": {"user.x": "!!!not base64"}},
     "is not valid base64"),
    ("subtree_as_list", {"name": "d", "type": "dir", "mode": 0o755, "subtree": [1, 2]},
     "subtree must be a 64-digit"),
    ("size_as_bool", {**GOOD, "size": True}, "size must be an integer"),
]


def _crafted_repo(tmp_path: Path, tree_bytes: list[bytes]) -> tuple[Path, str]:
    """A plain repository whose one snapshot's root tree is the last of `tree_bytes` (earlier
    ones are its subtrees, stored as given)."""
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")
    (tmp_path / "src").mkdir(exist_ok=True)
    r = run_cli("init", plan)
    assert r.rc == 0, r.text
    repo = Repository.open(LocalBackend(tmp_path / "repo"), None)
    with BlobWriter(repo) as w:
        ids = [w.add(TREE, b).hex() for b in tree_bytes]
        w.flush()
    snap = Snapshot(time="2026-12-01T00:00:00+00:00", plan="test", target="data",
                    kind="files", hostname="h", username="u", paths=[str(tmp_path / "src")],
                    tree=ids[-1])
    return plan, repo.save_snapshot(snap)


def _tree(*nodes: Any) -> bytes:
    # the stdlib writes integers of any size (10**30), as a crafted file may hold
    return json.dumps({"nodes": list(nodes)}, separators=(",", ":")).encode()


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


@pytest.mark.parametrize(("case", "node", "words"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_tree_fields_are_named_errors(tmp_path: Path, case: str, node: Any,
                                              words: str) -> None:
    plan, sid = _crafted_repo(tmp_path, [_tree(node)])
    r = run_cli("restore", plan, sid, "--to", tmp_path / "out")
    _no_traceback(r.text)
    assert r.rc == 1, r.text
    assert words in r.err and "damaged or crafted" in r.err, r.err
    assert not list((tmp_path / "out").rglob("*.txt"))
    r = run_cli("check", plan)
    _no_traceback(r.text)
    assert r.rc == 1, r.text
    assert words in r.err and f"snapshot {sid[:8]}" in r.err, r.err
    last = json.loads(run_cli("history", plan, "--json").out)[0]
    assert (last["command"], last["outcome"], last["exit_code"]) == ("check", "failed", 1)


@pytest.mark.parametrize("shape", ["list_for_map", "nodes_not_a_list", "json_3000_deep"])
def test_crafted_tree_shapes_are_named_errors(tmp_path: Path, shape: str) -> None:
    raw = {
        "list_for_map": orjson.dumps({"nodes": [["f.txt", "file"]]}),
        "nodes_not_a_list": orjson.dumps({"nodes": "f.txt"}),
        "json_3000_deep": b'{"nodes":' + b"[" * 3000 + b"]" * 3000 + b"}",
    }[shape]
    plan, sid = _crafted_repo(tmp_path, [raw])
    for args in (("restore", plan, sid, "--to", tmp_path / "out"), ("check", plan),
                 ("diff", plan, sid, sid)):
        r = run_cli(*args)
        _no_traceback(r.text)
        if args[0] != "diff":  # a snapshot compared with itself reads no tree
            assert r.rc == 1, r.text
            assert f"snapshot {sid[:8]}" in r.err and "(damaged" in r.err, r.err


def test_snapshot_3000_directories_deep_checks_and_prunes_without_recursion(
        tmp_path: Path) -> None:
    depth = 3000
    trees = [_tree({"name": "leaf.txt", "type": "file", "mode": 0o644, "size": 0,
                    "content": []})]
    ids: list[str] = []
    for _ in range(depth):
        from restorer.repo.crypto import Sealer

        prev = Sealer(None).blob_id(trees[-1]).hex()
        ids.append(prev)
        trees.append(_tree({"name": "d", "type": "dir", "mode": 0o755, "subtree": prev}))
    plan, sid = _crafted_repo(tmp_path, trees)
    r = run_cli("check", plan, "--read-data", "--json")
    _no_traceback(r.text)
    assert r.rc == 0, r.text
    assert json.loads(r.out)["trees"] == depth + 1
    r = run_cli("diff", plan, sid, sid)
    _no_traceback(r.text)
    assert r.rc == 0, r.text
    r = run_cli("prune", plan, "--dry-run")
    _no_traceback(r.text)
    assert r.rc == 0, r.text
