"""restorer.repo.chunker: content-defined chunking, keyed by the repository's seed."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from restorer.repo.chunker import MAX_SIZE, MIN_SIZE, Chunker
from restorer.repo.repository import Repository
from restorer.storage.local import LocalBackend

# small sizes (within FastCDC's bounds) so a few hundred KiB give dozens of chunks
AVG, MIN, MAX = 4096, 1024, 16384


def _data(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def _chunks(chunker: Chunker, data: bytes) -> list[bytes]:
    return list(chunker.chunks(io.BytesIO(data)))


def _ids(chunks: list[bytes]) -> list[str]:
    return [hashlib.sha256(c).hexdigest() for c in chunks]


def _boundaries(chunks: list[bytes]) -> list[int]:
    out, off = [], 0
    for c in chunks:
        off += len(c)
        out.append(off)
    return out


def test_chunks_concatenate_to_the_input() -> None:
    data = _data(300_000)
    chunks = _chunks(Chunker(12345, AVG, MIN, MAX), data)
    assert len(chunks) > 10
    assert b"".join(chunks) == data
    assert all(isinstance(c, bytes) for c in chunks)  # independent copies, not views


def test_min_and_max_sizes_are_respected() -> None:
    data = _data(400_000)
    chunks = _chunks(Chunker(12345, AVG, MIN, MAX), data)
    sizes = [len(c) for c in chunks]
    assert all(s >= MIN for s in sizes[:-1]), sizes  # only the last may be short
    assert all(s <= MAX for s in sizes), sizes
    # content-defined: the sizes vary (a fixed-size chunker would give one size)
    assert len(set(sizes[:-1])) > len(sizes) // 2


def test_data_without_cut_points_is_cut_at_the_maximum() -> None:
    data = bytes(100_000)  # zeros: the rolling hash never finds a boundary
    sizes = [len(c) for c in _chunks(Chunker(12345, AVG, MIN, MAX), data)]
    assert sizes[:-1] == [MAX] * (len(sizes) - 1)
    assert sum(sizes) == len(data)


def test_input_shorter_than_the_minimum_is_one_chunk_and_empty_input_none() -> None:
    c = Chunker(12345, AVG, MIN, MAX)
    assert _chunks(c, b"abc") == [b"abc"]
    assert _chunks(c, b"") == []


def test_inserting_a_byte_near_the_start_leaves_later_chunks_unchanged() -> None:
    data = _data(400_000)
    c = Chunker(12345, AVG, MIN, MAX)
    before = _ids(_chunks(c, data))
    edited = data[:100] + b"X" + data[100:]
    after = _chunks(c, edited)
    assert b"".join(after) == edited
    after_ids = _ids(after)
    assert before[0] != after_ids[0]  # the chunk holding the edit changed
    # boundaries resynchronise: all but the first couple of chunks are the same blobs
    shared = set(before) & set(after_ids)
    assert len(shared) >= len(before) - 3, (len(shared), len(before))
    # and the tail is identical chunk for chunk
    assert before[-20:] == after_ids[-20:]


def test_same_seed_same_chunks_other_seed_other_boundaries() -> None:
    data = _data(300_000)
    a = _chunks(Chunker(12345, AVG, MIN, MAX), data)
    again = _chunks(Chunker(12345, AVG, MIN, MAX), data)
    other = _chunks(Chunker(98765, AVG, MIN, MAX), data)
    assert _ids(a) == _ids(again)
    assert b"".join(other) == data
    # the gear table is keyed: boundaries reveal nothing common between repositories
    assert _boundaries(a) != _boundaries(other)
    assert len(set(_boundaries(a)) & set(_boundaries(other))) < len(a) // 2


@pytest.mark.parametrize("password", [None, "secret"])
def test_a_repository_chunks_the_same_way_every_time_it_is_opened(
        tmp_path: Path, password: str | None) -> None:
    # dedup across backups depends on it: the seed comes from the config (plain) or the
    # master key (encrypted), never from the process
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, password)
    assert repo.chunker.min_size == MIN_SIZE
    data = _data(4 << 20, seed=3)
    first = _boundaries(_chunks(repo.chunker, data))
    assert len(first) > 1
    reopened = Repository.open(LocalBackend(tmp_path / "repo"), password)
    assert _boundaries(_chunks(reopened.chunker, data)) == first
    assert all(b - a <= MAX_SIZE for a, b in zip([0, *first], first, strict=False))


def test_two_repositories_cut_the_same_data_differently(tmp_path: Path) -> None:
    data = _data(4 << 20, seed=3)
    a = Repository.init(LocalBackend(tmp_path / "a"), None)
    b = Repository.init(LocalBackend(tmp_path / "b"), None)
    assert a.config["chunker"]["seed"] != b.config["chunker"]["seed"]
    assert _boundaries(_chunks(a.chunker, data)) != _boundaries(_chunks(b.chunker, data))
