"""ssh-files: folders on another host, walked over SFTP (backup) and written back into a
local folder or, with `--to ssh://HOST/PATH`, onto a host over SFTP (restore)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from urllib.parse import urlsplit

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.progress import Progress
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources.excludes import Excluder
from restorer.sources.files_restore import RestoreStats
from restorer.sources.remote import ssh_session
from restorer.sources.sftp_restore import SFTPWriter
from restorer.sources.ssh_files import SFTPFilesReader
from restorer.targets.base import (
    Made,
    RestoreRequest,
    Stage,
    TargetContext,
    TargetKind,
    backup_summary,
    can,
    cannot,
    reading_into,
)
from restorer.targets.files import restore_files, stage_tree


def _where(user: str | None, host: str) -> str:
    return f"{user + '@' if user else ''}{host}"


class SSHFilesKind(TargetKind):
    name = "ssh-files"
    model = models.SSHFilesTarget
    what = "folders on another host, read over SFTP"
    capabilities = {
        "backup": can("walks the remote paths over SFTP"),
        "restore": can("into a local folder given with --to, or back over SFTP"),
        "verify": can("restores into staging and checks"),
        "rollback": cannot("a remote tree cannot be swapped atomically over SFTP"),
        "prune": can("as files"),
    }

    def remote_host(self, t: models.SSHFilesTarget) -> models.SSHOptions | None:
        return t.host

    def backup(self, ctx: TargetContext, repo: Repository, t: models.SSHFilesTarget,
               previous: list[Snapshot], progress: Progress) -> Made:
        start = time.monotonic()
        where = _where(t.host.user, t.host.host)
        parent = next((s for s in reversed(previous)
                       if s.paths == list(t.paths) and s.hostname == where), None)
        with ssh_session(ctx.ssh(t.host, f"targets.{t.name}.host"),
                         f"target '{t.name}'") as client, BlobWriter(repo) as writer:
            sftp = client.open_sftp()
            reader = SFTPFilesReader(repo, writer, sftp, Excluder(t.exclude), where)
            with reading_into(writer, progress, f"backup {t.name}"):
                tree = reader.backup(list(t.paths), parent.tree if parent else None)
            st = reader.stats
            summary = backup_summary(st, writer, repo, time.monotonic() - start)
        made = Made(list(t.paths), tree, parent, hostname=where, summary=summary,
                    warnings=st.warnings, uid=None, gid=None)
        if t.host.user:
            made.username = t.host.user
        return made

    def restore(self, ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                req: RestoreRequest, progress: Progress) -> RestoreStats:
        if not req.dest.startswith("ssh://"):
            return restore_files(repo, snap, req, progress)
        return _restore_over_ssh(ctx, repo, snap, t, req, progress)

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return stage_tree(ctx, repo, t, snap)


def _restore_over_ssh(ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                      req: RestoreRequest, progress: Progress) -> RestoreStats:
    """`--to ssh://[USER@]HOST[:PORT]/PATH`: onto a host, with the SSH options (key,
    known_hosts) of the plan's ssh-files target of that snapshot."""
    u = urlsplit(req.dest)
    if not u.hostname or not u.path:
        raise UsageError(f"--to {req.dest}: expected ssh://[USER@]HOST[:PORT]/PATH")
    if not isinstance(t, models.SSHFilesTarget):
        raise UsageError(f"--to ssh://... takes its SSH options from the plan's ssh-files "
                         f"target {snap.target}, which the plan no longer has",
                         hint="restore into a local directory")
    base = ctx.ssh(t.host, f"targets.{t.name}.host")
    params = dataclasses.replace(base, host=u.hostname, port=u.port or base.port,
                                 user=u.username or base.user)
    progress.start(f"restore {snap.target} {snap.short_id}",
                   int(snap.summary.get("total_bytes", 0)) if not req.include else None)
    try:
        with ssh_session(params, f"restore of {snap.target}") as client:
            sftp = client.open_sftp()
            st = SFTPWriter(repo, sftp, u.path, where=_where(params.user, params.host),
                            overwrite=req.overwrite, include=req.include,
                            on_progress=progress.advance).restore(snap)
    except SourceError as e:
        raise RestoreError(e.message, e.hint) from None
    finally:
        progress.stop()
    return st


KIND = SSHFilesKind()
