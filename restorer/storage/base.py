"""The byte-store interface every repository backend implements: names and bytes, nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # path relative to the store root, '/'-separated, e.g. 'data/ab/ab12...'
    size: int


@dataclass(frozen=True)
class Protection:
    """How the store itself protects one object, as read back from it."""

    lock_mode: str | None = None  # S3 Object Lock: GOVERNANCE or COMPLIANCE
    retain_until: str | None = None  # ISO time the object may not be deleted before
    encryption: str | None = None  # server-side: AES256, aws:kms


class Backend(ABC):
    """A flat store of write-once objects addressed by '/'-separated names."""

    #: where the store is, for messages (never contains credentials)
    location: str = ""
    #: set by the retry layer around this backend: retries one request of an operation made
    #: of several (each part of a multipart upload), so the parts already sent are kept
    request_retry: Callable[[str, str, Callable[[], Any]], Any] | None = None
    #: reads a restore keeps in flight: a local disk answers at once, a remote store after
    #: a round trip that only overlapping requests hide
    parallel_reads: int = 2
    #: how far one read may span (stored bytes), and the unneeded bytes it may read over
    read_span: int = 2 << 20
    read_gap: int = 64 << 10

    def request(self, op: str, name: str, fn: Callable[[], Any]) -> Any:
        """`fn()` (one request), retried by the retry layer when there is one."""
        return self.request_retry(op, name, fn) if self.request_retry else fn()

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every complete object whose name starts with `prefix` (a folder such as 'snapshots/')."""

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of `name` from `offset`, `length` of them (all the rest when None)."""

    @abstractmethod
    def write(self, name: str, data: bytes | memoryview) -> None:
        """Store `data` under `name` atomically: readers see all of it or nothing.

        Raises AlreadyExistsError when `name` exists: objects are written once.
        """

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove `name`; removing a missing object is not an error."""

    @abstractmethod
    def stat(self, name: str) -> int:
        """Size of `name` in bytes; NotFoundError when it does not exist."""

    def exists(self, name: str) -> bool:
        from restorer.errors import NotFoundError

        try:
            self.stat(name)
        except NotFoundError:
            return False
        return True

    def every_version(self, prefix: str,
                      max_size: int = 1 << 20) -> list[tuple[str, bool, bytes | None]]:
        """(name, hidden, bytes) of every version the store still holds under `prefix`:
        on a versioned store also those a delete hid or a write replaced (`hidden`), which
        Object Lock keeps; elsewhere the objects there are. An object above `max_size` is
        not read (bytes None): a planted giant must not exhaust memory."""
        return [(o.name, False, self.read(o.name) if o.size <= max_size else None)
                for o in self.list(prefix)]

    def protection(self, name: str) -> Protection | None:
        """The store's own protection of `name` (None: this store has no such settings)."""
        return None

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether retrying the operation that raised `exc` cannot help."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
