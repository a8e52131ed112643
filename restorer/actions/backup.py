"""backup: one snapshot per target, written packs -> index -> snapshot, under the repo lock."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from restorer import __version__, clock
from restorer.actions.context import (
    init_repository,
    locked,
    open_repository,
    target_context,
)
from restorer.actions.hooks import hooks_around, remote_runner
from restorer.errors import RepositoryError, RestorerError, SourceError
from restorer.ledger import RunRecorder
from restorer.outcome import Outcome
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.progress import NoProgress, Progress
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.remote import ssh_session
from restorer.targets import kind_of
from restorer.targets.base import TargetContext

log = logging.getLogger("restorer.backup")


@dataclass
class TargetBackup:
    target: str
    ok: bool
    snapshot: str | None = None
    parent: str | None = None
    error: str | None = None
    hint: str | None = None
    duration: float = 0.0
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.ok and not self.warnings

    def to_json(self) -> dict:
        return {
            "target": self.target, "ok": self.ok, "complete": self.complete,
            "snapshot": self.snapshot, "parent": self.parent, "error": self.error,
            "hint": self.hint, "duration_s": round(self.duration, 3), "summary": self.summary,
            "warnings": self.warnings,
        }


@dataclass
class BackupResult:
    plan: str
    targets: list[TargetBackup]
    initialized: bool = False
    lock_wait: float = 0.0

    @property
    def outcome(self) -> Outcome:
        """failed when no target was backed up; partial when some were not, or a hook after
        them failed."""
        failed = [t for t in self.targets if not t.ok]
        if failed and len(failed) == len(self.targets):
            return Outcome.FAILED
        if failed or any(t.warnings for t in self.targets):
            return Outcome.PARTIAL
        return Outcome.OK

    def to_json(self) -> dict:
        return {"plan": self.plan, "initialized": self.initialized,
                "lock_wait_s": round(self.lock_wait, 3),
                "targets": [t.to_json() for t in self.targets]}


def run_backup(
    lp: LoadedPlan,
    target_names: tuple[str, ...] = (),
    *,
    init: bool = False,
    tags: tuple[str, ...] = (),
    lock_wait: float = 0.0,
    progress: Progress | None = None,
    run: RunRecorder | None = None,
) -> BackupResult:
    """Back up the named targets (all by default). Per-target failures are in the result."""
    progress = progress or NoProgress()
    targets = lp.targets(target_names)
    initialized = False
    try:
        repo = open_repository(lp)
    except RepositoryError as e:
        if not init or not e.message.startswith("no repository"):
            raise
        repo = init_repository(lp)
        initialized = True
    results: list[TargetBackup] = []
    ctx = target_context(lp)
    h = lp.plan.hooks
    # shared: backups only add write-once, content-named files, so several may run at once
    # (of one plan or of plans sharing a repository); prune and rollback take it exclusively
    with locked(repo, exclusive=False, wait=lock_wait,
                label=f"restorer backup {lp.name}") as lock:
        if run:
            run.record_phase("lock", lock.waited)
        repo.load_index()
        snapshots = repo.list_snapshots()
        outcome = None
        try:
            with hooks_around(h.before, h.after, h.on_error, what=f"plan {lp.name}",
                              timeout=h.timeout, env={"RESTORER_PLAN": lp.name}) as outcome:
                for t in targets:
                    results.append(_recorded(run, lp, ctx, repo, t, snapshots, tags, progress))
                if any(not r.ok for r in results):
                    # the plan's on_error hooks hear about failed targets too
                    raise _TargetsFailed()
        except _TargetsFailed:
            pass
        except SourceError as e:  # a plan `before` hook failed: no target was backed up
            done = {r.target for r in results}
            results += [TargetBackup(t.name, False, error=e.message, hint=e.hint)
                        for t in targets if t.name not in done]
        for w in outcome.warnings if outcome is not None else []:
            for r in results:  # a failed `after` hook leaves every target's run incomplete
                r.warnings.append(w)
    return BackupResult(lp.name, results, initialized, lock.waited)


class _TargetsFailed(Exception):
    pass


def _recorded(run: RunRecorder | None, lp: LoadedPlan, ctx: TargetContext, repo: Repository,
              t: models.TargetBase, snapshots: list[Snapshot], tags: tuple[str, ...],
              progress: Progress) -> TargetBackup:
    if run is None:
        return _with_target_hooks(lp, ctx, repo, t, snapshots, tags, progress)
    with run.phase("backup", target=t.name) as ph:
        r = _with_target_hooks(lp, ctx, repo, t, snapshots, tags, progress)
        ph.bytes = int(r.summary.get("bytes_read", 0))
        ph.files = int(r.summary.get("total_files", 0))
        ph.detail.update(
            outcome="ok" if r.complete else ("partial" if r.ok else "failed"),
            snapshot=r.snapshot, kind=kind_of(t).name,
            data_added=r.summary.get("data_added"), retries=r.summary.get("retries"),
            error=r.error, warnings=len(r.warnings))
        if r.snapshot:
            ph.detail["stored"] = _stored(repo, r.snapshot)
    return r


def _stored(repo: Repository, snapshot: str) -> dict[str, Any]:
    """How the snapshot just written is kept, read back from the store: the evidence the
    report's immutability and encryption controls rest on (never fails the backup)."""
    out: dict[str, Any] = {"encrypted": bool(repo.config.get("encrypted"))}
    try:
        p = repo.backend.protection(f"snapshots/{snapshot}")
    except RestorerError as e:
        return {**out, "error": e.message}
    if p is not None:
        out.update(lock_mode=p.lock_mode, retain_until=p.retain_until, sse=p.encryption)
    return out


