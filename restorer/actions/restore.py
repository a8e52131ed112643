"""restore: a snapshot into a destination directory, under a shared lock."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from restorer.actions.context import open_repository, reading
from restorer.actions.progress import NoProgress, Progress
from restorer.errors import RestoreError, RestorerError, SourceError, UsageError
from restorer.ledger import RunRecorder
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.files_restore import FilesWriter
from restorer.sources.mysql import mysql_restore_stream
from restorer.sources.postgres import pg_restore_stream
from restorer.sources.process import feed
from restorer.sources.sqlite import sqlite_restore
from restorer.sources.stream import restore_stream


@dataclass
class RestoreResult:
    snapshot: str
    target: str
    destination: str
    duration: float
    files: int
    dirs: int
    links: int
    bytes_written: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "snapshot": self.snapshot, "target": self.target,
            "destination": self.destination, "duration_s": round(self.duration, 3),
            "files": self.files, "dirs": self.dirs, "symlinks": self.links,
            "bytes_written": self.bytes_written,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def run_restore(
    lp: LoadedPlan,
    snapshot_ref: str,
    dest: str | Path,
    *,
    target: str | None = None,
    include: list[str] | None = None,
    overwrite: bool = False,
    lock_wait: float = 0.0,
    progress: Progress | None = None,
    run: RunRecorder | None = None,
    no_lock: bool = False,
) -> RestoreResult:
    """Restore one snapshot; with `run`, the restore is a ledger phase with its timing.
    `no_lock` reads the repository without a lock (a read-only repository)."""
    if run is None:
        return _run_restore(lp, snapshot_ref, dest, target=target, include=include,
                            overwrite=overwrite, lock_wait=lock_wait, progress=progress,
                            no_lock=no_lock)
    with run.phase("restore", target=target) as ph:
        res = _run_restore(lp, snapshot_ref, dest, target=target, include=include,
                           overwrite=overwrite, lock_wait=lock_wait, progress=progress,
                           no_lock=no_lock)
        ph.bytes, ph.files = res.bytes_written, res.files
        ph.detail.update(snapshot=res.snapshot, target=res.target,
                         outcome="ok" if res.ok else "failed",
                         failed_files=len(res.failed))
    return res


def _run_restore(
    lp: LoadedPlan,
    snapshot_ref: str,
    dest: str | Path,
    *,
    target: str | None = None,
    include: list[str] | None = None,
    overwrite: bool = False,
    lock_wait: float = 0.0,
    progress: Progress | None = None,
    no_lock: bool = False,
) -> RestoreResult:
    progress = progress or NoProgress()
    if target is not None:
        lp.targets([target])  # an unknown name is a plan error, not "no snapshot"
    repo = open_repository(lp)
    with reading(repo, lock_wait, no_lock):
        repo.load_index()
        snaps = repo.list_snapshots()
        if snapshot_ref == "latest":  # latest of this plan (plans may share a repository)
            snaps = [s for s in snaps if s.plan == lp.name]
        snap = repo.find_snapshot(snapshot_ref, target, snapshots=snaps)
        if snap.plan != lp.name:
            raise UsageError(f"snapshot {snap.short_id} belongs to plan '{snap.plan}', "
                             f"not '{lp.name}'")
        if snap.kind not in ("files", "ssh-files"):
            return _restore_stream(lp, repo, snap, str(dest), overwrite, progress)
        if str(dest).startswith("ssh://"):
            return _restore_over_ssh(lp, repo, snap, str(dest), overwrite, include, progress)
        writer = FilesWriter(repo, Path(dest), overwrite=overwrite, include=include,
                             on_progress=progress.advance, on_file=progress.set_files)
        start = time.monotonic()
        total = int(snap.summary.get("total_bytes", 0)) if not include else None
        progress.start(f"restore {snap.target} {snap.short_id}", total,
                       snap.summary.get("total_files") if not include else None)
        try:
            st = writer.restore(snap)
        finally:
            progress.stop()
        if include and st.files + st.dirs + st.links + st.other == 0:
            raise RestoreError(
                f"--include {' '.join(include)} matched nothing in snapshot {snap.short_id}",
                hint="paths are relative to the snapshot root, e.g. 'uploads/2024/*'",
            )
        return RestoreResult(snap.id, snap.target, str(dest), time.monotonic() - start,
                             st.files, st.dirs, st.links, st.bytes_written, st.failed,
                             st.skipped)


def _restore_stream(lp: LoadedPlan, repo: Repository, snap: Snapshot, dest: str,
                    overwrite: bool, progress: Progress) -> RestoreResult:
    """A dump back into its kind of target: a path (sqlite), a DSN (postgres), or the
    target's restore command (command; it gets the destination as $RESTORER_TO)."""
    try:
        t = lp.targets([snap.target])[0]
    except RestorerError:
        t = None
    what = f"restore of {snap.target} ({snap.kind})"
    total = int(snap.summary.get("total_bytes", 0))
    written = [0]

    def counted() -> Iterator[bytes]:
        for c in restore_stream(repo, snap):
            written[0] += len(c)
            progress.advance(len(c))
            yield c

    start = time.monotonic()
    progress.start(f"restore {snap.target} {snap.short_id}", total)
    try:
        if snap.kind == "sqlite":
            sqlite_restore(counted(), Path(dest), overwrite)
        elif snap.kind == "postgres":
            password = None
            if isinstance(t, models.PostgresTarget):
                password = lp.secret(t.password, f"targets.{t.name}.password")
            pg_restore_stream(counted(), dest, password, overwrite=overwrite, what=what)
        elif snap.kind == "mysql":
            password = None
            if isinstance(t, models.MySQLTarget):
                password = lp.secret(t.password, f"targets.{t.name}.password")
            mysql_restore_stream(counted(), dest, password, overwrite=overwrite, what=what)
        elif snap.kind == "command":
            if not isinstance(t, models.CommandTarget):
                raise RestoreError(f"the plan has no command target '{snap.target}' to say how "
                                   "to restore this snapshot")
            if t.via_ssh is not None:
                from restorer.actions.backup import ssh_params
                from restorer.sources.remote import q, remote_feed, ssh_session

                params = ssh_params(lp, t.via_ssh, f"targets.{t.name}.via_ssh")
                with ssh_session(params, what) as client:
                    remote_feed(client, f"RESTORER_TO={q(dest)}; export RESTORER_TO; "
                                f"{t.restore}", counted(), what=what, timeout=t.timeout)
            else:
                env = {**os.environ, "RESTORER_TO": dest}
                feed(t.restore, counted(), what=what, env=env, timeout=t.timeout)
        elif snap.kind in ("ebs", "rds"):
            where = ", ".join(f"{r} {i}" for r, i in
                              (snap.cloud or {}).get("snapshots", {}).items())
            raise RestoreError(f"snapshot {snap.short_id} is an {snap.kind} snapshot kept in "
                               f"AWS ({where})",
                               hint="`restorer verify` restores it into staging; `restorer "
                               "rollback` puts it in place of the live volume or instance")
        else:
            raise RestoreError(f"snapshots of kind '{snap.kind}' cannot be restored by this "
                               "version of restorer")
    except SourceError as e:
        raise RestoreError(e.message, e.hint) from None
    finally:
        progress.stop()
    return RestoreResult(snap.id, snap.target, dest, time.monotonic() - start, 1, 0, 0,
                         written[0])


