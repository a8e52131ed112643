"""The index: which pack holds each blob, at what offset. Written as files after their packs."""

from __future__ import annotations

from typing import NamedTuple

import orjson

from restorer.repo import schema
from restorer.repo.packs import PackEntry


class Location(NamedTuple):
    """Where a blob is stored (a tuple: tens of thousands are built on every open)."""

    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


class Index:
    """In-memory map blob id -> location, merged from every index file.

    Locations are kept as plain tuples (pack, type, offset, length, raw length): building
    tens of thousands of objects on every open is measurable on a no-change backup.
    """

    def __init__(self) -> None:
        self.blobs: dict[bytes, tuple[str, int, int, int, int]] = {}
        self.packs: dict[str, list[bytes]] = {}

    def add_rows(self, pack: str, rows: list[list]) -> None:
        """Rows as index files store them: [type, hex id, offset, length, raw length]."""
        blobs = self.blobs
        ids = []
        for t, h, off, ln, raw in rows:
            bid = bytes.fromhex(h)
            if bid not in blobs:
                blobs[bid] = (pack, t, off, ln, raw)
            ids.append(bid)
        self.packs.setdefault(pack, []).extend(ids)

    def add(self, pack: str, entries: list[PackEntry]) -> None:
        ids = []
        for e in entries:
            self.blobs.setdefault(e.id, (pack, e.type, e.offset, e.length, e.raw_length))
            ids.append(e.id)
        self.packs.setdefault(pack, []).extend(ids)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def get(self, blob_id: bytes) -> Location | None:
        t = self.blobs.get(blob_id)
        return Location._make(t) if t is not None else None

    def loc(self, blob_id: bytes) -> Location:
        return Location._make(self.blobs[blob_id])

    @staticmethod
    def serialize(packs: dict[str, list[PackEntry]]) -> bytes:
        return orjson.dumps({
            "version": 1,
            "packs": [
                {"id": pid, "blobs": [[e.type, e.id.hex(), e.offset, e.length, e.raw_length]
                                      for e in entries]}
                for pid, entries in packs.items()
            ],
        })

    @staticmethod
    def parse_rows(data: bytes, what: str = "index file") -> dict[str, list[list]]:
        """pack id -> checked rows (IntegrityError naming the row when one is malformed)."""
        return schema.index_packs(schema.load_json(data, what), what)

    @staticmethod
    def entries(rows_by_pack: dict[str, list[list]]) -> dict[str, list[PackEntry]]:
        return {
            pack: [PackEntry(t, bytes.fromhex(h), off, ln, raw) for t, h, off, ln, raw in rows]
            for pack, rows in rows_by_pack.items()
        }

    @staticmethod
    def parse(data: bytes, what: str = "index file") -> dict[str, list[PackEntry]]:
        return Index.entries(Index.parse_rows(data, what))
