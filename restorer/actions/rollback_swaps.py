"""How each kind of target is put back during a rollback: restored beside the live copy,
swapped in in one step, swapped back if another target fails, and checked live."""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import stat
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from restorer.actions.staging import LiveTarget, Restored, Stage, chunk_ids, compare_tree
from restorer.errors import RestoreError, SourceError, UsageError
from restorer.fsutil import remove_tree
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import DIR
from restorer.sources import mysql, postgres
from restorer.sources.excludes import Excluder
from restorer.sources.files_restore import FilesWriter
from restorer.sources.stream import restore_stream
from restorer.sources.swap import exchange, move_noreplace


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

    @property
    def touched(self) -> bool:
        """Whether live data changed, so a failure must call swap_back."""
        return self.swapped

    def prepare(self, safety: Snapshot) -> None:  # noqa: B027 - most kinds need nothing
        """After the safety snapshot, before the swap: refuse what cannot be swapped."""

    def journal(self) -> dict[str, Any]:
        """What a killed run's recovery needs to know, written before the swap."""
        return {}

    def resume(self, journal: dict[str, Any]) -> None:
        """Set `swapped` from what is live now, for the recovery of a killed run."""
        raise RestoreError(f"target {self.t.name}: a killed rollback of a {self.t.kind} "
                           "target cannot be finished automatically",
                           hint="check the target by hand; `restorer rollback PLAN --undo` "
                           "returns to the safety snapshot")


@dataclass
class CarryPlan:
    """For one live path: what the backup never held (excluded entries, files added there
    since, anything the safety snapshot could not save), moved into the restored tree right
    before the swap so it stays where it is. Written into the run's record before anything
    moves, so a killed run can be finished or reverted."""

    new_id: list[int]  # (st_dev, st_ino) of the restored tree: after a crash, tells
    #                    whether the live path is the restored tree (the swap happened)
    entries: list[str] = field(default_factory=list)  # relative to the path
    made: list[str] = field(default_factory=list)  # folders made in the restored tree for them
    live_times: dict[str, list[int]] = field(default_factory=dict)  # dir -> [atime, mtime] ns
    new_times: dict[str, list[int]] = field(default_factory=dict)


def _times(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_atime_ns, st.st_mtime_ns]