def backup_one(lp: LoadedPlan, ctx: TargetContext, repo: Repository, t: models.TargetBase,
               snapshots: list[Snapshot], tags: tuple[str, ...]) -> TargetBackup:
    """One target backed up, with its hooks, by a caller that holds the lock (rollback's
    safety snapshots)."""
    return _with_target_hooks(lp, ctx, repo, t, snapshots, tags, NoProgress())


def _with_target_hooks(lp: LoadedPlan, ctx: TargetContext, repo: Repository,
                       t: models.TargetBase,
                       snapshots: list[Snapshot], tags: tuple[str, ...],
                       progress: Progress) -> TargetBackup:
    if t.hooks is None:
        return _backup_target(lp, ctx, repo, t, snapshots, tags, progress)
    h = t.hooks
    result: TargetBackup | None = None
    with contextlib.ExitStack() as stack:
        runner = None
        try:
            if h.remote:
                host = kind_of(t).remote_host(t)
                if host is None:
                    raise SourceError(f"target '{t.name}': hooks.remote needs a host (via_ssh, "
                                      "or an ssh-files target)")
                client = stack.enter_context(ssh_session(
                    ctx.ssh(host, f"targets.{t.name}"), f"target '{t.name}' hooks"))
                runner = remote_runner(client)
            with hooks_around(h.before, h.after, h.on_error, what=f"target '{t.name}'",
                              timeout=h.timeout, runner=runner,
                              env={"RESTORER_PLAN": lp.name, "RESTORER_TARGET": t.name}
                              ) as outcome:
                result = _backup_target(lp, ctx, repo, t, snapshots, tags, progress)
                if not result.ok:
                    raise SourceError(result.error or "failed", result.hint)
        except SourceError as e:
            if result is None:  # a before hook failed: the target was not backed up
                return TargetBackup(t.name, False, error=e.message, hint=e.hint)
    result.warnings.extend(outcome.warnings)
    return result


def _backup_target(lp: LoadedPlan, ctx: TargetContext, repo: Repository,
                   t: models.TargetBase, snapshots: list[Snapshot], tags: tuple[str, ...],
                   progress: Progress) -> TargetBackup:
    """One target read by its kind, recorded as a snapshot (the only place one is made)."""
    start = time.monotonic()
    kind = kind_of(t)
    previous = [s for s in snapshots if s.plan == lp.name and s.target == t.name]
    try:
        made = kind.backup(ctx, repo, t, previous, progress)
    except SourceError as e:
        return TargetBackup(t.name, False, error=_prefixed(t.name, e.message), hint=e.hint,
                            duration=time.monotonic() - start)
    snap = Snapshot(
        time=clock.iso(), plan=lp.name, target=t.name, kind=kind.name,
        hostname=made.hostname, username=made.username, paths=made.paths, tree=made.tree,
        parent=made.parent.id if made.parent else None,
        tags=sorted(set(t.tags) | set(tags)), summary=made.summary,
        warnings=made.warnings[:1000], program_version=__version__, uid=made.uid,
        gid=made.gid, cloud=made.cloud)
    repo.save_snapshot(snap)
    snapshots.append(snap)
    return TargetBackup(t.name, True, snapshot=snap.id, parent=snap.parent,
                        duration=time.monotonic() - start, summary=snap.summary,
                        warnings=made.warnings)


def _prefixed(name: str, message: str) -> str:
    """`target 'NAME': message`, once, whether or not the source already said which target."""
    prefix = f"target '{name}': "
    return message if message.startswith(prefix) else prefix + message
