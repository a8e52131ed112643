"""Snapshot manifests: the last file a backup writes; its name is the SHA-256 of its bytes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from restorer.repo import schema


@dataclass
class Snapshot:
    time: str  # ISO 8601, UTC
    plan: str
    target: str
    kind: str
    hostname: str
    username: str
    paths: list[str]
    tree: str | None = None  # root tree id (file-like targets)
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    program_version: str = ""
    uid: int | None = None
    gid: int | None = None
    cloud: dict[str, Any] | None = None  # ebs/rds: the manifest of the AWS snapshot and copies
    id: str = ""  # not stored: the file name

    def to_json(self) -> bytes:
        d = asdict(self)
        d.pop("id")
        if d["cloud"] is None:
            d.pop("cloud")  # file-like snapshots keep exactly their earlier shape
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, sid: str) -> Snapshot:
        what = f"snapshot {sid[:8]}"
        d = schema.fields(schema.load_json(data, what), schema.SNAPSHOT, what)
        # `id` is the file's name, never its content
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "id"}
        return cls(**known, id=sid)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time)
