"""restorer.repo.tree and restorer.repo.snapshot (and schema's checks of both): canonical
listings, names and types refused when crafted, deep walks, snapshot ids and fields."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from restorer.errors import IntegrityError, RepositoryError, RestoreError, UsageError
from restorer.repo.blobs import DATA, TREE
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import decode_tree, encode_tree

HEX = "ab" * 32


def _file(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "file", "mode": 0o644, "uid": 1000, "gid": 1000,
            "mtime_ns": 1_700_000_000_123_456_789, "size": 3, "content": [HEX], **kw}


def _tree(nodes: list[dict[str, Any]]) -> bytes:
    return json.dumps({"nodes": nodes}).encode()


def _repo(tmp_path: Path, password: str | None = None) -> Repository:
    from restorer.storage.local import LocalBackend

    return Repository.init(LocalBackend(tmp_path / "repo"), password)


# --- encoding -------------------------------------------------------------------------------

def test_a_listing_round_trips_sorted_by_name() -> None:
    nodes = [_file("b.txt"), {"name": "a", "type": "dir", "mode": 0o755, "subtree": HEX},
             {"name": "link", "type": "symlink", "target": "../elsewhere"},
             _file("c", xattrs={"user.k": "dmFsdWU="})]
    decoded = decode_tree(encode_tree(list(nodes)), "tree")
    assert [n["name"] for n in decoded] == ["a", "b.txt", "c", "link"]
    assert sorted(nodes, key=lambda n: n["name"]) == decoded


def test_the_same_listing_always_gives_the_same_bytes() -> None:
    a = [_file("x"), _file("y")]
    # the same entries in another order, with keys in another order
    b = [dict(reversed(list(_file("y").items()))), dict(reversed(list(_file("x").items())))]
    assert encode_tree(a) == encode_tree(b)
    assert encode_tree(a) != encode_tree([_file("x"), _file("y", size=4)])


def test_a_name_that_is_not_utf8_round_trips_exactly() -> None:
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    raw = encode_tree([_file(name)])
    (node,) = decode_tree(raw, "tree")
    assert node["name"] == name
    assert node["name"].encode("utf-8", "surrogateescape") == b"caf\xe9.txt"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/etc", "a\x00b", 7, None])
def test_a_name_that_is_not_a_plain_file_name_is_refused(name: Any) -> None:
    with pytest.raises(RestoreError, match="not a plain file name"):
        decode_tree(_tree([_file("ok"), _file(name)]), "snapshot x:/d")


def test_a_name_listed_twice_is_refused() -> None:
    with pytest.raises(RestoreError, match="lists 'twin' twice in one directory"):
        decode_tree(_tree([_file("twin"), _file("other"), _file("twin", size=9)]), "tree")


@pytest.mark.parametrize("t", ["weird", "", None, 1, "File"])
def test_an_unknown_node_type_is_refused(t: Any) -> None:
    node = _file("n")
    node["type"] = t
    with pytest.raises(RestoreError, match=r"tree/n: unknown entry type"):
        decode_tree(_tree([node]), "tree")


def test_a_node_without_a_type_is_refused() -> None:
    node = _file("n")
    del node["type"]
    with pytest.raises(RestoreError, match="unknown entry type None"):
        decode_tree(_tree([node]), "tree")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("mode", 0o10000, "mode is out of range"),
    ("mode", "0644", "mode must be an integer"),
    ("uid", -1, "uid is out of range"),
    ("size", -5, "size is out of range"),
    ("size", 1.5, "size must be an integer"),
    ("mtime_ns", 2**63, "mtime_ns is out of range"),  # past what os.utime takes
    ("content", ["nothex"], r"content \[0\] must be a 64-digit lowercase hex id"),
    ("content", HEX, "content must be a list"),
    ("subtree", "../../x", "subtree must be a 64-digit lowercase hex id"),
    ("target", 5, "target must be a string"),
    ("xattrs", {"user.k": "***"}, r"xattrs \['user.k'\] is not valid base64"),
    ("xattrs", [], "xattrs must be a map"),
])
def test_a_field_of_the_wrong_type_or_range_is_refused_naming_it(
        field: str, value: Any, message: str) -> None:
    with pytest.raises(IntegrityError, match=rf"tree: entry 'n': {message}"):
        decode_tree(_tree([_file("ok"), _file("n", **{field: value})]), "tree")


def test_unknown_fields_are_kept_for_newer_versions() -> None:
    (node,) = decode_tree(_tree([_file("n", future_field={"a": 1})]), "tree")
    assert node["future_field"] == {"a": 1}


@pytest.mark.parametrize("raw", [b"[]", b'{"nodes": {}}', b'{"nodes": [1]}', b"\xff\xfe",
                                 b'{"nodes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_a_listing_of_the_wrong_shape_is_an_integrity_error(raw: bytes) -> None:
    with pytest.raises(IntegrityError, match="tree 1: "):
        decode_tree(raw, "tree 1")


# --- trees in a repository ------------------------------------------------------------------

def test_identical_listings_are_stored_once(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        a = w.add_tree([_file("x")])
        b = w.add_tree([_file("x")])
        c = w.add_tree([_file("x", size=4)])
        w.flush()
    assert a == b != c
    assert w.stats.blobs_new == 2
    assert repo.index.loc(bytes.fromhex(a)).type == TREE
    assert repo.load_tree(a) == [_file("x")]


def test_walk_lists_each_directory_before_its_entries(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        content = w.add(DATA, b"abc").hex()
        sub = w.add_tree([_file("inner.txt", content=[content]), _file("z")])
        root = w.add_tree([{"name": "d", "type": "dir", "mode": 0o755, "subtree": sub},
                           _file("top.txt"), {"name": "e", "type": "dir", "subtree": None}])
        w.flush()
    paths = [p for p, _n in repo.walk(root)]
    assert paths == ["d", "d/inner.txt", "d/z", "e", "top.txt"]


def test_walk_with_seen_enters_a_shared_subtree_once(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        shared = w.add_tree([_file("f")])
        root = w.add_tree([{"name": "a", "type": "dir", "subtree": shared},
                           {"name": "b", "type": "dir", "subtree": shared}])
        w.flush()
    assert [p for p, _ in repo.walk(root)] == ["a", "a/f", "b", "b/f"]
    seen: set[bytes] = set()
    assert [p for p, _ in repo.walk(root, seen)] == ["a", "a/f", "b"]
    assert seen == {bytes.fromhex(root), bytes.fromhex(shared)}


def test_a_listing_deeper_than_the_recursion_limit_walks(tmp_path: Path) -> None:
    depth = 1500  # past Python's default recursion limit of 1000
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        tid = w.add_tree([_file("leaf")])
        for _ in range(depth):
            tid = w.add_tree([{"name": "d", "type": "dir", "mode": 0o755, "subtree": tid}])
        w.flush()
    reopened = Repository.open(repo.backend, None)
    reopened.load_index()
    paths = [p for p, _ in reopened.walk(tid)]
    assert len(paths) == depth + 1
    assert paths[-1] == "d/" * depth + "leaf"
    assert paths[:3] == ["d", "d/d", "d/d/d"]


def test_a_damaged_tree_in_a_walk_names_where_it_is(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        good = w.add_tree([_file("ok")])
        root = w.add_tree([{"name": "sub", "type": "dir", "subtree": good}])
        w.flush()
    # a crafted listing stored under a valid id (plain repository: anyone can write one)
    crafted = _tree([_file("../escape")])
    with BlobWriter(repo) as w:
        evil = w.add(TREE, crafted).hex()
        root2 = w.add_tree([{"name": "sub", "type": "dir", "subtree": evil}])
        w.flush()
    assert [p for p, _ in repo.walk(root)] == ["sub", "sub/ok"]
    with pytest.raises(RestoreError, match=r"/sub: the snapshot holds the entry name "
                       r"'\.\./escape'"):
        list(repo.walk(root2))


# --- snapshots ------------------------------------------------------------------------------

def _snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = dict(time="2026-03-01T03:00:00.000000+00:00", plan="p", target="t",
                                kind="files", hostname="h", username="u", paths=["/srv/a"],
                                tree=HEX, tags=["daily"], summary={"total_files": 3})
    base.update(kw)
    return Snapshot(**base)


@pytest.mark.parametrize("password", [None, "pw"])
def test_a_snapshot_id_is_the_hash_of_its_stored_bytes(tmp_path: Path,
                                                       password: str | None) -> None:
    repo = _repo(tmp_path, password)
    snap = _snapshot()
    sid = repo.save_snapshot(snap)
    assert snap.id == sid and snap.short_id == sid[:8]
    raw = repo.backend.read(f"snapshots/{sid}")
    assert hashlib.sha256(raw).hexdigest() == sid
    back = repo.read_snapshot(f"snapshots/{sid}")
    assert back == snap
    assert back.datetime.year == 2026 and back.datetime.utcoffset() is not None
    if password:
        assert b'"plan"' not in raw


def test_a_snapshot_file_under_another_snapshots_name_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    a = repo.save_snapshot(_snapshot(target="a"))
    raw = repo.backend.read(f"snapshots/{a}")
    fake = "f" * 64
    repo.backend.write(f"snapshots/{fake}", raw)
    with pytest.raises(IntegrityError, match="does not match its name"):
        repo.read_snapshot(f"snapshots/{fake}")
    # listing skips it, keeps the good one, and remembers why
    assert [s.id for s in repo.list_snapshots()] == [a]
    assert fake in repo.damaged_snapshots
    with pytest.raises(RepositoryError, match="nothing is deleted while a snapshot record"):
        repo.list_snapshots(strict=True)


def test_to_json_is_canonical_and_leaves_out_the_id() -> None:
    snap = _snapshot()
    snap.id = "e" * 64
    raw = snap.to_json()
    d = json.loads(raw)
    assert "id" not in d and "cloud" not in d
    assert raw == json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    assert _snapshot().to_json() == raw  # the id never changes the bytes
    cloud = _snapshot(cloud={"resource": "vol-1", "snapshots": {"eu-west-1": "snap-1"}})
    assert json.loads(cloud.to_json())["cloud"]["resource"] == "vol-1"


def test_from_json_keeps_the_file_name_as_id_and_ignores_unknown_keys() -> None:
    d = json.loads(_snapshot().to_json())
    d["id"] = "0" * 64  # content cannot choose the id
    d["added_by_a_newer_version"] = True
    snap = Snapshot.from_json(json.dumps(d).encode(), "1" * 64)
    assert snap.id == "1" * 64
    assert snap.target == "t" and snap.tags == ["daily"]


@pytest.mark.parametrize(("change", "message"), [
    ({"time": None}, "time must be an ISO 8601 time"),
    ({"time": "yesterday"}, "time must be an ISO 8601 time"),
    ({"time": "2026-03-01T03:00:00"}, "time must be a time with a UTC offset"),
    ({"time": "3000-01-01T00:00:00+00:00"}, "time must .* between 1970 and 2262"),
    ({"paths": "/srv/a"}, "paths must be a list"),
    ({"paths": ["/a", 3]}, r"paths \[1\] must be a string"),
    ({"tree": "../x"}, "tree must be a 64-digit lowercase hex id"),
    ({"parent": 12}, "parent must be a 64-digit lowercase hex id"),
    ({"uid": -1}, "uid is out of range"),
    ({"summary": {"total_bytes": "12"}}, r"summary \['total_bytes'\] must be an integer"),
    ({"summary": []}, "summary must be a map"),
    ({"cloud": {"snapshots": {}}}, r"cloud \['resource'\] is missing"),
    ({"cloud": {"resource": "r", "snapshots": {"eu": 1}}},
     r"cloud \['snapshots'\] must map regions"),
    ({"tags": [None]}, r"tags \[0\] must be a string"),
])
def test_a_snapshot_field_of_the_wrong_shape_is_refused_naming_it(
        change: dict, message: str) -> None:
    d = json.loads(_snapshot().to_json())
    d.update(change)
    with pytest.raises(IntegrityError, match=rf"snapshot 12345678: {message}"):
        Snapshot.from_json(json.dumps(d).encode(), "12345678" + "0" * 56)


@pytest.mark.parametrize("missing", ["time", "plan", "target", "kind", "hostname",
                                     "username", "paths"])
def test_a_snapshot_without_a_required_field_is_refused(missing: str) -> None:
    d = json.loads(_snapshot().to_json())
    del d[missing]
    with pytest.raises(IntegrityError, match=f"{missing} is missing"):
        Snapshot.from_json(json.dumps(d).encode(), "0" * 64)


def test_snapshots_are_found_by_prefix_or_latest_per_target(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    old = _snapshot(time="2026-03-01T03:00:00+00:00")
    new = _snapshot(time="2026-03-02T03:00:00+00:00")
    other = _snapshot(time="2026-03-03T03:00:00+00:00", target="db")
    for s in (new, other, old):
        repo.save_snapshot(s)
    snaps = repo.list_snapshots()
    assert [s.id for s in snaps] == [old.id, new.id, other.id]  # oldest first
    assert repo.find_snapshot("latest", "t", snaps).id == new.id
    assert repo.find_snapshot(old.id[:10].upper(), snapshots=snaps).id == old.id
    with pytest.raises(UsageError, match="'latest' is per target"):
        repo.find_snapshot("latest", snapshots=snaps)
    with pytest.raises(UsageError, match="no snapshot of target 'x' yet"):
        repo.find_snapshot("latest", "x", snaps)
    with pytest.raises(UsageError, match="is ambiguous"):
        repo.find_snapshot("", snapshots=snaps)
    with pytest.raises(UsageError, match="no snapshot id starts with 'zz'"):
        repo.find_snapshot("zz", snapshots=snaps)
