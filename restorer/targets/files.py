"""files: local folders and files, walked into trees (backup), written back into a folder
(restore), restored into a scratch folder (verify, here or on a staging host over SFTP), and
swapped with the live paths (rollback), keeping what no backup holds."""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restorer.errors import RestoreError, UsageError
from restorer.fsutil import remove_tree, walk
from restorer.plan import models
from restorer.progress import NoProgress, Progress
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import DIR
from restorer.sources.excludes import Excluder
from restorer.sources.files_backup import FilesReader, scan_size
from restorer.sources.files_restore import FilesWriter, RestoreStats
from restorer.sources.remote import q as quoted
from restorer.sources.remote import remote_run, ssh_session
from restorer.sources.sftp_restore import SFTPWriter
from restorer.sources.stream import RawReader
from restorer.sources.swap import exchange, move_noreplace
from restorer.targets.base import (
    LiveTarget,
    Made,
    Restored,
    RestoreRequest,
    Stage,
    Swap,
    TargetContext,
    TargetKind,
    TargetRollback,
    backup_summary,
    can,
    chunk_ids,
    compare_tree,
    reading_into,
)


def live_paths(ctx: TargetContext, t: models.FilesTarget, snap: Snapshot) -> list[Path]:
    paths = [Path(os.path.abspath(ctx.resolve_path(p))) for p in t.paths]
    if sorted(map(str, paths)) != sorted(snap.paths):
        raise UsageError(f"target {t.name}: snapshot {snap.short_id} holds "
                         f"{', '.join(snap.paths)}, but the plan now backs up "
                         f"{', '.join(map(str, paths))}; it cannot be swapped in as is",
                         hint="restore it with `restorer restore` and move it by hand")
    return paths


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

    live_manifest = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.paths = live_paths(self.ctx, self.t, self.snap)
        self.siblings = {p: p.parent / f".restorer-rollback-{self.stamp}" for p in self.paths}
        self.done: list[Path] = []
        self.plans: dict[Path, CarryPlan] = {}
        self.keep: set[Path] = set()  # siblings never to remove (a swap back met a conflict)
        self.record.scratch = sorted({str(s) for s in self.siblings.values()})

    def restore(self) -> None:
        by_sibling: dict[Path, list[str]] = {}
        for p, sib in self.siblings.items():
            by_sibling.setdefault(sib, []).append(p.name)
        for sib, names in by_sibling.items():
            if os.path.lexists(sib):
                raise RestoreError(f"{sib} is in the way of the rollback's sibling copy")
            stats = FilesWriter(self.repo, sib, include=names).restore(self.snap)
            if stats.failed:
                raise RestoreError(
                    f"target {self.t.name}: {len(stats.failed)} file(s) of snapshot "
                    f"{self.snap.short_id} could not be restored: "
                    + ", ".join(f for f, _ in stats.failed[:5]),
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
                self.record.atomic = exchange(new, p) and self.record.atomic
            else:  # the live path is gone altogether: put the copy there
                os.makedirs(p.parent, exist_ok=True)
                os.rename(new, p)
                os.makedirs(new)  # an empty stand-in, so swap_back can exchange
            self.done.append(p)
        self.record.kept = [str(s / p.name) for p, s in self.siblings.items()]

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
        self.record.kept = []
        if errors:
            raise OSError("; ".join(errors))

    def discard(self) -> None:
        for sib in set(self.siblings.values()):
            if sib in self.keep:
                self.record.error = (f"{sib} is kept: it may hold entries that are in no backup; "
                                  "look at it before removing it by hand")
                continue
            remove_tree(sib, ignore_errors=True)
        self.record.kept = [str(s) for s in self.keep]

    def preview(self) -> dict[str, Any]:
        return file_changes(self.repo, self.snap, self.paths, self.preview_kept())

    def found(self) -> str:
        return f"{len(self.done)} of {len(self.paths)} path(s) swapped"

    def after_success(self) -> str | None:
        # the replaced trees are in the safety snapshots, checked entry by entry
        return self.discard_replaced()

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
            self.ctx, self.repo, self.t, self.snap, env={"RESTORER_STAGING": str(cwd)}, cwd=cwd,
            manifest=lambda: compare_tree(
                self.repo, self.snap, Restored(),
                lambda rel: chunk_ids(self.repo, parents[rel.parts[0]] / rel)))


