"""Read local directories and files into repository trees (the backup half of `kind: files`)."""

from __future__ import annotations

import base64
import errno
import grp
import io
import logging
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from restorer.errors import SourceError
from restorer.repo.blobs import DATA
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SOCKET, SYMLINK, Node
from restorer.sources.excludes import Excluder

log = logging.getLogger("restorer.files")
_RETRIES_ON_CHANGE = 2
_O_NOATIME = getattr(os, "O_NOATIME", 0)


@lru_cache(maxsize=1024)
def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=1024)
def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@dataclass
class BackupStats:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    other: int = 0
    bytes_read: int = 0
    total_files: int = 0
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _DirFrame:
    """One directory being read: its entries, how far through them, the nodes so far."""

    path: str
    rel: str
    node: Node | None  # the directory's own node, whose subtree this fills (None: the top)
    parent_children: dict[str, Node]
    entries: list[os.DirEntry[str]]
    pos: int = 0
    nodes: list[Node] = field(default_factory=list)


def type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISCHR(mode):
        return CHARDEV
    if stat.S_ISBLK(mode):
        return BLOCKDEV
    return SOCKET


class FilesReader:
    """Walks paths, stores file contents and trees through `writer`, and returns the root tree.

    With a parent snapshot's root tree, files whose size, mtime and inode are unchanged reuse
    the parent's content ids without being read.
    """

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        excluder: Excluder,
        *,
        one_file_system: bool = False,
        xattrs: bool = True,
        on_read: Callable[[int], None] | None = None,
        on_file: Callable[[int], None] | None = None,
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.excluder = excluder
        self.one_file_system = one_file_system
        self.xattrs = xattrs and hasattr(os, "listxattr")
        self.stats = BackupStats()
        self.on_read = on_read  # bytes just read
        self.on_file = on_file  # files done so far

    # --- public -------------------------------------------------------------------------

    def backup(self, paths: list[Path], parent_tree: str | None) -> str:
        """The id of a root tree holding one entry per path (named by its last component)."""
        parent = self._parent_nodes(parent_tree)
        nodes: list[Node] = []
        names: dict[str, Path] = {}
        for p in paths:
            name = p.name or str(p)
            if name in names:
                raise SourceError(
                    f"two paths end in the same name '{name}' ({names[name]} and {p})",
                    hint="back them up as separate targets",
                )
            names[name] = p
            try:
                st = os.lstat(p)
            except OSError as e:
                raise SourceError(f"{p}: cannot read: {e.strerror}",
                                  hint="fix the path in the plan or create it") from None
            node = self._node(str(p), name, st, parent.get(name), root_dev=st.st_dev, rel="")
            if node is not None:
                nodes.append(node)
        return self.writer.add_tree(nodes)

    # --- walking ------------------------------------------------------------------------

    def _parent_nodes(self, tree_id: str | None) -> dict[str, Node]:
        if not tree_id:
            return {}
        try:
            return {n["name"]: n for n in self.repo.load_tree(tree_id, keep=False)}
        except Exception as e:  # a damaged parent only costs speed, never correctness
            log.warning("parent tree %s unreadable (%s); reading every file", tree_id[:8], e)
            return {}

    def _warn(self, msg: str) -> None:
        log.warning("%s", msg)
        self.stats.warnings.append(msg)

    def _describe(self, path: str, name: str, st: os.stat_result, parent: Node | None) -> Node:
        """The entry's node without contents or subtree: type, mode, owner, times, xattrs."""
        mode = st.st_mode
        t = type_of(mode)
        node: Node = {
            "name": name, "type": t, "mode": stat.S_IMODE(mode),
            "uid": st.st_uid, "gid": st.st_gid,
            "user": _user(st.st_uid), "group": _group(st.st_gid),
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "dev": st.st_dev, "nlink": st.st_nlink,
        }
        if self.xattrs:
            if (parent is not None and parent.get("ctime_ns") == st.st_ctime_ns
                    and parent.get("inode") == st.st_ino):
                # changing an xattr changes ctime: an unchanged ctime means unchanged xattrs
                x = parent.get("xattrs")
            else:
                x = self._read_xattrs(path)
            if x:
                node["xattrs"] = x
        return node

    def _node(self, path: str, name: str, st: os.stat_result, parent: Node | None,
              root_dev: int, rel: str) -> Node | None:
        node = self._describe(path, name, st, parent)
        t = node["type"]
        if t == FILE:
            self.stats.total_files += 1
            return self._file_node(path, node, st, parent)
        if t == DIR:
            self.stats.dirs += 1
            if self.one_file_system and st.st_dev != root_dev:
                node["subtree"] = self.writer.add_tree([])
                return node
            node["subtree"] = self._dir_tree(path, parent, root_dev, rel)
            return node
        self.stats.other += 1
        if t == SYMLINK:
            try:
                node["target"] = os.readlink(path)
            except OSError as e:
                self._warn(f"{path}: cannot read symlink: {e.strerror}; not saved")
                return None
        elif t in (CHARDEV, BLOCKDEV):
            node["rdev"] = st.st_rdev
        return node

    def _dir_tree(self, path: str, parent: Node | None, root_dev: int, rel: str) -> str:
        """The tree id of directory `path` and everything below it. Walked with an explicit
        stack, not recursion: the depth is the file system's to choose (a chain 1,200 deep
        must back up like any other tree)."""
        stack = [self._open_dir(path, parent, rel, None)]
        while True:
            frame = stack[-1]
            sub = self._next_subdir(frame, root_dev)
            if sub is not None:
                stack.append(sub)
                continue
            tree_id = self.writer.add_tree(frame.nodes)
            stack.pop()
            if frame.node is None:
                return tree_id
            frame.node["subtree"] = tree_id

    def _open_dir(self, path: str, parent: Node | None, rel: str,
                  node: Node | None) -> _DirFrame:
        parent_children: dict[str, Node] = {}
        if parent and parent.get("type") == DIR and parent.get("subtree"):
            parent_children = self._parent_nodes(parent["subtree"])
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self._warn(f"{path}: cannot list directory: {e.strerror}; saved as empty")
            entries = []
        return _DirFrame(path, rel, node, parent_children, entries)

    def _next_subdir(self, frame: _DirFrame, root_dev: int) -> _DirFrame | None:
        """Add the frame's entries to its nodes up to the next directory to descend into
        (returned, its node already placed so that order is kept), or None when done."""
        excluder = self.excluder if self.excluder.rules else None
        while frame.pos < len(frame.entries):
            e = frame.entries[frame.pos]
            frame.pos += 1
            name = e.name
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                self._warn(f"{e.path}: vanished during the backup; not saved")
                continue
            except OSError as err:
                self._warn(f"{e.path}: cannot stat: {err.strerror}; not saved")
                continue
            child_rel = f"{frame.rel}/{name}" if frame.rel else name
            if excluder and excluder.excluded(child_rel, name, stat.S_ISDIR(st.st_mode)):
                continue
            prev = frame.parent_children.get(name)
            if prev is not None and self._unchanged_file(prev, st):
                # same inode, size, mtime and ctime (which any chmod, chown, link or xattr
                # change moves): the parent's entry describes this file exactly
                frame.nodes.append(prev)
                self.stats.total_files += 1
                self.stats.files_unmodified += 1
                self.stats.total_bytes += st.st_size
                if self.on_read:
                    self.on_read(st.st_size)
                self._progress()
                continue
            if stat.S_ISDIR(st.st_mode) and not (self.one_file_system
                                                 and st.st_dev != root_dev):
                node = self._describe(e.path, name, st, prev)
                self.stats.dirs += 1
                frame.nodes.append(node)
                return self._open_dir(e.path, prev, child_rel, node)
            child = self._node(e.path, name, st, prev, root_dev, child_rel)
            if child is not None:
                frame.nodes.append(child)
        return None

    def _read_xattrs(self, path: str) -> dict[str, str] | None:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return None
        if not names:
            return None
        out = {}
        for n in names:
            try:
                out[n] = base64.b64encode(os.getxattr(path, n, follow_symlinks=False)).decode()
            except OSError:
                continue
        return out or None

    # --- file contents ------------------------------------------------------------------

    def _file_node(self, path: str, node: Node, st: os.stat_result,
                   parent: Node | None) -> Node | None:
        if (
            parent is not None
            and parent.get("type") == FILE
            and parent.get("size") == st.st_size
            and parent.get("mtime_ns") == st.st_mtime_ns
            and parent.get("inode") == st.st_ino
            and self._all_stored(parent.get("content", ()))
        ):
            node["size"] = st.st_size
            node["content"] = parent["content"]
            self.stats.files_unmodified += 1
            self.stats.total_bytes += st.st_size
            if self.on_read:  # progress counts skipped bytes as done
                self.on_read(st.st_size)
            self._progress()
            return node
        for attempt in range(_RETRIES_ON_CHANGE + 1):
            try:
                content, size, changed = self._read_content(path, st)
            except FileNotFoundError:
                self._warn(f"{path}: vanished during the backup; not saved")
                return None
            except OSError as e:
                if e.errno == errno.ELOOP:  # replaced by a symlink between stat and open
                    self._warn(f"{path}: changed type during the backup; not saved")
                    return None
                self._warn(f"{path}: cannot read: {e.strerror}; not saved")
                return None
            if not changed:
                break
            if attempt < _RETRIES_ON_CHANGE:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    self._warn(f"{path}: vanished during the backup; not saved")
                    return None
                node.update(mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, mode=stat.S_IMODE(
                    st.st_mode), inode=st.st_ino, uid=st.st_uid, gid=st.st_gid)
            else:
                self._warn(
                    f"{path}: changed while being read ({_RETRIES_ON_CHANGE + 1} attempts); "
                    "saved as read, which may be inconsistent"
                )
                node["changed_during_backup"] = True
        node["size"] = size
        node["content"] = content
        if parent is not None and parent.get("type") == FILE:
            self.stats.files_changed += 1
        else:
            self.stats.files_new += 1
        self.stats.total_bytes += size
        self._progress()
        return node

    def _read_content(self, path: str, st: os.stat_result) -> tuple[list[str], int, bool]:
        """(chunk ids, bytes read, whether the file changed since it was listed or while read).

        Few system calls per file: small files are most of a tree, and each call on the
        main thread also waits for the GIL behind the compression workers.
        """
        # O_NONBLOCK: a file replaced by a FIFO after listing must not hang the backup
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags | _O_NOATIME)
        except PermissionError:
            fd = os.open(path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
        try:
            min_size = self.repo.chunker.min_size
            ids: list[str] = []
            if st.st_size <= min_size:
                data = os.read(fd, min_size + 1)
                while 0 < len(data) < st.st_size:  # a short read: keep going
                    more = os.read(fd, min_size + 1 - len(data))
                    if not more:
                        break
                    data += more
                if len(data) > min_size:  # grew since it was listed: chunk it all
                    ids, size = self._chunk_stream(io.FileIO(fd, closefd=False), data)
                else:
                    size = len(data)
                    if data:
                        ids.append(self.writer.add(DATA, data).hex())
                        self._read(size)
            else:
                ids, size = self._chunk_stream(io.FileIO(fd, closefd=False), b"")
            after = os.fstat(fd)
        finally:
            os.close(fd)
        changed = (
            not stat.S_ISREG(after.st_mode)
            or after.st_ino != st.st_ino
            or after.st_mtime_ns != st.st_mtime_ns
            or after.st_size != st.st_size
            or size != after.st_size
        )
        return ids, size, changed

    def _chunk_stream(self, f: io.RawIOBase, head: bytes) -> tuple[list[str], int]:
        """Chunk the rest of a file; chunks are hashed and sealed by the writer's threads."""
        stream = _Prefixed(head, f) if head else f
        futures = []
        size = 0
        for chunk in self.repo.chunker.chunks(stream):
            futures.append(self.writer.add_async(chunk))
            size += len(chunk)
            self._read(len(chunk))
        return [fut.result()[0].hex() for fut in futures], size

    def _unchanged_file(self, prev: Node, st: os.stat_result) -> bool:
        return (
            prev.get("ctime_ns") == st.st_ctime_ns
            and prev.get("mtime_ns") == st.st_mtime_ns
            and prev.get("inode") == st.st_ino
            and prev.get("size") == st.st_size
            and prev.get("dev") == st.st_dev
            and prev.get("type") == FILE
            and stat.S_ISREG(st.st_mode)
            and "changed_during_backup" not in prev
            and (self.xattrs or "xattrs" not in prev)
            and self._all_stored(prev.get("content", ()))
        )

    def _all_stored(self, content: list[str]) -> bool:
        has = self.writer.has
        return all(has(bytes.fromhex(c)) for c in content)

    def _read(self, n: int) -> None:
        self.stats.bytes_read += n
        if self.on_read:
            self.on_read(n)

    def _progress(self) -> None:
        if self.on_file:
            self.on_file(
                self.stats.files_new + self.stats.files_changed + self.stats.files_unmodified)


class _Prefixed(io.RawIOBase):
    """A raw stream yielding `head` and then the rest of `f`."""

    def __init__(self, head: bytes, f: io.RawIOBase) -> None:
        super().__init__()
        self.head = memoryview(head)
        self.f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.f.readinto(b) or 0


def scan_size(paths: list[Path], excluder: Excluder) -> tuple[int, int]:
    """(regular files, bytes) under `paths`, for a progress bar's total; errors are skipped."""
    files = size = 0

    def walk(top: str) -> None:
        nonlocal files, size
        stack = [(top, "")]  # not recursion: the depth is the file system's
        while stack:
            d, rel = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for e in it:
                    r = f"{rel}/{e.name}" if rel else e.name
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if excluder.excluded(r, e.name, is_dir):
                        continue
                    if is_dir:
                        stack.append((e.path, r))
                    elif stat.S_ISREG(st.st_mode):
                        files += 1
                        size += st.st_size

    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(str(p))
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    return files, size
