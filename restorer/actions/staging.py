"""Staging for verify: where a snapshot is restored to be tested, and how it is torn down.

One class per kind of staging: a scratch directory (files, ssh-files), a scratch file
(sqlite), a scratch database (postgres, mysql). Each restores the snapshot, says whether the
restored copy is the snapshot's data (the always-on `manifest` check), answers SQL queries
where it is a database, and tears itself down.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import secrets
import signal
import sqlite3
import stat
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.fsutil import remove_tree
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import FILE
from restorer.sources import mysql, postgres
from restorer.sources.files_restore import FilesWriter
from restorer.sources.process import mask
from restorer.sources.remote import q, remote_run, ssh_session
from restorer.sources.sftp_restore import SFTPWriter
from restorer.sources.sqlite import sqlite_restore
from restorer.sources.stream import _Raw, restore_stream
from restorer.targets import kind_named


@dataclass
class Restored:
    bytes: int = 0
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def query_database(dsn: str, password: str | None, sql: str, *, what: str,
                   timeout: float) -> list[list[str]]:
    """Rows of one query against a PostgreSQL or MySQL/MariaDB DSN (by its scheme)."""
    run = postgres.pg_query if dsn.startswith("postgres") else mysql.mysql_query
    return run(dsn, password, sql, what=what, timeout=timeout)


class Stage(ABC):
    """A restored copy under test. `cwd` and `env` are what command and http checks get."""

    location: str = ""
    cwd: Path = Path(".")

    def __init__(self, lp: LoadedPlan, repo: Repository, target: Any, snap: Snapshot) -> None:
        self.lp, self.repo, self.target, self.snap = lp, repo, target, snap
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
        st = self.target.staging
        if st is not None and st.path:
            parent = self.lp.resolve_path(st.path)
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
        st = FilesWriter(self.repo, self.dir).restore(self.snap)
        self.restored = Restored(st.bytes_written, st.files, st.failed)
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
        from restorer.actions.backup import ssh_params

        t = self.target
        st = t.staging
        parent = st.path or "/tmp"
        if not posixpath.isabs(parent):
            raise UsageError(f"target {t.name}: staging.path on a staging host must be an "
                             f"absolute path, not '{parent}'")
        self.params = ssh_params(self.lp, st.host, f"targets.{t.name}.staging.host")
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
            st = SFTPWriter(self.repo, self._sftp, self.dir, where=self.where).restore(self.snap)
        except OSError as e:
            raise RestoreError(f"{self.what}: {e}") from None
        self.restored = Restored(st.bytes_written, st.files, st.failed)
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
                        for c in self.repo.chunker.chunks(_Raw(f))]

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
        wrapped = f"{command}\necho $? > {q(status)}"
        started = self.run(f"setsid sh -c {q(wrapped)} </dev/null >/dev/null 2>{q(log)} & "
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
            self.run(f"rm -rf -- {q(d)} {q(d + '.serve.log')} {q(d + '.serve.status')}", 300)
            return self._lstat(self.dir) is None
        finally:
            self._stack.close()


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


class SQLiteStage(Stage):
    """sqlite: the database file restored into a fresh directory, integrity-checked."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.dir = self._scratch_dir()
        self.file = self.dir / f"{self.target.name}.db"
        self.location = str(self.file)
        self.cwd = self.dir
        self.env = {"RESTORER_STAGING": str(self.file)}

    def restore(self) -> Restored:
        sqlite_restore(self._stream(), self.file, overwrite=False)
        self.restored.files = 1
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        ok, detail = self._stream_manifest("SQLite")
        if not ok:
            return ok, detail
        node = self.repo.load_tree(self.snap.tree)[0]  # type: ignore[arg-type]
        if chunk_ids(self.repo, self.file) != list(node.get("content", ())):
            return False, "the restored database file differs from the snapshot"
        return True, (f"database file of {self.restored.bytes} bytes matches the snapshot; "
                      "PRAGMA integrity_check: ok")

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        db = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=timeout)
        try:
            return [["" if v is None else str(v) for v in row] for row in db.execute(sql)]
        finally:
            db.close()

    def teardown(self) -> bool:
        remove_tree(self.dir, ignore_errors=True)
        return not self.dir.exists()


