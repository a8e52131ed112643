"""A problem found in a plan, and the comparisons several checks need (which database a
DSN reaches, whether a host is this machine)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, located as precisely as we can."""

    file: str
    key: str
    message: str
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.message}"
        if self.key:
            text = f"{where}: At '{self.key}': {self.message}"
        if self.hint:
            text += f" Hint: {self.hint}"
        return text


LOOPBACK = {"localhost", "127.0.0.1", "::1", "", None}
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}


def _database_identity(dsn: str) -> tuple[str, int | None, str] | None:
    """(host, port, database) a DSN reaches, with loopback spellings and default ports
    made equal; None when it is not a database URL."""
    u = urlsplit(dsn)
    if u.scheme not in _DEFAULT_PORTS:
        return None
    try:
        port = u.port or _DEFAULT_PORTS[u.scheme]
    except ValueError:
        return None
    host = "loopback" if u.hostname in LOOPBACK else (u.hostname or "")
    return host, port, unquote(u.path.strip("/"))


def server_of(dsn: str) -> tuple[str, int | None] | None:
    """(host, port) of the server a DSN reaches (loopback spellings made equal)."""
    i = _database_identity(dsn)
    return None if i is None else (i[0], i[1])


def same_database(a: str, b: str) -> bool:
    ia, ib = _database_identity(a), _database_identity(b)
    return ia is not None and ia == ib


def inside(path: Path, src: Path, ex: Any) -> bool:
    """Whether `path` is `src` or under it, and not excluded from its backups."""
    if not (path == src or path.is_relative_to(src)):
        return False
    rel = path.relative_to(src).parts
    return not any(ex.excluded("/".join(rel[: k + 1]), rel[k], True) for k in range(len(rel)))


def overlaps(a: str, b: str) -> bool:
    """Whether two POSIX paths are one, or one is under the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
