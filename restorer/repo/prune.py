"""Removing what no snapshot needs any more, in an order that keeps the repository valid at
every step (a crash anywhere leaves every kept snapshot restorable):

  1. repack: the blobs still needed from packs that are mostly garbage are written into new
     packs (with their own index files), read and verified on the way;
  2. the forgotten snapshots' files are deleted;
  3. one new index file is written for every pack that stays;
  4. the index files read at the start are deleted (from here on only the new ones count);
  5. packs nothing indexes any more are deleted: garbage, repacked, and packs an earlier
     crash left without an index.
Every deletion is by difference: names of the old state that the new state does not name.

A blob is needed when a kept snapshot (of any plan in the repository) reaches it. A blob
stored twice (two runs uploaded it) is needed in one pack only, so prune also drops copies.
The caller holds the repository's exclusive lock: no backup writes while this runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from restorer.errors import IntegrityError
from restorer.repo.index import Index
from restorer.repo.packs import PackEntry
from restorer.repo.repository import BlobWriter, Repository, pack_name
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import FILE

# a pack is rewritten when more than this share of its bytes is garbage
REPACK_GARBAGE = 0.25


@dataclass
class PrunePlan:
    forget: list[Snapshot]
    delete_packs: list[str] = field(default_factory=list)
    repack_packs: list[str] = field(default_factory=list)
    orphan_packs: list[str] = field(default_factory=list)
    keep_packs: list[str] = field(default_factory=list)
    index_files: list[str] = field(default_factory=list)
    entries: dict[str, list[PackEntry]] = field(default_factory=dict)
    needed_in: dict[str, list[PackEntry]] = field(default_factory=dict)
    pack_sizes: dict[str, int] = field(default_factory=dict)
    bytes_freed: int = 0
    bytes_repacked: int = 0

    def to_json(self) -> dict:
        return {"snapshots_forgotten": len(self.forget),
                "packs_deleted": len(self.delete_packs) + len(self.orphan_packs),
                "packs_repacked": len(self.repack_packs), "packs_kept": len(self.keep_packs),
                "bytes_freed": self.bytes_freed, "bytes_repacked": self.bytes_repacked}


def reachable(repo: Repository, snaps: Iterable[Snapshot]) -> set[bytes]:
    """Every blob id (trees and file contents) the snapshots reach."""
    seen: set[bytes] = set()
    for s in snaps:
        # an unchanged directory shared with another snapshot is walked once
        if s.tree and bytes.fromhex(s.tree) not in seen:
            for _path, n in repo.walk(s.tree, seen, where=f"snapshot {s.short_id}:"):
                if n["type"] == FILE:
                    seen.update(bytes.fromhex(c) for c in n.get("content", ()))
    return seen


def plan_prune(repo: Repository, keep: list[Snapshot], forget: list[Snapshot]) -> PrunePlan:
    plan = PrunePlan(forget)
    plan.index_files = [o.name for o in repo.backend.list("index/")]
    for name in plan.index_files:
        for pack, entries in repo.read_index_file(name).items():
            plan.entries.setdefault(pack, []).extend(entries)
    plan.pack_sizes = {o.name.rsplit("/", 1)[-1]: o.size for o in repo.backend.list("data/")}
    needed = reachable(repo, keep)
    missing = [b for b in needed if b not in repo.index]
    if missing:
        raise IntegrityError(
            f"{len(missing)} blob(s) that kept snapshots need are in no index (first: "
            f"{missing[0].hex()[:16]}); prune stops before removing anything",
            hint="run `restorer check PLAN --read-data` to see which snapshots are damaged")
    placed: set[bytes] = set()
    for pack, entries in plan.entries.items():
        mine = []
        for e in entries:
            # a blob stored more than once is needed where the index looks first
            if e.id in needed and e.id not in placed and repo.index.blobs[e.id][0] == pack:
                mine.append(e)
                placed.add(e.id)
        plan.needed_in[pack] = mine
        size = plan.pack_sizes.get(pack, sum(e.length for e in entries))
        used = sum(e.length for e in mine)
        if not mine:
            plan.delete_packs.append(pack)
            plan.bytes_freed += size
        elif size and (size - used) / size > REPACK_GARBAGE:
            plan.repack_packs.append(pack)
            plan.bytes_freed += size - used
            plan.bytes_repacked += used
        else:
            plan.keep_packs.append(pack)
    indexed = set(plan.entries)
    plan.orphan_packs = sorted(p for p in plan.pack_sizes if p not in indexed)
    plan.bytes_freed += sum(plan.pack_sizes[p] for p in plan.orphan_packs)
    return plan


def execute(repo: Repository, plan: PrunePlan) -> None:
    # Content-addressed files can carry the same name in the old and the new state (an index
    # written for the packs that stay can be byte for byte an index read at the start), so
    # every deletion below removes old names minus the names the new state holds.
    # 1. repack what is still needed from mostly-garbage packs
    new_packs: set[str] = set()
    new_index: set[str] = set()
    if plan.repack_packs:
        with BlobWriter(repo) as w:
            for pack in plan.repack_packs:
                for e in plan.needed_in[pack]:
                    w.copy(e.type, repo.load_blob(e.id), e.id)
            w.flush()
            new_packs |= w.written_packs
            new_index |= w.written_index
    # 2. the forgotten snapshots
    for s in plan.forget:
        repo.backend.delete(f"snapshots/{s.id}")
    # 3. one index for every pack that stays (repacked blobs are in the writer's index files)
    kept = {p: plan.entries[p] for p in plan.keep_packs}
    if kept:
        new_index.add(f"index/{repo.write_file('index', Index.serialize(kept))}")
    new_packs |= set(plan.keep_packs)
    # 4. the old index files (from here on only the new ones count)
    for name in plan.index_files:
        if name not in new_index:
            repo.backend.delete(name)
    # 5. packs nothing indexes any more
    for pack in plan.delete_packs + plan.repack_packs + plan.orphan_packs:
        if pack not in new_packs:
            repo.backend.delete(pack_name(pack))
