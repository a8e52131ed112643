"""The index: which pack holds each blob, at what offset. Written as files after their packs."""

from __future__ import annotations

import json
from dataclasses import dataclass

from restorer.repo.packs import PackEntry


@dataclass(frozen=True)
class Location:
    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


class Index:
    """In-memory map blob id -> location, merged from every index file."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, Location] = {}
        self.packs: dict[str, list[bytes]] = {}

    def add(self, pack: str, entries: list[PackEntry]) -> None:
        ids = []
        for e in entries:
            self.blobs.setdefault(e.id, Location(pack, e.type, e.offset, e.length, e.raw_length))
            ids.append(e.id)
        self.packs.setdefault(pack, []).extend(ids)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def get(self, blob_id: bytes) -> Location | None:
        return self.blobs.get(blob_id)

    @staticmethod
    def serialize(packs: dict[str, list[PackEntry]]) -> bytes:
        return json.dumps({
            "version": 1,
            "packs": [
                {"id": pid, "blobs": [[e.type, e.id.hex(), e.offset, e.length, e.raw_length]
                                      for e in entries]}
                for pid, entries in packs.items()
            ],
        }, separators=(",", ":")).encode()

    @staticmethod
    def parse(data: bytes) -> dict[str, list[PackEntry]]:
        d = json.loads(data)
        return {
            p["id"]: [
                PackEntry(t, bytes.fromhex(h), off, ln, raw) for t, h, off, ln, raw in p["blobs"]
            ]
            for p in d["packs"]
        }
