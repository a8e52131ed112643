"""What postgres and mysql share: a dump streamed in and out, a scratch database for
verify (created, restored into, checked, dropped), rollback's databases named beside the
live one, and the removal of what a rollback kept. Each engine supplies a `Dialect`."""

from __future__ import annotations

import itertools
import tempfile
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import postgres
from restorer.sources.remote import ssh_session
from restorer.targets.base import (
    Capability,
    Restored,
    RestoreRequest,
    Stage,
    Swap,
    TargetContext,
    cannot,
    query_database,
)
from restorer.targets.stream import StreamKind


@dataclass(frozen=True)
class Dialect:
    """One database engine, as the shared code drives it."""

    scheme: str  # of an example DSN
    client: str  # what applies a dump, in words
    password_env: str  # the variable its clients read a password from
    db_name: Callable[[str], str]  # the database a DSN names
    scratch_create: Callable[..., None]
    scratch_drop: Callable[..., bool]
    restore_stream: Callable[..., None]
    database_exists: Callable[..., bool]
    drop_database: Callable[..., None]
    # a first chunk of a dump that cannot go into one scratch database (pg_dumpall's)
    whole_cluster: Callable[[bytes], bool] = lambda first: False


def with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(name)))


def cluster_dump_refusal(name: str) -> UsageError:
    return UsageError(
        f"target {name}: a pg_dumpall snapshot restores a whole cluster (its databases under "
        "their own names); verify cannot stage it in one scratch database",
        hint="back up the databases that matter as separate postgres targets and verify those")


class DatabaseKind(StreamKind):
    """A database reached by DSN, dumped here or over via_ssh."""

    dialect: Dialect
    recoverable = True

    def can(self, capability: str, target: Any = None) -> Capability:
        c = self.capabilities[capability]
        if not c.can:
            return c
        if capability == "rollback" and getattr(target, "via_ssh", None) is not None:
            return cannot("not built yet for a target reached over via_ssh; restore it with "
                          "`restorer restore` instead")
        if capability in ("verify", "rollback") and getattr(target, "all_databases", False):
            return cannot("a pg_dumpall snapshot (all_databases) holds a whole cluster, which "
                          "has no scratch database to restore into and no single database to "
                          "swap")
        return c

    def password(self, ctx: TargetContext, t: Any) -> str | None:
        return ctx.secret(t.password, f"targets.{t.name}.password")

    @abstractmethod
    def local_dump(self, t: Any, password: str | None, what: str
                   ) -> AbstractContextManager[BinaryIO]:
        """The engine's dump tool run here."""

    @abstractmethod
    def remote_dump(self, client: Any, t: Any, password: str | None, what: str
                    ) -> AbstractContextManager[BinaryIO]:
        """The engine's dump tool run over an SSH session (`client`)."""

    def open_dump(self, ctx: TargetContext, t: Any) -> AbstractContextManager[BinaryIO]:
        what = f"target '{t.name}'"
        if t.via_ssh is None:
            return self.local_dump(t, self.password(ctx, t), what)
        return self._over_ssh(ctx, t, what)

    @contextmanager
    def _over_ssh(self, ctx: TargetContext, t: Any, what: str) -> Iterator[BinaryIO]:
        with ssh_session(ctx.ssh(t.via_ssh, f"targets.{t.name}.via_ssh"), what) as client, \
                self.remote_dump(client, t, self.password(ctx, t), what) as out:
            yield out

    def restore_into(self, ctx: TargetContext, t: Any | None, snap: Snapshot,
                     chunks: Iterator[bytes], req: RestoreRequest, what: str) -> None:
        # the plan's target, when it still has one of this kind, lends its password
        password = self.password(ctx, t) if isinstance(t, self.model) else None
        self.dialect.restore_stream(chunks, req.dest, password, overwrite=req.overwrite,
                                    what=what)

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return DatabaseStage(self.dialect, ctx, repo, t, snap)

    def live(self, ctx: TargetContext, t: Any) -> str:
        return postgres.safe_dsn(t.dsn)

    def remove_kept(self, ctx: TargetContext, t: Any, name: str,
                    dry_run: bool = False) -> str | None:
        d = self.dialect
        if name == d.db_name(t.dsn):
            return None  # never the live database
        pw, dsn = self.password(ctx, t), with_db(t.dsn, name)
        if not d.database_exists(dsn, pw, what="rollback cleanup"):
            return None
        if not dry_run:
            d.drop_database(dsn, pw, what="rollback cleanup")
        return f"database {name}"


class DatabaseSwap(Swap):
    """A database restored under a new name beside the live one, then swapped in."""

    dialect: Dialect

    def preview(self) -> dict[str, Any]:
        return {"database": self.dialect.db_name(self.t.dsn), "replaced": True}


class DatabaseStage(Stage):
    """The scratch database staging.dsn names, created and dropped here."""

    def __init__(self, dialect: Dialect, *a: Any) -> None:
        super().__init__(*a)
        self.dialect = dialect
        t = self.target
        staging = t.staging
        if staging is None or staging.dsn is None:
            raise UsageError(
                f"target {t.name}: verify needs staging.dsn, the scratch database to restore "
                "into",
                hint=f"add `staging: {{dsn: {dialect.scheme}://USER@HOST/{t.name}_restore_test}}`"
                " to the target; verify creates that database, restores into it and drops it")
        self.dsn = self.ctx.secret(staging.dsn, f"targets.{t.name}.staging.dsn") or ""
        self.password = self.ctx.secret(staging.password, f"targets.{t.name}.staging.password")
        self.secrets = [self.password, urlsplit(self.dsn).password]
        self.what = f"verify of {t.name}"
        self.location = postgres.safe_dsn(self.dsn)
        self.cwd = Path(tempfile.gettempdir())
        self.env = {"RESTORER_STAGING_DSN": self.dsn}
        if self.password:
            self.env[dialect.password_env] = self.password

    def restore(self) -> Restored:
        d = self.dialect
        try:
            chunks = self._stream()
            first = next(chunks, b"")
            if d.whole_cluster(first):  # it would create databases of its own
                raise cluster_dump_refusal(self.target.name)
            d.scratch_create(self.dsn, self.password, what=self.what)
            d.restore_stream(itertools.chain([first], chunks), self.dsn, self.password,
                             overwrite=False, what=self.what)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        self.restored.files = 1
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        return self._stream_manifest(self.dialect.client)

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        return query_database(self.dsn, self.password, sql,
                              what=f"sql check of {self.target.name}", timeout=timeout)

    def teardown(self) -> bool:
        return self.dialect.scratch_drop(self.dsn, self.password,
                                         what=f"teardown of {self.target.name}")
