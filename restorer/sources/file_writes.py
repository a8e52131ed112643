"""Writing restored files below an open destination directory, in this process or in writer
processes (the many-small-files half of a restore).

Every call is made relative to a directory descriptor with O_NOFOLLOW, so nothing is written
through a symlink. A file is written under a temporary name and renamed into place only when
all its data arrived verified: a file under its real name is whole, even after a kill.

Why processes: creating a file costs the kernel ~100 µs here and each of the half-dozen calls
per file gives up and takes back the interpreter lock. With the reading threads busy, those
hand-offs cost more than the calls themselves (1.4 million futex calls for 20,000 files).
Writer processes each hold their own lock, take already verified data through a pipe, and
answer per batch; the restoring process keeps reading, decoding and checking.

This module is also the writer processes' program, so it imports little.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import pickle
import struct
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from restorer.errors import RestoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
TMP_PREFIX = ".restorer-tmp-"
_HOLE = 64 << 10  # aligned windows of zeros this size are left unwritten: holes
_ZEROS = bytes(_HOLE)
_OPEN_DIRS = 64
_FRAME = struct.Struct("<Q")

Node = dict[str, Any]
Chunk = bytes | Exception | str  # data, or why it could not be read (the file fails)
Note = Callable[[str, str], None]  # (level, message)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_sparse(fd: int, data: bytes, offset: int) -> int:
    """Write `data` at `offset` of a new file, except its aligned all-zero windows, which
    stay holes (they read as zeros and take no space): a sparse disk image restores sparse.
    Returns where the last byte written ends (`offset` when nothing was). Comparing bytes
    slices is a memcmp, a fraction of the cost of writing the zeros."""
    if not isinstance(data, bytes):
        data = bytes(data)
    view = memoryview(data)
    run_start: int | None = None  # start of the data not written yet
    end = offset
    i, n = 0, len(data)
    while i < n:
        j = min(n, (offset + i) // _HOLE * _HOLE + _HOLE - offset)  # end of i's window
        if data[i:j] == (_ZEROS if j - i == _HOLE else _ZEROS[:j - i]):
            if run_start is not None:
                _pwrite_all(fd, view[run_start:i], offset + run_start)
                end = offset + i
                run_start = None
        elif run_start is None:
            run_start = i
        i = j
    if run_start is not None:
        _pwrite_all(fd, view[run_start:], offset + run_start)
        end = offset + n
    return end


class FileSink:
    """Directories and files below one open destination directory."""

    def __init__(self, root_fd: int, dest: str, restore_owner: bool, note: Note) -> None:
        self.root_fd = root_fd
        self.dest = dest
        self.restore_owner = restore_owner
        self.note = note
        self._fds: OrderedDict[tuple[str, ...], int] = OrderedDict()
        # unique per process without asking the kernel for randomness each file; O_EXCL
        # still refuses a name a killed run of the same pid left behind
        self._tmp = f"{TMP_PREFIX}{os.getpid()}-"
        self._seq = 0

    def where(self, rel: tuple[str, ...]) -> str:
        return os.path.join(self.dest, *rel)

    def dir_fd(self, rel: tuple[str, ...]) -> int:
        """A descriptor of directory `rel`, opened one level at a time from the nearest one
        still open (a loop, not recursion: the depth is the snapshot's)."""
        if not rel:
            return self.root_fd
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        top = len(rel) - 1
        while top > 0 and rel[:top] not in self._fds:
            top -= 1
        parent = self.root_fd if top == 0 else self._fds[rel[:top]]
        for level in range(top, len(rel)):
            try:
                fd = os.open(rel[level], _DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RestoreError(
                        f"{self.where(rel[:level + 1])} is not a directory (a symlink or "
                        "file is in the way); refusing to write through it") from None
                raise
            self._fds[rel[:level + 1]] = fd
            if len(self._fds) > _OPEN_DIRS:
                # the oldest: never the one just opened, which the next level is opened from
                _, old = self._fds.popitem(last=False)
                os.close(old)
            parent = fd
        return parent

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _create_tmp(self, parent: int) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(1000):
            self._seq += 1
            tmp = f"{self._tmp}{self._seq}"
            try:
                return tmp, os.open(tmp, flags, 0o600, dir_fd=parent)
            except FileExistsError:
                continue
        raise RestoreError(f"cannot create a temporary file in {self.dest}: every name taken")

    def write_file(self, rel: tuple[str, ...], node: Node, chunks: Iterable[Chunk],
                   on_bytes: Callable[[int], None] | None = None) -> tuple[int, str | None]:
        """Write one file; (bytes written, None) when it is in place, or (0, why not) when
        a chunk arrived damaged: then no file is left. `chunks` is always consumed whole,
        so a caller's stream stays in step."""
        parent = self.dir_fd(rel[:-1])
        tmp, fd = self._create_tmp(parent)
        error: str | None = None
        written = end = 0
        try:
            for data in chunks:
                if error is not None:
                    continue
                if not isinstance(data, bytes):
                    error = str(data)
                    continue
                end = write_sparse(fd, data, written)
                written += len(data)
                if on_bytes:
                    on_bytes(len(data))
            if error is None:
                if end < written:
                    os.ftruncate(fd, written)  # the size, as the file ends in a hole
                self.apply_meta_fd(fd, node, "/".join(rel))
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=parent)
            raise
        os.close(fd)
        if error is not None:
            os.unlink(tmp, dir_fd=parent)
            return 0, error
        try:
            os.rename(tmp, rel[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except IsADirectoryError:
            os.unlink(tmp, dir_fd=parent)
            raise RestoreError(
                f"{self.where(rel)} is a directory in the destination but a file in the "
                "snapshot", hint="remove it, or restore into an empty directory") from None
        return written, None

    def apply_meta_fd(self, fd: int, n: Node, path: str) -> None:
        if self.restore_owner:
            try:
                os.fchown(fd, n.get("uid", -1), n.get("gid", -1))
            except OSError as e:
                self.note("warning", f"{path}: cannot restore owner: {e.strerror}")
        os.fchmod(fd, n.get("mode", 0o644))
        for k, v in (n.get("xattrs") or {}).items():
            try:
                os.setxattr(fd, k, base64.b64decode(v))
            except OSError as e:
                self.note("debug", f"{path}: xattr {k} not restored: {e.strerror}")
        if "mtime_ns" in n:
            os.utime(fd, ns=(n["mtime_ns"], n["mtime_ns"]))


# --- the writer processes ------------------------------------------------------------------


@dataclass
class BatchResult:
    files: int = 0
    bytes_written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    # what ended the writer: ("os", errno, strerror, filename) or ("restore", message, hint)
    # or ("crash", text)
    error: tuple[Any, ...] | None = None

    def wire(self) -> tuple[Any, ...]:
        """Plain values only: the writer runs this module as __main__, whose classes the
        restoring process could not unpickle."""
        return (self.files, self.bytes_written, self.failed, self.notes, self.error)


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, protocol=5)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int) -> Any:
    """The next frame's object, or None at the end of the stream."""
    head = _read_exact(fd, _FRAME.size)
    if head is None:
        return None
    body = _read_exact(fd, _FRAME.unpack(head)[0])
    if body is None:
        raise EOFError("the stream ended inside a frame")
    return pickle.loads(body)


def _read_exact(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            if got == 0:
                return None
            raise EOFError("the stream ended inside a frame")
        got += k
    return buf


def _grow_pipe(fd: int) -> None:
    """Fewer, larger reads and writes per batch (Linux; elsewhere the default stays)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


def _serve(root_fd: int, dest: str, restore_owner: bool) -> int:
    """A writer process: batches in on stdin, one BatchResult per batch out on stdout. The
    end of stdin (the restoring process done, failed or killed) ends it."""
    result = BatchResult()
    sink = FileSink(root_fd, dest, restore_owner,
                    lambda level, msg: result.notes.append((level, msg)))
    try:
        while True:
            batch = _recv(0)
            if batch is None:
                return 0
            result = BatchResult()
            try:
                for rel, node, chunks in batch:
                    written, error = sink.write_file(rel, node, chunks)
                    if error is None:
                        result.files += 1
                        result.bytes_written += written
                    else:
                        result.failed.append(("/".join(rel), error))
            except RestoreError as e:
                result.error = ("restore", e.message, e.hint)
            except OSError as e:
                result.error = ("os", e.errno, e.strerror, e.filename)
            _send(1, result.wire())
            if result.error is not None:
                return 1
    except BrokenPipeError:
        return 0  # the restoring process is gone: nobody to answer
    except Exception as e:  # told to the restoring process, which reports it
        result.error = ("crash", f"{type(e).__name__}: {e}")
        with contextlib.suppress(OSError):
            _send(1, result.wire())
        return 1
    finally:
        sink.close()


class _Writer:
    """One writer process, with a thread feeding it and a thread reading its answers."""

    def __init__(self, pool: WriterPool, root_fd: int, dest: str, restore_owner: bool) -> None:
        import subprocess

        self.pool = pool
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "restorer.sources.file_writes", str(root_fd), dest,
             "1" if restore_owner else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(root_fd,),
            close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out_fd = self.proc.stdin.fileno()
        self.in_fd = self.proc.stdout.fileno()
        _grow_pipe(self.out_fd)
        self.queue: deque[list[Any]] = deque()  # batches not sent yet
        self.sizes: deque[int] = deque()  # bytes of each batch sent and not yet answered
        self.inflight = 0
        self.closing = False
        self.dead = False
        self.feeder = threading.Thread(target=self._feed, name="restore-feed", daemon=True)
        self.reader = threading.Thread(target=self._read, name="restore-answers", daemon=True)
        self.feeder.start()
        self.reader.start()

    def _feed(self) -> None:
        cond = self.pool.cond
        try:
            while True:
                with cond:
                    while not self.queue and not self.closing and self.pool.error is None:
                        cond.wait()
                    if not self.queue or self.pool.error is not None:
                        return
                    batch = self.queue.popleft()
                _send(self.out_fd, batch)
        except OSError:
            self.pool.ended(self, None)  # the process is gone
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]

    def _read(self) -> None:
        try:
            while True:
                res = _recv(self.in_fd)
                if res is None:
                    break
                self.pool.answered(self, BatchResult(*res))
        except Exception as e:  # a garbled answer: the run must fail, not hang
            with self.pool.cond:
                if self.pool.error is None:
                    self.pool.error = ("crash", f"unreadable answer ({type(e).__name__}: {e})")
            self.proc.kill()
        self.pool.ended(self, self.proc.wait())


class WriterPool:
    """Writer processes taking batches of small files, at most `max_bytes` of file data
    waiting at once (the restoring process blocks beyond that)."""

    def __init__(self, root_fd: int, dest: str, restore_owner: bool, processes: int,
                 on_result: Callable[[BatchResult], None], max_bytes: int = 16 << 20) -> None:
        self.cond = threading.Condition()
        self.error: tuple[Any, ...] | None = None
        self.max_bytes = max_bytes
        self.on_result = on_result
        self.writers = [_Writer(self, root_fd, dest, restore_owner) for _ in range(processes)]

    def submit(self, batch: list[tuple[tuple[str, ...], Node, list[Chunk]]],
               nbytes: int) -> None:
        with self.cond:
            while self.error is None and sum(w.inflight for w in self.writers) > self.max_bytes:
                self.cond.wait()
            self._raise_error()
            w = min(self.writers, key=lambda w: (w.dead, w.inflight))
            w.queue.append(batch)
            w.sizes.append(nbytes)
            w.inflight += nbytes
            self._check_unanswered(w, None)
            self.cond.notify_all()

    def answered(self, w: _Writer, res: BatchResult) -> None:
        with self.cond:
            if w.sizes:
                w.inflight -= w.sizes.popleft()
            if res.error is not None and self.error is None:
                self.error = res.error
            self.cond.notify_all()
        self.on_result(res)

    def ended(self, w: _Writer, code: int | None) -> None:
        """A writer process is gone: batches it had not answered are an error."""
        with self.cond:
            w.dead = True
            self._check_unanswered(w, code)
            self.cond.notify_all()

    def _check_unanswered(self, w: _Writer, code: int | None) -> None:
        if w.dead and w.sizes and self.error is None:
            how = f"with exit code {code}" if code is not None else "unexpectedly"
            self.error = ("crash", f"a writer process ended {how} before it wrote "
                          f"{len(w.sizes)} batch(es) of files")

    def finish(self) -> None:
        """Wait for every batch to be written; raises what stopped a writer."""
        self.close()
        self._raise_error()

    def close(self) -> None:
        """Stop feeding, let each process finish the batch in hand, and wait for it."""
        with self.cond:
            for w in self.writers:
                w.closing = True
            self.cond.notify_all()
        for w in self.writers:
            w.feeder.join()
            w.reader.join()
        with self.cond:
            for w in self.writers:
                self._check_unanswered(w, w.proc.returncode)

    def abort(self) -> None:
        """Drop what has not been sent and wait for the processes (a failure elsewhere)."""
        with self.cond:
            for w in self.writers:
                w.queue.clear()
        self.close()

    def _raise_error(self) -> None:
        e = self.error
        if e is None:
            return
        if e[0] == "os":
            raise OSError(e[1], e[2], e[3])
        if e[0] == "restore":
            raise RestoreError(e[1], hint=e[2])
        raise RestoreError(f"restore failed in a writer process: {e[1]}",
                           hint="run again with --debug; this is a bug if it repeats")


def _main(argv: list[str]) -> int:
    import signal

    # the restoring process decides when to stop (it closes our input); a Ctrl-C to the
    # whole process group must not leave a file half-written under its temporary name
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    root_fd, dest, owner = int(argv[0]), argv[1], argv[2] == "1"
    return _serve(root_fd, dest, owner)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