def _restore_over_ssh(lp: LoadedPlan, repo: Repository, snap: Snapshot, dest: str,
                      overwrite: bool, include: list[str] | None,
                      progress: Progress) -> RestoreResult:
    """`--to ssh://[USER@]HOST[:PORT]/PATH`: onto a host, with the SSH options (key,
    known_hosts) of the plan's ssh-files target of that snapshot."""
    from urllib.parse import urlsplit

    from restorer.actions.backup import ssh_params
    from restorer.sources.remote import ssh_session
    from restorer.sources.sftp_restore import SFTPWriter

    u = urlsplit(dest)
    if not u.hostname or not u.path:
        raise UsageError(f"--to {dest}: expected ssh://[USER@]HOST[:PORT]/PATH")
    t = lp.targets([snap.target])[0]
    if not isinstance(t, models.SSHFilesTarget):
        raise UsageError("--to ssh://... restores snapshots of ssh-files targets",
                         hint="restore other kinds into a local directory")
    base = ssh_params(lp, t.host, f"targets.{t.name}.host")
    params = dataclasses.replace(base, host=u.hostname, port=u.port or base.port,
                                 user=u.username or base.user)
    start = time.monotonic()
    progress.start(f"restore {snap.target} {snap.short_id}",
                   int(snap.summary.get("total_bytes", 0)) if not include else None)
    try:
        with ssh_session(params, f"restore of {snap.target}") as client:
            sftp = client.open_sftp()
            where = f"{params.user + '@' if params.user else ''}{params.host}"
            st = SFTPWriter(repo, sftp, u.path, where=where, overwrite=overwrite,
                            include=include, on_progress=progress.advance).restore(snap)
    except SourceError as e:
        raise RestoreError(e.message, e.hint) from None
    finally:
        progress.stop()
    return RestoreResult(snap.id, snap.target, dest, time.monotonic() - start, st.files,
                         st.dirs, st.links, st.bytes_written, st.failed, st.skipped)
