"""postgres: one PostgreSQL database (or, with all_databases, a whole cluster through
pg_dumpall), dumped by pg_dump here or over via_ssh; verify restores into a scratch
database; rollback restores beside the live database and swaps the names in one
transaction."""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import postgres
from restorer.sources.stream import restore_stream
from restorer.targets.base import LiveTarget, Stage, Swap, TargetContext, TargetRollback, can
from restorer.targets.database import DatabaseKind, DatabaseSwap, Dialect, with_db

DIALECT = Dialect(
    scheme="postgresql", client="psql", password_env="PGPASSWORD",
    db_name=lambda dsn: postgres.split_dsn(dsn)[1],
    scratch_create=postgres.pg_scratch_create, scratch_drop=postgres.pg_scratch_drop,
    restore_stream=postgres.pg_restore_stream, database_exists=postgres.pg_database_exists,
    drop_database=postgres.pg_drop_database, whole_cluster=postgres.is_cluster_dump)


class PostgresSwap(DatabaseSwap):
    dialect = DIALECT

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.password = self.ctx.secret(t.password, f"targets.{t.name}.password")
        admin, self.live = postgres.split_dsn(t.dsn)
        base = self.live[:30]  # PostgreSQL names end at 63 bytes
        self.new = f"{base}_rb_{self.stamp}"
        self.old = f"{base}_pre_rb_{self.stamp}"
        self.record.scratch = [self.new]
        self.admin = admin
        self.what = f"rollback of {t.name}"
        self.created = False

    def _dsn(self, name: str) -> str:
        return with_db(self.t.dsn, name)

    def restore(self) -> None:
        chunks = restore_stream(self.repo, self.snap)
        first = next(chunks, b"")
        if postgres.is_cluster_dump(first):
            raise UsageError(f"target {self.t.name}: a pg_dumpall snapshot cannot be swapped "
                             "in as one database")
        self.created = True
        try:
            postgres.pg_restore_stream(itertools.chain([first], chunks), self._dsn(self.new),
                                       self.password, overwrite=False, what=self.what)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None

    def swap(self) -> None:
        postgres.pg_swap_databases(self._dsn(self.live), self.new, self.old, self.password,
                                   terminate=self.ctx.terminate_connections,
                                   what=self.what)
        self.swapped = True
        self.record.kept = [self.old]

    def swap_back(self) -> None:
        postgres.pg_swap_databases(self._dsn(self.live), self.old, self.new, self.password,
                                   terminate=True, what=self.what)
        self.swapped = False
        self.record.kept = []

    def resume(self, journal: dict[str, Any]) -> None:
        self.created = True
        # the swap renames both in one transaction: the dated old name exists only after it
        self.swapped = postgres.pg_database_exists(self._dsn(self.old), self.password,
                                                   what=self.what)

    def discard(self) -> None:
        if self.created and not self.swapped:
            postgres.pg_drop_database(self._dsn(self.new), self.password, what=self.what)
        # after a swap the replaced database is kept under its dated name until --cleanup

    def check_subject(self) -> Stage:
        dsn, password = self._dsn(self.live), self.password
        return LiveTarget(self.ctx, self.repo, self.t, self.snap, dsn=dsn, password=password,
                          env={"RESTORER_STAGING_DSN": dsn,
                               **({"PGPASSWORD": password} if password else {})})


class PostgresKind(DatabaseKind):
    name = "postgres"
    model = models.PostgresTarget
    what = "one PostgreSQL database, or all (pg_dumpall)"
    dialect = DIALECT
    capabilities = {
        "backup": can("pg_dump's output, streamed and deduplicated"),
        "restore": can("streams the dump back into the DSN given with --to"),
        "verify": can("restores into a scratch database and runs the checks"),
        "rollback": can("restores beside the live database, then swaps the names"),
        "prune": can("as files"),
    }

    def local_dump(self, t: models.PostgresTarget, password: str | None, what: str
                   ) -> AbstractContextManager[BinaryIO]:
        return postgres.pg_dump(t.dsn, password, what=what,  # type: ignore[return-value]
                                all_databases=t.all_databases, fmt=t.format)

    def remote_dump(self, client: Any, t: models.PostgresTarget, password: str | None,
                    what: str) -> AbstractContextManager[BinaryIO]:
        return postgres.pg_dump_remote(  # type: ignore[return-value]
            client, t.dsn, password, what=what, all_databases=t.all_databases, fmt=t.format)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        return PostgresSwap(ctx, repo, t, snap, stamp, record)


KIND = PostgresKind()
