"""restorer.repo.lock: which locks are stale, which conflict, and what acquiring does to them.

(tests/unit/test_lock.py covers a holder losing its lock.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from restorer import clock
from restorer.errors import LockError
from restorer.repo.lock import STALE_AFTER, LockInfo, RepoLock, is_stale, read_locks
from restorer.storage.local import LocalBackend

HOST = socket.gethostname()
NOW = 1_800_000_000.0


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])  # reaped at once: its pid names no process
    p.wait()
    return p.pid


def _info(host: str = HOST, pid: int | None = None, age: float = 0.0,
          exclusive: bool = False) -> LockInfo:
    return LockInfo("locks/x", host, os.getpid() if pid is None else pid, exclusive,
                    NOW - age, "restorer backup p")


def _put(backend: LocalBackend, name: str, host: str, pid: int, exclusive: bool,
         t: float, command: str = "restorer backup other") -> str:
    backend.write(f"locks/{name}", json.dumps({"host": host, "pid": pid,
                                               "exclusive": exclusive, "time": t,
                                               "command": command}).encode())
    return f"locks/{name}"


# --- staleness ------------------------------------------------------------------------------

def test_a_fresh_lock_of_a_live_process_is_not_stale() -> None:
    assert not is_stale(_info(), now=NOW)
    assert not is_stale(_info(age=STALE_AFTER - 5), now=NOW)


def test_a_lock_whose_process_died_on_this_host_is_stale_at_once() -> None:
    assert is_stale(_info(pid=_dead_pid()), now=NOW)


def test_another_hosts_lock_is_judged_by_age_alone() -> None:
    dead_here = _dead_pid()  # a pid that means nothing for another host
    assert not is_stale(_info(host="elsewhere", pid=dead_here, age=60), now=NOW)
    assert is_stale(_info(host="elsewhere", pid=dead_here, age=STALE_AFTER + 1), now=NOW)


def test_a_live_processs_lock_not_refreshed_past_the_limit_is_stale() -> None:
    assert is_stale(_info(age=STALE_AFTER + 1), now=NOW)


def test_staleness_uses_restorers_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORER_NOW", "2027-01-15T08:00:00Z")
    t = clock.timestamp()
    lock = LockInfo("locks/x", "elsewhere", 1, False, t - 60, "c")
    assert not is_stale(lock)
    monkeypatch.setenv("RESTORER_NOW", "2027-01-15T09:00:00Z")  # an hour later
    assert is_stale(lock)


def test_describe_names_kind_holder_command_and_time() -> None:
    text = LockInfo("locks/x", "db1", 4242, True, 0.0, "restorer prune p").describe()
    assert text == ("exclusive lock held by pid 4242 on db1 (restorer prune p) since "
                    "1970-01-01 00:00:00 UTC")


# --- reading --------------------------------------------------------------------------------

def test_read_locks_parses_lock_files_and_reports_unreadable_ones(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    good = _put(b, "a" * 32, "db1", 77, True, NOW)
    b.write("locks/" + "b" * 32, b"{not json")
    b.write("locks/" + "c" * 32, json.dumps({"host": "db1", "pid": "77"}).encode())
    locks = {lk.name: lk for lk in read_locks(b)}
    assert locks[good] == LockInfo(good, "db1", 77, True, NOW, "restorer backup other")
    for name in ("locks/" + "b" * 32, "locks/" + "c" * 32):
        # an unreadable lock is foreign and counts as exclusive: it blocks, it is not ignored
        assert locks[name].exclusive and locks[name].command == "unreadable lock file"


# --- acquiring ------------------------------------------------------------------------------

def test_shared_locks_coexist_and_exclusive_conflicts_with_them(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    with RepoLock(b, False, "restorer backup a") as one, \
            RepoLock(b, False, "restorer restore a") as two:
        one.acquire()
        two.acquire()
        assert len(b.list("locks/")) == 2
        ex = RepoLock(b, True, "restorer prune a")
        with pytest.raises(LockError, match=r"is locked: shared lock held by pid \d+ on "):
            ex.acquire()
        assert ex.name is None
        assert len(b.list("locks/")) == 2  # its own attempt was removed
    assert b.list("locks/") == []  # released on exit


def test_an_exclusive_lock_blocks_shared_ones_and_the_error_names_the_lock_file(
        tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    with RepoLock(b, True, "restorer prune a") as ex:
        ex.acquire()
        with pytest.raises(LockError) as e:
            RepoLock(b, False, "restorer backup a").acquire()
        assert "exclusive lock held by" in e.value.message
        assert "(restorer prune a)" in e.value.message
        assert ex.name in (e.value.hint or "")


def test_acquiring_removes_stale_locks_and_keeps_live_foreign_ones(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    dead = _put(b, "d" * 32, HOST, _dead_pid(), True, time.time())
    old = _put(b, "e" * 32, "elsewhere", 1, True, time.time() - STALE_AFTER - 60)
    with RepoLock(b, False, "restorer backup a") as lk:
        lk.acquire()
        names = {o.name for o in b.list("locks/")}
        assert dead not in names and old not in names
        assert names == {lk.name}
    live = _put(b, "f" * 32, "elsewhere", 1, True, time.time())
    with pytest.raises(LockError, match="exclusive lock held by pid 1 on elsewhere"):
        RepoLock(b, False, "restorer backup a").acquire()
    assert {o.name for o in b.list("locks/")} == {live}


def test_acquire_waits_for_a_holder_that_finishes(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    holder = RepoLock(b, True, "restorer prune a")
    holder.acquire()
    threading.Timer(0.15, holder.release).start()
    with RepoLock(b, True, "restorer prune b") as waiter:
        waiter.acquire(wait=5.0)
        assert waiter.waited >= 0.1
        assert [o.name for o in b.list("locks/")] == [waiter.name]


def test_a_lock_file_records_host_pid_kind_and_time(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    before = time.time()
    with RepoLock(b, True, "restorer check p") as lk:
        lk.acquire()
        (info,) = read_locks(b)
        assert info.name == lk.name
    assert (info.host, info.pid, info.exclusive, info.command) == \
        (HOST, os.getpid(), True, "restorer check p")
    assert before - 1 <= info.time <= time.time() + 1
