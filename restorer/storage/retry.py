"""One retry layer around any backend (tenacity): backoff with jitter, capped attempts and time.

Only errors the backend does not call permanent are retried; each retry is logged with the
operation, the attempt and the delay, and counted so a run can report it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from restorer.errors import AlreadyExistsError, NotFoundError, StorageError
from restorer.storage.base import Backend, ObjectInfo, Protection

log = logging.getLogger("restorer.storage")
T = TypeVar("T")


@dataclass(frozen=True)
class RetrySettings:
    """A retry policy (the plan's `retry:`), for storage operations and AWS calls alike."""

    attempts: int = 6
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_time: float = 900.0


class RetryingBackend(Backend):
    """Wraps `inner`; retries transient failures of every operation."""

    def __init__(self, inner: Backend, settings: RetrySettings | None = None) -> None:
        self.inner = inner
        self.settings = settings or RetrySettings()
        self.location = inner.location
        self.parallel_reads = inner.parallel_reads
        self.read_span, self.read_gap = inner.read_span, inner.read_gap
        self.retries = 0
        inner.request_retry = lambda op, name, fn: self._call(op, name, fn)

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, NotFoundError | AlreadyExistsError):
            return False
        return not self.inner.is_permanent(exc)

    def _call(self, op: str, name: str, fn: Any, *args: Any) -> Any:
        # the common case costs one call; tenacity's machinery only once something failed
        try:
            return fn(*args)
        except Exception as e:
            if not self._transient(e):
                if isinstance(e, StorageError):
                    raise
                raise StorageError(f"{self.location}: {op} {name} failed: {e}") from e
            first_error = e
        return self._retry(op, name, fn, args, first_error)

    def _retry(self, op: str, name: str, fn: Any, args: tuple, first: Exception) -> Any:
        s = self.settings
        self.retries += 1
        log.warning("retrying %s %s: attempt 1 of %d failed (%s); next try in %.1fs",
                    op, name, s.attempts, first, s.initial_delay)
        if s.attempts <= 1:
            raise first
        time.sleep(s.initial_delay)

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "retrying %s %s: attempt %d of %d failed (%s); next try in %.1fs",
                op, name, state.attempt_number + 1, s.attempts, exc, delay,
            )

        retrying = Retrying(
            retry=retry_if_exception(self._transient),
            stop=stop_after_attempt(s.attempts - 1) | stop_after_delay(s.max_time),
            wait=wait_exponential_jitter(initial=s.initial_delay, max=s.max_delay),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn, *args)
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"{self.location}: {op} {name} failed: {e}") from e

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._call("list", prefix, self.inner.list, prefix)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call("read", name, self.inner.read, name, offset, length)

    def write(self, name: str, data: bytes | memoryview) -> None:
        # `data` is an in-memory buffer, so a retried upload sends it again from its start.
        return self._call("write", name, self.inner.write, name, data)

    def delete(self, name: str) -> None:
        return self._call("delete", name, self.inner.delete, name)

    def stat(self, name: str) -> int:
        return self._call("stat", name, self.inner.stat, name)

    def every_version(self, prefix: str,
                      max_size: int = 1 << 20) -> list[tuple[str, bool, bytes | None]]:
        return self._call("list every version of", prefix, self.inner.every_version, prefix,
                          max_size)

    def protection(self, name: str) -> Protection | None:
        return self._call("read the protection of", name, self.inner.protection, name)

    def is_permanent(self, exc: BaseException) -> bool:
        return self.inner.is_permanent(exc)

    def close(self) -> None:
        self.inner.close()