class FilesSwap(Swap):
    """Each live path P gets its copy at P.parent/.restorer-rollback-STAMP/P.name (same
    filesystem, so the swap is a rename). What the backup never held is carried from the
    live tree into the copy just before the swap (renames, never copies), so a rollback
    puts back what the backup holds and leaves the rest as it is."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.paths = live_paths(self.lp, self.t, self.snap)
        self.siblings = {p: p.parent / f".restorer-rollback-{self.stamp}" for p in self.paths}
        self.done: list[Path] = []
        self.plans: dict[Path, CarryPlan] = {}
        self.keep: set[Path] = set()  # siblings never to remove (a swap back met a conflict)
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

    # --- what stays: entries the backup never held ---------------------------------------

    def preview_kept(self) -> list[str]:
        """For --dry-run: the live entries the target's excludes keep out of every backup
        (the real run carries whatever its safety snapshot does not hold)."""
        ex = Excluder(self.t.exclude)
        out: list[str] = []
        for p in self.paths:
            if not ex.rules or not os.path.isdir(p) or os.path.islink(p):
                continue
            stack = [""]
            while stack:
                rel = stack.pop()
                try:
                    with os.scandir(p / rel if rel else p) as it:
                        found = sorted(it, key=lambda e: e.name)
                except OSError:
                    continue  # a preview: what cannot be listed is not listed
                for e in found:
                    r = f"{rel}/{e.name}" if rel else e.name
                    is_dir = e.is_dir(follow_symlinks=False)
                    if ex.excluded(r, e.name, is_dir):
                        out.append(f"{p.name}/{r}")
                    elif is_dir:
                        stack.append(r)
        return sorted(out)

    def prepare(self, safety: Snapshot) -> None:
        """After the safety snapshot: plan what to carry over (live entries it does not
        hold); refuse, before anything moves, what cannot be carried."""
        self.safety_roots = {n["name"]: n for n in self.repo.load_tree(safety.tree)} \
            if safety.tree else {}
        for p in self.paths:
            self.plans[p] = self._plan(p, self.safety_roots.get(p.name))

    def _not_held(self, root: Path, held_root: dict[str, Any] | None,
                  changed: bool = False) -> list[str]:
        """Entries under the folder `root` (relative to it) that the tree `held_root` of a
        snapshot does not hold; a folder not held is one entry (not descended). With
        `changed`, also files whose size or mtime differ from the snapshot's."""
        root_dev = os.lstat(root).st_dev
        out: list[str] = []
        stack: list[tuple[str, str | None]] = [
            ("", held_root.get("subtree") if held_root and held_root["type"] == DIR else None)]
        while stack:
            rel, tree_id = stack.pop()
            held = {n["name"]: n for n in self.repo.load_tree(tree_id)} if tree_id else {}
            with os.scandir(root / rel if rel else root) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                r = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if is_dir and st.st_dev != root_dev:
                    raise RestoreError(
                        f"target {self.t.name}: {root / r} is a mount point; a rollback swaps "
                        "whole trees and cannot carry a mounted file system over",
                        hint="unmount it during the rollback (rollback.before), or roll back "
                        "with `restorer restore` and move files by hand")
                n = held.get(e.name)
                if n is None:
                    out.append(r)
                elif is_dir and n["type"] == DIR and n.get("subtree"):
                    stack.append((r, n["subtree"]))
                elif changed and stat.S_ISREG(st.st_mode) and (
                        n.get("size") != st.st_size or n.get("mtime_ns") != st.st_mtime_ns):
                    out.append(r)
        return out

    def _plan(self, p: Path, held_root: dict[str, Any] | None) -> CarryPlan:
        new_root = self.siblings[p] / p.name
        st_new = os.lstat(new_root)
        plan = CarryPlan([st_new.st_dev, st_new.st_ino])
        if not os.path.lexists(p) or not stat.S_ISDIR(os.lstat(p).st_mode) \
                or not stat.S_ISDIR(st_new.st_mode):
            return plan
        plan.entries = self._not_held(p, held_root)
        for r in plan.entries:
            self._plan_parents(p, new_root, r, plan)
        return plan

    def _plan_parents(self, p: Path, new_root: Path, r: str, plan: CarryPlan) -> None:
        plan.new_times.setdefault("", _times(new_root))
        parent = posixpath.dirname(r)
        plan.live_times.setdefault(parent, _times(p / parent if parent else p))
        parts = r.split("/")
        for i in range(len(parts)):
            q = "/".join(parts[: i + 1])
            target = new_root / q
            if not os.path.lexists(target):
                if i == len(parts) - 1:
                    return
                if q not in plan.made:
                    plan.made.append(q)
                    # a folder made to hold carried entries looks like the live one
                    plan.new_times[q] = _times(p / q)
                continue
            if i == len(parts) - 1:
                raise RestoreError(
                    f"target {self.t.name}: {p / r} is in no backup (excluded now, or not "
                    f"saved), yet snapshot {self.snap.short_id} holds {r}; the rollback would "
                    "replace it and nothing could bring it back",
                    hint="move it out of the way first, or restore with `restorer restore`")
            if not stat.S_ISDIR(os.lstat(target).st_mode):  # a symlink or a file in the way
                raise RestoreError(
                    f"target {self.t.name}: {p / r} is in no backup and must stay, but in "
                    f"snapshot {self.snap.short_id} {q} is not a folder that could hold it",
                    hint="move it out of the way first, or restore with `restorer restore`")
            plan.new_times.setdefault(q, _times(target))

    def _carry(self, p: Path) -> None:
        plan = self.plans.get(p)
        if plan is None or not plan.entries:
            return
        new_root = self.siblings[p] / p.name
        for q in plan.made:
            if not os.path.lexists(new_root / q):
                st = os.lstat(p / q)
                os.mkdir(new_root / q, stat.S_IMODE(st.st_mode))
                if os.geteuid() == 0:
                    os.lchown(new_root / q, st.st_uid, st.st_gid)
        for r in plan.entries:
            move_noreplace(p / r, new_root / r)
        for q, (a, m) in plan.new_times.items():
            os.utime(new_root / q if q else new_root, ns=(a, m), follow_symlinks=False)

    def _uncarry(self, p: Path) -> None:
        """Put carried entries back into the live tree at `p` (after a swap back)."""
        plan = self.plans.get(p)
        if plan is None or not plan.entries:
            return
        new_root = self.siblings[p] / p.name
        for r in reversed(plan.entries):
            if not os.path.lexists(new_root / r):
                continue
            if os.path.lexists(p / r):
                # something was made at that path meanwhile: keep both, never delete either
                self.keep.add(self.siblings[p])
                continue
            move_noreplace(new_root / r, p / r)
        for q in reversed(plan.made):
            with contextlib.suppress(OSError):
                os.rmdir(new_root / q)
        for q, (a, m) in plan.live_times.items():
            with contextlib.suppress(FileNotFoundError):
                os.utime(p / q if q else p, ns=(a, m), follow_symlinks=False)

    def journal(self) -> dict[str, Any]:
        return {"paths": [{"path": str(p), **asdict(plan)} for p, plan in self.plans.items()]}

    def resume(self, journal: dict[str, Any]) -> None:
        """A killed run's state, from its journal: a path whose live inode is the restored
        tree's was swapped."""
        for j in journal.get("paths", []):
            p = Path(j["path"])
            if p not in self.siblings:
                continue
            plan = CarryPlan(list(j["new_id"]), list(j.get("entries", [])),
                             list(j.get("made", [])), dict(j.get("live_times", {})),
                             dict(j.get("new_times", {})))
            self.plans[p] = plan
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(p)
                if [st.st_dev, st.st_ino] == plan.new_id:
                    self.done.append(p)
        self.swapped = True  # carried entries may need to go back even with no path swapped

    # --- the swap --------------------------------------------------------------------------

    def swap(self) -> None:
        self.swapped = True  # from here, a failure needs swap_back (carried entries too)
        for p, sib in self.siblings.items():
            new = sib / p.name
            self._carry(p)
            if os.path.lexists(p):
                self.out.atomic = exchange(new, p) and self.out.atomic
            else:  # the live path is gone altogether: put the copy there
                os.makedirs(p.parent, exist_ok=True)
                os.rename(new, p)
                os.makedirs(new)  # an empty stand-in, so swap_back can exchange
            self.done.append(p)
        self.out.kept = [str(s / p.name) for p, s in self.siblings.items()]

    def swap_back(self) -> None:
        """Each path exchanged back and its carried entries returned; a path that fails
        does not stop the others, and its sibling is kept (it may hold live data)."""
        errors: list[str] = []
        for p in reversed(self.paths):
            try:
                if p in self.done:
                    exchange(self.siblings[p] / p.name, p)
                    self.done.remove(p)
                self._uncarry(p)
            except OSError as e:
                self.keep.add(self.siblings[p])
                errors.append(f"{p}: {e}")
        self.swapped = bool(self.done)
        self.out.kept = []
        if errors:
            raise OSError("; ".join(errors))

    def discard(self) -> None:
        for sib in set(self.siblings.values()):
            if sib in self.keep:
                self.out.error = (f"{sib} is kept: it may hold entries that are in no backup; "
                                  "look at it before removing it by hand")
                continue
            remove_tree(sib, ignore_errors=True)
        self.out.kept = [str(s) for s in self.keep]

    def discard_replaced(self) -> str | None:
        """After a successful swap: remove the replaced trees, unless one holds an entry
        its safety snapshot does not (written after the carry: the app was not stopped);
        then all are kept and the reason returned."""
        roots = getattr(self, "safety_roots", None)
        if roots is None:
            return "no safety snapshot was planned against; the replaced trees are kept"
        for p, sib in self.siblings.items():
            old = sib / p.name
            if not os.path.isdir(old) or os.path.islink(old):
                continue
            try:
                extra = self._not_held(old, roots.get(p.name), changed=True)
            except (OSError, RestoreError) as e:
                return f"the replaced tree {old} cannot be read ({e}); it is kept"
            if extra:
                return (f"the replaced tree {old} holds {len(extra)} entr"
                        f"{'y' if len(extra) == 1 else 'ies'} no backup has as they are now "
                        f"(first: {extra[0]}; written during the rollback?); it is kept until "
                        "`restorer rollback PLAN --cleanup`")
        self.discard()
        return None

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
        base = self.live[:30]  # MariaDB names end at 64 characters
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
