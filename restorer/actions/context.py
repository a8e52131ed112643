"""Opening a plan's repository: backend, retry wrapper, password, lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from restorer.errors import PlanError, StorageError
from restorer.plan.load import LoadedPlan
from restorer.plan.models import parse_size
from restorer.repo.lock import RepoLock
from restorer.repo.repository import Repository
from restorer.storage import Backend, open_backend
from restorer.storage.retry import RetryingBackend, RetrySettings
from restorer.targets.base import TargetContext


def backend_options(lp: LoadedPlan) -> dict[str, Any]:
    """The repository's backend settings with secrets resolved (never logged)."""
    rc = lp.plan.repository
    opts: dict[str, Any] = {
        "region": rc.region, "endpoint_url": rc.endpoint_url, "profile": rc.profile,
        "storage_class": rc.storage_class, "sse": rc.sse, "kms_key_id": rc.kms_key_id,
        "object_lock_days": rc.object_lock_days, "timeout": rc.request_timeout,
    }
    if rc.ssh is not None:
        opts.update(
            port=rc.ssh.port, user=rc.ssh.user,
            key_file=str(lp.resolve_path(rc.ssh.key_file)) if rc.ssh.key_file else None,
            key_passphrase=lp.secret(rc.ssh.key_passphrase, "repository.ssh.key_passphrase"),
            known_hosts=str(lp.resolve_path(rc.ssh.known_hosts)) if rc.ssh.known_hosts
            else None,
            accept_new_host_key=rc.ssh.accept_new_host_key,
            connect_timeout=rc.ssh.connect_timeout,
        )
    return opts


def retry_of(lp: LoadedPlan) -> RetrySettings:
    """The plan's retry policy."""
    r = lp.plan.retry
    return RetrySettings(r.attempts, r.initial_delay, r.max_delay, r.max_time)


def backend_for(lp: LoadedPlan) -> RetryingBackend:
    inner: Backend = open_backend(lp.plan.repository.url, lp.base_dir, backend_options(lp))
    return RetryingBackend(inner, retry_of(lp))


def target_context(lp: LoadedPlan) -> TargetContext:
    """The narrow view of the plan that kind code gets."""
    return TargetContext(lp.name, lp.path, retry_of(lp),
                         lp.plan.rollback.terminate_connections)


def password_for(lp: LoadedPlan) -> str | None:
    pw = lp.secret(lp.plan.repository.password, "repository.password")
    if pw is not None and not pw.strip():
        # an empty password would make an "encrypted" repository anyone can open
        raise PlanError(f"{lp.path}: repository.password resolves to an empty value",
                        hint="set the variable or file it refers to to a real password")
    return pw


def open_repository(lp: LoadedPlan) -> Repository:
    """The plan's repository, keys opened (nothing is written)."""
    password = password_for(lp)
    return Repository.open(backend_for(lp), password)


def init_repository(lp: LoadedPlan) -> Repository:
    return Repository.init(backend_for(lp), password_for(lp),
                           parse_size(lp.plan.repository.pack_size))


@contextmanager
def locked(repo: Repository, exclusive: bool, wait: float = 0.0, *, label: str,
           offer_no_lock: bool = False) -> Iterator[RepoLock]:
    """Hold the repository's lock; `label` says who holds it (`restorer backup PLAN`) to
    whoever finds it taken; `offer_no_lock` for a reader that could go without it, whose
    failure to write its lock then says so."""
    lock = RepoLock(repo.backend, exclusive, label)
    try:
        lock.acquire(wait)
    except StorageError as e:
        if not offer_no_lock:
            raise
        raise StorageError(
            f"cannot take a lock in the repository: {e.message}",
            hint="if the repository is read-only (a read-only mount, WORM storage, credentials "
            "that may only read), restore and check can read it without a lock: pass "
            "--no-lock (then nothing may prune it meanwhile)") from None
    outer, repo.lock_guard = repo.lock_guard, lock.check
    try:
        yield lock
    finally:
        repo.lock_guard = outer
        lock.release()


@contextmanager
def reading(repo: Repository, wait: float = 0.0, no_lock: bool = False, *,
            label: str) -> Iterator[None]:
    """A reader's shared lock, or with `no_lock` none at all: a read-only repository cannot
    hold a lock file, and a reader without one risks only that a prune running meanwhile
    removes data it is reading (an error, never a wrong byte: every blob is verified)."""
    if no_lock:
        yield
        return
    with locked(repo, exclusive=False, wait=wait, label=label, offer_no_lock=True):
        yield
