"""A lock holder finds out when its lock is no longer its own: taken over while it was
stopped, or not refreshed for longer than the stale age."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from restorer.errors import LockLostError, StorageError
from restorer.repo import lock as lockmod
from restorer.repo.lock import RepoLock
from restorer.storage.local import LocalBackend


def _held(tmp_path: Path) -> tuple[LocalBackend, RepoLock]:
    b = LocalBackend(tmp_path / "repo")
    lk = RepoLock(b, exclusive=False, command="restorer backup test")
    lk.acquire()
    return b, lk


def test_check_passes_while_held_and_fails_once_the_lock_file_is_removed(
        tmp_path: Path) -> None:
    b, lk = _held(tmp_path)
    try:
        lk.check()
        assert lk.name is not None
        b.delete(lk.name)  # what a process taking it over as stale does
        with pytest.raises(LockLostError, match="removed by another process"):
            lk.check()
        with pytest.raises(LockLostError):  # and it stays lost
            lk.check()
    finally:
        lk.release()


def test_refresh_notices_a_takeover_and_does_not_write_a_new_lock(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lockmod, "REFRESH_EVERY", 0.05)
    b, lk = _held(tmp_path)
    try:
        assert lk.name is not None
        b.delete(lk.name)
        time.sleep(0.5)
        assert b.list("locks/") == []  # no fresh lock under a new name
        with pytest.raises(LockLostError):
            lk.check()
    finally:
        lk.release()


def test_refresh_failing_past_the_stale_age_loses_the_lock(tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(lockmod, "REFRESH_EVERY", 0.05)
    monkeypatch.setattr(lockmod, "STALE_AFTER", 0.3)
    b, lk = _held(tmp_path)

    def refuse(name: str, data: bytes) -> None:
        raise StorageError("the store is unreachable")

    monkeypatch.setattr(b, "write", refuse)
    try:
        time.sleep(0.6)
        with pytest.raises(LockLostError, match="last refreshed"):
            lk.check()
    finally:
        lk.release()
