"""Prove a repository intact: structure always, and with read_data every byte of the packs.

Damage is reported the way a person needs it: which packs, and which snapshots and files
those packs take with them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from restorer.errors import IntegrityError, NotFoundError, RestorerError
from restorer.outcome import Outcome
from restorer.repo import blobs
from restorer.repo.packs import read_header
from restorer.repo.repository import Repository, pack_name
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import DIR, FILE, Node


@dataclass
class CheckResult:
    snapshots: int = 0
    trees: int = 0
    blobs_referenced: int = 0
    packs_indexed: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack id -> what is wrong
    affected: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> paths
    unreferenced_packs: list[str] = field(default_factory=list)
    # blobs a snapshot reaches that no index names (a lost index file, not lost data, when
    # unreferenced packs hold them)
    unindexed: int = 0
    damaged_index: dict[str, str] = field(default_factory=dict)  # index file -> problem
    damaged_snapshots: dict[str, str] = field(default_factory=dict)  # snapshot id -> problem

    @property
    def repairs(self) -> list[str]:
        """The `restorer repair` commands that would mend what was found."""
        out = []
        if self.damaged_index or (self.unindexed and self.unreferenced_packs):
            out.append("index")
        if self.damaged_snapshots:
            out.append("snapshots")
        return out

    @property
    def ok(self) -> bool:
        return not self.errors and not self.damaged_packs

    @property
    def outcome(self) -> Outcome:
        return Outcome.OK if self.ok else Outcome.FAILED

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "snapshots": self.snapshots,
            "trees": self.trees,
            "blobs_referenced": self.blobs_referenced,
            "packs_indexed": self.packs_indexed,
            "packs_read": self.packs_read,
            "bytes_read": self.bytes_read,
            "errors": self.errors,
            "damaged_packs": [{"pack": k, "problem": v} for k, v in self.damaged_packs.items()],
            "affected": [{"snapshot": k, "paths": v} for k, v in self.affected.items()],
            "unreferenced_packs": self.unreferenced_packs,
            "unindexed_blobs": self.unindexed,
            "damaged_index_files": [{"file": k, "problem": v}
                                    for k, v in self.damaged_index.items()],
            "damaged_snapshots": [{"snapshot": k, "problem": v}
                                  for k, v in self.damaged_snapshots.items()],
            "repairs": self.repairs,
        }


class Checker:
    def __init__(self, repo: Repository, on_progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.result = CheckResult()
        self.on_progress = on_progress
        self._bad_blobs: set[bytes] = set()
        self._bad_trees: dict[str, str] = {}

    def run(self, read_data_percent: float = 0.0, seed: int | None = None) -> CheckResult:
        r = self.result
        repo = self.repo
        # index files
        stored = {o.name.rsplit("/", 1)[-1]: o.size for o in repo.backend.list("data/")}
        for obj in repo.backend.list("index/"):
            try:
                for pack, entries in repo.read_index_file(obj.name).items():
                    repo.index.add(pack, entries)
            except IntegrityError as e:
                r.damaged_index[obj.name] = e.message
                r.errors.append(e.message)
        repo._index_loaded = True
        r.packs_indexed = len(repo.index.packs)
        for pack, ids in repo.index.packs.items():
            if pack not in stored:
                self._damage(pack, "pack file is missing", ids)
                continue
            mine = [b for b in ids if repo.index.loc(b).pack == pack]
            cut = [b for b in mine
                   if repo.index.loc(b).offset + repo.index.loc(b).length > stored[pack]]
            if cut:
                end = max(repo.index.loc(b).offset + repo.index.loc(b).length for b in cut)
                # blobs wholly before the cut may still be intact; only the cut ones are lost
                self._damage(pack, f"pack file is truncated ({stored[pack]} of at least {end} "
                             "bytes)", cut)
        r.unreferenced_packs = sorted(set(stored) - set(repo.index.packs))
        # data
        if read_data_percent > 0:
            packs = sorted(p for p in repo.index.packs if p in stored)
            if read_data_percent < 100:
                rng = random.Random(seed)
                k = max(1, round(len(packs) * read_data_percent / 100)) if packs else 0
                packs = sorted(rng.sample(packs, k))
            for pack in packs:
                self._read_pack(pack)
        # snapshots and trees
        def damaged(sid: str, e: Exception) -> None:
            why = e.message if isinstance(e, RestorerError) else str(e)
            r.damaged_snapshots[sid] = why
            r.errors.append(f"snapshot {sid[:8]} cannot be read: {why}")

        snaps = repo.list_snapshots(on_error=damaged)
        r.snapshots = len(snaps)
        seen_trees: set[str] = set()
        seen_blobs: set[bytes] = set()
        for s in snaps:
            self._walk(s, seen_trees, seen_blobs)
        r.trees = len(seen_trees)
        r.blobs_referenced = len(seen_blobs)
        return r

    def _damage(self, pack: str, problem: str, ids: list[bytes]) -> None:
        self.result.damaged_packs.setdefault(pack, problem)
        self._bad_blobs.update(ids)

    def _read_pack(self, pack: str) -> None:
        repo = self.repo
        r = self.result
        ids = repo.index.packs[pack]
        try:
            data = repo.backend.read(pack_name(pack))
        except NotFoundError:
            self._damage(pack, "pack file is missing", ids)
            return
        except RestorerError as e:
            self._damage(pack, f"cannot be read: {e.message}", ids)
            return
        r.packs_read += 1
        r.bytes_read += len(data)
        if self.on_progress:
            self.on_progress(len(data))
        if hashlib.sha256(data).hexdigest() != pack:
            problem = "content does not match its name (damaged)"
            # find which blobs are still good so the report names only what is lost
            bad = []
            for b in ids:
                loc = repo.index.loc(b)
                if loc.pack != pack:
                    continue
                try:
                    blobs.decode_blob(repo.sealer, b, data[loc.offset: loc.offset + loc.length],
                                      loc.raw_length, f"pack {pack[:16]}")
                except IntegrityError:
                    bad.append(b)
            self.result.damaged_packs.setdefault(pack, problem)
            self._bad_blobs.update(bad)
            return
        try:
            header = read_header(repo.sealer, data, f"pack {pack[:16]}")
        except IntegrityError as e:
            self.result.damaged_packs[pack] = f"header unreadable: {e}"
            return
        in_header = {e.id for e in header}
        missing = [b for b in ids if repo.index.loc(b).pack == pack and b not in in_header]
        if missing:
            self._damage(pack, f"{len(missing)} indexed blob(s) absent from the pack", missing)

    def _walk(self, s: Snapshot, seen_trees: set[str], seen_blobs: set[bytes]) -> None:
        if not s.tree:
            return
        affected: list[str] = []
        repo = self.repo

        # an explicit stack of listings, each resumed where it left off: the order of the
        # recursion it replaces, without its depth limit (the repository chooses the depth)
        stack: list[tuple[Iterator[Node], str, bool]] = []

        def enter(tree_id: str, path: str) -> None:
            if tree_id in self._bad_trees:
                affected.append(f"{path or '/'} (whole directory: {self._bad_trees[tree_id]})")
                return
            bid = bytes.fromhex(tree_id)
            if bid in self._bad_blobs or bid not in repo.index:
                why = "its listing is in a damaged pack" if bid in self._bad_blobs else \
                    "its listing is missing from the index"
                self._bad_trees[tree_id] = why
                affected.append(f"{path or '/'} (whole directory: {why})")
                if bid not in repo.index:
                    self.result.unindexed += 1
                    self.result.errors.append(
                        f"snapshot {s.short_id}: tree {tree_id[:16]} ({path or '/'}) not indexed")
                return
            try:
                nodes = repo.load_tree(tree_id, f"snapshot {s.short_id}:{path or '/'}")
            except RestorerError as e:
                self._bad_trees[tree_id] = e.message
                affected.append(f"{path or '/'} (whole directory: {e.message})")
                self.result.errors.append(f"snapshot {s.short_id}: {e.message}")
                return
            stack.append((iter(nodes), path, tree_id not in seen_trees))
            seen_trees.add(tree_id)

        enter(s.tree, "")
        while stack:
            nodes_left, path, first_visit = stack[-1]
            n = next(nodes_left, None)
            if n is None:
                stack.pop()
                continue
            p = f"{path}/{n['name']}"
            if n["type"] == FILE:
                for c in n.get("content", ()):
                    b = bytes.fromhex(c)
                    seen_blobs.add(b)
                    if b in self._bad_blobs:
                        affected.append(p)
                        break
                    if b not in repo.index:
                        if first_visit:
                            self.result.unindexed += 1
                            self.result.errors.append(
                                f"snapshot {s.short_id}: {p}: data blob {c[:16]} not indexed")
                        affected.append(p)
                        break
            elif n["type"] == DIR and n.get("subtree"):
                enter(n["subtree"], p)
        if affected:
            self.result.affected[s.id] = affected
