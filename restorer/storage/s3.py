"""A repository in S3 or an S3-compatible store (boto3).

botocore's own retries are turned off: the RetryingBackend around every backend is the one
place that retries, so attempts never multiply. Objects appear only when complete (a single
PUT, or a multipart upload that is completed last and aborted on failure), which is what
"write-once, all or nothing" needs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from restorer.errors import AlreadyExistsError, NotFoundError, StorageError
from restorer.storage.base import Backend, ObjectInfo, Protection

log = logging.getLogger("restorer.storage.s3")

PART_SIZE = 8 << 20
MULTIPART_ABOVE = 16 << 20
_PERMANENT_CODES = {
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "NoSuchBucket", "InvalidBucketName", "AuthorizationHeaderMalformed", "InvalidRequest",
    "InvalidArgument", "KMS.NotFoundException", "KMS.DisabledException", "AccountProblem",
    "InvalidObjectState", "MethodNotAllowed", "NotImplemented", "PreconditionFailed",
    "ExpiredToken", "InvalidToken", "NoSuchKey", "404", "403", "400",
}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded",
    "OperationAborted",
}


def _code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return None


class _GaveUp(StorageError):
    """A multi-request operation whose requests were each retried to the limit."""


class S3Backend(Backend):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        storage_class: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        object_lock_days: int | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.storage_class = storage_class
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.object_lock_days = object_lock_days
        # a request costs a round trip and the store's own work: fewer, longer ones,
        # overlapped (within max_pool_connections below)
        self.parallel_reads, self.read_span, self.read_gap = 4, 8 << 20, 1 << 20
        session = boto3.session.Session(profile_name=profile, region_name=region)
        self.client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                # total_max_attempts counts the first call: botocore itself never retries
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=16,
            ),
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _raise(self, op: str, name: str, exc: Exception) -> None:
        code = _code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise NotFoundError(f"{self.location}: {name} does not exist") from exc
        if code in ("NoSuchBucket",):
            raise StorageError(
                f"{self.location}: bucket {self.bucket} does not exist ({op} {name})",
                hint="check repository.url in the plan, or create the bucket",
            ) from exc
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(
                f"{self.location}: access denied ({code}) on {op} {name}",
                hint="check the AWS credentials (environment, profile or instance role) and "
                "the bucket policy",
            ) from exc
        raise StorageError(f"{self.location}: {op} {name} failed: {code or type(exc).__name__}: "
                           f"{exc}") from exc

    # --- Backend ------------------------------------------------------------------------

    def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", ()):
                    out.append(ObjectInfo(obj["Key"][strip:], int(obj["Size"])))
        except Exception as e:
            self._raise("list", prefix, e)
        return out

    def every_version(self, prefix: str,
                      max_size: int = 1 << 20) -> list[tuple[str, bool, bytes | None]]:
        """Every version under `prefix`, those behind a delete marker or a newer version
        included (a plain DELETE on a versioned, Object-Locked bucket only hides them). A
        store or a policy without ListObjectVersions gets the current objects instead."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        versions: list[dict[str, Any]] = []
        hidden: set[str] = set()  # keys whose latest entry is a delete marker
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                versions += page.get("Versions", ())
                hidden |= {m["Key"] for m in page.get("DeleteMarkers", ()) if m.get("IsLatest")}
        except Exception as e:
            if _code(e) not in ("AccessDenied", "NotImplemented", "MethodNotAllowed",
                                "XNotImplemented"):
                self._raise("list every version of", prefix, e)
            log.warning("%s: cannot list object versions (%s); reading the current objects "
                        "only", self.location, _code(e))
            return super().every_version(prefix, max_size)
        out: list[tuple[str, bool, bytes | None]] = []
        for ver in versions:
            name = ver["Key"][strip:]
            gone = ver["Key"] in hidden or not ver.get("IsLatest", True)
            if int(ver.get("Size", 0)) > max_size:
                out.append((name, gone, None))
                continue
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=ver["Key"],
                                              VersionId=ver["VersionId"])
                body = resp["Body"]
                try:
                    out.append((name, gone, body.read()))
                finally:
                    body.close()
            except Exception as e:
                if _code(e) in ("NoSuchVersion", "NoSuchKey"):
                    continue  # removed since it was listed (its retention had ended)
                self._raise("read", name, e)
        return out

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self.client.get_object(**kw)
            body = resp["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except Exception as e:
            if _code(e) == "InvalidRange":
                return b""
            self._raise("read", name, e)
            raise  # unreachable

    def stat(self, name: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket,
                                               Key=self._key(name))["ContentLength"])
        except Exception as e:
            self._raise("stat", name, e)
            raise

    def protection(self, name: str) -> Protection | None:
        """Object Lock and encryption as the stored object has them (HeadObject returns
        the fields GetObjectRetention does, under the same permission)."""
        key = self._key(name)
        try:
            head = self.request("read the protection of", name, lambda: self._named(
                "stat", name, lambda: self.client.head_object(Bucket=self.bucket, Key=key)))
        except Exception as e:
            self._raise("stat", name, e)
            raise
        until = head.get("ObjectLockRetainUntilDate")
        return Protection(head.get("ObjectLockMode"),
                          until.astimezone(UTC).isoformat(timespec="seconds") if until else None,
                          head.get("ServerSideEncryption"))

    def _put_args(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.storage_class:
            kw["StorageClass"] = self.storage_class
        if self.sse:
            kw["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                kw["SSEKMSKeyId"] = self.kms_key_id
        if self.object_lock_days:
            kw["ObjectLockMode"] = "GOVERNANCE"
            kw["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.object_lock_days)
        return kw

    def write(self, name: str, data: bytes | memoryview) -> None:
        """A check that the name is free, then one PUT or a multipart upload; each request
        retried on its own by the retry layer (so one flaky request never costs the
        others), and a write that failed after that is not retried as a whole."""
        key = self._key(name)
        try:
            if not name.startswith("locks/") and self.request(
                    "check before write", name, lambda: self._exists(key)):
                raise AlreadyExistsError(f"{self.location}: {name} already exists")
            kw = self._put_args()
            if name.startswith("locks/"):
                kw.pop("ObjectLockMode", None)
                kw.pop("ObjectLockRetainUntilDate", None)
                kw.pop("StorageClass", None)
            if len(data) > MULTIPART_ABOVE:
                self._multipart(key, data, kw)
            else:
                body = bytes(data)
                self.request("write", name, lambda: self._named("write", name, lambda: (
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **kw))))
        except (AlreadyExistsError, _GaveUp):
            raise
        except Exception as e:
            if self.request_retry is None:
                self._raise("write", name, e)
            if isinstance(e, StorageError):
                raise _GaveUp(e.message, e.hint) from e
            raise _GaveUp(f"{self.location}: write {name} failed: {e}") from e

    def _named(self, op: str, name: str, fn: Any) -> Any:
        """`fn()`, its failure said the way a person needs it (which bucket, what to do)."""
        try:
            return fn()
        except Exception as e:
            self._raise(op, name, e)

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _multipart(self, key: str, data: bytes | memoryview, kw: dict[str, Any]) -> None:
        """Create, parts, complete: each request retried on its own (a pack of many parts
        would rarely get all of them through in one go on a flaky link), parts already
        uploaded kept; the upload is aborted only when giving up."""
        view = memoryview(data)
        b, name = self.bucket, key
        up = self.request("create multipart upload", name, lambda: self.client
                          .create_multipart_upload(Bucket=b, Key=key, **kw))
        uid = up["UploadId"]
        try:
            parts = []
            count = math.ceil(len(view) / PART_SIZE)
            for i in range(count):
                body = bytes(view[i * PART_SIZE:(i + 1) * PART_SIZE])
                r = self.request(f"upload part {i + 1} of {count} of", name,
                                 lambda body=body, n=i + 1: self.client.upload_part(
                                     Bucket=b, Key=key, UploadId=uid, PartNumber=n,
                                     Body=body))
                parts.append({"ETag": r["ETag"], "PartNumber": i + 1})
            self.request("complete multipart upload", name,
                         lambda: self._complete(key, uid, parts, len(view)))
        except BaseException:
            # nothing becomes visible: the parts are discarded with the upload
            try:
                self.request("abort multipart upload", name, lambda: self.client
                             .abort_multipart_upload(Bucket=b, Key=key, UploadId=uid))
            except Exception as ae:  # best effort; a lifecycle rule cleans up the rest
                log.warning("could not abort multipart upload of %s: %s", key, ae)
            raise

    def _complete(self, key: str, uid: str, parts: list[dict[str, Any]], size: int) -> None:
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
        except Exception as e:
            # a retried complete whose first try went through (its answer was lost) finds
            # the upload gone and the object in place
            if _code(e) == "NoSuchUpload":
                with contextlib.suppress(Exception):
                    head = self.client.head_object(Bucket=self.bucket, Key=key)
                    if int(head["ContentLength"]) == size:
                        return
            raise

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as e:
            if _code(e) in ("404", "NoSuchKey"):
                return
            self._raise("delete", name, e)

    def is_permanent(self, exc: BaseException) -> bool:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import ProtocolError

        cause: BaseException | None = exc
        seen: set[int] = set()
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, NotFoundError | AlreadyExistsError | _GaveUp):
                return True
            if isinstance(cause, EndpointConnectionError | ConnectionClosedError
                          | ReadTimeoutError | ConnectTimeoutError | ProtocolError
                          | IncompleteReadError
                          # a body cut off after its headers (a reset mid-download): botocore
                          # wraps urllib3's error without chaining it as the cause
                          | ResponseStreamingError
                          | ConnectionError | TimeoutError):
                return False
            code = _code(cause)
            if code in _TRANSIENT_CODES:
                return False
            if code in _PERMANENT_CODES:
                return True
            if code is not None and code.isdigit() and int(code) >= 500:
                return False
            cause = cause.__cause__
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