class DatabaseStage(Stage):
    """postgres, mysql: the scratch database staging.dsn names, created and dropped here."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.target
        st = t.staging
        if st is None or st.dsn is None:
            raise UsageError(
                f"target {t.name}: verify needs staging.dsn, the scratch database to restore "
                "into",
                hint=f"add `staging: {{dsn: {_example(t)}}}` to the target; verify creates "
                "that database, restores into it and drops it")
        self.dsn = self.lp.secret(st.dsn, f"targets.{t.name}.staging.dsn") or ""
        self.password = self.lp.secret(st.password, f"targets.{t.name}.staging.password")
        self.secrets = [self.password, urlsplit(self.dsn).password]
        self.what = f"verify of {t.name}"
        self.location = postgres.safe_dsn(self.dsn)
        self.cwd = Path(tempfile.gettempdir())
        self.env = {"RESTORER_STAGING_DSN": self.dsn}
        if isinstance(t, models.PostgresTarget):
            if t.all_databases:
                raise _cluster_dump(t.name)
            if self.password:
                self.env["PGPASSWORD"] = self.password
        elif self.password:
            self.env["MYSQL_PWD"] = self.password

    @property
    def _pg(self) -> bool:
        return isinstance(self.target, models.PostgresTarget)

    def restore(self) -> Restored:
        try:
            if self._pg:
                chunks = self._stream()
                first = next(chunks, b"")
                if postgres.is_cluster_dump(first):  # it would create databases of its own
                    raise _cluster_dump(self.target.name)
                postgres.pg_scratch_create(self.dsn, self.password, what=self.what)
                postgres.pg_restore_stream(itertools.chain([first], chunks), self.dsn,
                                           self.password, overwrite=False, what=self.what)
            else:
                mysql.mysql_scratch_create(self.dsn, self.password, what=self.what)
                mysql.mysql_restore_stream(self._stream(), self.dsn, self.password,
                                           overwrite=False, what=self.what)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        self.restored.files = 1
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        return self._stream_manifest("psql" if self._pg else "the mysql client")

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        return query_database(self.dsn, self.password, sql,
                              what=f"sql check of {self.target.name}", timeout=timeout)

    def teardown(self) -> bool:
        drop = postgres.pg_scratch_drop if self._pg else mysql.mysql_scratch_drop
        return drop(self.dsn, self.password, what=f"teardown of {self.target.name}")


class LiveTarget(Stage):
    """The live target itself, as the subject of the plan's checks after a rollback: nothing
    to restore or tear down; sql checks go to `dsn` when it is a database."""

    def __init__(self, lp: LoadedPlan, repo: Repository, target: Any, snap: Snapshot, *,
                 env: dict[str, str], cwd: Path | None = None, dsn: str | None = None,
                 password: str | None = None,
                 manifest: Callable[[], tuple[bool, str]] | None = None) -> None:
        super().__init__(lp, repo, target, snap)
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


def _cluster_dump(name: str) -> UsageError:
    return UsageError(
        f"target {name}: a pg_dumpall snapshot restores a whole cluster (its databases under "
        "their own names); verify cannot stage it in one scratch database",
        hint="back up the databases that matter as separate postgres targets and verify those")


def _example(t: Any) -> str:
    scheme = "postgresql" if isinstance(t, models.PostgresTarget) else "mysql"
    return f"{scheme}://USER@HOST/{t.name}_restore_test"


STAGES: dict[str, type[Stage]] = {
    "files": DirectoryStage, "ssh-files": DirectoryStage, "sqlite": SQLiteStage,
    "postgres": DatabaseStage, "mysql": DatabaseStage,
}


def stage_for(lp: LoadedPlan, repo: Repository, target: Any, snap: Snapshot) -> Stage:
    if snap.kind in ("files", "ssh-files") and target.staging and target.staging.host:
        return RemoteDirectoryStage(lp, repo, target, snap)
    if snap.kind in ("ebs", "rds"):
        from restorer.actions.cloud import EBSStage, RDSStage

        return (EBSStage if snap.kind == "ebs" else RDSStage)(lp, repo, target, snap)
    cls = STAGES.get(snap.kind)
    if cls is None:
        kind = kind_named(snap.kind)
        raise UsageError(kind.refusal("verify", target) if kind else
                         f"snapshot {snap.short_id} is of kind {snap.kind}, which this "
                         "version of restorer does not know")
    return cls(lp, repo, target, snap)
