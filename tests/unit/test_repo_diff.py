"""restorer.repo.diff: what changed between two snapshot trees, in path order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restorer.repo.blobs import DATA
from restorer.repo.diff import Change, diff_trees
from restorer.repo.repository import BlobWriter, Repository
from restorer.storage.local import LocalBackend


def _store(w: BlobWriter, listing: dict[str, Any]) -> str:
    """A tree id for {name: bytes (file) | dict (folder) | ('symlink', target) |
    ('file', bytes, mode)}."""
    nodes = []
    for name, v in listing.items():
        if isinstance(v, dict):
            nodes.append({"name": name, "type": "dir", "mode": 0o755, "subtree": _store(w, v)})
        elif isinstance(v, tuple) and v[0] == "symlink":
            nodes.append({"name": name, "type": "symlink", "mode": 0o777, "target": v[1]})
        else:
            data, mode = (v[1], v[2]) if isinstance(v, tuple) else (v, 0o644)
            nodes.append({"name": name, "type": "file", "mode": mode, "size": len(data),
                          "mtime_ns": 1, "content": [w.add(DATA, data).hex()]})
    return w.add_tree(nodes)


def _trees(tmp_path: Path, *listings: dict[str, Any]) -> tuple[Repository, list[str]]:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    with BlobWriter(repo) as w:
        ids = [_store(w, x) for x in listings]
        w.flush()
    return repo, ids


OLD = {
    "a.txt": b"one",
    "d": {"x": b"same", "deep": {"y": b"y1"}},
    "link": ("symlink", "t1"),
    "same": b"unchanged",
    "meta": ("file", b"m", 0o644),
    "gone.txt": b"bye",
    "was_dir": {"inner": b"i"},
}
NEW = {
    "a.txt": b"two",
    "d": {"x": b"same", "deep": {"y": b"y2"}, "new": b"n"},
    "link": ("symlink", "t2"),
    "same": b"unchanged",
    "meta": ("file", b"m", 0o600),
    "added": {"f": b"f"},
    "was_dir": b"now a file",
}


def test_every_kind_of_change_in_path_order(tmp_path: Path) -> None:
    repo, (a, b) = _trees(tmp_path, OLD, NEW)
    got = [(c.status, c.path, c.type) for c in diff_trees(repo, a, b)]
    assert got == [
        ("M", "/a.txt", "file"),
        ("+", "/added/", "dir"),
        ("+", "/added/f", "file"),
        ("M", "/d/deep/y", "file"),
        ("+", "/d/new", "file"),
        ("-", "/gone.txt", "file"),
        ("M", "/link", "symlink"),
        ("U", "/meta", "file"),
        ("-", "/was_dir/", "dir"),
        ("-", "/was_dir/inner", "file"),
        ("+", "/was_dir", "file"),
    ]


def test_the_reverse_diff_mirrors_additions_and_removals(tmp_path: Path) -> None:
    repo, (a, b) = _trees(tmp_path, OLD, NEW)
    forward = {(c.status, c.path) for c in diff_trees(repo, a, b)}
    backward = {(c.status, c.path) for c in diff_trees(repo, b, a)}
    flip = {"+": "-", "-": "+", "M": "M", "U": "U"}
    assert {(flip[s], p) for s, p in forward} == backward


def test_identical_trees_have_no_changes_and_none_means_empty(tmp_path: Path) -> None:
    repo, (a, a2, b) = _trees(tmp_path, OLD, dict(OLD), NEW)
    assert a == a2
    assert list(diff_trees(repo, a, a2)) == []
    everything = list(diff_trees(repo, None, b))
    assert all(c.status == "+" for c in everything)
    assert {c.path for c in everything} >= {"/added/", "/added/f", "/d/", "/d/deep/",
                                            "/d/deep/y", "/was_dir", "/same"}
    assert all(c.status == "-" for c in diff_trees(repo, b, None))


def test_a_folder_whose_metadata_changed_is_reported_once(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    with BlobWriter(repo) as w:
        sub = _store(w, {"f": b"f"})
        a = w.add_tree([{"name": "d", "type": "dir", "mode": 0o755, "subtree": sub}])
        b = w.add_tree([{"name": "d", "type": "dir", "mode": 0o700, "subtree": sub}])
        w.flush()
    assert list(diff_trees(repo, a, b)) == [Change("U", "/d/", "dir")]
    assert Change("U", "/d/", "dir").to_json() == {"status": "U", "path": "/d/", "type": "dir"}


def test_a_diff_of_a_deep_tree_does_not_recurse(tmp_path: Path) -> None:
    deep_a: dict[str, Any] = {"leaf": b"a"}
    deep_b: dict[str, Any] = {"leaf": b"b"}
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    with BlobWriter(repo) as w:
        ta, tb = _store(w, deep_a), _store(w, deep_b)
        for _ in range(1200):  # past Python's recursion limit
            ta = w.add_tree([{"name": "d", "type": "dir", "subtree": ta}])
            tb = w.add_tree([{"name": "d", "type": "dir", "subtree": tb}])
        w.flush()
    (change,) = diff_trees(repo, ta, tb)
    assert change.status == "M" and change.path == "/d" * 1200 + "/leaf"
