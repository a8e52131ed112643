"""Read directories on another host over SFTP into repository trees (`kind: ssh-files`).

What SFTP (v3) tells: type, mode, owner ids, size, whole-second mtime, symlink targets. No
inode, link count or ctime, so hard links are stored as separate files and a file is taken as
unchanged when its size and mtime match the parent snapshot's.
"""

from __future__ import annotations

import logging
import posixpath
import stat
from typing import Any

from restorer.errors import SourceError
from restorer.repo.blobs import DATA
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.tree import DIR, FILE, SYMLINK, Node
from restorer.sources.excludes import Excluder
from restorer.sources.files_backup import BackupStats, type_of
from restorer.sources.stream import RawReader

log = logging.getLogger("restorer.ssh_files")


class SFTPFilesReader:
    def __init__(self, repo: Repository, writer: BlobWriter, sftp: Any, excluder: Excluder,
                 where: str) -> None:
        self.repo = repo
        self.writer = writer
        self.sftp = sftp
        self.excluder = excluder
        self.where = where
        self.stats = BackupStats()

    def backup(self, paths: list[str], parent_tree: str | None) -> str:
        parent = self._children(parent_tree)
        nodes: list[Node] = []
        for p in paths:
            name = posixpath.basename(p.rstrip("/")) or p
            try:
                st = self.sftp.lstat(p)
            except OSError as e:
                raise SourceError(f"{self.where}:{p}: cannot read: {e.strerror or e}",
                                  hint="fix the path in the plan") from None
            node = self._node(p, name, st, parent.get(name), "")
            if node is not None:
                nodes.append(node)
        return self.writer.add_tree(nodes)

    def _children(self, tree_id: str | None) -> dict[str, Node]:
        if not tree_id:
            return {}
        try:
            return {n["name"]: n for n in self.repo.load_tree(tree_id)}
        except Exception as e:  # a damaged parent costs speed only
            log.warning("parent tree %s unreadable (%s); reading every file", tree_id[:8], e)
            return {}

    def _warn(self, msg: str) -> None:
        log.warning("%s", msg)
        self.stats.warnings.append(msg)

    def _node(self, path: str, name: str, st: Any, prev: Node | None, rel: str) -> Node | None:
        mode = st.st_mode or 0
        t = type_of(mode)
        node: Node = {"name": name, "type": t, "mode": stat.S_IMODE(mode),
                      "uid": st.st_uid, "gid": st.st_gid,
                      "mtime_ns": int(st.st_mtime or 0) * 1_000_000_000}
        if t == DIR:
            self.stats.dirs += 1
            node["subtree"] = self._dir(path, prev, rel)
            return node
        if t == SYMLINK:
            self.stats.other += 1
            try:
                node["target"] = self.sftp.readlink(path)
            except OSError as e:
                self._warn(f"{self.where}:{path}: cannot read symlink: {e}; not saved")
                return None
            return node
        if t != FILE:
            self.stats.other += 1
            return node
        self.stats.total_files += 1
        size = int(st.st_size or 0)
        if (prev is not None and prev.get("type") == FILE and prev.get("size") == size
                and prev.get("mtime_ns") == node["mtime_ns"]
                and all(self.writer.has(bytes.fromhex(c)) for c in prev.get("content", ()))):
            node["size"], node["content"] = size, prev["content"]
            self.stats.files_unmodified += 1
            self.stats.total_bytes += size
            return node
        for attempt in range(3):
            try:
                content, read = self._read(path)
                after = self.sftp.lstat(path)
            except FileNotFoundError:
                self._warn(f"{self.where}:{path}: vanished during the backup; not saved")
                return None
            except OSError as e:
                self._warn(f"{self.where}:{path}: cannot read: {e}; not saved")
                return None
            if int(after.st_size or 0) == read and int(after.st_mtime or 0) == int(st.st_mtime
                                                                                    or 0):
                break
            st = after
            node["mtime_ns"] = int(st.st_mtime or 0) * 1_000_000_000
            if attempt == 2:
                self._warn(f"{self.where}:{path}: changed while being read (3 attempts); saved "
                           "as read, which may be inconsistent")
                node["changed_during_backup"] = True
        node["size"], node["content"] = read, content
        if prev is not None and prev.get("type") == FILE:
            self.stats.files_changed += 1
        else:
            self.stats.files_new += 1
        self.stats.total_bytes += read
        return node

    def _read(self, path: str) -> tuple[list[str], int]:
        with self.sftp.open(path, "rb") as f:
            f.prefetch()
            if int(f.stat().st_size or 0) <= self.repo.chunker.min_size:
                data = f.read()
                self.stats.bytes_read += len(data)
                return ([self.writer.add(DATA, data).hex()] if data else []), len(data)
            futures, size = [], 0
            for chunk in self.repo.chunker.chunks(RawReader(f)):
                futures.append(self.writer.add_async(chunk))
                size += len(chunk)
            self.stats.bytes_read += size
            return [fu.result()[0].hex() for fu in futures], size

    def _dir(self, path: str, prev: Node | None, rel: str) -> str:
        children = {}
        if prev is not None and prev.get("type") == DIR and prev.get("subtree"):
            children = self._children(prev["subtree"])
        try:
            entries = sorted(self.sftp.listdir_attr(path), key=lambda a: a.filename)
        except OSError as e:
            self._warn(f"{self.where}:{path}: cannot list directory: {e}; saved as empty")
            return self.writer.add_tree([])
        nodes = []
        for a in entries:
            child_rel = f"{rel}/{a.filename}" if rel else a.filename
            if self.excluder.excluded(child_rel, a.filename, stat.S_ISDIR(a.st_mode or 0)):
                continue
            n = self._node(posixpath.join(path, a.filename), a.filename, a,
                           children.get(a.filename), child_rel)
            if n is not None:
                nodes.append(n)
        return self.writer.add_tree(nodes)
