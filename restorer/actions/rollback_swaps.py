"""How each kind of target is put back during a rollback: restored beside the live copy,
swapped in in one step, swapped back if another target fails, and checked live."""

from __future__ import annotations

import itertools
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from restorer.actions.staging import LiveTarget, Restored, Stage, chunk_ids, compare_tree
from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import mysql, postgres
from restorer.sources.files_restore import FilesWriter
from restorer.sources.stream import restore_stream
from restorer.sources.swap import exchange


@dataclass
class TargetRollback:
    target: str
    kind: str
    live: str
    snapshot: str
    snapshot_time: str
    verified_at: str | None
    changes: dict[str, Any] = field(default_factory=dict)
    safety_snapshot: str | None = None
    state: str = "as before"  # "as before" | "rolled back" | "unknown"
    kept: list[str] = field(default_factory=list)  # the replaced tree / database, by name
    # what the restore step makes beside the live copy (sibling folder, new database, volume,
    # instance), named before it is made so --cleanup finds it after a killed run
    scratch: list[str] = field(default_factory=list)
    restore_s: float | None = None
    swap_s: float | None = None
    atomic: bool = True
    error: str | None = None


def live_paths(lp: LoadedPlan, t: models.FilesTarget, snap: Snapshot) -> list[Path]:
    paths = [Path(os.path.abspath(lp.resolve_path(p))) for p in t.paths]
    if sorted(map(str, paths)) != sorted(snap.paths):
        raise UsageError(f"target {t.name}: snapshot {snap.short_id} holds "
                         f"{', '.join(snap.paths)}, but the plan now backs up "
                         f"{', '.join(map(str, paths))}; it cannot be swapped in as is",
                         hint="restore it with `restorer restore` and move it by hand")
    return paths


def db_name(t: Any) -> str:
    if isinstance(t, models.MySQLTarget):
        return mysql.parse_dsn(t.dsn)[1]
    return postgres.split_dsn(t.dsn)[1]


def with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(name)))


class Swap(ABC):
    """One target's sibling copy and how to put it in place (and back)."""

    def __init__(self, lp: LoadedPlan, repo: Repository, t: Any, snap: Snapshot,
                 stamp: str, out: TargetRollback) -> None:
        self.lp, self.repo, self.t, self.snap, self.out = lp, repo, t, snap, out
        self.stamp = stamp
        self.swapped = False

    @abstractmethod
    def restore(self) -> None:
        """Restore the snapshot beside the live copy; nothing live changes."""

    @abstractmethod
    def swap(self) -> None:
        """Put the restored copy in place of the live one, in one step."""

    @abstractmethod
    def swap_back(self) -> None:
        """Undo `swap` (another target's swap failed)."""

    @abstractmethod
    def discard(self) -> None:
        """Remove the sibling copy (before a swap) or the replaced data (after success)."""

    @abstractmethod
    def check_subject(self) -> Stage:
        """The live target, for the plan's checks after the swap."""


