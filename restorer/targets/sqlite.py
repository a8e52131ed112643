"""sqlite: one SQLite database file, copied consistently through SQLite's online backup
API and streamed (backup), written back to a path (restore), restored into a scratch
folder and integrity-checked (verify)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from restorer.fsutil import remove_tree
from restorer.plan import models
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.sqlite import sqlite_dump, sqlite_restore
from restorer.targets.base import (
    Restored,
    RestoreRequest,
    Stage,
    TargetContext,
    can,
    cannot,
    chunk_ids,
)
from restorer.targets.stream import StreamKind


class SQLiteStage(Stage):
    """sqlite: the database file restored into a fresh directory, integrity-checked."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.dir = self._scratch_dir()
        self.file = self.dir / f"{self.target.name}.db"
        self.location = str(self.file)
        self.cwd = self.dir
        self.env = {"RESTORER_STAGING": str(self.file)}

    def restore(self) -> Restored:
        sqlite_restore(self._stream(), self.file, overwrite=False)
        self.restored.files = 1
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        ok, detail = self._stream_manifest("SQLite")
        if not ok:
            return ok, detail
        node = self.repo.load_tree(self.snap.tree)[0]  # type: ignore[arg-type]
        if chunk_ids(self.repo, self.file) != list(node.get("content", ())):
            return False, "the restored database file differs from the snapshot"
        return True, (f"database file of {self.restored.bytes} bytes matches the snapshot; "
                      "PRAGMA integrity_check: ok")

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        db = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=timeout)
        try:
            return [["" if v is None else str(v) for v in row] for row in db.execute(sql)]
        finally:
            db.close()

    def teardown(self) -> bool:
        remove_tree(self.dir, ignore_errors=True)
        return not self.dir.exists()


class SQLiteKind(StreamKind):
    name = "sqlite"
    model = models.SQLiteTarget
    what = "one SQLite database file"
    capabilities = {
        "backup": can("a consistent copy through SQLite's online backup API, then streamed"),
        "restore": can("into the path given with --to"),
        "verify": can("restores into staging and runs the checks"),
        "rollback": cannot("not built yet: restore the snapshot with `restorer restore` and "
                           "replace the file while the application is stopped"),
        "prune": can("as files"),
    }

    def open_dump(self, ctx: TargetContext, t: models.SQLiteTarget
                  ) -> AbstractContextManager[BinaryIO]:
        return sqlite_dump(ctx.resolve_path(t.path))

    def restore_into(self, ctx: TargetContext, t: Any | None, snap: Snapshot,
                     chunks: Iterator[bytes], req: RestoreRequest, what: str) -> None:
        sqlite_restore(chunks, Path(req.dest), req.overwrite)

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return SQLiteStage(ctx, repo, t, snap)


KIND = SQLiteKind()
