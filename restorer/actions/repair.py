"""repair: mend the repository's metadata after damage, losing nothing that could be kept.

`repair index` rebuilds the index from the packs' own headers (each pack lists its blobs in a
sealed header), writes the new index files, and only then removes the old ones: a crash in
between leaves both, which is harmless. A damaged index file is moved aside to
`damaged/index/`, never just deleted.

`repair snapshots` moves snapshot records that cannot be read aside to `damaged/snapshots/`
(copied there, then removed): nothing is deleted, and what was moved can be inspected or put
back by hand. borg's repair taught what goes wrong otherwise (borg #3444, #5325): a repair
that deletes what it cannot read destroys the evidence and sometimes the data.

Both take the exclusive lock, list what they would do first (`--dry-run` stops there), and
ask unless told `--yes`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from restorer.actions.context import locked, open_repository
from restorer.errors import AlreadyExistsError, IntegrityError, NotFoundError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan
from restorer.repo import blobs
from restorer.repo.index import Index
from restorer.repo.packs import PackEntry
from restorer.repo.repository import Repository
from restorer.storage.base import Backend

log = logging.getLogger("restorer.repair")
PACKS_PER_INDEX_FILE = 1000
DAMAGED = "damaged"


@dataclass
class RepairResult:
    plan: str
    dry_run: bool
    declined: bool = False
    duration_s: float = 0.0

    @property
    def outcome(self) -> Outcome:
        return Outcome.DECLINED if self.declined else Outcome.OK

    @property
    def has_work(self) -> bool:
        return True

    def _head(self) -> dict[str, Any]:
        return {"plan": self.plan, "dry_run": self.dry_run, "declined": self.declined}


@dataclass
class IndexRepair(RepairResult):
    packs_read: int = 0
    blobs: int = 0
    index_files_before: int = 0
    damaged_index: dict[str, str] = field(default_factory=dict)  # file -> problem
    unreadable_packs: dict[str, str] = field(default_factory=dict)  # header unreadable
    # packs whose header is unreadable but a readable old index still describes them
    kept_from_old_index: list[str] = field(default_factory=list)
    newly_indexed_packs: list[str] = field(default_factory=list)  # no readable index named them
    dropped_missing_packs: list[str] = field(default_factory=list)  # indexed, but gone
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "packs_read": self.packs_read, "blobs": self.blobs,
            "index_files_before": self.index_files_before,
            "damaged_index_files": [{"file": k, "problem": v}
                                    for k, v in self.damaged_index.items()],
            "unreadable_packs": [{"pack": k, "problem": v}
                                 for k, v in self.unreadable_packs.items()],
            "kept_from_old_index": self.kept_from_old_index,
            "newly_indexed_packs": self.newly_indexed_packs,
            "dropped_missing_packs": self.dropped_missing_packs,
            "index_files_written": self.written, "index_files_removed": self.removed,
            "moved_aside": self.moved_aside, "duration_s": round(self.duration_s, 3),
        }


@dataclass
class SnapshotRepair(RepairResult):
    readable: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # snapshot id -> problem
    moved_aside: dict[str, str] = field(default_factory=dict)  # snapshot id -> where it went

    @property
    def has_work(self) -> bool:
        return bool(self.damaged)

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "readable": self.readable,
            "damaged": [{"snapshot": k, "problem": v} for k, v in self.damaged.items()],
            "moved_aside": [{"snapshot": k, "to": v} for k, v in self.moved_aside.items()],
            "duration_s": round(self.duration_s, 3),
        }


R = TypeVar("R", bound=RepairResult)


def _run_repair(lp: LoadedPlan, res: R, label: str, lock_wait: float,
                confirm: Callable[[R], bool] | None, run: RunRecorder | None,
                read: Callable[[Repository], dict[str, Any]],
                act: Callable[[Repository], dict[str, Any]]) -> R:
    """The shape both repairs share: the exclusive lock, `read` (what is wrong, recorded as
    the ledger's read phase), then, unless a dry run, nothing to do or a "no" at the prompt,
    `act` (the repair phase)."""
    start = time.monotonic()
    repo = open_repository(lp)
    try:
        with locked(repo, exclusive=True, wait=lock_wait, label=label) as lock:
            if run:
                run.record_phase("lock", lock.waited)
            t0 = time.monotonic()
            found = read(repo)
            if run:
                run.record_phase("read", time.monotonic() - t0, dry_run=res.dry_run, **found)
            if res.dry_run or not res.has_work:
                return res
            if confirm is not None and not confirm(res):
                res.declined = True
                return res
            t0 = time.monotonic()
            done = act(repo)
            if run:
                run.record_phase("repair", time.monotonic() - t0, **done)
    finally:
        res.duration_s = time.monotonic() - start
    return res


def move_aside(backend: Backend, name: str) -> str:
    """Copy `name` to damaged/<name>, then remove it; the copy's name (a crash in between
    leaves both: a re-run finds the copy and finishes)."""
    data = backend.read(name)
    for n in range(100):
        dest = f"{DAMAGED}/{name}" + (f".{n}" if n else "")
        try:
            backend.write(dest, data)
            break
        except AlreadyExistsError:
            if backend.read(dest) == data:
                break  # an interrupted earlier repair copied it already
    else:
        raise IntegrityError(f"cannot find a free name under {DAMAGED}/ for {name}")
    backend.delete(name)
    return dest


def repair_index(lp: LoadedPlan, *, dry_run: bool = False, lock_wait: float = 0.0,
                 confirm: Callable[[IndexRepair], bool] | None = None,
                 run: RunRecorder | None = None) -> IndexRepair:
    res = IndexRepair(lp.name, dry_run)
    old_files: list[str] = []
    rebuilt: dict[str, list[PackEntry]] = {}

    def read(repo: Repository) -> dict[str, Any]:
        old_files.extend(o.name for o in repo.backend.list("index/"))
        res.index_files_before = len(old_files)
        old: dict[str, list[PackEntry]] = {}
        for name in old_files:
            try:
                for pack, entries in repo.read_index_file(name).items():
                    old.setdefault(pack, []).extend(entries)
            except IntegrityError as e:
                res.damaged_index[name] = e.message
        rebuilt.update(_read_headers(repo, old, res))
        res.blobs = sum(len(v) for v in rebuilt.values())
        return {"packs": res.packs_read, "blobs": res.blobs,
                "damaged_index": len(res.damaged_index),
                "unreadable_packs": len(res.unreadable_packs)}

    def act(repo: Repository) -> dict[str, Any]:
        packs = sorted(rebuilt)
        new: set[str] = set()
        for i in range(0, len(packs), PACKS_PER_INDEX_FILE):
            part = {p: rebuilt[p] for p in packs[i: i + PACKS_PER_INDEX_FILE]}
            stored = blobs.encode_file(repo.sealer, Index.serialize(part))
            name = f"index/{hashlib.sha256(stored).hexdigest()}"
            if name in res.damaged_index:
                # a plain repository's rebuilt index can carry the very name of the damaged
                # file (same content, deterministic bytes): move that one aside first, or
                # the write would keep the damaged bytes as "already there"
                res.moved_aside.append(move_aside(repo.backend, name))
            if repo.lock_guard is not None:
                repo.lock_guard()
            repo.write_named(name, stored)
            new.add(name)
        res.written = sorted(new)
        # only now that the new index is complete do the old files go, by difference
        for name in old_files:
            if name in new:
                continue
            if name in res.damaged_index:
                res.moved_aside.append(move_aside(repo.backend, name))
            else:
                repo.backend.delete(name)
                res.removed.append(name)
        return {"written": len(res.written), "removed": len(res.removed),
                "moved_aside": len(res.moved_aside)}

    return _run_repair(lp, res, "restorer repair index", lock_wait, confirm, run, read, act)


def _read_headers(repo: Repository, old: dict[str, list[PackEntry]],
                  res: IndexRepair) -> dict[str, list[PackEntry]]:
    out: dict[str, list[PackEntry]] = {}
    present = set()
    for obj in repo.backend.list("data/"):
        pid = obj.name.rsplit("/", 1)[-1]
        present.add(pid)
        try:
            out[pid] = repo.read_pack_header(pid, obj.size)
            res.packs_read += 1
            if pid not in old:
                res.newly_indexed_packs.append(pid)
        except (IntegrityError, NotFoundError) as e:
            res.unreadable_packs[pid] = e.message
            if pid in old:
                # the header is lost but an index read at the start still says what the
                # pack holds: keep that (check --read-data proves each blob on its own)
                out[pid] = old[pid]
                res.kept_from_old_index.append(pid)
    res.dropped_missing_packs = sorted(p for p in old if p not in present)
    return out


def repair_snapshots(lp: LoadedPlan, *, dry_run: bool = False, lock_wait: float = 0.0,
                     confirm: Callable[[SnapshotRepair], bool] | None = None,
                     run: RunRecorder | None = None) -> SnapshotRepair:
    res = SnapshotRepair(lp.name, dry_run)

    def read(repo: Repository) -> dict[str, Any]:
        snaps = repo.list_snapshots(on_error=lambda sid, e: res.damaged.__setitem__(
            sid, getattr(e, "message", str(e))))
        res.readable = len(snaps)
        return {"readable": res.readable, "damaged": len(res.damaged)}

    def act(repo: Repository) -> dict[str, Any]:
        for sid in res.damaged:
            res.moved_aside[sid] = move_aside(repo.backend, f"snapshots/{sid}")
            log.info("snapshot record %s moved to %s", sid[:8], res.moved_aside[sid])
        return {"moved_aside": len(res.moved_aside)}

    return _run_repair(lp, res, "restorer repair snapshots", lock_wait, confirm, run, read,
                       act)
