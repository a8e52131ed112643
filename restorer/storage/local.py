"""A repository on a local (or mounted) file system."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from restorer.errors import AlreadyExistsError, NotFoundError, StorageError
from restorer.storage.base import Backend, ObjectInfo

TMP_PREFIX = ".tmp-"


class LocalBackend(Backend):
    """Objects are files under `root`; a write goes to a temporary name, then is hard-linked
    into place, so a crash never leaves a partial file under a final name and an existing
    object is never replaced."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self._made_dirs: set[Path] = set()

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"invalid object name {name!r}")
        return self.root / name

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under `prefix`. A folder that does not exist holds nothing; any other
        error (a folder that cannot be read, an I/O error) raises: a listing that silently
        left something out would read as "not there" to prune, which then deletes."""
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        out: list[ObjectInfo] = []
        root = str(self.root)
        stack = [str(base)]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = list(it)
            except FileNotFoundError:
                if d == str(base):
                    return out  # nothing written there yet
                continue  # a folder removed while we listed: what it held is gone
            except NotADirectoryError:
                raise StorageError(f"{self.location}: {os.path.relpath(d, root)} is not a "
                                   "folder (damaged repository)") from None
            except OSError as e:
                raise StorageError(
                    f"{self.location}: cannot list {os.path.relpath(d, root)}: {e.strerror}",
                    hint="check the permissions of the repository's folders") from e
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted while we listed
                except OSError as e:
                    raise StorageError(f"{self.location}: cannot stat "
                                       f"{os.path.relpath(entry.path, root)}: {e.strerror}") from e
                name = os.path.relpath(entry.path, root)
                out.append(ObjectInfo(name.replace(os.sep, "/"), size))
        return out

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        p = self._path(name)
        try:
            with open(p, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise NotFoundError(f"{self.location}: {name} does not exist") from None
        except OSError as e:
            raise StorageError(f"{self.location}: cannot read {name}: {e.strerror}") from e

    def write(self, name: str, data: bytes | memoryview) -> None:
        p = self._path(name)
        d = p.parent
        if d not in self._made_dirs:
            d.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(d)
        tmp = d / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise AlreadyExistsError(f"{self.location}: {name} already exists") from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # no hard links here (some network and FUSE file systems): rename instead,
                # which cannot refuse to replace, so check first (a narrow race, no torn file)
                if os.path.lexists(p):
                    raise AlreadyExistsError(f"{self.location}: {name} already exists") from None
                os.rename(tmp, p)
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StorageError(f"{self.location}: no space left writing {name}",
                                   hint="free space on the repository's disk") from e
            raise StorageError(f"{self.location}: cannot write {name}: {e.strerror}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"{self.location}: cannot delete {name}: {e.strerror}") from e

    def stat(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise NotFoundError(f"{self.location}: {name} does not exist") from None
        except OSError as e:
            raise StorageError(f"{self.location}: cannot stat {name}: {e.strerror}") from e

    def is_permanent(self, exc: BaseException) -> bool:
        # Local errors are not cured by waiting, except an interrupted system call.
        cause = exc.__cause__ if isinstance(exc, StorageError) else exc
        return not (isinstance(cause, OSError) and cause.errno in (errno.EINTR, errno.EAGAIN))
