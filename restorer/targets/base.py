"""The one interface every target kind implements, and the typed pieces it hands back.

A kind (one module per kind in this package) says what it can do (`capabilities`) and does
it: `backup` reads the target into the repository, `restore` puts a snapshot back where a
user asks, `stage` makes a `Stage` (a restored copy under test, for verify), `swap` makes a
`Swap` (a rollback's sibling copy and how to put it in place), `live` names the live target,
`remove_kept` removes what a rollback kept, `forget` deletes what a snapshot holds outside
the repository (prune). Kind code gets a `TargetContext`, never the whole plan.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorer.errors import RestoreError, UsageError
from restorer.plan import models
from restorer.plan.load import plan_path
from restorer.plan.secrets import resolve_secret
from restorer.progress import Progress
from restorer.repo.repository import BlobWriter, Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import FILE
from restorer.sources import mysql, postgres
from restorer.sources.aws import AWS
from restorer.sources.files_backup import BackupStats
from restorer.sources.files_restore import RestoreStats
from restorer.sources.process import mask
from restorer.sources.stream import restore_stream
from restorer.storage.retry import RetrySettings
from restorer.storage.ssh import SSHParams

CAPABILITIES = ("backup", "restore", "verify", "rollback", "prune")
VERBS = {"backup": "back up", "restore": "restore", "verify": "verify",
         "rollback": "roll back", "prune": "prune"}


@dataclass
class TargetContext:
    """What kind code may know of a plan: its name and folder, secrets (each resolved once),
    SSH options turned into connection parameters one way, AWS clients with the plan's retry
    policy, and the rollback settings a swap obeys."""

    plan: str
    plan_file: Path
    retry: RetrySettings = field(default_factory=RetrySettings)
    terminate_connections: bool = False
    _secrets: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.plan_file.parent

    def resolve_path(self, p: str) -> Path:
        return plan_path(self.base_dir, p)

    def secret(self, ref: Any, where: str) -> str | None:
        """The resolved value of a secret field (PlanError naming `where` if it cannot be)."""
        if ref is None:
            return None
        key = (str(ref), where)
        if key not in self._secrets:
            self._secrets[key] = resolve_secret(str(ref), self.base_dir,
                                                f"{self.plan_file}: {where}")
        return self._secrets[key]

    def ssh(self, o: models.SSHOptions, where: str) -> SSHParams:
        """Plan SSH options as connection parameters (paths resolved, passphrase revealed)."""
        return SSHParams(
            host=o.host, port=o.port, user=o.user,
            key_file=str(self.resolve_path(o.key_file)) if o.key_file else None,
            key_passphrase=self.secret(o.key_passphrase, f"{where}.key_passphrase"),
            known_hosts=str(self.resolve_path(o.known_hosts)) if o.known_hosts
            else "~/.ssh/known_hosts",
            accept_new_host_key=o.accept_new_host_key, connect_timeout=o.connect_timeout)

    def aws(self, what: str) -> AWS:
        return AWS(self.retry, what)


@dataclass(frozen=True)
class Capability:
    can: bool
    how: str  # what it does, or why it cannot


def can(how: str) -> Capability:
    return Capability(True, how)


def cannot(why: str) -> Capability:
    return Capability(False, why)


@dataclass
class Made:
    """What a kind's backup made, before `actions.backup` records it as a snapshot."""

    paths: list[str]
    tree: str | None = None
    parent: Snapshot | None = None
    hostname: str = field(default_factory=socket.gethostname)
    username: str = field(default_factory=getpass.getuser)
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cloud: dict[str, Any] | None = None
    uid: int | None = field(default_factory=os.getuid)
    gid: int | None = field(default_factory=os.getgid)


@dataclass
class RestoreRequest:
    """Where and how `restorer restore` puts a snapshot back."""

    dest: str
    overwrite: bool = False
    include: list[str] | None = None


