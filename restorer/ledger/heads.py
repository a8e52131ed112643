"""The last head each signing key signed, remembered on the machine that signed it.

A forger who rewrites the rows after the last surviving anchor (on a store where anchors can
be deleted) would otherwise have the next run sign over the forgery. Before it signs, a run
checks that the row its key signed last is still there with the same hash; if not, its
closing row says so, under the new signature, and verification reports it. The file lives
in the runner's state folder, out of reach of whoever can only write the ledger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path

from restorer.statedir import state_dir

log = logging.getLogger("restorer.ledger")


def _file() -> Path:
    return state_dir() / "ledger-heads.json"


def _key(where: str, fingerprint: str) -> str:
    # the host too: a state folder shared over NFS by hosts with a local ledger each
    return f"{fingerprint} {socket.gethostname()} {where}"


def _load() -> dict[str, list]:
    try:
        d = json.loads(_file().read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def remembered(where: str, fingerprint: str) -> tuple[int, str] | None:
    v = _load().get(_key(where, fingerprint))
    if (isinstance(v, list) and len(v) == 2 and isinstance(v[0], int)
            and isinstance(v[1], str)):
        return v[0], v[1]
    return None


def remember(where: str, fingerprint: str, seq: int, hash_: str) -> None:
    """Never fails the run: a state folder that cannot be written only loses the check."""
    d = _load()
    d[_key(where, fingerprint)] = [seq, hash_]
    path = _file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(d, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot remember the ledger head in %s: %s", path, e.strerror)
        with contextlib.suppress(OSError):
            tmp.unlink()
