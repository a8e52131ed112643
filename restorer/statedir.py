"""restorer's state folder (default ledger, run.log) and the private files runs keep there.

A secret a tool can only read from a file (a MariaDB option file where no inherited
descriptor can be used) goes into a 0600 file in a 0700 folder named after the run's host and
pid. A run killed with SIGKILL cannot remove its folder, so every run starts by removing the
folders of runs on this host whose process is gone; a live run's folder is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from restorer.pids import pid_alive

log = logging.getLogger("restorer.state")
_PRIVATE = "private"


def state_dir() -> Path:
    base = os.environ.get("RESTORER_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "restorer")
    return Path(base)


def _private_root() -> Path:
    root = state_dir() / _PRIVATE
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)  # mkdir's mode is cut by the umask, and the folder may be older
    return root


@contextmanager
def private_file(name: str, data: bytes) -> Iterator[Path]:
    """A file only this user can read, holding `data`, removed on leaving (or by the next
    run of restorer, when this one is killed)."""
    d = _private_root() / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(d, 0o700)
    try:
        path = d / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def remove_leftovers() -> list[Path]:
    """Remove the private folders of runs on this host whose process is gone; the removed."""
    root = state_dir() / _PRIVATE
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    host = socket.gethostname()
    removed = []
    for e in entries:
        parts = e.name.rsplit("-", 2)  # HOST-PID-TOKEN; a host name may hold '-'
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() \
                or pid_alive(int(parts[1])):
            continue  # another host's run, or a live one: not ours to remove
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(e.path)
            removed.append(Path(e.path))
            log.info("removed %s, left by run %s which is gone", e.path, parts[1])
    return removed
