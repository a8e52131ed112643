"""restorer.repo.packs: stored blobs back to back, a sealed header listing them, its length."""

from __future__ import annotations

import hashlib
import itertools
import struct
from pathlib import Path

import pytest

from restorer.errors import IntegrityError
from restorer.repo import blobs
from restorer.repo.blobs import DATA, TREE
from restorer.repo.crypto import MasterKey, Sealer
from restorer.repo.packs import TAIL_SIZE, PackBuilder, PackEntry, header_span, read_header
from restorer.repo.repository import BlobWriter, Repository, pack_name
from restorer.storage.local import LocalBackend

PLAINS = [b"alpha " * 50, b"beta", b'{"nodes":[]}', bytes(range(256)) * 40]
TYPES = [DATA, DATA, TREE, DATA]
ENTRY = struct.calcsize("<B32sII")


@pytest.fixture(params=["plain", "encrypted"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    return Sealer(None if request.param == "plain" else MasterKey.generate())


def _pack(sealer: Sealer) -> tuple[str, bytes, list[PackEntry]]:
    b = PackBuilder()
    for t, p in zip(TYPES, PLAINS, strict=True):
        bid = sealer.blob_id(p)
        b.add(t, bid, blobs.encode_blob(sealer, bid, p), len(p))
    pid, data = b.finish(sealer)
    return pid, data, b.entries


def test_a_pack_read_back_by_its_header_gives_the_same_blobs(sealer: Sealer) -> None:
    pid, data, entries = _pack(sealer)
    assert pid == hashlib.sha256(data).hexdigest()
    header = read_header(sealer, data, "pack")
    assert header == entries
    assert [e.type for e in header] == TYPES
    assert [e.raw_length for e in header] == [len(p) for p in PLAINS]
    assert header[0].offset == 0
    for prev, e in itertools.pairwise(header):
        assert e.offset == prev.offset + prev.length  # back to back
    for e, p in zip(header, PLAINS, strict=True):
        stored = data[e.offset: e.offset + e.length]
        assert blobs.decode_blob(sealer, e.id, stored, e.raw_length, "blob") == p


def test_an_encrypted_pack_hides_its_header_and_contents() -> None:
    sealer = Sealer(MasterKey.generate())
    _pid, data, entries = _pack(sealer)
    for e in entries:
        assert e.id not in data
    assert PLAINS[0][:32] not in data
    # a plain pack's header lists the ids in clear (they are SHA-256 of the plaintext)
    _pid, plain_data, plain_entries = _pack(Sealer(None))
    assert all(e.id in plain_data for e in plain_entries)


def test_a_pack_header_does_not_open_under_another_key() -> None:
    _pid, data, _ = _pack(Sealer(MasterKey.generate()))
    with pytest.raises(IntegrityError, match="pack 1: authentication failed"):
        read_header(Sealer(MasterKey.generate()), data, "pack 1")


@pytest.mark.parametrize("cut", [1, TAIL_SIZE, 100])
def test_a_truncated_pack_is_refused(sealer: Sealer, cut: int) -> None:
    _pid, data, _ = _pack(sealer)
    with pytest.raises(IntegrityError, match="pack x: "):
        read_header(sealer, data[:-cut], "pack x")


def test_a_pack_shorter_than_its_tail_is_refused(sealer: Sealer) -> None:
    with pytest.raises(IntegrityError, match="pack x: too short to be a pack"):
        read_header(sealer, b"\x01\x02", "pack x")
    with pytest.raises(IntegrityError, match="too short to be a pack"):
        header_span(b"", 0, "pack x")


@pytest.mark.parametrize("hlen", [0, 1 << 30])
def test_an_impossible_header_length_is_refused(sealer: Sealer, hlen: int) -> None:
    _pid, data, _ = _pack(sealer)
    garbled = data[:-TAIL_SIZE] + struct.pack("<I", hlen)
    with pytest.raises(IntegrityError, match=f"pack x: header length {hlen} is impossible"):
        read_header(sealer, garbled, "pack x")


def test_a_header_length_pointing_into_the_blobs_is_refused(sealer: Sealer) -> None:
    _pid, data, _ = _pack(sealer)
    (hlen,) = struct.unpack("<I", data[-TAIL_SIZE:])
    garbled = data[:-TAIL_SIZE] + struct.pack("<I", hlen + ENTRY)
    with pytest.raises(IntegrityError, match="pack x: "):
        read_header(sealer, garbled, "pack x")


def test_a_flipped_byte_in_an_encrypted_header_fails_authentication() -> None:
    sealer = Sealer(MasterKey.generate())
    _pid, data, _ = _pack(sealer)
    garbled = bytearray(data)
    garbled[-TAIL_SIZE - 3] ^= 0x01
    with pytest.raises(IntegrityError, match="authentication failed"):
        read_header(sealer, bytes(garbled), "pack x")


def _plain_pack_with_header(header: bytes, blob_bytes: int) -> bytes:
    return bytes(blob_bytes) + header + struct.pack("<I", len(header))


def test_a_plain_header_of_a_partial_entry_is_refused() -> None:
    header = struct.pack("<B32sII", DATA, b"\x11" * 32, 10, 10)
    data = _plain_pack_with_header(header[:-1], 10)
    with pytest.raises(IntegrityError, match="pack x: header is damaged"):
        read_header(Sealer(None), data, "pack x")


@pytest.mark.parametrize(("t", "length", "problem"), [
    (7, 10, r"type 7, length 10"), (DATA, 0, r"type 0, length 0")])
def test_a_plain_header_entry_of_an_impossible_type_or_length_is_refused(
        t: int, length: int, problem: str) -> None:
    good = struct.pack("<B32sII", DATA, b"\x11" * 32, 10, 10)
    bad = struct.pack("<B32sII", t, b"\x22" * 32, length, 10)
    data = _plain_pack_with_header(good + bad, 10 + length)
    with pytest.raises(IntegrityError, match=rf"header entry 1 is impossible \({problem}\)"):
        read_header(Sealer(None), data, "pack x")


def test_a_plain_header_whose_lengths_do_not_add_up_is_refused() -> None:
    header = struct.pack("<B32sII", DATA, b"\x11" * 32, 10, 10)
    data = _plain_pack_with_header(header, 11)  # one byte more of blobs than it lists
    with pytest.raises(IntegrityError, match="header does not match the pack's size"):
        read_header(Sealer(None), data, "pack x")


@pytest.mark.parametrize("password", [None, "pw"])
def test_the_repository_reads_a_stored_packs_header_with_ranged_reads(
        tmp_path: Path, password: str | None) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, password)
    with BlobWriter(repo) as w:
        ids = [w.add(DATA, p) for p in PLAINS]
        w.flush()
    (pid,) = w.written_packs
    stored = backend.read(pack_name(pid))
    assert hashlib.sha256(stored).hexdigest() == pid
    from_header = repo.read_pack_header(pid, len(stored))
    assert from_header == read_header(repo.sealer, stored, "pack")
    assert {e.id for e in from_header} == set(ids)
    # what the index says agrees with what the pack itself says
    for e in from_header:
        loc = repo.index.loc(e.id)
        assert (loc.pack, loc.offset, loc.length, loc.raw_length) == \
            (pid, e.offset, e.length, e.raw_length)
