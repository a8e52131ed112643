"""How one blob is stored: a flag byte (raw or zstd), then sealed with its id as associated data."""

from __future__ import annotations

import threading

import zstandard

from restorer.errors import IntegrityError
from restorer.repo.crypto import Sealer

RAW, ZSTD = 0, 1
DATA, TREE = 0, 1  # blob types
LEVEL = 3
_SAMPLE = 64 * 1024
_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=LEVEL)
        _local.probe = zstandard.ZstdCompressor(level=1)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def compress(plain: bytes) -> bytes:
    """flag + payload; data that does not shrink is stored raw and skips most of the cost."""
    c = _cctx()
    if len(plain) > 2 * _SAMPLE:
        # a cheap probe on a sample: incompressible data (media, archives) pays almost nothing
        probe = _local.probe.compress(plain[:_SAMPLE])
        if len(probe) > _SAMPLE * 0.95:
            return bytes([RAW]) + plain
    if len(plain) < 64:
        return bytes([RAW]) + plain
    z = c.compress(plain)
    if len(z) >= len(plain):
        return bytes([RAW]) + plain
    return bytes([ZSTD]) + z


def decompress(data: bytes, raw_length: int, what: str) -> bytes:
    if not data:
        raise IntegrityError(f"{what}: empty")
    if data[0] == RAW:
        return data[1:]
    if data[0] == ZSTD:
        try:
            # a frame that states its size is decoded into a buffer of that size, whatever
            # max_output_size says: a crafted header must be refused before it is believed
            declared = zstandard.get_frame_parameters(data[1:]).content_size
            if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > max(raw_length, 1):
                raise IntegrityError(f"{what}: cannot decompress (its frame claims {declared} "
                                     f"bytes, more than the {raw_length} recorded for it)")
            return _dctx().decompress(data[1:], max_output_size=max(raw_length, 1))
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{what}: cannot decompress ({e})") from None
    raise IntegrityError(f"{what}: unknown encoding flag {data[0]}")


def encode_blob(sealer: Sealer, blob_id: bytes, plain: bytes) -> bytes:
    return sealer.seal(compress(plain), aad=blob_id)


def decode_blob(sealer: Sealer, blob_id: bytes, stored: bytes, raw_length: int, what: str) -> bytes:
    """The plaintext, proven to be the blob `blob_id` (IntegrityError otherwise)."""
    plain = decompress(sealer.open(stored, aad=blob_id, what=what), raw_length, what)
    if sealer.blob_id(plain) != blob_id:
        raise IntegrityError(f"{what}: content does not match its id (damaged)")
    return plain


def encode_file(sealer: Sealer, plain: bytes) -> bytes:
    """A whole repository file (index, snapshot): compressed, then sealed."""
    return sealer.seal(compress(plain))


def decode_file(sealer: Sealer, stored: bytes, what: str) -> bytes:
    return decompress(sealer.open(stored, what=what), 1 << 31, what)
