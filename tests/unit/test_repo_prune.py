"""restorer.repo.prune on a small local repository: what a plan deletes, repacks and keeps,
and that executing it leaves every kept snapshot whole and nothing unreferenced."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from restorer.errors import IntegrityError
from restorer.repo import blobs, prune
from restorer.repo.blobs import DATA
from restorer.repo.checker import Checker
from restorer.repo.packs import PackBuilder
from restorer.repo.repository import BlobWriter, Repository, pack_name
from restorer.repo.snapshot import Snapshot
from restorer.storage.local import LocalBackend

A = random.Random(1).randbytes(20_000)
B = random.Random(2).randbytes(20_000)
S = random.Random(3).randbytes(20_000)  # shared by both snapshots
TINY = random.Random(4).randbytes(300)


def _open(tmp_path: Path) -> Repository:
    repo = Repository.open(LocalBackend(tmp_path / "repo"), None)
    repo.load_index(strict=True)
    return repo


def _backup(repo: Repository, files: dict[str, bytes], day: int) -> tuple[Snapshot, BlobWriter]:
    """One snapshot of a flat folder, its blobs in packs of their own (one writer each)."""
    with BlobWriter(repo) as w:
        nodes = [{"name": n, "type": "file", "mode": 0o644, "size": len(d),
                  "content": [w.add(DATA, d).hex()]} for n, d in files.items()]
        tree = w.add_tree(nodes)
        w.flush()
    snap = Snapshot(time=f"2026-03-{day:02d}T03:00:00+00:00", plan="p", target="t",
                    kind="files", hostname="h", username="u", paths=["/src"], tree=tree)
    repo.save_snapshot(snap)
    return snap, w


def _names(repo: Repository, folder: str) -> set[str]:
    return {o.name for o in repo.backend.list(folder)}


def _data_pack(repo: Repository, plain: bytes) -> str:
    return repo.index.loc(repo.sealer.blob_id(plain)).pack


def _snapshot_files(repo: Repository, snap: Snapshot) -> dict[str, bytes]:
    assert snap.tree
    return {p: b"".join(repo.load_blob(bytes.fromhex(c)) for c in n["content"])
            for p, n in repo.walk(snap.tree)}


def _two_snapshots(tmp_path: Path) -> tuple[Snapshot, Snapshot]:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    s1, _ = _backup(repo, {"a": A, "shared": S}, 1)
    s2, _ = _backup(repo, {"b": B, "shared": S}, 2)
    return s1, s2


def test_reachable_is_every_tree_and_content_blob_of_the_kept_snapshots(tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    ids = {repo.sealer.blob_id(x) for x in (A, B, S)}
    assert prune.reachable(repo, [s2]) == {bytes.fromhex(s2.tree or ""),
                                           repo.sealer.blob_id(B), repo.sealer.blob_id(S)}
    both = prune.reachable(repo, [s1, s2])
    assert both == ids | {bytes.fromhex(s1.tree or ""), bytes.fromhex(s2.tree or "")}


def test_planning_changes_nothing(tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    before = {f: _names(repo, f) for f in ("data/", "index/", "snapshots/")}
    plan = prune.plan_prune(repo, [s2], [s1])
    assert plan.forget == [s1]
    assert {f: _names(repo, f) for f in before} == before


def test_forgetting_a_snapshot_frees_what_only_it_used_and_repacks_what_is_shared(
        tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    p1, p2 = _data_pack(repo, A), _data_pack(repo, B)
    assert _data_pack(repo, S) == p1  # stored by the first backup, next to A
    t1, t2 = (repo.index.loc(bytes.fromhex(s.tree or "")).pack for s in (s1, s2))
    sizes = {o.name.rsplit("/", 1)[-1]: o.size for o in repo.backend.list("data/")}
    s_len = repo.index.loc(repo.sealer.blob_id(S)).length

    plan = prune.plan_prune(repo, [s2], [s1])
    assert plan.delete_packs == [t1]  # s1's listing: nothing kept needs it
    assert plan.repack_packs == [p1]  # half garbage (A), half needed (S)
    assert set(plan.keep_packs) == {p2, t2}
    assert plan.orphan_packs == []
    assert [e.id for e in plan.needed_in[p1]] == [repo.sealer.blob_id(S)]
    assert plan.bytes_freed == sizes[t1] + sizes[p1] - s_len
    assert plan.bytes_repacked == s_len
    assert plan.to_json()["packs_deleted"] == 1 and plan.to_json()["snapshots_forgotten"] == 1

    old_index = _names(repo, "index/")
    prune.execute(repo, plan)

    after = _open(tmp_path)
    assert [s.id for s in after.list_snapshots()] == [s2.id]
    assert _snapshot_files(after, s2) == {"b": B, "shared": S}
    assert after.sealer.blob_id(A) not in after.index
    packs = {o.name.rsplit("/", 1)[-1] for o in after.backend.list("data/")}
    assert p1 not in packs and t1 not in packs and {p2, t2} <= packs
    assert _data_pack(after, S) not in (p1, p2)  # S now lives in a new pack
    # the index files name exactly the packs that are left (an old one naming only kept
    # packs may stay: content-addressed, it is the same file as its replacement)
    assert set(after.index.packs) == packs
    assert all(p1 not in after.read_index_rows(n) for n in _names(after, "index/"))
    assert old_index != _names(after, "index/")
    result = Checker(after).run(read_data_percent=100)
    assert result.ok, result.errors
    assert result.unreferenced_packs == []


def test_a_pack_with_little_garbage_is_kept_as_it_is(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    s1, _ = _backup(repo, {"tiny": TINY, "shared": S}, 1)
    s2, _ = _backup(repo, {"shared": S}, 2)
    repo = _open(tmp_path)
    p1 = _data_pack(repo, S)
    plan = prune.plan_prune(repo, [s2], [s1])
    assert p1 in plan.keep_packs and p1 not in plan.repack_packs
    prune.execute(repo, plan)
    after = _open(tmp_path)
    # below the repack threshold, the garbage blob stays stored (and indexed)
    assert after.load_blob(after.sealer.blob_id(TINY)) == TINY
    assert _snapshot_files(after, s2) == {"shared": S}


def test_a_pack_no_index_names_is_removed(tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    # what a backup killed between its pack upload and its index leaves behind
    b = PackBuilder()
    orphan_plain = b"left behind by a crash" * 100
    bid = repo.sealer.blob_id(orphan_plain)
    b.add(DATA, bid, blobs.encode_blob(repo.sealer, bid, orphan_plain), len(orphan_plain))
    orphan, data = b.finish(repo.sealer)
    repo.write_named(pack_name(orphan), data)

    plan = prune.plan_prune(repo, [s1, s2], [])
    assert plan.orphan_packs == [orphan]
    assert plan.delete_packs == [] and plan.repack_packs == []
    assert plan.bytes_freed == len(data)
    prune.execute(repo, plan)
    after = _open(tmp_path)
    assert not after.backend.exists(pack_name(orphan))
    assert _snapshot_files(after, s1) == {"a": A, "shared": S}
    assert _snapshot_files(after, s2) == {"b": B, "shared": S}


def test_a_blob_stored_twice_keeps_one_copy(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    s1, _ = _backup(repo, {"shared": S}, 1)
    sid = repo.sealer.blob_id(S)
    with BlobWriter(repo) as w:  # a second upload of the same blob (two racing runs)
        w.copy(DATA, S, sid)
        w.add(DATA, TINY)  # a pack of other bytes than the first (else the same name)
        w.flush()
    repo = _open(tmp_path)
    holders = [p for p, ids in repo.index.packs.items() if sid in ids]
    assert len(holders) == 2
    first = repo.index.loc(sid).pack  # where a read looks
    (other,) = set(holders) - {first}

    plan = prune.plan_prune(repo, [s1], [])
    assert other in plan.delete_packs and first in plan.keep_packs
    prune.execute(repo, plan)
    after = _open(tmp_path)
    assert [p for p, ids in after.index.packs.items() if sid in ids] == [first]
    assert after.load_blob(sid) == S


def test_forgetting_every_snapshot_leaves_no_data(tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    plan = prune.plan_prune(repo, [], [s1, s2])
    assert plan.keep_packs == [] and plan.repack_packs == []
    prune.execute(repo, plan)
    assert _names(repo, "data/") == set()
    assert _names(repo, "index/") == set()
    assert _names(repo, "snapshots/") == set()


def test_prune_stops_before_anything_when_a_kept_snapshot_needs_an_unindexed_blob(
        tmp_path: Path) -> None:
    s1, s2 = _two_snapshots(tmp_path)
    repo = _open(tmp_path)
    with BlobWriter(repo) as w:
        tree = w.add_tree([{"name": "lost", "type": "file", "content": ["cd" * 32]}])
        w.flush()
    broken = Snapshot(time="2026-03-03T03:00:00+00:00", plan="p", target="t", kind="files",
                      hostname="h", username="u", paths=["/src"], tree=tree)
    repo.save_snapshot(broken)
    with pytest.raises(IntegrityError, match=r"1 blob\(s\) that kept snapshots need are in no "
                       "index .*prune stops before removing anything"):
        prune.plan_prune(repo, [s2, broken], [s1])
