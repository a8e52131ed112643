"""restorer.repo.blobs: one blob's stored form (flag, zstd or raw, sealed with its id)."""

from __future__ import annotations

import random
import struct

import pytest
import zstandard

from restorer.errors import IntegrityError
from restorer.repo import blobs
from restorer.repo.crypto import MasterKey, Sealer

TEXT = b"".join(b"line %d of a log file that compresses well\n" % i for i in range(2000))
NOISE = random.Random(1).randbytes(200_000)


@pytest.fixture(params=["plain", "encrypted"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    return Sealer(None if request.param == "plain" else MasterKey.generate())


@pytest.mark.parametrize("plain", [TEXT, NOISE, b"tiny", b"", bytes(1 << 20)],
                         ids=["text", "noise", "tiny", "empty", "zeros"])
def test_encode_then_decode_gives_the_blob_back(sealer: Sealer, plain: bytes) -> None:
    bid = sealer.blob_id(plain)
    stored = blobs.encode_blob(sealer, bid, plain)
    assert blobs.decode_blob(sealer, bid, stored, len(plain), "blob") == plain


def test_compressible_data_is_stored_compressed() -> None:
    stored = blobs.compress(TEXT)
    assert stored[0] == blobs.ZSTD
    assert len(stored) < len(TEXT) // 5


@pytest.mark.parametrize("plain", [NOISE, b"short text"], ids=["noise", "short"])
def test_data_that_does_not_shrink_is_stored_raw(plain: bytes) -> None:
    stored = blobs.compress(plain)
    assert stored == bytes([blobs.RAW]) + plain


def test_a_blob_decoded_under_another_id_is_refused(sealer: Sealer) -> None:
    bid = sealer.blob_id(TEXT)
    stored = blobs.encode_blob(sealer, bid, TEXT)
    other = sealer.blob_id(b"something else")
    with pytest.raises(IntegrityError):
        blobs.decode_blob(sealer, other, stored, len(TEXT), "blob x")


@pytest.mark.parametrize("plain", [TEXT, NOISE], ids=["zstd", "raw"])
def test_a_flipped_byte_is_detected_even_without_encryption(plain: bytes) -> None:
    # a plain repository has no AEAD: the id (SHA-256 of the plaintext) must catch it
    sealer = Sealer(None)
    bid = sealer.blob_id(plain)
    stored = bytearray(blobs.encode_blob(sealer, bid, plain))
    stored[len(stored) // 2] ^= 0x10
    with pytest.raises(IntegrityError, match="blob y"):
        blobs.decode_blob(sealer, bid, bytes(stored), len(plain), "blob y")


def test_a_flipped_byte_in_an_encrypted_blob_fails_authentication() -> None:
    sealer = Sealer(MasterKey.generate())
    bid = sealer.blob_id(TEXT)
    stored = bytearray(blobs.encode_blob(sealer, bid, TEXT))
    stored[-20] ^= 0x10
    with pytest.raises(IntegrityError, match="authentication failed"):
        blobs.decode_blob(sealer, bid, bytes(stored), len(TEXT), "blob")


def test_an_unknown_flag_or_empty_payload_is_refused() -> None:
    with pytest.raises(IntegrityError, match="unknown encoding flag 7"):
        blobs.decompress(b"\x07abc", 3, "blob")
    with pytest.raises(IntegrityError, match="blob: empty"):
        blobs.decompress(b"", 0, "blob")
    with pytest.raises(IntegrityError, match="cannot decompress"):
        blobs.decompress(bytes([blobs.ZSTD]) + b"not a zstd frame", 100, "blob")


def test_decompression_is_bounded_by_the_indexed_length() -> None:
    # a crafted pack cannot make a small blob expand far past the length its index gives
    bomb = bytes([blobs.ZSTD]) + zstandard.ZstdCompressor().compress(bytes(10 << 20))
    assert len(bomb) < 10_000
    assert blobs.decompress(bomb, 10 << 20, "blob") == bytes(10 << 20)
    with pytest.raises(IntegrityError, match="cannot decompress"):
        blobs.decompress(bomb, 1000, "blob")


def test_a_frame_header_claiming_a_huge_size_is_an_integrity_error() -> None:
    # 14 crafted bytes: a zstd frame header (single segment, 8-byte content size) that
    # claims 2**62 bytes; decoders validate what they read, with no traceback for any input
    header = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", 1 << 62)
    with pytest.raises(IntegrityError):
        blobs.decompress(bytes([blobs.ZSTD]) + header + b"\x01\x00\x00", 100, "blob")


def test_files_round_trip_and_are_sealed_when_encrypted() -> None:
    key = MasterKey.generate()
    for sealer in (Sealer(None), Sealer(key)):
        stored = blobs.encode_file(sealer, TEXT)
        assert blobs.decode_file(sealer, stored, "index") == TEXT
    stored = blobs.encode_file(Sealer(key), TEXT)
    with pytest.raises(IntegrityError, match="index 1: authentication failed"):
        blobs.decode_file(Sealer(MasterKey.generate()), stored, "index 1")
