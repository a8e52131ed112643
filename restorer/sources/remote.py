"""Running a target's dump or restore tool on another host over SSH (`via_ssh`).

Output streams back over the SSH channel; nothing is staged on either host. Secrets never go
on the remote command line: they are written to a private file on the remote host
(mode 0600, removed afterwards) that the tool is pointed at.
"""

from __future__ import annotations

import contextlib
import secrets as _secrets
import shlex
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from restorer.errors import SourceError, StorageError
from restorer.sources.process import mask
from restorer.storage.ssh import SSHParams, connect_ssh


@contextmanager
def ssh_session(p: SSHParams, what: str) -> Iterator[Any]:
    try:
        client = connect_ssh(p, f"{what} via ssh {p.user + '@' if p.user else ''}{p.host}")
    except StorageError as e:
        raise SourceError(e.message, e.hint) from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def remote_secret_file(client: Any, content: str) -> Iterator[str]:
    """A file on the remote host holding `content`, readable by its owner only."""
    sftp = client.open_sftp()
    path = f"/tmp/.restorer-{_secrets.token_hex(12)}"
    try:
        with sftp.open(path, "w") as f:
            f.chmod(0o600)
            f.write(content)
        yield path
    finally:
        with contextlib.suppress(Exception):
            sftp.remove(path)
        sftp.close()


class _ChannelReader:
    def __init__(self, channel: Any) -> None:
        self.ch = channel

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.ch.recv(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            out = []
            while chunk := self.ch.recv(1 << 20):
                out.append(chunk)
            return b"".join(out)
        return self.ch.recv(n)


def _stderr_tail(channel: Any) -> str:
    lines: deque[str] = deque(maxlen=20)
    buf = b""
    while channel.recv_stderr_ready():
        chunk = channel.recv_stderr(65536)
        if not chunk:
            break
        buf += chunk
    for line in buf.decode("utf-8", "replace").splitlines():
        lines.append(line)
    return "\n".join(x for x in lines if x.strip())


@contextmanager
def remote_output(client: Any, command: str, *, what: str,
                  secrets: Iterable[str | None] = (), timeout: float | None = None,
                  ) -> Iterator[BinaryIO]:
    """Run `command` on the remote host; yield its stdout; it must exit 0."""
    secrets = list(secrets)
    ch = client.get_transport().open_session()
    ch.settimeout(timeout)
    ch.exec_command(command)
    reader = _ChannelReader(ch)
    try:
        yield reader  # type: ignore[misc]
        _finish(ch, what, secrets)
    finally:
        ch.close()


def remote_feed(client: Any, command: str, chunks: Iterable[bytes], *, what: str,
                secrets: Iterable[str | None] = (), timeout: float | None = None) -> None:
    """Run `command` on the remote host with `chunks` on its stdin; it must exit 0."""
    secrets = list(secrets)
    ch = client.get_transport().open_session()
    ch.settimeout(timeout)
    ch.exec_command(command)
    try:
        for c in chunks:
            ch.sendall(c)
        ch.shutdown_write()
        _finish(ch, what, secrets)
    finally:
        ch.close()


def _finish(ch: Any, what: str, secrets: list[str | None]) -> None:
    """Drain stdout, wait for the exit status; SourceError with the stderr tail unless 0."""
    while ch.recv(1 << 20):
        pass
    code = ch.recv_exit_status()
    if code != 0:
        err = _stderr_tail(ch)
        detail = f":\n{mask(err, secrets)}" if err else ""
        raise SourceError(f"{what}: remote command exited with status {code}{detail}")


def q(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def remote_run(client: Any, command: str, timeout: float, *, cwd: str | None = None,
               env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """(exit status, or None when it timed out; stdout and stderr together) of a shell
    command on the remote host. coreutils `timeout` ends it there, so nothing keeps running
    after we give up on it."""
    exports = "".join(f"{k}={q(v)}; export {k}; " for k, v in (env or {}).items())
    where = f"cd {q(cwd)} && " if cwd else ""
    ch = client.get_transport().open_session()
    ch.settimeout(timeout + 30)
    ch.exec_command(f"{where}{exports}timeout -k 5 {timeout:g} sh -c {q(command)} "
                    "</dev/null 2>&1")
    out = []
    try:
        while data := ch.recv(1 << 16):
            out.append(data)
        code = ch.recv_exit_status()
    except TimeoutError:
        return None, ""
    finally:
        ch.close()
    if code == 124:
        return None, ""
    return code, b"".join(out).decode("utf-8", "replace")