class TargetKind:
    """One kind of target: its plan model, what it can do, and how."""

    name: str = ""
    model: type[models.TargetBase] = models.TargetBase
    what: str = ""
    capabilities: dict[str, Capability] = {}
    #: whether a killed rollback of this kind can be put back automatically
    recoverable: bool = False
    #: whether its snapshots' data is in the repository (a tree), not kept elsewhere
    in_repository: bool = True
    #: whether --undo puts back what the rollback kept (a volume, an instance) as it is
    undo_reuses_kept: bool = False

    def can(self, capability: str, target: Any = None) -> Capability:
        """Whether this kind can do `capability`, for `target` when given."""
        return self.capabilities[capability]

    def refusal(self, capability: str, target: Any) -> str:
        """'kind X cannot Y: reason', the one wording of every gap."""
        return (f"target {target.name}: kind {self.name} cannot {VERBS[capability]}: "
                f"{self.can(capability, target).how}")

    def _refuse(self, capability: str, target: Any) -> UsageError:
        return UsageError(self.refusal(capability, target))

    def remote_host(self, t: Any) -> models.SSHOptions | None:
        """The host the target's data lives on, when it is reached over SSH (where
        `hooks.remote` run)."""
        return getattr(t, "via_ssh", None)

    def backup(self, ctx: TargetContext, repo: Repository, t: Any,
               previous: list[Snapshot], progress: Progress) -> Made:
        """Read the target into the repository; `previous` are this target's snapshots,
        oldest first. SourceError for a failure of the source."""
        raise self._refuse("backup", t)

    def restore(self, ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                req: RestoreRequest, progress: Progress) -> RestoreStats:
        """Put `snap` back where `req` says (`req.dest`); `t` is the plan's target of that
        name, if any."""
        raise RestoreError(f"snapshots of kind '{snap.kind}' cannot be restored by this "
                           "version of restorer")

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        raise self._refuse("verify", t)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        """How to put `snap` in place of `t`; `reuse` names a volume or instance an earlier
        rollback kept, to be put back as it is (--undo of a cloud target)."""
        raise self._refuse("rollback", t)

    def live(self, ctx: TargetContext, t: Any) -> str:
        """The live target, as a rollback's plan names it."""
        return t.name

    def remove_kept(self, ctx: TargetContext, t: Any, name: str,
                    dry_run: bool = False) -> str | None:
        """Remove one thing a rollback kept or left half made (or, on a dry run, say what it
        is); None when it is not there or is not a rollback's to remove."""
        return None

    def forget(self, ctx: TargetContext, snap: Snapshot) -> None:
        """Delete what `snap` holds outside the repository, before prune forgets it."""


