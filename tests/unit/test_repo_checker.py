"""restorer.repo.checker: an intact repository passes; each kind of damage is found and
reported as the damaged packs and the files of each snapshot they take with them."""

from __future__ import annotations

import random
from pathlib import Path

from restorer.repo import blobs
from restorer.repo.blobs import DATA
from restorer.repo.checker import Checker, CheckResult
from restorer.repo.packs import PackBuilder
from restorer.repo.repository import BlobWriter, Repository, pack_name
from restorer.repo.snapshot import Snapshot
from restorer.storage.local import LocalBackend

A = random.Random(1).randbytes(20_000)
B = random.Random(2).randbytes(20_000)
C = random.Random(3).randbytes(20_000)


def _repo(tmp_path: Path) -> tuple[Repository, Snapshot, Snapshot]:
    """Two snapshots: s1 = {a, sub/b} in one backup, s2 = {c} in another."""
    repo = Repository.init(LocalBackend(tmp_path / "repo"), None)
    snaps = []
    for day, files in ((1, {"a": A, "b": B}), (2, {"c": C})):
        with BlobWriter(repo) as w:
            nodes = [{"name": n, "type": "file", "size": len(d), "content": [w.add(DATA, d).hex()]}
                     for n, d in files.items()]
            if "b" in files:
                sub = w.add_tree([nodes.pop()])
                nodes.append({"name": "sub", "type": "dir", "subtree": sub})
            tree = w.add_tree(nodes)
            w.flush()
        s = Snapshot(time=f"2026-03-0{day}T03:00:00+00:00", plan="p", target="t",
                     kind="files", hostname="h", username="u", paths=["/src"], tree=tree)
        repo.save_snapshot(s)
        snaps.append(s)
    return repo, snaps[0], snaps[1]


def _check(tmp_path: Path, percent: float = 0.0, seed: int | None = None) -> CheckResult:
    return Checker(Repository.open(LocalBackend(tmp_path / "repo"), None)).run(percent, seed)


def _pack_of(repo: Repository, plain: bytes) -> str:
    return repo.index.loc(repo.sealer.blob_id(plain)).pack


def _file(repo: Repository, pack: str) -> Path:
    return Path(repo.backend.location) / pack_name(pack)


def test_an_intact_repository_passes_and_every_pack_is_read(tmp_path: Path) -> None:
    repo, _s1, _s2 = _repo(tmp_path)
    sizes = {o.name: o.size for o in repo.backend.list("data/")}
    r = _check(tmp_path)
    assert r.ok and r.errors == [] and r.damaged_packs == {}
    assert (r.snapshots, r.trees, r.blobs_referenced) == (2, 3, 3)
    assert r.packs_indexed == len(sizes) == 4  # a data and a tree pack per backup
    assert r.packs_read == 0
    full = _check(tmp_path, 100)
    assert full.ok and full.packs_read == 4 and full.bytes_read == sum(sizes.values())
    assert full.to_json()["ok"] is True and full.repairs == []


def test_a_random_subset_reads_that_share_of_the_packs(tmp_path: Path) -> None:
    _repo(tmp_path)
    r = _check(tmp_path, 50, seed=1)
    assert r.ok and r.packs_read == 2


def test_a_flipped_byte_is_found_by_reading_and_names_only_the_lost_file(
        tmp_path: Path) -> None:
    repo, s1, _s2 = _repo(tmp_path)
    pack = _pack_of(repo, A)
    assert _pack_of(repo, B) == pack  # a and sub/b share a pack
    loc = repo.index.loc(repo.sealer.blob_id(A))
    f = _file(repo, pack)
    raw = bytearray(f.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    assert _check(tmp_path).ok  # the structure is intact: only reading finds it
    r = _check(tmp_path, 100)
    assert not r.ok
    assert r.damaged_packs == {pack: "content does not match its name (damaged)"}
    assert r.affected == {s1.id: ["/a"]}  # sub/b, in the same pack, is intact


def test_a_truncated_pack_is_found_without_reading_data(tmp_path: Path) -> None:
    repo, s1, s2 = _repo(tmp_path)
    pack = _pack_of(repo, A)
    loc_b = repo.index.loc(repo.sealer.blob_id(B))
    f = _file(repo, pack)
    f.write_bytes(f.read_bytes()[: loc_b.offset + 10])  # cuts b, keeps a
    r = _check(tmp_path)
    assert not r.ok
    assert r.damaged_packs[pack].startswith("pack file is truncated")
    assert r.affected == {s1.id: ["/sub/b"]}
    assert s2.id not in r.affected


def test_a_missing_tree_pack_takes_whole_folders(tmp_path: Path) -> None:
    repo, s1, s2 = _repo(tmp_path)
    tree_pack = repo.index.loc(bytes.fromhex(s1.tree or "")).pack
    repo.backend.delete(pack_name(tree_pack))
    r = _check(tmp_path)
    assert r.damaged_packs == {tree_pack: "pack file is missing"}
    assert r.affected == {
        s1.id: ["/ (whole directory: its listing is in a damaged pack)"]}
    assert s2.id not in r.affected


def test_a_pack_left_by_a_crash_is_listed_as_unreferenced_but_is_not_damage(
        tmp_path: Path) -> None:
    repo, _s1, _s2 = _repo(tmp_path)
    b = PackBuilder()
    plain = b"uploaded, then the run was killed before its index"
    bid = repo.sealer.blob_id(plain)
    b.add(DATA, bid, blobs.encode_blob(repo.sealer, bid, plain), len(plain))
    orphan, data = b.finish(repo.sealer)
    repo.write_named(pack_name(orphan), data)
    r = _check(tmp_path, 100)
    assert r.ok and r.unreferenced_packs == [orphan]
    assert r.repairs == []


def test_a_lost_index_file_leaves_its_packs_unreferenced_and_asks_for_repair(
        tmp_path: Path) -> None:
    repo, _s1, _s2 = _repo(tmp_path)
    (index_file,) = [n for n in (o.name for o in repo.backend.list("index/"))
                     if _pack_of(repo, C) in repo.read_index_rows(n)]
    # an index file lost on its own: its packs become unreferenced and s2's blobs unindexed
    repo.backend.delete(index_file)
    r = _check(tmp_path)
    assert len(r.unreferenced_packs) == 2 and _pack_of(repo, C) in r.unreferenced_packs
    assert r.unindexed == 1  # s2's root tree; nothing below it can be looked at
    assert not r.ok and r.repairs == ["index"]


def test_a_damaged_index_file_and_snapshot_are_reported_with_their_repairs(
        tmp_path: Path) -> None:
    repo, s1, s2 = _repo(tmp_path)
    index_file = sorted(o.name for o in repo.backend.list("index/"))[0]
    f = Path(repo.backend.location) / index_file
    f.write_bytes(f.read_bytes() + b"x")
    snap = Path(repo.backend.location) / "snapshots" / s1.id
    snap.write_bytes(snap.read_bytes()[:-1])
    r = _check(tmp_path)
    assert not r.ok
    assert list(r.damaged_index) == [index_file]
    assert list(r.damaged_snapshots) == [s1.id]
    assert r.snapshots == 1  # s2 is still checked
    assert set(r.repairs) == {"index", "snapshots"}
    assert any(s1.id[:8] in e for e in r.errors)
    assert s2.id not in r.damaged_snapshots
