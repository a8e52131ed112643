"""Write a snapshot's tree under a destination directory (the restore half of `kind: files`).

Safety: every name comes from a checked tree (plain names only); every file-system call is made
relative to an open directory descriptor with O_NOFOLLOW, so nothing is ever written through a
symlink, whether it came from the snapshot or was already in the destination. Files are written
under a temporary name and renamed into place only when all their blobs verified; runs of
zeros are left as holes, so sparse files restore sparse.
"""

from __future__ import annotations

import base64
import errno
import fnmatch
import logging
import os
import secrets
import stat
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from restorer.errors import RestoreError
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SOCKET, SYMLINK, Node

log = logging.getLogger("restorer.restore")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_TMP = ".restorer-tmp-"
_WRITERS = 8
_POOLED_FILE_MAX = 4 << 20  # files up to this size are written by the pool
_POOLED_BYTES_MAX = 64 << 20  # bound on file data waiting for a writer
_HOLE = 64 << 10  # aligned windows of zeros this size are left unwritten: holes
_ZEROS = bytes(_HOLE)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _write_sparse(fd: int, data: bytes, offset: int) -> None:
    """Write `data` at `offset` of a new file, except its aligned all-zero windows, which
    stay holes (they read as zeros and take no space): a sparse disk image restores sparse.
    Comparing bytes slices is a memcmp, a fraction of the cost of writing the zeros."""
    if not isinstance(data, bytes):
        data = bytes(data)
    view = memoryview(data)
    run_start: int | None = None  # start of the data not written yet
    i, n = 0, len(data)
    while i < n:
        j = min(n, (offset + i) // _HOLE * _HOLE + _HOLE - offset)  # end of i's window
        if data[i:j] == (_ZEROS if j - i == _HOLE else _ZEROS[:j - i]):
            if run_start is not None:
                _pwrite_all(fd, view[run_start:i], offset + run_start)
                run_start = None
        elif run_start is None:
            run_start = i
        i = j
    if run_start is not None:
        _pwrite_all(fd, view[run_start:], offset + run_start)


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
        self._fds: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._stats_lock = threading.Lock()
        self._root_fd = -1

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
        out = []
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
            self._root_fd = os.open(self.dest, _DIR_FLAGS & ~os.O_NOFOLLOW)
        except (FileExistsError, NotADirectoryError):
            raise RestoreError(f"--to {self.dest} exists and is not a directory",
                               hint="give a directory (it is created if missing)") from None
        except PermissionError as e:
            raise RestoreError(f"--to {self.dest}: {e.strerror}",
                               hint="restore as a user that may write there") from None
        try:
            self._write_all(items)
        except OSError as e:
            raise self._write_error(e) from None
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
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
        dirs: list[_Item] = []
        deferred_links: list[tuple[str, tuple[str, ...], _Item]] = []
        # Creating a file costs a few hundred microseconds of waiting on the file system, so
        # small files are written by a pool of threads; their data is already verified.
        pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="write")
        inflight: deque[tuple[Future[None], int]] = deque()
        inflight_bytes = 0
        try:
            for i, it in enumerate(items):
                t = it.node["type"]
                parent = self._dir_fd(it.rel[:-1])
                name = it.rel[-1]
                if t == DIR:
                    self._make_dir(parent, it)
                    dirs.append(it)
                elif t == FILE:
                    if i in links:
                        deferred_links.append((name, links[i], it))
                        continue
                    content = it.node.get("content", ())
                    if it.node.get("size", 0) <= _POOLED_FILE_MAX:
                        chunks = [next(blobs)[1] for _ in content]
                        fd = os.dup(parent)
                        size = it.node.get("size", 0)
                        inflight.append(
                            (pool.submit(self._write_file_job, fd, name, it, chunks), size))
                        inflight_bytes += size
                        while inflight and (inflight[0][0].done() or len(inflight) > 256
                                            or inflight_bytes > _POOLED_BYTES_MAX):
                            fut, done_size = inflight.popleft()
                            fut.result()
                            inflight_bytes -= done_size
                    else:
                        self._write_file(parent, name, it, (next(blobs)[1] for _ in content))
                elif t == SYMLINK:
                    self._replace_nondir(parent, name, it)
                    os.symlink(it.node["target"], name, dir_fd=parent)
                    self._apply_meta(parent, name, it.node, is_link=True)
                    self.stats.links += 1
                elif t in (FIFO, CHARDEV, BLOCKDEV):
                    self._special(parent, name, it)
                elif t == SOCKET:
                    self.stats.skipped.append((it.path, "sockets are recreated by their programs"))
            while inflight:
                inflight.popleft()[0].result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # hard links once every file they point to exists
        for name, first, it in deferred_links:
            self._hardlink(name, first, it)
        # directory metadata last, deepest first, so writing children does not disturb mtimes
        for it in reversed(dirs):
            fd = self._dir_fd(it.rel)
            self._apply_meta_fd(fd, it.node, it.path)

    def _write_file_job(self, parent: int, name: str, it: _Item,
                        chunks: list[bytes | Exception]) -> None:
        try:
            self._write_file(parent, name, it, chunks)
        finally:
            os.close(parent)

    def _dir_fd(self, rel: tuple[str, ...]) -> int:
        if not rel:
            return self._root_fd
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        # from the nearest directory still open, down one level at a time (a loop, not
        # recursion: the depth is the snapshot's)
        top = len(rel) - 1
        while top > 0 and rel[:top] not in self._fds:
            top -= 1
        parent = self._root_fd if top == 0 else self._fds[rel[:top]]
        for level in range(top, len(rel)):
            try:
                fd = os.open(rel[level], _DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RestoreError(
                        f"{self.dest.joinpath(*rel[:level + 1])} is not a directory (a symlink "
                        "or file is in the way); refusing to write through it"
                    ) from None
                raise
            self._fds[rel[:level + 1]] = fd
            if len(self._fds) > 64:
                # the oldest: never the one just opened, which the next level is opened from
                _, old = self._fds.popitem(last=False)
                os.close(old)
            parent = fd
        return parent

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

    def _write_file(self, parent: int, name: str, it: _Item,
                    chunks: Iterable[bytes | Exception]) -> None:
        """Write one file under a temporary name; rename it into place only if every chunk
        arrived verified. A damaged chunk leaves no file, and is reported."""
        tmp = f"{_TMP}{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=parent)
        error: str | None = None
        written = 0
        try:
            for data in chunks:
                if error is not None:
                    continue  # the iterator must still be consumed to stay in step
                if isinstance(data, Exception):
                    error = str(data)
                    continue
                _write_sparse(fd, data, written)
                written += len(data)
                if self.on_progress:
                    self.on_progress(len(data))
            if error is None:
                os.ftruncate(fd, written)  # the size, when the file ends in a hole
                self._apply_meta_fd(fd, it.node, it.path)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=parent)
            raise
        os.close(fd)
        if error is not None:
            os.unlink(tmp, dir_fd=parent)
            with self._stats_lock:
                self.stats.failed.append((it.path, error))
            log.error("%s: not restored: %s", it.path, error)
            return
        try:
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except IsADirectoryError:
            os.unlink(tmp, dir_fd=parent)
            raise RestoreError(
                f"{self.dest.joinpath(*it.rel)} is a directory in the destination but a file in "
                "the snapshot",
                hint="remove it, or restore into an empty directory",
            ) from None
        with self._stats_lock:
            self.stats.files += 1
            self.stats.bytes_written += written
            files = self.stats.files
        if self.on_file:
            self.on_file(files)

    def _hardlink(self, name: str, first: tuple[str, ...], it: _Item) -> None:
        # a copy: opening the second folder may close the first one's cached descriptor
        src_parent = os.dup(self._dir_fd(first[:-1]))
        try:
            parent = self._dir_fd(it.rel[:-1])
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

    def _apply_meta_fd(self, fd: int, n: Node, path: str) -> None:
        if self.restore_owner:
            try:
                os.fchown(fd, n.get("uid", -1), n.get("gid", -1))
            except OSError as e:
                log.warning("%s: cannot restore owner: %s", path, e.strerror)
        os.fchmod(fd, n.get("mode", 0o644))
        for k, v in (n.get("xattrs") or {}).items():
            try:
                os.setxattr(fd, k, base64.b64decode(v))
            except OSError as e:
                log.debug("%s: xattr %s not restored: %s", path, k, e.strerror)
        if "mtime_ns" in n:
            os.utime(fd, ns=(n["mtime_ns"], n["mtime_ns"]))

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