@dataclass
class Restored:
    bytes: int = 0
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class Stage(ABC):
    """A restored copy under test. `cwd` and `env` are what command and http checks get."""

    location: str = ""
    cwd: Path = Path(".")

    def __init__(self, ctx: TargetContext, repo: Repository, target: Any, snap: Snapshot) -> None:
        self.ctx, self.repo, self.target, self.snap = ctx, repo, target, snap
        self.env: dict[str, str] = {}
        self.restored = Restored()
        self.secrets: list[str | None] = []  # masked out of every check's detail

    def clean(self, detail: str) -> str:
        """A check's detail as the ledger and reports may keep it: secrets and DSN
        passwords masked (a command check may well print its connection string)."""
        return postgres.safe_dsn(mask(detail, self.secrets))[:2000]

    @abstractmethod
    def restore(self) -> Restored:
        """Put the snapshot's data in staging."""

    @abstractmethod
    def manifest(self) -> tuple[bool, str]:
        """Whether the copy in staging is the snapshot's data, and how that was shown."""

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        raise UsageError(f"target {self.target.name} ({self.target.kind}) is not a database; "
                         "sql checks need a postgres, mysql or sqlite target")

    @abstractmethod
    def teardown(self) -> bool:
        """Remove the staging copy; True when nothing of it is left."""

    # what command, files and http checks use; local by default
    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, command: str, timeout: float) -> tuple[int | None, str]:
        """(exit status, or None when it timed out; its stdout and stderr)."""
        try:
            p = subprocess.run(command, shell=True, cwd=self.cwd, capture_output=True,
                               timeout=timeout, stdin=subprocess.DEVNULL, env=self._env(),
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            return None, ""
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def files(self) -> list[tuple[str, int]]:
        """(path, size) of every regular file of the restored copy."""
        return [(str(p.relative_to(self.cwd)), p.stat().st_size) for p in self.cwd.rglob("*")
                if p.is_file() and not p.is_symlink()]

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.cwd / rel)

    @contextmanager
    def serve(self, command: str) -> Iterator[Callable[[], tuple[int, str] | None]]:
        """Run `command` for as long as the block lasts; yields a probe that returns
        (exit status, last stderr lines) once it has exited. Stopped with everything it
        started (its own process group)."""
        # stderr to a file, not a pipe: a chatty server must never block on a full pipe
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(command, shell=True, cwd=self.cwd, env=self._env(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)

            def exited() -> tuple[int, str] | None:
                if proc.poll() is None:
                    return None
                err.seek(0)
                tail = err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
                return proc.returncode, " | ".join(tail)

            try:
                yield exited
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _scratch_dir(self) -> Path:
        staging = self.target.staging
        if staging is not None and staging.path:
            parent = self.ctx.resolve_path(staging.path)
            parent.mkdir(parents=True, exist_ok=True)
        else:
            parent = Path(tempfile.gettempdir())
        return Path(tempfile.mkdtemp(prefix=f"restorer-verify-{self.target.name}-", dir=parent))

    def _stream(self) -> Iterator[bytes]:
        """The dump's bytes, each chunk checked against its id by the repository; counted."""
        for chunk in restore_stream(self.repo, self.snap):
            self.restored.bytes += len(chunk)
            yield chunk

    def _stream_manifest(self, applied_by: str) -> tuple[bool, str]:
        expected = int(self.snap.summary.get("total_bytes", -1))
        if expected >= 0 and self.restored.bytes != expected:
            return False, (f"restored {self.restored.bytes} bytes of a {expected}-byte dump")
        return True, (f"dump of {self.restored.bytes} bytes matched the snapshot chunk by "
                      f"chunk and was applied by {applied_by} without errors")


def compare_tree(repo: Repository, snap: Snapshot, restored: Restored,
                 ids_of: Callable[[Path], list[str]]) -> tuple[bool, str]:
    """Every restored file, re-read and re-chunked, has exactly the snapshot's chunk ids:
    the bytes in staging are the bytes that were backed up."""
    if restored.failed:
        return False, f"{len(restored.failed)} file(s) could not be restored: " + ", ".join(
            p for p, _ in restored.failed[:10])
    bad: list[str] = []
    n = 0

    for rel, node in repo.walk(snap.tree):  # type: ignore[arg-type]
        if node["type"] == FILE:
            n += 1
            if ids_of(Path(rel)) != list(node.get("content", ())):
                bad.append(rel)
    if bad:
        return False, f"{len(bad)} of {n} files differ from the snapshot: " + ", ".join(bad[:10])
    return True, f"{n} files match the snapshot"


def chunk_ids(repo: Repository, path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [repo.sealer.blob_id(c).hex() for c in repo.chunker.chunks(f)]


class LiveTarget(Stage):
    """The live target itself, as the subject of the plan's checks after a rollback: nothing
    to restore or tear down; sql checks go to `dsn` when it is a database."""

    def __init__(self, ctx: TargetContext, repo: Repository, target: Any, snap: Snapshot, *,
                 env: dict[str, str], cwd: Path | None = None, dsn: str | None = None,
                 password: str | None = None,
                 manifest: Callable[[], tuple[bool, str]] | None = None) -> None:
        super().__init__(ctx, repo, target, snap)
        self.env, self.dsn, self.password = env, dsn, password
        self.secrets = [password]
        self.cwd = cwd or Path(tempfile.gettempdir())
        self._manifest = manifest

    def restore(self) -> Restored:
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        return self._manifest() if self._manifest else (True, "")

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        if self.dsn is None:
            return super().query(sql, timeout)
        return query_database(self.dsn, self.password, sql,
                              what=f"check of {self.target.name}", timeout=timeout)

    def teardown(self) -> bool:
        return True


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


class Swap(ABC):
    """One target's sibling copy and how to put it in place (and back)."""

    def __init__(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot,
                 stamp: str, record: TargetRollback) -> None:
        self.ctx, self.repo, self.t, self.snap, self.record = ctx, repo, t, snap, record
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

    #: whether the live target is compared with the snapshot after the swap (the always-on
    #: manifest check; a database or volume has no listing to compare)
    live_manifest = False

    def preview(self) -> dict[str, Any]:
        """What the swap would change, for the plan a responder confirms (--dry-run)."""
        return self.record.changes

    def found(self) -> str:
        """The state a killed run's recovery found, in words."""
        return "swapped" if self.swapped else "not swapped"

    def after_success(self) -> str | None:
        """After a rollback whose checks passed: remove what may go now; the reason when
        something is kept instead."""
        return None

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


@contextmanager
def reading_into(writer: BlobWriter, progress: Progress, label: str, total: int | None = None,
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


def backup_summary(st: BackupStats, writer: BlobWriter, repo: Repository,
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


def query_database(dsn: str, password: str | None, sql: str, *, what: str,
                   timeout: float) -> list[list[str]]:
    """Rows of one query against a PostgreSQL or MySQL/MariaDB DSN (by its scheme)."""
    run = postgres.pg_query if dsn.startswith("postgres") else mysql.mysql_query
    return run(dsn, password, sql, what=what, timeout=timeout)
