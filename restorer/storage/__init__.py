"""Byte stores under the repository: local folders, S3 and SFTP, behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restorer.errors import UsageError
from restorer.storage.base import Backend, ObjectInfo

__all__ = ["Backend", "ObjectInfo", "open_backend", "redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password in its user-info removed, fit for messages."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        userinfo, host = rest.split("@", 1)
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def open_backend(url: str, base_dir: Path, options: dict[str, Any] | None = None) -> Backend:
    """The backend for `url`: file:///abs, file://rel or a plain path (relative to base_dir),
    s3://BUCKET[/PREFIX], sftp://[USER@]HOST[:PORT]/PATH. `options` holds backend settings
    (S3: region, endpoint_url, profile, storage_class, sse, kms_key_id, object_lock_days;
    SFTP: port, user, key_file, key_passphrase, known_hosts, accept_new_host_key,
    connect_timeout), already resolved."""
    opts = dict(options or {})
    if "://" not in url:
        from restorer.storage.local import LocalBackend

        p = Path(url).expanduser()
        return LocalBackend(p if p.is_absolute() else base_dir / p)
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        from restorer.storage.local import LocalBackend

        p = Path(rest).expanduser()
        return LocalBackend(p if p.is_absolute() else base_dir / p)
    if scheme == "s3":
        from restorer.storage.s3 import S3Backend

        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UsageError(f"repository URL {url}: no bucket", hint="write s3://BUCKET/PREFIX")
        keys = ("region", "endpoint_url", "profile", "storage_class", "sse", "kms_key_id",
                "object_lock_days")
        kw = {k: opts[k] for k in keys if opts.get(k) is not None}
        if opts.get("timeout"):
            kw["read_timeout"] = kw["connect_timeout"] = float(opts["timeout"])
        return S3Backend(bucket, prefix, **kw)
    if scheme == "sftp":
        from restorer.storage.sftp import SFTPBackend

        netloc, slash, path = rest.partition("/")
        user, _at, hostport = netloc.rpartition("@")
        host, port = hostport, None
        if hostport.startswith("["):  # [::1]:2222
            host, _, tail = hostport[1:].partition("]")
            port = int(tail[1:]) if tail.startswith(":") else None
        elif hostport.count(":") == 1:
            host, _, p_ = hostport.partition(":")
            port = int(p_)
        if not host or not slash:
            raise UsageError(f"repository URL {redact_url(url)}: expected "
                             "sftp://USER@HOST[:PORT]/PATH")
        if ":" in user:
            raise UsageError(
                f"repository URL {redact_url(url)}: passwords do not belong in URLs",
                hint="use a key: repository.ssh.key_file (and key_passphrase: ${env:...})")
        keys = ("key_file", "key_passphrase", "known_hosts", "accept_new_host_key",
                "connect_timeout")
        kw = {k: opts[k] for k in keys if opts.get(k) is not None}
        if opts.get("timeout"):
            kw["request_timeout"] = float(opts["timeout"])
        return SFTPBackend(
            host, "/" + path, port=port or int(opts.get("port") or 22),
            user=user or opts.get("user"), **kw,
        )
    raise UsageError(f"repository URL {redact_url(url)}: unsupported scheme {scheme}://",
                     hint="use file://, s3:// or sftp://")
