"""What the dump kinds (postgres, mysql, sqlite, command) share: the backup is one byte
stream (a dump, a command's output), chunked into the repository as one file, and a restore
streams it back into the kind's own kind of destination."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from restorer.errors import RestoreError, SourceError
from restorer.progress import NoProgress, Progress
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.files_backup import BackupStats
from restorer.sources.files_restore import RestoreStats
from restorer.sources.stream import backup_stream, restore_stream
from restorer.targets.base import (
    Made,
    RestoreRequest,
    TargetContext,
    TargetKind,
    backup_summary,
    reading_into,
)


class StreamKind(TargetKind):
    """A kind whose backup is one stream and whose restore feeds it back."""

    @abstractmethod
    def open_dump(self, ctx: TargetContext, t: Any) -> AbstractContextManager[BinaryIO]:
        """The target's backup as one stream, made on this host or, with via_ssh, on the
        remote one."""

    @abstractmethod
    def restore_into(self, ctx: TargetContext, t: Any | None, snap: Snapshot,
                     chunks: Iterator[bytes], req: RestoreRequest, what: str) -> None:
        """Feed the dump's bytes into `req.dest` (a path, a DSN, the restore command)."""

    def backup(self, ctx: TargetContext, repo: Repository, t: Any,
               previous: list[Snapshot], progress: Progress) -> Made:
        start = time.monotonic()
        parent = previous[-1] if previous else None
        with BlobWriter(repo) as writer:
            with reading_into(writer, progress, f"backup {t.name}"), \
                    self.open_dump(ctx, t) as stream:
                tree, size = backup_stream(
                    repo, writer, f"{t.kind}.dump", stream,
                    None if isinstance(progress, NoProgress) else progress.advance)
            stats = BackupStats(files_new=1, total_files=1, total_bytes=size, bytes_read=size)
            summary = {**backup_summary(stats, writer, repo, time.monotonic() - start),
                       "stream": True}
        return Made([], tree, parent, summary=summary)

    def restore(self, ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                req: RestoreRequest, progress: Progress) -> RestoreStats:
        written = [0]

        def counted() -> Iterator[bytes]:
            for c in restore_stream(repo, snap):
                written[0] += len(c)
                progress.advance(len(c))
                yield c

        progress.start(f"restore {snap.target} {snap.short_id}",
                       int(snap.summary.get("total_bytes", 0)))
        try:
            self.restore_into(ctx, t, snap, counted(), req,
                              f"restore of {snap.target} ({snap.kind})")
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        finally:
            progress.stop()
        return RestoreStats(files=1, bytes_written=written[0])