class DirectoryStage(Stage):
    """files and ssh-files: a fresh directory under staging.path (or the temp dir)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.dir = self._scratch_dir()
        self.location = str(self.dir)
        self.cwd = self.dir
        names = [os.path.basename(p.rstrip("/")) for p in self.snap.paths]
        self._single = names[0] if len(names) == 1 else None

    def restore(self) -> Restored:
        stats = FilesWriter(self.repo, self.dir).restore(self.snap)
        self.restored = Restored(stats.bytes_written, stats.files, stats.failed)
        # checks see the backed-up directory itself when the target has one path
        if self._single and (self.dir / self._single).is_dir():
            self.cwd = self.dir / self._single
        self.env = {"RESTORER_STAGING": str(self.cwd)}
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        return compare_tree(self.repo, self.snap, self.restored,
                             lambda rel: chunk_ids(self.repo, self.dir / rel))

    def teardown(self) -> bool:
        remove_tree(self.dir, ignore_errors=True)
        return not self.dir.exists()


class RemoteDirectoryStage(Stage):
    """files, ssh-files with `staging.host`: a fresh directory under `staging.path` (default
    /tmp) on that host, written over SFTP; checks run there over SSH."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)

        t = self.target
        staging = t.staging
        parent = staging.path or "/tmp"
        if not posixpath.isabs(parent):
            raise UsageError(f"target {t.name}: staging.path on a staging host must be an "
                             f"absolute path, not '{parent}'")
        self.params = self.ctx.ssh(staging.host, f"targets.{t.name}.staging.host")
        self.dir = posixpath.join(parent, f"restorer-verify-{t.name}-{secrets.token_hex(6)}")
        self.rcwd = self.dir
        self.where = f"{self.params.user + '@' if self.params.user else ''}{self.params.host}"
        self.location = f"{self.where}:{self.dir}"
        self.what = f"verify of {t.name} on {self.where}"
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._sftp: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            self._client = self._stack.enter_context(ssh_session(self.params, self.what))
            self._sftp = self._client.open_sftp()
            self._stack.callback(self._sftp.close)
        return self._client

    def restore(self) -> Restored:
        self._connect()
        try:
            stats = SFTPWriter(self.repo, self._sftp, self.dir,
                               where=self.where).restore(self.snap)
        except OSError as e:
            raise RestoreError(f"{self.what}: {e}") from None
        self.restored = Restored(stats.bytes_written, stats.files, stats.failed)
        names = [posixpath.basename(p.rstrip("/")) for p in self.snap.paths]
        if len(names) == 1 and self._isdir(posixpath.join(self.dir, names[0])):
            self.rcwd = posixpath.join(self.dir, names[0])
        self.env = {"RESTORER_STAGING": self.rcwd}
        return self.restored

    def _lstat(self, path: str) -> Any | None:
        try:
            return self._sftp.lstat(path)
        except FileNotFoundError:
            return None

    def _isdir(self, path: str) -> bool:
        st = self._lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode or 0)

    def manifest(self) -> tuple[bool, str]:
        def ids(rel: Path) -> list[str]:
            with self._sftp.open(posixpath.join(self.dir, str(rel)), "rb") as f:
                f.prefetch()
                return [self.repo.sealer.blob_id(c).hex()
                        for c in self.repo.chunker.chunks(RawReader(f))]

        return compare_tree(self.repo, self.snap, self.restored, ids)

    def run(self, command: str, timeout: float) -> tuple[int | None, str]:
        return remote_run(self._connect(), command, timeout, cwd=self.rcwd, env=self.env)

    def files(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []

        def walk(path: str, rel: str) -> None:
            for a in self._sftp.listdir_attr(path):
                mode = a.st_mode or 0
                r = posixpath.join(rel, a.filename) if rel else a.filename
                if stat.S_ISDIR(mode):
                    walk(posixpath.join(path, a.filename), r)
                elif stat.S_ISREG(mode):
                    out.append((r, int(a.st_size or 0)))

        walk(self.rcwd, "")
        return out

    def exists(self, rel: str) -> bool:
        return self._lstat(posixpath.join(self.rcwd, rel)) is not None

    @contextmanager
    def serve(self, command: str) -> Iterator[Callable[[], tuple[int, str] | None]]:
        """The command runs on the staging host in a session of its own (setsid), so the
        whole group can be stopped; its exit status and stderr go to files beside staging."""
        log, status = f"{self.dir}.serve.log", f"{self.dir}.serve.status"
        wrapped = f"{command}\necho $? > {quoted(status)}"
        started = self.run(f"setsid sh -c {quoted(wrapped)} </dev/null >/dev/null "
                           f"2>{quoted(log)} & "
                           "echo $!", 30)
        pid = (started[1] or "").strip().splitlines()[-1:] if started[0] == 0 else []
        if not pid or not pid[0].isdigit():
            raise RestoreError(f"{self.what}: could not start `{command}`: {started[1]}")

        def exited() -> tuple[int, str] | None:
            if self._lstat(status) is None:
                return None
            with self._sftp.open(status) as f:
                code = f.read().decode().strip()
            with self._sftp.open(log) as f:
                tail = f.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            return int(code) if code.lstrip("-").isdigit() else -1, " | ".join(tail)

        try:
            yield exited
        finally:
            g = pid[0]
            # `kill -SIG -PGID`: the spelling dash, bash and busybox all accept
            self.run(f"kill -TERM -{g} 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do "
                     f"kill -0 -{g} 2>/dev/null || exit 0; sleep 0.5; done; "
                     f"kill -KILL -{g} 2>/dev/null; true", 30)

    def teardown(self) -> bool:
        try:
            if self._client is None:
                return True
            d = self.dir
            self.run(f"rm -rf -- {quoted(d)} {quoted(d + '.serve.log')} "
                     f"{quoted(d + '.serve.status')}", 300)
            return self._lstat(self.dir) is None
        finally:
            self._stack.close()


def file_changes(repo: Repository, snap: Snapshot, paths: list[Path],
                  kept: list[str]) -> dict[str, Any]:
    """What a swap would do to the live tree: entries the snapshot brings back (added),
    ones it replaces (changed: type, size, mode or mtime differ), ones that go (removed),
    and ones that stay as they are because no backup holds them (kept: excluded)."""
    want: dict[str, tuple] = {}

    for p, n in repo.walk(snap.tree):  # type: ignore[arg-type]
        want[p] = (n["type"], n.get("size"), n.get("mode"), n.get("mtime_ns"))
    have: dict[str, tuple] = {}
    for root in paths:
        if not os.path.lexists(root):
            continue
        for cur, dirs, files in walk(root):
            for name in dirs + files:
                full = os.path.join(cur, name)
                st = os.lstat(full)
                rel = os.path.relpath(full, root.parent)
                have[rel] = (st.st_mode, st.st_size, st.st_mtime_ns)
        st = os.lstat(root)
        have[root.name] = (st.st_mode, st.st_size, st.st_mtime_ns)
    import stat as st_

    def same(w: tuple, h: tuple) -> bool:
        typ, size, mode, mtime = w
        if typ == DIR:
            return st_.S_ISDIR(h[0])
        return (size is None or size == h[1]) and (mtime is None or mtime == h[2]) and (
            mode is None or st_.S_IMODE(mode) == st_.S_IMODE(h[0]))

    stays = set(kept)

    def kept_here(p: str) -> bool:
        while p:
            if p in stays:
                return True
            p = os.path.dirname(p)
        return False

    added = sorted(p for p in want if p not in have)
    removed = sorted(p for p in have if p not in want and not kept_here(p))
    changed = sorted(p for p in want if p in have and not same(want[p], have[p]))
    return {"added": len(added), "changed": len(changed), "removed": len(removed),
            "kept": len(kept),
            "examples": {"added": added[:10], "changed": changed[:10],
                         "removed": removed[:10], "kept": kept[:10]}}


def restore_files(repo: Repository, snap: Snapshot, req: RestoreRequest,
                  progress: Progress) -> RestoreStats:
    """A snapshot of a tree into a local folder, never outside it (files, ssh-files)."""
    writer = FilesWriter(repo, Path(req.dest), overwrite=req.overwrite, include=req.include,
                         on_progress=progress.advance, on_file=progress.set_files)
    total = int(snap.summary.get("total_bytes", 0)) if not req.include else None
    progress.start(f"restore {snap.target} {snap.short_id}", total,
                   snap.summary.get("total_files") if not req.include else None)
    try:
        st = writer.restore(snap)
    finally:
        progress.stop()
    if req.include and st.files + st.dirs + st.links + st.other == 0:
        raise RestoreError(
            f"--include {' '.join(req.include)} matched nothing in snapshot {snap.short_id}",
            hint="paths are relative to the snapshot root, e.g. 'uploads/2024/*'",
        )
    return st


def stage_tree(ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
    """A scratch folder for a tree snapshot: on the staging host when staging.host names
    one, else here."""
    if t.staging and t.staging.host:
        return RemoteDirectoryStage(ctx, repo, t, snap)
    return DirectoryStage(ctx, repo, t, snap)


class FilesKind(TargetKind):
    name = "files"
    model = models.FilesTarget
    what = "local folders and files"
    capabilities = {
        "backup": can("walks the paths into trees, deduplicated"),
        "restore": can("into the folder given with --to, never outside it"),
        "verify": can("restores into staging.path (or staging.host over SFTP) and checks"),
        "rollback": can("swaps each path with the snapshot's copy (an atomic exchange where "
                        "the file system has one)"),
        "prune": can("forgets snapshots; their data goes when no snapshot needs it"),
    }
    recoverable = True

    def backup(self, ctx: TargetContext, repo: Repository, t: models.FilesTarget,
               previous: list[Snapshot], progress: Progress) -> Made:
        start = time.monotonic()
        paths = [ctx.resolve_path(p) for p in t.paths]
        abs_paths = [os.path.abspath(p) for p in paths]
        host = socket.gethostname()
        # the parent is the last backup of the same paths from this host: its metadata
        # lets unchanged files be skipped unread
        parent = next((s for s in reversed(previous)
                       if s.paths == abs_paths and s.hostname == host), None)
        shown = not isinstance(progress, NoProgress)
        with BlobWriter(repo) as writer:
            excluder = Excluder(t.exclude)
            reader = FilesReader(repo, writer, excluder, one_file_system=t.one_file_system,
                                 xattrs=t.xattrs, on_read=progress.advance if shown else None,
                                 on_file=progress.set_files if shown else None)
            total_files = total_bytes = None
            if progress.wants_total:
                total_files, total_bytes = scan_size(paths, excluder)
            with reading_into(writer, progress, f"backup {t.name}", total_bytes, total_files):
                tree = reader.backup(paths, parent.tree if parent else None)
            st = reader.stats
            summary = backup_summary(st, writer, repo, time.monotonic() - start)
        return Made(abs_paths, tree, parent, hostname=host, summary=summary,
                    warnings=st.warnings)

    def restore(self, ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                req: RestoreRequest, progress: Progress) -> RestoreStats:
        if req.dest.startswith("ssh://"):
            raise UsageError("--to ssh://... restores snapshots of ssh-files targets",
                             hint="restore other kinds into a local directory")
        return restore_files(repo, snap, req, progress)

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return stage_tree(ctx, repo, t, snap)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        return FilesSwap(ctx, repo, t, snap, stamp, record)

    def live(self, ctx: TargetContext, t: models.FilesTarget) -> str:
        return ", ".join(str(ctx.resolve_path(p)) for p in t.paths)

    def remove_kept(self, ctx: TargetContext, t: Any, name: str,
                    dry_run: bool = False) -> str | None:
        folder = Path(name) if Path(name).name.startswith(".restorer-rollback-") else \
            Path(name).parent
        if folder.name.startswith(".restorer-rollback-") and os.path.lexists(folder):
            if not dry_run:
                remove_tree(folder, ignore_errors=True)
            return str(folder)
        return None


KIND = FilesKind()

