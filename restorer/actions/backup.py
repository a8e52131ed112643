"""backup: one snapshot per target, written packs -> index -> snapshot, under the repo lock."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from restorer import __version__, clock
from restorer.actions.context import init_repository, locked, open_repository
from restorer.actions.hooks import hooks_around, remote_runner
from restorer.actions.progress import NoProgress, Progress
from restorer.errors import RepositoryError, RestorerError, SourceError
from restorer.ledger import RunRecorder
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.excludes import Excluder
from restorer.sources.files_backup import BackupStats, FilesReader, scan_size
from restorer.sources.mysql import mysql_dump, mysql_dump_remote
from restorer.sources.postgres import pg_dump, pg_dump_remote
from restorer.sources.process import output_of
from restorer.sources.remote import remote_output, ssh_session
from restorer.sources.sqlite import sqlite_dump
from restorer.sources.ssh_files import SFTPFilesReader
from restorer.sources.stream import backup_stream
from restorer.storage.ssh import SSHParams

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
    h = lp.plan.hooks
    # shared: backups only add write-once, content-named files, so several may run at once
    # (of one plan or of plans sharing a repository); prune and rollback take it exclusively
    with locked(repo, exclusive=False, wait=lock_wait) as lock:
        if run:
            run.record_phase("lock", lock.waited)
        repo.load_index()
        snapshots = repo.list_snapshots()
        outcome = None
        try:
            with hooks_around(h.before, h.after, h.on_error, what=f"plan {lp.name}",
                              timeout=h.timeout, env={"RESTORER_PLAN": lp.name}) as outcome:
                for t in targets:
                    results.append(_recorded(run, lp, repo, t, snapshots, tags, progress))
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


def _recorded(run: RunRecorder | None, lp: LoadedPlan, repo: Repository,
              t: models.TargetBase, snapshots: list[Snapshot], tags: tuple[str, ...],
              progress: Progress) -> TargetBackup:
    if run is None:
        return _with_target_hooks(lp, repo, t, snapshots, tags, progress)
    with run.phase("backup", target=t.name) as ph:
        r = _with_target_hooks(lp, repo, t, snapshots, tags, progress)
        ph.bytes = int(r.summary.get("bytes_read", 0))
        ph.files = int(r.summary.get("total_files", 0))
        ph.detail.update(
            outcome="ok" if r.complete else ("partial" if r.ok else "failed"),
            snapshot=r.snapshot, kind=getattr(t, "kind", None),
            data_added=r.summary.get("data_added"), retries=r.summary.get("retries"),
            error=r.error, warnings=len(r.warnings))
    return r


def backup_one(lp: LoadedPlan, repo: Repository, t: models.TargetBase,
               snapshots: list[Snapshot], tags: tuple[str, ...]) -> TargetBackup:
    """One target backed up, with its hooks, by a caller that holds the lock (rollback's
    safety snapshots)."""
    return _with_target_hooks(lp, repo, t, snapshots, tags, NoProgress())


def _with_target_hooks(lp: LoadedPlan, repo: Repository, t: models.TargetBase,
                       snapshots: list[Snapshot], tags: tuple[str, ...],
                       progress: Progress) -> TargetBackup:
    if t.hooks is None:
        return _backup_target(lp, repo, t, snapshots, tags, progress)
    h = t.hooks
    result: TargetBackup | None = None
    with contextlib.ExitStack() as stack:
        runner = None
        try:
            if h.remote:
                host = getattr(t, "via_ssh", None) or getattr(t, "host", None)
                if not isinstance(host, models.SSHOptions):
                    raise SourceError(f"target '{t.name}': hooks.remote needs a host (via_ssh, "
                                      "or an ssh-files target)")
                client = stack.enter_context(ssh_session(
                    ssh_params(lp, host, f"targets.{t.name}"), f"target '{t.name}' hooks"))
                runner = remote_runner(client)
            with hooks_around(h.before, h.after, h.on_error, what=f"target '{t.name}'",
                              timeout=h.timeout, runner=runner,
                              env={"RESTORER_PLAN": lp.name, "RESTORER_TARGET": t.name}
                              ) as outcome:
                result = _backup_target(lp, repo, t, snapshots, tags, progress)
                if not result.ok:
                    raise SourceError(result.error or "failed", result.hint)
        except SourceError as e:
            if result is None:  # a before hook failed: the target was not backed up
                return TargetBackup(t.name, False, error=e.message, hint=e.hint)
    result.warnings.extend(outcome.warnings)
    return result


def _backup_target(lp: LoadedPlan, repo: Repository, t: models.TargetBase,
                   snapshots: list[Snapshot], tags: tuple[str, ...],
                   progress: Progress) -> TargetBackup:
    start = time.monotonic()
    if isinstance(t, models.EBSTarget | models.RDSTarget):
        return _backup_cloud_target(lp, repo, t, snapshots, tags)
    if isinstance(t, STREAM_KINDS) and (getattr(t, "via_ssh", None) is None
                                        or isinstance(t, REMOTE_KINDS)):
        return _backup_stream_target(lp, repo, t, snapshots, tags, progress)
    if isinstance(t, models.SSHFilesTarget):
        return _backup_ssh_files_target(lp, repo, t, snapshots, tags, progress)
    if not isinstance(t, models.FilesTarget):
        return TargetBackup(t.name, False, error=f"target '{t.name}': kind '{t.kind}' cannot be "
                            "backed up by this version of restorer yet"  # type: ignore[attr-defined]
                            + (" over SSH" if getattr(t, "via_ssh", None) else ""),
                            hint="back up its data with a files target for now")
    paths = [lp.resolve_path(p) for p in t.paths]
    abs_paths = [os.path.abspath(p) for p in paths]
    parent = next((s for s in reversed(snapshots) if s.plan == lp.name and s.target == t.name
                   and s.paths == abs_paths and s.hostname == socket.gethostname()), None)
    try:
        with BlobWriter(repo) as writer:
            reader = FilesReader(
                repo, writer, Excluder(t.exclude), one_file_system=t.one_file_system,
                xattrs=t.xattrs,
                on_read=None if isinstance(progress, NoProgress) else progress.advance,
                on_file=None if isinstance(progress, NoProgress) else progress.set_files,
            )
            excluder = Excluder(t.exclude)
            total_files = total_bytes = None
            if progress.wants_total:
                total_files, total_bytes = scan_size(paths, excluder)
            with _reading(writer, progress, f"backup {t.name}", total_bytes, total_files):
                tree = reader.backup(paths, parent.tree if parent else None)
            st = reader.stats
            snap = Snapshot(
                time=clock.iso(),
                plan=lp.name, target=t.name, kind=t.kind,
                hostname=socket.gethostname(), username=getpass.getuser(),
                paths=abs_paths, tree=tree, parent=parent.id if parent else None,
                tags=sorted(set(t.tags) | set(tags)),
                warnings=st.warnings[:1000],
                program_version=__version__, uid=os.getuid(), gid=os.getgid(),
            )
            duration = time.monotonic() - start
            snap.summary = _summary(st, writer, repo, duration)
            repo.save_snapshot(snap)
    except SourceError as e:
        return TargetBackup(t.name, False, error=_prefixed(t.name, e.message), hint=e.hint,
                            duration=time.monotonic() - start)
    except RestorerError:
        raise
    snapshots.append(snap)
    return TargetBackup(t.name, True, snapshot=snap.id, parent=snap.parent,
                        duration=time.monotonic() - start, summary=snap.summary,
                        warnings=st.warnings)


def _backup_cloud_target(lp: LoadedPlan, repo: Repository, t: models.TargetBase,
                         snapshots: list[Snapshot], tags: tuple[str, ...]) -> TargetBackup:
    from restorer.actions.cloud import backup_cloud

    start = time.monotonic()
    try:
        snap = backup_cloud(lp, repo, t, snapshots, tags, os.urandom(8).hex())
    except SourceError as e:
        return TargetBackup(t.name, False, error=_prefixed(t.name, e.message), hint=e.hint,
                            duration=time.monotonic() - start)
    return TargetBackup(t.name, True, snapshot=snap.id, duration=time.monotonic() - start,
                        summary=snap.summary)


def _prefixed(name: str, message: str) -> str:
    """`target 'NAME': message`, once, whether or not the source already said which target."""
    prefix = f"target '{name}': "
    return message if message.startswith(prefix) else prefix + message


STREAM_KINDS = (models.SQLiteTarget, models.CommandTarget, models.PostgresTarget,
                models.MySQLTarget)


REMOTE_KINDS = (models.CommandTarget, models.PostgresTarget, models.MySQLTarget)


def ssh_params(lp: LoadedPlan, o: models.SSHOptions, where: str) -> SSHParams:
    """Plan SSH options as connection parameters (paths resolved, passphrase revealed)."""
    return SSHParams(
        host=o.host, port=o.port, user=o.user,
        key_file=str(lp.resolve_path(o.key_file)) if o.key_file else None,
        key_passphrase=lp.secret(o.key_passphrase, f"{where}.key_passphrase"),
        known_hosts=str(lp.resolve_path(o.known_hosts)) if o.known_hosts
        else "~/.ssh/known_hosts",
        accept_new_host_key=o.accept_new_host_key, connect_timeout=o.connect_timeout)


@contextmanager
def open_dump(lp: LoadedPlan, t: models.TargetBase) -> Iterator[BinaryIO]:
    """The target's backup as one stream (a database dump, a command's output), made on
    this host or, with via_ssh, on the remote one."""
    what = f"target '{t.name}'"
    via = getattr(t, "via_ssh", None)
    if via is not None:
        with ssh_session(ssh_params(lp, via, f"targets.{t.name}.via_ssh"), what) as client:
            if isinstance(t, models.CommandTarget):
                with remote_output(client, t.backup, what=what, timeout=t.timeout) as out:
                    yield out
            elif isinstance(t, models.PostgresTarget):
                password = lp.secret(t.password, f"targets.{t.name}.password")
                with pg_dump_remote(client, t.dsn, password, what=what,
                                    all_databases=t.all_databases, fmt=t.format) as out:
                    yield out  # type: ignore[misc]
            elif isinstance(t, models.MySQLTarget):
                password = lp.secret(t.password, f"targets.{t.name}.password")
                with mysql_dump_remote(client, t.dsn, password, what=what) as out:
                    yield out  # type: ignore[misc]
            else:
                raise SourceError(f"{what}: kind '{t.kind}' over SSH is not supported yet")  # type: ignore[attr-defined]
        return
    with _local_dump(lp, t) as out:
        yield out


def _local_dump(lp: LoadedPlan, t: models.TargetBase) -> AbstractContextManager[BinaryIO]:
    what = f"target '{t.name}'"
    if isinstance(t, models.SQLiteTarget):
        return sqlite_dump(lp.resolve_path(t.path))
    if isinstance(t, models.CommandTarget):
        return output_of(t.backup, what=what, timeout=t.timeout)  # type: ignore[return-value]
    if isinstance(t, models.PostgresTarget):
        password = lp.secret(t.password, f"targets.{t.name}.password")
        return pg_dump(t.dsn, password, what=what,  # type: ignore[return-value]
                       all_databases=t.all_databases, fmt=t.format)
    if isinstance(t, models.MySQLTarget):
        password = lp.secret(t.password, f"targets.{t.name}.password")
        return mysql_dump(t.dsn, password, what=what)  # type: ignore[return-value]
    raise AssertionError(t)


def _backup_stream_target(lp: LoadedPlan, repo: Repository, t: models.TargetBase,
                          snapshots: list[Snapshot], tags: tuple[str, ...],
                          progress: Progress) -> TargetBackup:
    start = time.monotonic()
    parent = next((s for s in reversed(snapshots) if s.plan == lp.name and s.target == t.name),
                  None)
    try:
        with BlobWriter(repo) as writer:
            with _reading(writer, progress, f"backup {t.name}"), open_dump(lp, t) as stream:
                tree, size = backup_stream(
                    repo, writer, f"{t.kind}.dump", stream,
                    None if isinstance(progress, NoProgress) else progress.advance)
            duration = time.monotonic() - start
            snap = Snapshot(
                time=clock.iso(),
                plan=lp.name, target=t.name, kind=t.kind,  # type: ignore[attr-defined]
                hostname=socket.gethostname(), username=getpass.getuser(),
                paths=[], tree=tree, parent=parent.id if parent else None,
                tags=sorted(set(t.tags) | set(tags)), program_version=__version__,
                uid=os.getuid(), gid=os.getgid(),
                summary={**_summary(BackupStats(files_new=1, total_files=1,
                                                total_bytes=size, bytes_read=size),
                                    writer, repo, duration), "stream": True},
            )
            repo.save_snapshot(snap)
    except SourceError as e:
        return TargetBackup(t.name, False, error=_prefixed(t.name, e.message), hint=e.hint,
                            duration=time.monotonic() - start)
    snapshots.append(snap)
    return TargetBackup(t.name, True, snapshot=snap.id, parent=snap.parent,
                        duration=time.monotonic() - start, summary=snap.summary)


def _backup_ssh_files_target(lp: LoadedPlan, repo: Repository, t: models.SSHFilesTarget,
                             snapshots: list[Snapshot], tags: tuple[str, ...],
                             progress: Progress) -> TargetBackup:
    start = time.monotonic()
    where = f"{t.host.user + '@' if t.host.user else ''}{t.host.host}"
    parent = next((s for s in reversed(snapshots) if s.plan == lp.name and s.target == t.name
                   and s.paths == list(t.paths) and s.hostname == where), None)
    try:
        with ssh_session(ssh_params(lp, t.host, f"targets.{t.name}.host"),
                         f"target '{t.name}'") as client, BlobWriter(repo) as writer:
            sftp = client.open_sftp()
            reader = SFTPFilesReader(repo, writer, sftp, Excluder(t.exclude), where)
            with _reading(writer, progress, f"backup {t.name}"):
                tree = reader.backup(list(t.paths), parent.tree if parent else None)
            st = reader.stats
            duration = time.monotonic() - start
            snap = Snapshot(
                time=clock.iso(),
                plan=lp.name, target=t.name, kind=t.kind, hostname=where,
                username=t.host.user or getpass.getuser(), paths=list(t.paths), tree=tree,
                parent=parent.id if parent else None, tags=sorted(set(t.tags) | set(tags)),
                warnings=st.warnings[:1000], program_version=__version__,
                summary=_summary(st, writer, repo, duration),
            )
            repo.save_snapshot(snap)
    except SourceError as e:
        return TargetBackup(t.name, False, error=_prefixed(t.name, e.message), hint=e.hint,
                            duration=time.monotonic() - start)
    snapshots.append(snap)
    return TargetBackup(t.name, True, snapshot=snap.id, parent=snap.parent,
                        duration=time.monotonic() - start, summary=snap.summary,
                        warnings=st.warnings)


@contextmanager
def _reading(writer: BlobWriter, progress: Progress, label: str, total: int | None = None,
             files: int | None = None) -> Iterator[None]:
    """A source read into `writer`, with progress shown meanwhile. On failure what was
    already uploaded is indexed or forgotten (never left for the next target to dedup
    against); on success everything queued is stored and indexed."""
    progress.start(label, total, files)
    try:
        yield
    except BaseException:
        writer.flush_or_forget()
        raise
    finally:
        progress.stop()
    writer.flush()


def _summary(st: BackupStats, writer: BlobWriter, repo: Repository,
             duration: float) -> dict[str, Any]:
    """A snapshot's summary: what the source reader saw and what the writer added."""
    return {
        "files_new": st.files_new, "files_changed": st.files_changed,
        "files_unmodified": st.files_unmodified, "dirs": st.dirs, "other": st.other,
        "total_files": st.total_files, "total_bytes": st.total_bytes,
        "bytes_read": st.bytes_read, "blobs_added": writer.stats.blobs_new,
        "data_added": writer.stats.data_added,
        "data_added_stored": writer.stats.data_added_stored,
        "packs_added": writer.stats.packs, "duration_s": round(duration, 3),
        "retries": getattr(repo.backend, "retries", 0),
    }
