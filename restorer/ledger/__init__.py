"""The ledger: an append-only, hash-chained record of every run, its phases and timings.

Each event (run start, phase, run end) is one row whose hash covers its content and the
previous row's hash (chain.py). With a signing key, a run's closing row also carries an
Ed25519 signature over the chain head, the head is anchored in the repository
(anchors.py), and verify.py checks all three. A run with a start and no end is shown as
interrupted once its process is gone.
SQLite by default (a per-user state file, or the plan's `ledger: sqlite:///path`), or a
PostgreSQL database shared by a fleet (`ledger: postgresql://...`).
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import os
import re
import socket
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restorer import __version__, clock
from restorer.errors import RestorerError, UsageError
from restorer.ledger.chain import GENESIS, MAX_SEGMENT, Head, Row, Signature, row_hash
from restorer.ledger.heads import remember, remembered
from restorer.ledger.signing import Signer
from restorer.statedir import state_dir

log = logging.getLogger("restorer.ledger")
COLUMNS = "seq, time, run_id, kind, data, prev_hash, hash"
__all__ = ["GENESIS", "Ledger", "LedgerError", "RunRecorder", "row_hash"]


class LedgerError(RestorerError):
    """The ledger cannot be opened, read or written."""


def default_path() -> Path:
    return state_dir() / "ledger.db"


@dataclass(frozen=True)
class Appended:
    """A row just written; for a signed row, the head its signature covers."""

    seq: int
    hash: str
    time: str
    head: Head | None = None
    signature: Signature | None = None
    ledger_id: str | None = None  # the hash of the ledger's first row, naming the ledger


def mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class Ledger(ABC):
    """The hash chain over one table; a store (SQLite, PostgreSQL) says how to reach it."""

    where: str = ""
    table: str = "entries"
    _errors: tuple[type[BaseException], ...] = ()

    @classmethod
    def open(cls, url: str | None, base_dir: Path) -> Ledger:
        if not url:
            return SQLiteLedger(default_path())
        if url.startswith(("postgresql://", "postgres://")):
            from restorer.ledger.postgres import PostgresLedger

            return PostgresLedger(url)
        if url.startswith("sqlite:///"):
            p = Path(url[len("sqlite:///"):])
        elif url.startswith("sqlite://"):
            p = Path(url[len("sqlite://"):])
        else:
            raise UsageError(f"ledger {mask_url(url)}: unsupported scheme",
                             hint="use sqlite:///path or postgresql://USER@HOST/DB (or leave "
                             "ledger out for the per-user default)")
        return SQLiteLedger(p if p.is_absolute() else base_dir / p)

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Driver errors become LedgerError naming the ledger (never its password)."""
        try:
            yield
        except self._errors as e:
            raise LedgerError(f"ledger {self.where}: cannot {doing}: "
                              f"{' '.join(mask_url(str(e)).split())}") from None

    @abstractmethod
    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of one statement (`?` placeholders)."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Callable[..., list[tuple]]]:
        """A transaction that holds the ledger's one write lock (the chain stays linear);
        yields the function that runs statements inside it."""

    def append(self, run_id: str, kind: str, data: dict[str, Any],
               signer: Signer | None = None) -> Appended:
        """Add a row; with `signer`, signed: the signature covers this row's hash and the
        hashes of the rows since the previous signed row (at most MAX_SEGMENT)."""
        with self._guard("append a row"), self._writing() as execute:
            t = clock.iso()
            last = execute(f"SELECT seq, hash FROM {self.table} ORDER BY seq DESC LIMIT 1")
            seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
            if signer is not None:
                changed = self._changed_since_signed(execute, signer)
                if changed:
                    log.error("ledger %s: %s", self.where, changed)
                    data = {**data, "signed_over": changed}
            payload = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
            h = row_hash(prev, seq, t, run_id, kind, payload)
            head = signature = ledger_id = None
            if signer is not None:
                head = self._head(execute, seq, h)
                first = execute(f"SELECT hash FROM {self.table} WHERE seq = 1")
                ledger_id = first[0][0] if first else h
                signature = Signature(signer.public.text,
                                      base64.b64encode(signer.sign(head.message())).decode(),
                                      head.start)
            execute(f"INSERT INTO {self.table} ({COLUMNS}, sig) VALUES (?,?,?,?,?,?,?,?)",
                    (seq, t, run_id, kind, payload, prev, h,
                     signature.text() if signature else None))
        if signer is not None:
            remember(self.where, signer.public.fingerprint, seq, h)
        return Appended(seq, h, t, head, signature, ledger_id)

    def _changed_since_signed(self, execute: Callable[..., list[tuple]],
                              signer: Signer) -> str | None:
        """What changed in the row this machine last signed with this key, if anything."""
        mine = remembered(self.where, signer.public.fingerprint)
        if mine is None:
            return None
        seq, h = mine
        now = execute(f"SELECT hash FROM {self.table} WHERE seq = ?", (seq,))
        if now and now[0][0] == h:
            return None
        return (f"row {seq}, which this machine signed last (hash {h[:16]}), "
                + (f"now hashes to {now[0][0][:16]}" if now else "is gone")
                + ": the ledger was rewritten or replaced since; this run signs over it")

    def _head(self, execute: Callable[..., list[tuple]], seq: int, h: str) -> Head:
        signed = execute(f"SELECT seq FROM {self.table} WHERE sig IS NOT NULL "
                         "ORDER BY seq DESC LIMIT 1")
        start = max(signed[0][0] + 1 if signed else 1, seq - MAX_SEGMENT + 1)
        before = execute(f"SELECT hash FROM {self.table} WHERE seq = ?", (start - 1,))
        hashes = [r[0] for r in execute(
            f"SELECT hash FROM {self.table} WHERE seq >= ? ORDER BY seq", (start,))]
        return Head(seq, h, start, before[0][0] if before else GENESIS,
                    (*hashes, h))

    def rows(self, from_seq: int = 1) -> list[Row]:
        """Every row from `from_seq` on, as stored (for verification and export)."""
        with self._guard("read"):
            rows = self._rows(f"SELECT {COLUMNS}, sig FROM {self.table} WHERE seq >= ? "
                              "ORDER BY seq", (from_seq,))
        return [_row(r) for r in rows]

    def last_seq(self) -> int:
        with self._guard("read"):
            r = self._rows(f"SELECT seq FROM {self.table} ORDER BY seq DESC LIMIT 1")
        return r[0][0] if r else 0

    def last_hash(self) -> str:
        with self._guard("read"):
            r = self._rows(f"SELECT hash FROM {self.table} ORDER BY seq DESC LIMIT 1")
        return r[0][0] if r else GENESIS

    def entries(self, since: float | None = None) -> list[tuple[int, str, str, str, dict]]:
        q = f"SELECT seq, time, run_id, kind, data FROM {self.table}"
        args: tuple = ()
        if since is not None:
            q += " WHERE time >= ?"
            args = (datetime.fromtimestamp(since, UTC).isoformat(timespec="microseconds"),)
        with self._guard("read"):
            rows = self._rows(q + " ORDER BY seq", args)
        return [(s, t, r, k, json.loads(d)) for s, t, r, k, d in rows]

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


