"""The ledger in a PostgreSQL database, shared by every machine that runs a team's plans.

Rows are the same as in SQLite and hashed the same way. Appends from many machines take one
transaction-scoped advisory lock, so the chain stays linear however many runs write at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from restorer.ledger import Ledger, mask_url

# pg_advisory_xact_lock key: the 64-bit number spelled by b"restLedg"
LOCK_KEY = int.from_bytes(b"restLedg", "big", signed=True)

SCHEMA = """
CREATE TABLE IF NOT EXISTS restorer_ledger (
    seq BIGINT PRIMARY KEY,
    time TEXT NOT NULL,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    sig TEXT
);
ALTER TABLE restorer_ledger ADD COLUMN IF NOT EXISTS sig TEXT;
CREATE INDEX IF NOT EXISTS restorer_ledger_run ON restorer_ledger(run_id);
CREATE INDEX IF NOT EXISTS restorer_ledger_time ON restorer_ledger(time);
"""


class PostgresLedger(Ledger):
    table = "restorer_ledger"
    _errors = (psycopg.Error, OSError)

    def __init__(self, url: str) -> None:
        self.where = mask_url(url)
        with self._guard("open it"):
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=15,
                                      application_name="restorer",
                                      options="-c lock_timeout=60s -c statement_timeout=120s")
            with self._writing() as execute:  # two first runs must not both create the table
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    execute(stmt)

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        cur = self.db.execute(sql.replace("?", "%s"), args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            yield self._rows

    def close(self) -> None:
        self.db.close()
