"""Write a snapshot's tree onto another host over SFTP (restoring `ssh-files` in place).

SFTP has no O_NOFOLLOW, so every directory on the way is checked with lstat before anything
is written into it: a symlink in the destination is refused, never followed. Names come from
checked trees (no '/', '..'). Files go to a temporary name and are renamed into place only
when all their data verified.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from restorer.errors import RestoreError
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import DIR, FILE, SYMLINK
from restorer.sources.files_restore import FilesWriter, RestoreStats

log = logging.getLogger("restorer.sftp_restore")


class SFTPWriter:
    def __init__(self, repo: Repository, sftp: Any, dest: str, *, where: str,
                 overwrite: bool = False, include: list[str] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.sftp = sftp
        self.dest = dest.rstrip("/") or "/"
        self.where = where
        self.overwrite = overwrite
        self.include = include
        self.on_progress = on_progress
        self.stats = RestoreStats()
        self._checked: set[str] = set()

    def _path(self, rel: tuple[str, ...]) -> str:
        return posixpath.join(self.dest, *rel)

    def _lstat(self, path: str) -> Any | None:
        try:
            return self.sftp.lstat(path)
        except FileNotFoundError:
            return None

    def _ensure_dir(self, path: str) -> None:
        """`path` is a real directory (created if missing), never a symlink."""
        if path in self._checked:
            return
        st = self._lstat(path)
        if st is None:
            self.sftp.mkdir(path, 0o700)
        elif not stat.S_ISDIR(st.st_mode or 0):
            raise RestoreError(f"{self.where}:{path} is not a directory (a symlink or file is "
                               "in the way); refusing to write through it")
        self._checked.add(path)

    def restore(self, snap: Snapshot) -> RestoreStats:
        items = FilesWriter(self.repo, Path(self.dest), include=self.include).plan(snap)
        if not self.overwrite:
            existing = []
            for it in items:
                st = self._lstat(self._path(it.rel))
                if st is not None and not (it.node["type"] == DIR
                                           and stat.S_ISDIR(st.st_mode or 0)):
                    existing.append(self._path(it.rel))
            if existing:
                raise RestoreError(
                    f"{len(existing)} path(s) already exist on {self.where} and would be "
                    "replaced: " + ", ".join(existing[:5]),
                    hint="restore into an empty directory, or pass --overwrite")
        # the destination's own ancestors are the user's choice; from dest down we check
        parts = self.dest.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            if self._lstat(p) is None:
                self.sftp.mkdir(p, 0o755)
        self._checked.add(self.dest)
        blobs = self.repo.stream_blobs(bytes.fromhex(c) for it in items
                                       if it.node["type"] == FILE
                                       for c in it.node.get("content", ()))
        dirs = []
        for it in items:
            parent = self._path(it.rel[:-1])
            for i in range(1, len(it.rel)):
                self._ensure_dir(self._path(it.rel[:i]))
            self._ensure_dir(parent)
            path = self._path(it.rel)
            n = it.node
            if n["type"] == DIR:
                self._ensure_dir(path)
                dirs.append(it)
                self.stats.dirs += 1
            elif n["type"] == FILE:
                self._write(it, path, [next(blobs)[1] for _ in n.get("content", ())])
            elif n["type"] == SYMLINK:
                st = self._lstat(path)
                if st is not None:
                    if stat.S_ISDIR(st.st_mode or 0):
                        raise RestoreError(f"{self.where}:{path} is a directory")
                    self.sftp.remove(path)
                self.sftp.symlink(n["target"], path)
                self.stats.links += 1
            else:
                self.stats.skipped.append((it.path, f"{n['type']} cannot be made over SFTP"))
        for it in reversed(dirs):
            self._meta(self._path(it.rel), it.node)
        return self.stats

    def _write(self, it: Any, path: str, chunks: list[bytes | Exception]) -> None:
        bad = next((c for c in chunks if isinstance(c, Exception)), None)
        if bad is not None:
            self.stats.failed.append((it.path, str(bad)))
            return
        tmp = posixpath.join(posixpath.dirname(path), f".restorer-tmp-{secrets.token_hex(6)}")
        try:
            with self.sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                for c in chunks:
                    f.write(c)  # type: ignore[arg-type]
                    if self.on_progress:
                        self.on_progress(len(c))  # type: ignore[arg-type]
            self._meta(tmp, it.node)
            self.sftp.posix_rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.sftp.remove(tmp)
            raise
        self.stats.files += 1
        self.stats.bytes_written += sum(len(c) for c in chunks)  # type: ignore[arg-type]

    def _meta(self, path: str, n: dict) -> None:
        with contextlib.suppress(OSError):
            self.sftp.chown(path, n.get("uid", 0), n.get("gid", 0))
        self.sftp.chmod(path, n.get("mode", 0o644))
        if "mtime_ns" in n:
            t = n["mtime_ns"] / 1e9
            self.sftp.utime(path, (t, t))