def _row(r: tuple) -> Row:
    """A row as stored; a value of the wrong type (SQLite keeps what it is given) is kept as
    text, so its hash fails to match and verification names the row instead of crashing."""
    seq, *rest = r
    texts = [x if isinstance(x, str) or (x is None and i == 6) else
             (x.decode("utf-8", "replace") if isinstance(x, bytes) else repr(x))
             for i, x in enumerate(rest)]
    return Row(int(seq), *texts)


class SQLiteLedger(Ledger):
    _errors = (sqlite3.Error, OSError)
    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        sig TEXT
    );
    CREATE INDEX IF NOT EXISTS entries_run ON entries(run_id);
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        with self._guard("open it"):
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(self._SCHEMA)
            columns = [r[1] for r in self.db.execute("PRAGMA table_info(entries)")]
            if "sig" not in columns:  # a ledger from before signing
                self.db.execute("ALTER TABLE entries ADD COLUMN sig TEXT")

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self.db.execute(sql, args).fetchall()

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self._rows
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()


@dataclass
class Phase:
    name: str
    target: str | None = None
    bytes: int = 0
    files: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class RunRecorder:
    """Records one command's run; never lets a ledger problem fail the work itself."""

    def __init__(self, ledger: Ledger | None, plan: str, command: str, plan_digest: str,
                 signer: Signer | None = None) -> None:
        self.ledger = ledger
        self.signer = signer
        # the closing row once written, signed when there is a signer (then it is anchored)
        self.closed: Appended | None = None
        self.run_id = uuid.uuid4().hex
        self.plan = plan
        self.command = command
        self.plan_digest = plan_digest
        self.start = time.monotonic()
        # what notifications need without reading the ledger back: each phase's target and
        # outcome, and events actions raise (an objective breach: (kind, target, message))
        self.phases: list[dict[str, Any]] = []
        self.events: list[tuple[str, str | None, str]] = []
        # set by a command whose outcome is not read from its exit code alone ("declined":
        # a person said no at the prompt; "checks_failing": done, and its checks fail)
        self.outcome: str | None = None

    def _append(self, kind: str, data: dict[str, Any],
                signer: Signer | None = None) -> Appended | None:
        if kind == "phase":
            self.phases.append(data)
        if self.ledger is None:
            return None
        try:
            return self.ledger.append(self.run_id, kind, data, signer)
        except LedgerError as e:
            log.error("%s", e.message)
            return None

    def note(self, kind: str, **data: Any) -> None:
        """A row about the run written after its end (an anchor that could not be written)."""
        self._append(kind, {"plan": self.plan, **data})

    def begin(self) -> None:
        self._append("run_start", {
            "plan": self.plan, "command": self.command, "host": socket.gethostname(),
            "user": getpass.getuser(), "pid": os.getpid(), "version": __version__,
            "plan_digest": self.plan_digest})

    @contextmanager
    def phase(self, name: str, target: str | None = None) -> Iterator[Phase]:
        ph = Phase(name, target)
        t0 = time.monotonic()
        started = clock.iso()
        outcome, error = "ok", None
        try:
            yield ph
        except BaseException as e:
            outcome = "failed"
            error = e.message if isinstance(e, RestorerError) else f"{type(e).__name__}: {e}"
            raise
        finally:
            if ph.detail.get("outcome"):
                outcome = ph.detail.pop("outcome")
            self._append("phase", {
                "plan": self.plan, "phase": name, "target": target, "started": started,
                "duration_s": round(time.monotonic() - t0, 6), "bytes": ph.bytes,
                "files": ph.files, "outcome": outcome, "error": error, **ph.detail})

    def record_phase(self, name: str, duration_s: float, target: str | None = None,
                     **detail: Any) -> None:
        """A phase measured elsewhere (a lock wait)."""
        self._append("phase", {"plan": self.plan, "phase": name, "target": target,
                               "duration_s": round(duration_s, 6), "bytes": 0, "files": 0,
                               "outcome": "ok", "error": None, **detail})

    def end(self, outcome: str, exit_code: int, error: str | None = None,
            unsigned: str | None = None) -> None:
        """The closing row, signed with the plan's key (`unsigned`: why a plan that signs
        could not sign this run)."""
        data = {"plan": self.plan, "outcome": outcome, "exit_code": exit_code,
                "duration_s": round(time.monotonic() - self.start, 6), "error": error}
        if unsigned:
            data["unsigned"] = unsigned
        self.closed = self._append("run_end", data, self.signer)
