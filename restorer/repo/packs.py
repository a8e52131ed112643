"""Pack files: stored blobs back to back, then a sealed header listing them, then its length.

The header lets `check` and a future index rebuild learn a pack's contents from the pack alone.
A pack's name is the SHA-256 of its bytes, so damage is visible without any key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from restorer.errors import IntegrityError
from restorer.repo.crypto import Sealer

_ENTRY = struct.Struct("<B32sII")  # type, blob id, stored length, plaintext length
_TAIL = struct.Struct("<I")


@dataclass(frozen=True)
class PackEntry:
    type: int
    id: bytes
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Accumulates stored blobs for one pack in memory until it is big enough to write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, type_: int, blob_id: bytes, stored: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(type_, blob_id, self.size, len(stored), raw_length))
        self.parts.append(stored)
        self.size += len(stored)

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, sealer: Sealer) -> tuple[str, bytes]:
        """(pack id, pack bytes)."""
        header = b"".join(_ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in self.entries)
        sealed = sealer.seal(header, aad=b"pack-header")
        data = b"".join([*self.parts, sealed, _TAIL.pack(len(sealed))])
        return hashlib.sha256(data).hexdigest(), data


def header_span(tail: bytes, size: int, what: str) -> tuple[int, int]:
    """(offset, length) of the sealed header of a pack of `size` bytes ending in `tail`."""
    if size < _TAIL.size or len(tail) < _TAIL.size:
        raise IntegrityError(f"{what}: too short to be a pack")
    (hlen,) = _TAIL.unpack_from(tail, len(tail) - _TAIL.size)
    start = size - _TAIL.size - hlen
    if hlen <= 0 or start < 0:
        raise IntegrityError(f"{what}: header length {hlen} is impossible")
    return start, hlen


def parse_header(sealer: Sealer, sealed: bytes, start: int, what: str) -> list[PackEntry]:
    """The entries of a sealed header found at offset `start` (where the blobs end)."""
    header = sealer.open(sealed, aad=b"pack-header", what=what)
    if len(header) % _ENTRY.size:
        raise IntegrityError(f"{what}: header is damaged")
    out, off = [], 0
    for i in range(0, len(header), _ENTRY.size):
        t, bid, length, raw = _ENTRY.unpack_from(header, i)
        if t not in (0, 1) or length == 0:
            raise IntegrityError(f"{what}: header entry {i // _ENTRY.size} is impossible "
                                 f"(type {t}, length {length})")
        out.append(PackEntry(t, bid, off, length, raw))
        off += length
    if off != start:
        raise IntegrityError(f"{what}: header does not match the pack's size")
    return out


def read_header(sealer: Sealer, data: bytes, what: str) -> list[PackEntry]:
    """The entries a whole pack's header lists (IntegrityError when it cannot be read)."""
    start, hlen = header_span(data[-_TAIL.size:], len(data), what)
    return parse_header(sealer, data[start: start + hlen], start, what)


TAIL_SIZE = _TAIL.size
