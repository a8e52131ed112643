"""Repository locks: small write-once files naming host, pid and time.

A lock is stale when its process is dead on this host, or when it has not been refreshed
within STALE_AFTER (the holder refreshes every REFRESH_EVERY); stale locks are removed with a
warning. Exclusive locks conflict with every other lock; shared locks only with exclusive ones.
Lock times are read from restorer's clock (RESTORER_NOW in drills), the same clock as every
other record.

A holder can lose its lock without knowing: stopped (SIGSTOP, a suspended VM) past
STALE_AFTER, another process takes it over as stale and prunes the data the holder dedups
against. So a writer calls `check()` right before it writes an index or a snapshot: the lock
file it last wrote (its name is random, never reused) must still be there, and its last
successful refresh must be younger than STALE_AFTER; otherwise LockLostError, and nothing is
committed (restic #2715).
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from restorer import clock
from restorer.errors import (
    IntegrityError,
    LockError,
    LockLostError,
    NotFoundError,
    StorageError,
)
from restorer.pids import pid_alive
from restorer.repo import schema
from restorer.storage.base import Backend

log = logging.getLogger("restorer.lock")
REFRESH_EVERY = 300.0
STALE_AFTER = 1800.0


@dataclass(frozen=True)
class LockInfo:
    name: str
    host: str
    pid: int
    exclusive: bool
    time: float
    command: str

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        kind = "exclusive" if self.exclusive else "shared"
        return f"{kind} lock held by pid {self.pid} on {self.host} ({self.command}) since {when}"


def is_stale(lock: LockInfo, now: float | None = None) -> bool:
    now = clock.timestamp() if now is None else now
    if lock.host == socket.gethostname() and not pid_alive(lock.pid):
        return True
    return now - lock.time > STALE_AFTER


def read_locks(backend: Backend) -> list[LockInfo]:
    out = []
    for obj in backend.list("locks/"):
        try:
            d = schema.fields(schema.load_json(backend.read(obj.name), obj.name), schema.LOCK,
                              obj.name)
            out.append(LockInfo(obj.name, d["host"], d["pid"], d["exclusive"],
                                float(d["time"]), d.get("command", "")))
        except NotFoundError:
            continue
        except IntegrityError:
            # a lock we cannot parse: written by a crashed run mid-way is impossible
            # (writes are atomic), so it is foreign; report it rather than ignore it
            out.append(LockInfo(obj.name, "?", 0, True, 0.0, "unreadable lock file"))
    return out


class RepoLock:
    """Held while a command works on a repository; refreshed in the background."""

    def __init__(self, backend: Backend, exclusive: bool, command: str) -> None:
        self.backend = backend
        self.exclusive = exclusive
        self.command = command
        self.name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.waited = 0.0
        self.lost: str | None = None  # why the lock is no longer ours, once it is not
        self._refreshed = 0.0  # time.monotonic() of the last successful write of our lock
        self._guard = threading.Lock()  # one refresh or check at a time

    def _write(self) -> str:
        name = f"locks/{secrets.token_hex(16)}"
        body = json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), "exclusive": self.exclusive,
            "time": clock.timestamp(), "command": self.command,
        }).encode()
        t0 = time.monotonic()
        self.backend.write(name, body)
        self._refreshed = t0
        return name

    def _conflicts(self) -> list[LockInfo]:
        for _ in range(3):
            out: list[LockInfo] = []
            removed = False
            for lk in read_locks(self.backend):
                if lk.name == self.name:
                    continue
                if is_stale(lk):
                    log.warning("removing stale lock %s: %s", lk.name, lk.describe())
                    self.backend.delete(lk.name)
                    removed = True
                    continue
                if self.exclusive or lk.exclusive:
                    out.append(lk)
            if not removed:
                return out
            # read again: a holder that was only slow refreshes under a new name, which
            # this listing must see before we go on (see _refresh)
        return out

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for holders to finish; else LockError."""
        start = time.monotonic()
        delay = 0.2
        while True:
            self.name = self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self.backend.delete(self.name)
            self.name = None
            if time.monotonic() - start >= wait:
                holder = conflicts[0]
                raise LockError(
                    f"repository {self.backend.location} is locked: {holder.describe()}",
                    hint="wait for that run to finish (or pass --lock-wait), or if it is gone, "
                    f"remove the lock with `restorer unlock PLAN` (lock file {holder.name})",
                )
            # jitter keeps two waiting runs from colliding again and again
            left = max(0.0, wait - (time.monotonic() - start))
            time.sleep(min(delay * random.uniform(0.5, 1.5), left))
            delay = min(delay * 2, 5.0)
        self.waited = time.monotonic() - start
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            with self._guard:
                if self.lost or self._too_old():
                    return
                try:
                    new = self._write()
                except StorageError as e:
                    log.warning("could not refresh the repository lock: %s", e)
                    continue
                # the old lock is checked after the new one exists: a process taking it
                # over either saw the new one (it re-reads after removing stale locks) or
                # removed the old one before this check, which then tells
                old, self.name = self.name, new
                try:
                    if old and not self._exists(old):
                        self.backend.delete(new)
                        self.name = None
                        return
                    if old:
                        self.backend.delete(old)
                except StorageError as e:
                    log.warning("could not refresh the repository lock: %s", e)

    def _too_old(self) -> bool:
        age = time.monotonic() - self._refreshed
        if age > STALE_AFTER:
            self.lost = (f"the lock was last refreshed {age:.0f} s ago, past the "
                         f"{STALE_AFTER:.0f} s after which other runs take it over as stale")
        return self.lost is not None

    def _exists(self, name: str) -> bool:
        if self.backend.exists(name):
            return True
        self.lost = (f"its lock file {name} was removed by another process (taken over as "
                     "stale while this run was stopped or cut off)")
        return False

    def _still_mine(self) -> bool:
        """Whether nobody can have taken the lock over; sets `lost` when not."""
        return not self._too_old() and (self.name is None or self._exists(self.name))

    def check(self) -> None:
        """Raise LockLostError unless this run still holds its lock (see the module doc)."""
        with self._guard:
            if self.name is None and self.lost is None:
                return  # not acquired: nothing to lose
            if self.lost is None:
                try:
                    self._still_mine()
                except StorageError as e:
                    self.lost = f"its lock file cannot be checked: {e.message}"
            if self.lost:
                raise LockLostError(
                    f"this run lost the repository lock of {self.backend.location}: "
                    f"{self.lost}; another run may have pruned data this one relies on, so "
                    "nothing was committed",
                    hint="run the command again; `restorer check PLAN` shows the repository "
                    "is intact")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.name:
            try:
                self.backend.delete(self.name)
            except StorageError as e:
                log.warning("could not remove the repository lock %s: %s", self.name, e)
            self.name = None

    def __enter__(self) -> RepoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
