"""A repository on a host reached over SFTP (paramiko).

Host keys are verified against a known_hosts file: an unknown key is refused unless the plan
allows accepting a new one on first use (then it is recorded); a changed key is always refused.
Writes go to a temporary name and are renamed into place (SFTP's rename refuses to replace),
so a dropped connection never leaves a partial file under a final name. A dropped connection
is re-established on the next call; the retry layer decides when that call happens.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import secrets
import socket
import stat
import threading
from typing import Any, NoReturn

from restorer.errors import AlreadyExistsError, NotFoundError, StorageError
from restorer.storage.base import Backend, ObjectInfo
from restorer.storage.ssh import HostKeyError, SSHParams, connect_ssh

log = logging.getLogger("restorer.storage.sftp")
TMP_PREFIX = ".tmp-"


class SFTPBackend(Backend):
    def __init__(
        self,
        host: str,
        path: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        key_passphrase: str | None = None,
        known_hosts: str | None = None,
        accept_new_host_key: bool = False,
        connect_timeout: float = 15.0,
        request_timeout: float = 60.0,
        keepalive: int = 30,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.root = path.rstrip("/") or "/"
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self._passphrase = key_passphrase
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.accept_new_host_key = accept_new_host_key
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.keepalive = keepalive
        who = f"{user}@" if user else ""
        pt = f":{port}" if port != 22 else ""
        self.location = f"sftp://{who}{host}{pt}{self.root}"
        # each read opens the file and pipelines its range: fewer, longer ones
        self.read_span, self.read_gap = 8 << 20, 1 << 20
        self._client: Any = None
        self._sessions: list[Any] = []
        self._gen = 0
        self._local = threading.local()
        self._lock = threading.RLock()
        self._made_dirs: set[str] = set()

    # --- connection ---------------------------------------------------------------------

    def _connect(self) -> Any:
        """This thread's SFTP session. One SSH connection is shared; each thread gets its own
        SFTP channel on it, because paramiko's SFTP client must not be used from several
        threads at once (restores read with two)."""
        sftp = getattr(self._local, "sftp", None)
        if sftp is not None and getattr(self._local, "gen", -1) == self._gen:
            return sftp
        with self._lock:
            client = self._ensure_client()
            try:
                sftp = client.open_sftp()
            except Exception as e:
                self._drop()
                raise StorageError(f"{self.location}: cannot open an SFTP session: {e}") from e
            sftp.get_channel().settimeout(self.request_timeout)
            self._sessions.append(sftp)
            self._local.sftp, self._local.gen = sftp, self._gen
            return sftp

    def _ensure_client(self) -> Any:
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                self._drop()
            client = connect_ssh(SSHParams(
                self.host, self.port, self.user, self.key_file, self._passphrase,
                self.known_hosts, self.accept_new_host_key, self.connect_timeout,
                self.keepalive), self.location)
            self._client = client
            return client

    def _drop(self) -> None:
        for obj in [*self._sessions, self._client]:
            with contextlib.suppress(Exception):
                if obj is not None:
                    obj.close()
        self._sessions = []
        self._client = None
        self._gen += 1  # every thread opens a fresh session on its next call
        self._made_dirs.clear()

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"invalid object name {name!r}")
        return posixpath.join(self.root, name)

    def _fail(self, op: str, name: str, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, FileNotFoundError) or (
                isinstance(exc, OSError) and exc.errno == errno.ENOENT):
            return NotFoundError(f"{self.location}: {name} does not exist")
        if not isinstance(exc, PermissionError):
            with self._lock:  # the connection may be broken: rebuild it next time
                self._drop()
        err = StorageError(f"{self.location}: {op} {name} failed: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err

    def _reraise(self, op: str, name: str, exc: BaseException) -> NoReturn:
        err = self._fail(op, name, exc)
        if err is exc:
            raise exc
        raise err from exc

    # --- Backend ------------------------------------------------------------------------

    def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            sftp = self._connect()

            def walk(d: str, rel: str) -> None:
                try:
                    entries = sftp.listdir_attr(d)
                except FileNotFoundError:
                    return
                for a in entries:
                    name = a.filename
                    r = f"{rel}/{name}" if rel else name
                    if stat.S_ISDIR(a.st_mode or 0):
                        walk(posixpath.join(d, name), r)
                    elif not name.startswith(TMP_PREFIX):
                        out.append(ObjectInfo(r, int(a.st_size or 0)))

            walk(base, prefix.rstrip("/"))
        except Exception as e:
            self._reraise("list", prefix, e)
        return out

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            sftp = self._connect()
            with sftp.open(self._path(name), "rb") as f:
                if length is None:
                    size = f.stat().st_size or 0
                    length = max(0, size - offset)
                if length == 0:
                    return b""
                # readv pipelines the requests for exactly this range (prefetch would start
                # at offset 0 and read the whole file)
                data = b"".join(f.readv([(offset, length)]))
                if len(data) < length:
                    # paramiko reads a connection dropped mid-read as the end of the file:
                    # only the file's size tells a short file (damage, for the repository
                    # to report) from a lost connection (to retry). A dead connection makes
                    # this stat fail, which is retried too.
                    size = f.stat().st_size or 0
                    if offset + len(data) < min(size, offset + length):
                        raise ConnectionError(
                            f"short read: {len(data)} of {length} bytes at offset {offset} "
                            f"of a {size}-byte file (connection lost?)")
                return data
        except Exception as e:
            self._reraise("read", name, e)

    def stat(self, name: str) -> int:
        try:
            return int(self._connect().stat(self._path(name)).st_size or 0)
        except Exception as e:
            self._reraise("stat", name, e)

    def _mkdirs(self, sftp: Any, d: str) -> None:
        if d in self._made_dirs:
            return
        parts = []
        cur = d
        while cur not in ("", "/"):
            parts.append(cur)
            cur = posixpath.dirname(cur)
        for p in reversed(parts):
            try:
                sftp.mkdir(p)
            except OSError:
                try:
                    if not stat.S_ISDIR(sftp.stat(p).st_mode or 0):
                        raise StorageError(f"{self.location}: {p} is not a directory") from None
                except FileNotFoundError:
                    raise StorageError(f"{self.location}: cannot create {p}") from None
        self._made_dirs.add(d)

    def write(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        d = posixpath.dirname(path)
        tmp = posixpath.join(d, f"{TMP_PREFIX}{secrets.token_hex(8)}")
        try:
            sftp = self._connect()
            self._mkdirs(sftp, d)
            try:
                with sftp.open(tmp, "wb") as f:
                    f.set_pipelined(True)
                    view = memoryview(data)
                    for i in range(0, len(view), 1 << 20):
                        f.write(bytes(view[i:i + (1 << 20)]))
                    f.flush()
                if sftp.stat(tmp).st_size != len(data):
                    raise StorageError(f"{self.location}: short write of {name}")
                try:
                    sftp.rename(tmp, path)  # SFTP v3 rename never replaces an existing file
                except OSError:
                    try:
                        sftp.stat(path)
                    except FileNotFoundError:
                        raise
                    raise AlreadyExistsError(f"{self.location}: {name} already exists") from None
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise
        except (AlreadyExistsError, NotFoundError):
            raise
        except Exception as e:
            self._reraise("write", name, e)

    def delete(self, name: str) -> None:
        try:
            self._connect().remove(self._path(name))
        except FileNotFoundError:
            return
        except Exception as e:
            self._reraise("delete", name, e)

    def is_permanent(self, exc: BaseException) -> bool:
        import paramiko

        if isinstance(exc, HostKeyError | NotFoundError | AlreadyExistsError):
            return True
        cause: BaseException | None = exc
        seen: set[int] = set()
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, paramiko.AuthenticationException | paramiko.BadHostKeyException
                          | PermissionError):
                return True
            if isinstance(cause, EOFError | socket.timeout | TimeoutError | ConnectionError
                          | paramiko.SSHException | paramiko.ChannelException):
                return False
            if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
                return cause.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS)
            cause = cause.__cause__
        return True

    def close(self) -> None:
        with self._lock:
            self._drop()

