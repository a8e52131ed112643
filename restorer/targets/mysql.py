"""mysql: one MariaDB/MySQL database, dumped by mariadb-dump (or mysqldump) here or over
via_ssh; verify restores into a scratch database; rollback restores beside the live
database and trades the tables in one RENAME TABLE."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import mysql
from restorer.sources.stream import restore_stream
from restorer.targets.base import LiveTarget, Stage, Swap, TargetContext, TargetRollback, can
from restorer.targets.database import DatabaseKind, DatabaseSwap, Dialect, with_db

DIALECT = Dialect(
    scheme="mysql", client="the mysql client", password_env="MYSQL_PWD",
    db_name=lambda dsn: mysql.parse_dsn(dsn)[1],
    scratch_create=mysql.mysql_scratch_create, scratch_drop=mysql.mysql_scratch_drop,
    restore_stream=mysql.mysql_restore_stream, database_exists=mysql.mysql_database_exists,
    drop_database=mysql.mysql_drop_database)


class MySQLSwap(DatabaseSwap):
    """MariaDB/MySQL have no RENAME DATABASE: the restored tables and the live ones trade
    places in one RENAME TABLE statement. A database with views, triggers, routines or
    events is refused (they do not move with their tables)."""

    dialect = DIALECT

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.password = self.ctx.secret(t.password, f"targets.{t.name}.password")
        self.live = mysql.parse_dsn(t.dsn)[1]
        base = self.live[:30]  # MariaDB names end at 64 characters
        self.new, self.old = f"{base}_rb_{self.stamp}", f"{base}_pre_rb_{self.stamp}"
        self.record.scratch = [self.new]
        self.what = f"rollback of {t.name}"
        self.created = False
        try:
            blockers = mysql.mysql_swap_blockers(t.dsn, self.password, what=self.what)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        if blockers:
            raise UsageError(
                f"target {t.name}: database {self.live} has {', '.join(blockers)}; MySQL and "
                "MariaDB cannot rename a database, and these do not move with RENAME TABLE, "
                "so it cannot be swapped in one step",
                hint="restore the snapshot with `restorer restore` into a new database and "
                "switch the application to it")

    def restore(self) -> None:
        self.created = True
        try:
            mysql.mysql_restore_stream(restore_stream(self.repo, self.snap),
                                       with_db(self.t.dsn, self.new), self.password,
                                       overwrite=False, what=self.what)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None

    def swap(self) -> None:
        try:
            mysql.mysql_swap_databases(self.t.dsn, self.new, self.old, self.password,
                                       terminate=self.ctx.terminate_connections,
                                       what=self.what)
            self.swapped = True
            self.record.kept = [self.old]
            mysql.mysql_drop_database(with_db(self.t.dsn, self.new), self.password,
                                      what=self.what)  # empty now
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None

    def swap_back(self) -> None:
        mysql.mysql_swap_databases(self.t.dsn, self.old, self.new, self.password,
                                   terminate=True, what=self.what)
        self.swapped = False
        self.record.kept = []

    def resume(self, journal: dict[str, Any]) -> None:
        self.created = True
        # one RENAME TABLE moves every table: the dated old database holds them only after it
        self.swapped = mysql.mysql_table_count(with_db(self.t.dsn, self.old), self.password,
                                               what=self.what) > 0

    def discard(self) -> None:
        if self.created and not self.swapped:
            mysql.mysql_drop_database(with_db(self.t.dsn, self.new), self.password,
                                      what=self.what)

    def check_subject(self) -> Stage:
        dsn, password = self.t.dsn, self.password
        return LiveTarget(self.ctx, self.repo, self.t, self.snap, dsn=dsn, password=password,
                          env={"RESTORER_STAGING_DSN": dsn,
                               **({"MYSQL_PWD": password} if password else {})})


class MySQLKind(DatabaseKind):
    name = "mysql"
    model = models.MySQLTarget
    what = "one MariaDB/MySQL database"
    dialect = DIALECT
    capabilities = {
        "backup": can("mariadb-dump's output, streamed and deduplicated"),
        "restore": can("streams the dump back into the DSN given with --to"),
        "verify": can("restores into a scratch database and runs the checks"),
        "rollback": can("restores beside the live database, then renames the tables"),
        "prune": can("as files"),
    }

    def local_dump(self, t: models.MySQLTarget, password: str | None, what: str
                   ) -> AbstractContextManager[BinaryIO]:
        return mysql.mysql_dump(t.dsn, password, what=what)  # type: ignore[return-value]

    def remote_dump(self, client: Any, t: models.MySQLTarget, password: str | None,
                    what: str) -> AbstractContextManager[BinaryIO]:
        return mysql.mysql_dump_remote(client, t.dsn, password,  # type: ignore[return-value]
                                       what=what)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        return MySQLSwap(ctx, repo, t, snap, stamp, record)


KIND = MySQLKind()
