"""Opening a plan's repository: backend, retry wrapper, password, lock."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from restorer.plan.load import LoadedPlan
from restorer.plan.models import parse_size
from restorer.repo.lock import RepoLock
from restorer.repo.repository import Repository
from restorer.storage import Backend, open_backend
from restorer.storage.retry import RetryingBackend, RetrySettings


def backend_for(lp: LoadedPlan) -> RetryingBackend:
    r = lp.plan.retry
    inner: Backend = open_backend(lp.plan.repository.url, lp.base_dir)
    return RetryingBackend(inner, RetrySettings(r.attempts, r.initial_delay, r.max_delay,
                                                r.max_time))


def password_for(lp: LoadedPlan) -> str | None:
    return lp.secret(lp.plan.repository.password, "repository.password")


def open_repository(lp: LoadedPlan) -> Repository:
    """The plan's repository, keys opened (nothing is written)."""
    password = password_for(lp)
    return Repository.open(backend_for(lp), password)


def init_repository(lp: LoadedPlan) -> Repository:
    return Repository.init(backend_for(lp), password_for(lp),
                           parse_size(lp.plan.repository.pack_size))


@contextmanager
def locked(repo: Repository, exclusive: bool, wait: float = 0.0) -> Iterator[RepoLock]:
    cmd = " ".join(sys.argv[1:3]) if sys.argv else "restorer"
    lock = RepoLock(repo.backend, exclusive, f"restorer {cmd}".strip())
    lock.acquire(wait)
    try:
        yield lock
    finally:
        lock.release()
