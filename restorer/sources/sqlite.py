"""SQLite targets: a consistent copy through SQLite's online backup API, restored to a path."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from restorer.errors import RestoreError, SourceError


@contextmanager
def sqlite_dump(path: Path) -> Iterator[BinaryIO]:
    """A consistent copy of a live database, made by the backup API in one step (one read
    transaction), never a raw copy of the file. The API needs a database to copy into: a
    private temporary file, removed on exit."""
    if not path.is_file():
        raise SourceError(f"{path}: no such SQLite database", hint="fix `path` in the plan")
    tmpdir = tempfile.mkdtemp(prefix="restorer-sqlite-")
    copy = Path(tmpdir) / "copy.db"
    try:
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
            try:
                dst = sqlite3.connect(copy)
                with dst:
                    src.backup(dst)  # pages=-1: the whole database under one read lock
                dst.close()
            finally:
                src.close()
        except sqlite3.Error as e:
            raise SourceError(f"{path}: SQLite backup failed: {e}") from None
        with open(copy, "rb") as f:
            yield f
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def sqlite_restore(chunks: Iterable[bytes], dest: Path, overwrite: bool) -> int:
    """Write the database to `dest` (through a temporary file next to it, checked with
    PRAGMA integrity_check before it replaces anything). Returns the bytes written."""
    if dest.exists() and not overwrite:
        raise RestoreError(f"{dest} already exists",
                           hint="restore to a new path, or pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".restorer-tmp", dir=dest.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
                size += len(c)
            f.flush()
            os.fsync(f.fileno())
        conn = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if verdict != "ok":
            raise RestoreError(f"the restored database fails PRAGMA integrity_check: {verdict}")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return size