class FilesSwap(Swap):
    """Each live path P gets its copy at P.parent/.restorer-rollback-STAMP/P.name (same
    filesystem, so the swap is a rename)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.paths = live_paths(self.lp, self.t, self.snap)
        self.siblings = {p: p.parent / f".restorer-rollback-{self.stamp}" for p in self.paths}
        self.done: list[Path] = []
        self.out.scratch = sorted({str(s) for s in self.siblings.values()})

    def restore(self) -> None:
        by_sibling: dict[Path, list[str]] = {}
        for p, sib in self.siblings.items():
            by_sibling.setdefault(sib, []).append(p.name)
        for sib, names in by_sibling.items():
            if os.path.lexists(sib):
                raise RestoreError(f"{sib} is in the way of the rollback's sibling copy")
            st = FilesWriter(self.repo, sib, include=names).restore(self.snap)
            if st.failed:
                raise RestoreError(
                    f"target {self.t.name}: {len(st.failed)} file(s) of snapshot "
                    f"{self.snap.short_id} could not be restored: "
                    + ", ".join(f for f, _ in st.failed[:5]),
                    hint="the snapshot is damaged; run `restorer check PLAN --read-data` and "
                    "roll back to another snapshot with --to")

    def swap(self) -> None:
        for p, sib in self.siblings.items():
            new = sib / p.name
            if os.path.lexists(p):
                self.out.atomic = exchange(new, p) and self.out.atomic
            else:  # the live path is gone altogether: put the copy there
                os.makedirs(p.parent, exist_ok=True)
                os.rename(new, p)
                os.makedirs(new)  # an empty stand-in, so swap_back can exchange
            self.done.append(p)
        self.swapped = True
        self.out.kept = [str(s / p.name) for p, s in self.siblings.items()]

    def swap_back(self) -> None:
        for p in reversed(self.done):
            exchange(self.siblings[p] / p.name, p)
        self.done.clear()
        self.swapped = False
        self.out.kept = []

    def discard(self) -> None:
        for sib in set(self.siblings.values()):
            shutil.rmtree(sib, ignore_errors=True)
        self.out.kept = []

    def check_subject(self) -> Stage:
        cwd = self.paths[0] if len(self.paths) == 1 and self.paths[0].is_dir() \
            else self.paths[0].parent
        parents = {p.name: p.parent for p in self.paths}
        return LiveTarget(
            self.lp, self.repo, self.t, self.snap, env={"RESTORER_STAGING": str(cwd)}, cwd=cwd,
            manifest=lambda: compare_tree(
                self.repo, self.snap, Restored(),
                lambda rel: chunk_ids(self.repo, parents[rel.parts[0]] / rel)))


class PostgresSwap(Swap):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.password = self.lp.secret(t.password, f"targets.{t.name}.password")
        admin, self.live = postgres.split_dsn(t.dsn)
        base = self.live[:30]  # PostgreSQL names end at 63 bytes
        self.new = f"{base}_rb_{self.stamp}"
        self.old = f"{base}_pre_rb_{self.stamp}"
        self.out.scratch = [self.new]
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
                                   terminate=self.lp.plan.rollback.terminate_connections,
                                   what=self.what)
        self.swapped = True
        self.out.kept = [self.old]

    def swap_back(self) -> None:
        postgres.pg_swap_databases(self._dsn(self.live), self.old, self.new, self.password,
                                   terminate=True, what=self.what)
        self.swapped = False
        self.out.kept = []

    def discard(self) -> None:
        if self.created and not self.swapped:
            postgres.pg_drop_database(self._dsn(self.new), self.password, what=self.what)
        # after a swap the replaced database is kept under its dated name until --cleanup

    def check_subject(self) -> Stage:
        dsn, password = self._dsn(self.live), self.password
        return LiveTarget(self.lp, self.repo, self.t, self.snap, dsn=dsn, password=password,
                          env={"RESTORER_STAGING_DSN": dsn,
                               **({"PGPASSWORD": password} if password else {})})


class MySQLSwap(Swap):
    """MariaDB/MySQL have no RENAME DATABASE: the restored tables and the live ones trade
    places in one RENAME TABLE statement. A database with views, triggers, routines or
    events is refused (they do not move with their tables)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.password = self.lp.secret(t.password, f"targets.{t.name}.password")
        self.live = mysql.parse_dsn(t.dsn)[1]
        base = self.live[:30]  # PostgreSQL names end at 63 bytes
        self.new, self.old = f"{base}_rb_{self.stamp}", f"{base}_pre_rb_{self.stamp}"
        self.out.scratch = [self.new]
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
                                       terminate=self.lp.plan.rollback.terminate_connections,
                                       what=self.what)
            self.swapped = True
            self.out.kept = [self.old]
            mysql.mysql_drop_database(with_db(self.t.dsn, self.new), self.password,
                                      what=self.what)  # empty now
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None

    def swap_back(self) -> None:
        mysql.mysql_swap_databases(self.t.dsn, self.old, self.new, self.password,
                                   terminate=True, what=self.what)
        self.swapped = False
        self.out.kept = []

    def discard(self) -> None:
        if self.created and not self.swapped:
            mysql.mysql_drop_database(with_db(self.t.dsn, self.new), self.password,
                                      what=self.what)

    def check_subject(self) -> Stage:
        dsn, password = self.t.dsn, self.password
        return LiveTarget(self.lp, self.repo, self.t, self.snap, dsn=dsn, password=password,
                          env={"RESTORER_STAGING_DSN": dsn,
                               **({"MYSQL_PWD": password} if password else {})})


def swapper(lp: LoadedPlan, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             out: TargetRollback, reuse: str | None = None) -> Swap:
    """How to put `snap` in place of target `t`; `reuse` names a volume or instance an
    earlier rollback kept, to be put back as it is (--undo of a cloud target)."""
    if isinstance(t, models.EBSTarget | models.RDSTarget):
        from restorer.actions import rollback_cloud as rc

        if reuse and rc.still_there(lp, t, reuse):
            back: type[Swap] = rc.EBSPutBack if isinstance(t, models.EBSTarget) else \
                rc.RDSPutBack
            return back(lp, repo, t, snap, stamp, out, reuse)  # type: ignore[call-arg]
        cloud: type[Swap] = rc.EBSSwap if isinstance(t, models.EBSTarget) else rc.RDSSwap
        return cloud(lp, repo, t, snap, stamp, out)
    cls: type[Swap] = (FilesSwap if isinstance(t, models.FilesTarget) else
                       MySQLSwap if isinstance(t, models.MySQLTarget) else PostgresSwap)
    return cls(lp, repo, t, snap, stamp, out)
