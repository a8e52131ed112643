"""AWS clients for cloud snapshot targets, with the plan's retry policy around every call.

botocore's own retries are turned off (total_max_attempts=1) so the two never multiply:
throttling, 5xx answers and dropped connections are retried here, with exponential backoff
and jitter, up to the plan's attempts and max_time; permanent errors (access denied, not
found, invalid parameters) fail at once. The endpoint comes from the standard AWS settings
(AWS_ENDPOINT_URL, profiles), credentials from the standard chain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from restorer.errors import SourceError
from restorer.storage.retry import RetrySettings

log = logging.getLogger("restorer.aws")

TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "SlowDown", "InternalError", "InternalFailure", "ServiceUnavailable",
    "Unavailable", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "SnapshotCreationPerVolumeRateExceeded", "IncorrectState", "InvalidDBInstanceState",
    "InvalidDBSnapshotState",
}


def is_transient(e: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(e, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return True
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_CODES or status >= 500 or status == 429
    return False


def error_code(e: BaseException) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(
        e, "response") else ""


class AWS:
    """boto3 clients per (service, region), each call retried by the plan's policy."""

    def __init__(self, retry: RetrySettings, what: str) -> None:
        self.retry = retry
        self.what = what
        self._clients: dict[tuple[str, str], Any] = {}
        self.calls: list[str] = []  # what was asked, for logs and dry runs

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            import boto3
            from botocore.config import Config

            cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                         connect_timeout=15, read_timeout=60)
            self._clients[key] = boto3.client(service, region_name=region, config=cfg)
        return self._clients[key]

    def call(self, service: str, region: str, op: str, **kw: Any) -> Any:
        fn: Callable[..., Any] = getattr(self.client(service, region), op)
        self.calls.append(f"{service}:{op} ({region})")
        r = self.retry
        attempt = {"n": 0}

        def before_sleep(state: Any) -> None:
            e = state.outcome.exception()
            log.warning("%s: %s %s in %s failed (%s); retrying (attempt %d of %d)", self.what,
                        service, op, region, error_code(e) or type(e).__name__,
                        state.attempt_number + 1, r.attempts)

        try:
            for a in Retrying(stop=stop_after_attempt(r.attempts) | stop_after_delay(r.max_time),
                              wait=wait_random_exponential(multiplier=r.initial_delay,
                                                           max=r.max_delay),
                              retry=retry_if_exception(is_transient), reraise=True,
                              before_sleep=before_sleep):
                with a:
                    attempt["n"] += 1
                    return fn(**kw)
        except Exception as e:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(e, ClientError | BotoCoreError):
                from botocore.exceptions import NoCredentialsError

                code = error_code(e)
                hint = _hint(code) or (
                    "give AWS credentials the standard way (AWS_PROFILE, environment, "
                    "instance role)" if isinstance(e, NoCredentialsError) else None)
                raise SourceError(
                    f"{self.what}: AWS {service} {op} in {region} failed"
                    + (f" after {attempt['n']} attempts" if attempt["n"] > 1 else "")
                    + f": {code + ': ' if code else ''}{_message(e)}", hint=hint) from None
            raise
        raise AssertionError("unreachable")

    def wait(self, what: str, check: Callable[[], str], ok: str, timeout: float,
             bad: tuple[str, ...] = ("error", "failed"),
             on_progress: Callable[[str], None] | None = None) -> None:
        """Poll `check` (returns a state) until it is `ok`; SourceError on a bad state or
        when `timeout` passes."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        last = ""
        while True:
            state = check()
            if state != last and on_progress:
                on_progress(state)
            last = state
            if state == ok:
                return
            if state in bad:
                raise SourceError(f"{self.what}: {what} ended in state '{state}'")
            if time.monotonic() > deadline:
                raise SourceError(f"{self.what}: {what} is still '{state}' after "
                                  f"{timeout:g}s", hint="raise wait_timeout in the plan")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _message(e: BaseException) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Message") or e)
    return str(e)


def _hint(code: str) -> str | None:
    if code in ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException"):
        return "the AWS credentials in use lack this permission; see the IAM policy in the README"
    if code.endswith("NotFound") or code.endswith("NotFoundFault"):
        return "check the id and region in the plan"
    return None


def tags(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in d.items()]


def tag_map(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}
