"""Byte stores under the repository: local now; S3 and SFTP slot in behind the same interface."""

from __future__ import annotations

from pathlib import Path

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


def open_backend(url: str, base_dir: Path) -> Backend:
    """The backend for `url`: file:///abs, file://rel, or a plain path (relative to base_dir)."""
    from restorer.storage.local import LocalBackend

    if "://" not in url:
        p = Path(url).expanduser()
        return LocalBackend(p if p.is_absolute() else base_dir / p)
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        p = Path(rest).expanduser()
        return LocalBackend(p if p.is_absolute() else base_dir / p)
    raise UsageError(
        f"repository URL {redact_url(url)}: the {scheme}:// backend is not available in this "
        "version",
        hint="use a file:// repository",
    )
