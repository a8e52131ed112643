"""Write a snapshot's tree under a destination directory (the restore half of `kind: files`).

Safety: every name comes from a checked tree (plain names only); every file-system call is made
relative to an open directory descriptor with O_NOFOLLOW, so nothing is ever written through a
symlink, whether it came from the snapshot or was already in the destination. Files are written
under a temporary name and renamed into place only when all their blobs verified (see
file_writes); runs of zeros are left as holes, so sparse files restore sparse.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from restorer.errors import RestoreError
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SOCKET, SYMLINK, Node
from restorer.sources.file_writes import BatchResult, Chunk, FileSink, WriterPool

log = logging.getLogger("restorer.restore")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_POOLED_FILE_MAX = 4 << 20  # files up to this size go to the writer processes
_POOL_MIN_FILES = 64  # fewer small files than this are written here: no process to start
_BATCH_FILES = 128  # one batch: files of one directory, up to this many ...
_BATCH_BYTES = 2 << 20  # ... or this much data


def _writer_processes() -> int:
    """One per core, two to four: creating a file is the kernel's CPU time, not a wait, so
    more writers than cores only add their memory (two or four measured alike on 2 cores)."""
    n = os.environ.get("RESTORER_RESTORE_WRITERS")
    if n and n.isdigit():
        return max(1, min(int(n), 16))
    return max(2, min(4, os.cpu_count() or 1))


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    other: int = 0
    bytes_written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Item:
    rel: tuple[str, ...]  # path below the destination
    node: Node
    matched: bool = True  # selected by --include itself (or by an included ancestor)

    @property
    def path(self) -> str:
        return "/".join(self.rel)


def _include_filter(patterns: list[str]) -> Callable[[str], str]:
    """Returns f(path) -> 'yes' (included, with everything below), 'maybe' (an ancestor of a
    possible match: restore the directory itself), or 'no'."""
    pats = [p.strip("/") for p in patterns]

    def f(path: str) -> str:
        for p in pats:
            if fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p):
                return "yes"
        for p in pats:
            parts = p.split("/")
            mine = path.split("/")
            if len(mine) < len(parts) and all(
                fnmatch.fnmatchcase(a, b) for a, b in zip(mine, parts, strict=False)
            ):
                return "maybe"
        return "no"

    return f


class FilesWriter:
    def __init__(
        self,
        repo: Repository,
        dest: Path,
        *,
        overwrite: bool = False,
        include: list[str] | None = None,
        restore_owner: bool | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_file: Callable[[int], None] | None = None,
    ) -> None:
        self.repo = repo
        self.on_file = on_file  # hears the count of files restored so far
        self.dest = dest
        self.overwrite = overwrite
        self.include = _include_filter(include) if include else None
        self.restore_owner = os.geteuid() == 0 if restore_owner is None else restore_owner
        self.on_progress = on_progress
        self.stats = RestoreStats()
        self._stats_lock = threading.Lock()
        self._root_fd = -1
        self._sink: FileSink | None = None

    # --- planning -----------------------------------------------------------------------

    def plan(self, snap: Snapshot) -> list[_Item]:
        """Every entry to restore, parents before children, names checked."""
        if not snap.tree:
            raise RestoreError(f"snapshot {snap.short_id} has no file tree to restore")
        items: list[_Item] = []

        def listing(tree_id: str, rel: tuple[str, ...]) -> Iterator[Node]:
            return iter(self.repo.load_tree(tree_id, f"snapshot {snap.short_id}:/"
                                            + "/".join(rel)))

        # depth first, a directory right before its contents, with an explicit stack: the
        # depth is the snapshot's (a chain 1,200 deep restores like any tree)
        stack: list[tuple[Iterator[Node], tuple[str, ...], bool]] = [
            (listing(snap.tree, ()), (), False)]
        while stack:
            nodes, rel, all_in = stack[-1]
            n = next(nodes, None)
            if n is None:
                stack.pop()
                continue
            r = (*rel, n["name"])
            verdict = "yes" if all_in or self.include is None else self.include("/".join(r))
            if verdict == "no":
                continue
            if n["type"] == DIR:
                items.append(_Item(r, n, verdict == "yes"))
                if n.get("subtree"):
                    stack.append((listing(n["subtree"], r), r, verdict == "yes"))
            elif verdict == "yes":
                items.append(_Item(r, n))
        if self.include is not None:
            # drop directories that only lead to nothing
            needed: set[tuple[str, ...]] = set()
            for it in items:
                if it.matched:
                    for i in range(1, len(it.rel) + 1):
                        needed.add(it.rel[:i])
            items = [it for it in items if it.rel in needed]
        return items

    def conflicts(self, items: list[_Item]) -> list[str]:
        """Paths in the destination that this restore would replace."""
        out: list[str] = []
        try:
            with os.scandir(self.dest) as it:
                if next(it, None) is None:
                    return out  # an empty folder: nothing to replace, no need to look
        except FileNotFoundError:
            return out  # missing: nothing to replace
        except NotADirectoryError:
            pass
        for it in items:
            p = self.dest.joinpath(*it.rel)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                out.append(str(p))
                continue
            if it.node["type"] == DIR and stat.S_ISDIR(st.st_mode):
                continue
            out.append(str(p))
        return out

    # --- writing ------------------------------------------------------------------------

    def restore(self, snap: Snapshot) -> RestoreStats:
        items = self.plan(snap)
        if not self.overwrite:
            existing = self.conflicts(items)
            if existing:
                shown = "\n  ".join(existing[:10])
                more = f"\n  ... and {len(existing) - 10} more" if len(existing) > 10 else ""
                raise RestoreError(
                    f"{len(existing)} path(s) already exist in {self.dest} and would be "
                    f"replaced:\n  {shown}{more}",
                    hint="restore into an empty directory, or pass --overwrite to replace them",
                )
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
            self._root_fd = os.open(self.dest, _DIR_FLAGS)
        except (FileExistsError, NotADirectoryError):
            raise RestoreError(f"--to {self.dest} exists and is not a directory",
                               hint="give a directory (it is created if missing)") from None
        except PermissionError as e:
            raise RestoreError(f"--to {self.dest}: {e.strerror}",
                               hint="restore as a user that may write there") from None
        self._sink = FileSink(self._root_fd, str(self.dest), self.restore_owner, _note)
        try:
            self._write_all(items)
        except OSError as e:
            raise self._write_error(e) from None
        finally:
            self._sink.close()
            os.close(self._root_fd)
        return self.stats

    def _write_error(self, e: OSError) -> RestoreError:
        """A file system error while writing (a full disk, a quota, an I/O error): one
        message naming the destination and what was restored. A file being written when it
        happened was removed (see _write_file), so every file left there is whole."""
        st = self.stats
        done = (f"{st.files} file(s), {st.bytes_written / (1 << 20):.1f} MiB, were restored "
                "before it happened")
        why = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is exceeded"}
        if e.errno in why:
            return RestoreError(
                f"{why[e.errno]} on the file system of {self.dest}: {done}; the file being "
                "written was removed, so every file there is whole",
                hint="free space there (or restore elsewhere, or part of the snapshot with "
                "--include), then restore again with --overwrite")
        where = f" ({e.filename})" if e.filename else ""
        return RestoreError(f"cannot write into {self.dest}{where}: {e.strerror}; {done}",
                            hint="check the destination's file system and permissions")

    @staticmethod
    def _hardlinks(items: list[_Item]) -> dict[int, tuple[str, ...]]:
        """Item index -> path of the first restored file with the same inode (hard links)."""
        first: dict[tuple[object, int], tuple[str, ...]] = {}
        out: dict[int, tuple[str, ...]] = {}
        for i, it in enumerate(items):
            n = it.node
            if n["type"] != FILE or n.get("nlink", 1) < 2 or "inode" not in n:
                continue
            key = (n.get("dev"), n["inode"])
            if key in first:
                out[i] = first[key]
            else:
                first[key] = it.rel
        return out

    def _write_all(self, items: list[_Item]) -> None:
        links = self._hardlinks(items)
        blobs = self.repo.stream_blobs(
            bytes.fromhex(c)
            for i, it in enumerate(items)
            if it.node["type"] == FILE and i not in links
            for c in it.node.get("content", ())
        )
        small = sum(1 for i, it in enumerate(items) if it.node["type"] == FILE
                    and i not in links and it.node.get("size", 0) <= _POOLED_FILE_MAX)
        pool = None
        if small >= _POOL_MIN_FILES:
            pool = WriterPool(self._root_fd, str(self.dest), self.restore_owner,
                              _writer_processes(), self._answered)
        dirs: list[_Item] = []
        deferred_links: list[tuple[str, tuple[str, ...], _Item]] = []
        batch: list[tuple[tuple[str, ...], Node, list[Chunk]]] = []
        batch_bytes = 0
        sink = self._sink
        assert sink is not None
        try:
            for i, it in enumerate(items):
                t = it.node["type"]
                if batch and (it.rel[:-1] != batch[0][0][:-1] or len(batch) >= _BATCH_FILES
                              or batch_bytes >= _BATCH_BYTES):
                    assert pool is not None
                    pool.submit(batch, batch_bytes)
                    batch, batch_bytes = [], 0
                if t == DIR:
                    self._make_dir(sink.dir_fd(it.rel[:-1]), it)
                    dirs.append(it)
                elif t == FILE:
                    if i in links:
                        deferred_links.append((it.rel[-1], links[i], it))
                        continue
                    content = it.node.get("content", ())
                    size = it.node.get("size", 0)
                    if pool is not None and size <= _POOLED_FILE_MAX:
                        # read and verified here; written there
                        chunks: list[Chunk] = [next(blobs)[1] for _ in content]
                        batch.append((it.rel, _file_meta(it.node), chunks))
                        batch_bytes += size
                    else:
                        self._write_here(it, (next(blobs)[1] for _ in content))
                elif t == SYMLINK:
                    parent, name = sink.dir_fd(it.rel[:-1]), it.rel[-1]
                    self._replace_nondir(parent, name, it)
                    os.symlink(it.node["target"], name, dir_fd=parent)
                    self._apply_meta(parent, name, it.node, is_link=True)
                    self.stats.links += 1
                elif t in (FIFO, CHARDEV, BLOCKDEV):
                    self._special(sink.dir_fd(it.rel[:-1]), it.rel[-1], it)
                elif t == SOCKET:
                    self.stats.skipped.append((it.path, "sockets are recreated by their programs"))
            if batch:
                assert pool is not None
                pool.submit(batch, batch_bytes)
            if pool is not None:
                pool.finish()
                pool = None
        finally:
            if pool is not None:
                pool.abort()
        # hard links once every file they point to exists
        for name, first, it in deferred_links:
            self._hardlink(name, first, it)
        # directory metadata last, deepest first, so writing children does not disturb mtimes
        for it in reversed(dirs):
            sink.apply_meta_fd(sink.dir_fd(it.rel), it.node, it.path)

    def _write_here(self, it: _Item, chunks: Iterator[Chunk]) -> None:
        assert self._sink is not None
        written, error = self._sink.write_file(it.rel, it.node, chunks, self.on_progress)
        if error is not None:
            self._failed(it.path, error)
            return
        with self._stats_lock:
            self.stats.files += 1
            self.stats.bytes_written += written
            files = self.stats.files
        if self.on_file:
            self.on_file(files)

    def _failed(self, path: str, error: str) -> None:
        with self._stats_lock:
            self.stats.failed.append((path, error))
        log.error("%s: not restored: %s", path, error)

    def _answered(self, res: BatchResult) -> None:
        """A writer process's answer for one batch (on its reading thread)."""
        for level, msg in res.notes:
            _note(level, msg)
        for path, error in res.failed:
            self._failed(path, error)
        with self._stats_lock:
            self.stats.files += res.files
            self.stats.bytes_written += res.bytes_written
            files = self.stats.files
        if self.on_progress and res.bytes_written:
            self.on_progress(res.bytes_written)
        if self.on_file and res.files:
            self.on_file(files)

    def _replace_nondir(self, parent: int, name: str, it: _Item) -> None:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise RestoreError(
                f"{self.dest.joinpath(*it.rel)} is a directory in the destination but a "
                f"{it.node['type']} in the snapshot",
                hint="remove it, or restore into an empty directory",
            )
        os.unlink(name, dir_fd=parent)

    def _make_dir(self, parent: int, it: _Item) -> None:
        name = it.rel[-1]
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                # only reached with --overwrite (conflicts were refused before otherwise)
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o700, dir_fd=parent)
        self.stats.dirs += 1

    def _hardlink(self, name: str, first: tuple[str, ...], it: _Item) -> None:
        # a copy: opening the second folder may close the first one's cached descriptor
        src_parent = os.dup(self._sink.dir_fd(first[:-1]))
        try:
            parent = self._sink.dir_fd(it.rel[:-1])
            self._replace_nondir(parent, name, it)
            try:
                os.link(first[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
            except FileNotFoundError:
                # the first link failed to restore (damaged data): this one fails with it
                self.stats.failed.append(
                    (it.path, f"hard link to {'/'.join(first)}, not restored"))
                return
        finally:
            os.close(src_parent)
        self.stats.files += 1

    def _special(self, parent: int, name: str, it: _Item) -> None:
        n = it.node
        self._replace_nondir(parent, name, it)
        kind = {FIFO: stat.S_IFIFO, CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK}[n["type"]]
        try:
            os.mknod(name, kind | 0o600, n.get("rdev", 0), dir_fd=parent)
        except PermissionError:
            self.stats.skipped.append((it.path, f"creating a {n['type']} needs root"))
            return
        self._apply_meta(parent, name, n)
        self.stats.other += 1

    # --- metadata -----------------------------------------------------------------------

    def _apply_meta(self, parent: int, name: str, n: Node, is_link: bool = False) -> None:
        if self.restore_owner:
            try:
                os.chown(name, n.get("uid", -1), n.get("gid", -1), dir_fd=parent,
                         follow_symlinks=False)
            except OSError as e:
                log.warning("%s: cannot restore owner: %s", name, e.strerror)
        if not is_link:
            os.chmod(name, n.get("mode", 0o644), dir_fd=parent, follow_symlinks=False)
        if "mtime_ns" in n:
            os.utime(name, ns=(n["mtime_ns"], n["mtime_ns"]), dir_fd=parent,
                     follow_symlinks=False)


def _note(level: str, msg: str) -> None:
    log.log(logging.WARNING if level == "warning" else logging.DEBUG, "%s", msg)


def _file_meta(n: Node) -> Node:
    """What a writer process needs of a file's node (not its content ids)."""
    return {k: n[k] for k in ("uid", "gid", "mode", "xattrs", "mtime_ns") if k in n}
