"""Targets whose backup is one byte stream (a database dump, a command's output).

The stream is chunked straight into the repository as a single file in a one-entry tree, so
dedup, check, diff and copy treat it like any file; restore streams the blobs back out.
Nothing is staged on disk in between.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from restorer.errors import RestoreError
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import FILE


def backup_stream(repo: Repository, writer: BlobWriter, name: str, stream: BinaryIO,
                  on_read: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(root tree id, bytes read): the stream stored as file `name`."""
    futures = []
    size = 0
    for chunk in repo.chunker.chunks(RawReader(stream)):
        futures.append(writer.add_async(chunk))
        size += len(chunk)
        if on_read:
            on_read(len(chunk))
    content = [f.result()[0].hex() for f in futures]
    now = time.time_ns()
    node = {"name": name, "type": FILE, "mode": 0o600, "uid": 0, "gid": 0,
            "mtime_ns": now, "size": size, "content": content}
    return writer.add_tree([node]), size


def stream_file(snap: Snapshot) -> str:
    return f"{snap.kind}.dump"


def restore_stream(repo: Repository, snap: Snapshot) -> Iterator[bytes]:
    """The stored stream's bytes, verified blob by blob; RestoreError on damage."""
    if not snap.tree:
        raise RestoreError(f"snapshot {snap.short_id} holds no data")
    nodes = repo.load_tree(snap.tree, f"snapshot {snap.short_id}")
    if len(nodes) != 1 or nodes[0]["type"] != FILE:
        raise RestoreError(f"snapshot {snap.short_id} is not a {snap.kind} dump")
    ids = [bytes.fromhex(c) for c in nodes[0].get("content", ())]
    for _bid, data in repo.stream_blobs(ids):
        if isinstance(data, Exception):
            raise RestoreError(
                f"snapshot {snap.short_id}: the dump's data is damaged ({data}); nothing "
                "after this point was restored",
                hint="run `restorer check PLAN --read-data`; restore an older snapshot",
            )
        yield data


class RawReader(io.RawIOBase):
    """readinto over any binary stream (a pipe, a file)."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f = f
        self._readinto = getattr(f, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._readinto is not None:
            return self._readinto(b) or 0
        data = self.f.read(len(b))
        b[: len(data)] = data
        return len(data)
