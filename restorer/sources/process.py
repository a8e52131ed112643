"""Running the tools that dump and restore targets: output streamed, stderr kept (masked).

Secrets go to child processes through their environment or files, never their command
lines (which `ps` shows to every user); anything a tool prints is masked before we repeat it.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO

from restorer.errors import SourceError


def mask(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


class _Tail:
    """Keeps the last lines a process writes to stderr, read by a thread so it never blocks."""

    def __init__(self, f: IO[bytes], lines: int = 20, sink: list[str] | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=lines)
        self.sink = sink
        self.thread = threading.Thread(target=self._read, args=(f,), daemon=True)
        self.thread.start()

    def _read(self, f: IO[bytes]) -> None:
        for raw in iter(f.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            if self.sink is not None and len(self.sink) < 10000:
                self.sink.append(line)

    def text(self) -> str:
        self.thread.join(timeout=5)
        return "\n".join(x for x in self.lines if x)


def _describe(what: str, argv: Sequence[str] | str, code: int, tail: str,
              secrets: Iterable[str | None]) -> SourceError:
    tool = argv if isinstance(argv, str) else argv[0]
    detail = f":\n{mask(tail, secrets)}" if tail else " (it printed nothing on stderr)"
    return SourceError(f"{what}: {mask(str(tool), secrets)} exited with status {code}{detail}")


def _spawn(argv: Sequence[str] | str, what: str, env: dict[str, str] | None,
           stdin: int, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start a tool (a string runs through the shell); SourceError naming a missing tool.
    `pass_fds` are inherited by the tool (a secret it reads from /dev/fd/N)."""
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, shell=isinstance(argv, str),
                                pass_fds=tuple(pass_fds))
    except FileNotFoundError:
        raise SourceError(f"{what}: {argv[0] if not isinstance(argv, str) else argv} is not "
                          "installed or not on PATH",
                          hint="install the client tools on this machine") from None


@contextmanager
def output_of(argv: Sequence[str] | str, *, what: str, env: dict[str, str] | None = None,
              secrets: Iterable[str | None] = (), timeout: float | None = None,
              pass_fds: Sequence[int] = ()) -> Iterator[IO[bytes]]:
    """Run a command and yield its stdout; on leaving, the command must have exited 0."""
    secrets = list(secrets)
    proc = _spawn(argv, what, env, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
    assert proc.stdout is not None and proc.stderr is not None
    tail = _Tail(proc.stderr)
    try:
        yield proc.stdout
        proc.stdout.read()  # drain what the consumer left, so the process can finish
        code = proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise _describe(what, argv, code, tail.text(), secrets)


def feed(argv: Sequence[str] | str, chunks: Iterable[bytes], *, what: str,
         env: dict[str, str] | None = None, secrets: Iterable[str | None] = (),
         timeout: float | None = None, stderr_lines: list[str] | None = None,
         pass_fds: Sequence[int] = ()) -> str:
    """Run a command with `chunks` on its stdin; returns its stdout (must exit 0).
    Every stderr line is also appended to `stderr_lines` when given."""
    secrets = list(secrets)
    proc = _spawn(argv, what, env, stdin=subprocess.PIPE, pass_fds=pass_fds)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    tail = _Tail(proc.stderr, sink=stderr_lines)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    try:
        try:
            for c in chunks:
                proc.stdin.write(c)
        except BrokenPipeError:
            pass  # the tool stopped reading: its exit status and stderr say why
        finally:
            with suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join(timeout=5)
    if code != 0:
        raise _describe(what, argv, code, tail.text(), secrets)
    return b"".join(out).decode("utf-8", "replace")


def run(argv: Sequence[str], *, what: str, env: dict[str, str] | None = None,
        secrets: Iterable[str | None] = (), timeout: float = 60) -> str:
    """Run a short command; its stdout (must exit 0)."""
    return feed(argv, (), what=what, env=env, secrets=secrets, timeout=timeout)
