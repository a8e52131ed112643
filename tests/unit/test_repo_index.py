"""restorer.repo.index: blob -> (pack, offset, length), written as files after their packs."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from restorer.errors import IntegrityError, RepositoryError
from restorer.repo import blobs
from restorer.repo.blobs import DATA, TREE
from restorer.repo.index import Index, Location
from restorer.repo.packs import PackEntry
from restorer.repo.repository import BlobWriter, Repository
from restorer.storage.local import LocalBackend

P1, P2 = "a" * 64, "b" * 64


def _id(n: int) -> bytes:
    return hashlib.sha256(b"blob %d" % n).digest()


ENTRIES = {
    P1: [PackEntry(DATA, _id(1), 0, 100, 250), PackEntry(TREE, _id(2), 100, 40, 60)],
    P2: [PackEntry(DATA, _id(3), 0, 7, 7)],
}


def test_entries_round_trip_through_an_index_file() -> None:
    raw = Index.serialize(ENTRIES)
    assert Index.parse(raw) == ENTRIES
    doc = json.loads(raw)
    assert doc["version"] == 1
    assert doc["packs"][0]["blobs"][0] == [DATA, _id(1).hex(), 0, 100, 250]


def test_rows_and_entries_build_the_same_index() -> None:
    a, b = Index(), Index()
    for pack, entries in ENTRIES.items():
        a.add(pack, entries)
    for pack, rows in Index.parse_rows(Index.serialize(ENTRIES)).items():
        b.add_rows(pack, rows)
    assert a.blobs == b.blobs and a.packs == b.packs
    assert a.get(_id(2)) == Location(P1, TREE, 100, 40, 60)
    assert a.loc(_id(3)).pack == P2
    assert _id(1) in a and _id(9) not in a
    assert a.get(_id(9)) is None
    with pytest.raises(KeyError):
        a.loc(_id(9))


def test_a_blob_stored_twice_is_found_where_it_was_indexed_first() -> None:
    idx = Index()
    idx.add(P1, [PackEntry(DATA, _id(1), 0, 10, 10)])
    idx.add(P2, [PackEntry(DATA, _id(1), 50, 10, 10)])
    idx.add_rows(P2, [[DATA, _id(1).hex(), 60, 10, 10]])
    assert idx.loc(_id(1)) == Location(P1, DATA, 0, 10, 10)
    # every pack still lists what it holds (prune needs both to drop the copy)
    assert idx.packs == {P1: [_id(1)], P2: [_id(1), _id(1)]}


def _index_doc(row: list) -> bytes:
    return json.dumps({"version": 1, "packs": [
        {"id": P1, "blobs": [[DATA, _id(1).hex(), 0, 10, 10], row]}]}).encode()


@pytest.mark.parametrize(("row", "message"), [
    ([DATA, "xyz", 0, 10, 10], "must be a 64-digit lowercase hex id"),
    ([DATA, _id(2).hex().upper(), 0, 10, 10], "must be a 64-digit lowercase hex id"),
    ([2, _id(2).hex(), 0, 10, 10], r"is out of range \(2 not in 0..1\)"),
    ([DATA, _id(2).hex(), -1, 10, 10], "is out of range"),
    ([DATA, _id(2).hex(), 0, 0, 10], "is out of range"),  # a stored blob has a length
    ([DATA, _id(2).hex(), 0, 2**32, 10], "is out of range"),
    ([DATA, _id(2).hex(), "0", 10, 10], "must be an integer"),
    ([DATA, _id(2).hex(), 0, True, 10], "must be an integer"),
    ([DATA, _id(2).hex(), 0, 10], "must be a list of 5 values"),
    ({"id": 1}, "must be a list of 5 values"),
])
def test_a_malformed_row_is_refused_naming_it(row: list, message: str) -> None:
    with pytest.raises(IntegrityError, match=r"index 1: packs\[0\]\.blobs\[1\] " + message):
        Index.parse(_index_doc(row), "index 1")


@pytest.mark.parametrize("doc", [
    b"[]", b'{"packs": {}}', b'{"packs": [{"id": "nothex", "blobs": []}]}',
    b'{"packs": [{"id": "' + P1.encode() + b'"}]}', b"not json", b"[" * 5000,
])
def test_a_malformed_index_document_is_refused(doc: bytes) -> None:
    with pytest.raises(IntegrityError, match="index 2: "):
        Index.parse(doc, "index 2")


# --- index files in a repository ----------------------------------------------------------

def _repo_with_blobs(tmp_path: Path, password: str | None = None
                     ) -> tuple[LocalBackend, dict[bytes, bytes]]:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, password)
    plains = [b"first blob " * 30, b"second blob", b"third" * 99]
    with BlobWriter(repo) as w:
        ids = [w.add(DATA, p) for p in plains]
        w.flush()
    return backend, dict(zip(ids, plains, strict=True))


@pytest.mark.parametrize("password", [None, "pw"])
def test_an_index_file_is_named_by_its_hash_and_lists_every_blob(
        tmp_path: Path, password: str | None) -> None:
    backend, stored = _repo_with_blobs(tmp_path, password)
    (name,) = [o.name for o in backend.list("index/")]
    raw = backend.read(name)
    assert name == "index/" + hashlib.sha256(raw).hexdigest()
    repo = Repository.open(backend, password)
    rows = repo.read_index_rows(name)
    assert {bytes.fromhex(r[1]) for rs in rows.values() for r in rs} == set(stored)
    repo.load_index()
    for bid, plain in stored.items():
        assert repo.load_blob(bid) == plain
    if password:
        assert b"packs" not in raw  # sealed, not plain JSON
    else:
        assert json.loads(blobs.decode_file(repo.sealer, raw, name))["version"] == 1


def _damage_index(backend: LocalBackend) -> str:
    (name,) = [o.name for o in backend.list("index/")]
    path = Path(backend.location) / name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return name


def test_a_damaged_index_file_is_detected_by_its_hash(tmp_path: Path) -> None:
    backend, _ = _repo_with_blobs(tmp_path)
    name = _damage_index(backend)
    repo = Repository.open(backend, None)
    with pytest.raises(IntegrityError, match=f"index file {name} does not match its name"):
        repo.read_index_rows(name)


def test_an_index_file_copied_under_another_name_is_detected(tmp_path: Path) -> None:
    backend, _ = _repo_with_blobs(tmp_path)
    (name,) = [o.name for o in backend.list("index/")]
    other = "index/" + "0" * 64
    backend.write(other, backend.read(name))
    repo = Repository.open(backend, None)
    with pytest.raises(IntegrityError, match="does not match its name"):
        repo.read_index_rows(other)


def test_loading_skips_a_damaged_index_and_recovers_from_pack_headers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend, stored = _repo_with_blobs(tmp_path)
    name = _damage_index(backend)
    repo = Repository.open(backend, None)
    with caplog.at_level(logging.WARNING, logger="restorer.repo"):
        repo.load_index()
    assert set(repo.damaged_index) == {name}
    assert any("skipping it" in r.getMessage() for r in caplog.records)
    for bid, plain in stored.items():  # every blob still readable
        assert repo.load_blob(bid) == plain


def test_strict_loading_refuses_a_damaged_index(tmp_path: Path) -> None:
    backend, _ = _repo_with_blobs(tmp_path)
    _damage_index(backend)
    with pytest.raises(RepositoryError, match="nothing is deleted while an index file is "
                       "unreadable"):
        Repository.open(backend, None).load_index(strict=True)


def test_a_blob_no_index_names_is_reported_as_missing(tmp_path: Path) -> None:
    backend, _ = _repo_with_blobs(tmp_path)
    repo = Repository.open(backend, None)
    repo.load_index()
    with pytest.raises(IntegrityError, match="is not in any index"):
        repo.load_blob(hashlib.sha256(b"never stored").digest())
