"""MySQL/MariaDB targets: mysqldump --single-transaction streamed into the repository, and the
mysql client streaming it back into a database created for it.

A password reaches the tools through a private option file (--defaults-extra-file) that lives
in memory and is inherited as a descriptor (never on a disk, never in argv); without a
password, the tools' own option files apply (~/.my.cnf).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from restorer.errors import RestoreError, SourceError
from restorer.sources.process import feed, output_of
from restorer.sources.remote import q, remote_output, remote_secret_file
from restorer.statedir import private_file


def _tool(*names: str) -> str:
    for n in names:
        if shutil.which(n):
            return n
    raise SourceError(f"none of {', '.join(names)} is installed",
                      hint="install the MariaDB or MySQL client (mariadb-client)")


def parse_dsn(dsn: str) -> tuple[list[str], str]:
    """(connection options for the client tools, database name)."""
    u = urlsplit(dsn)
    if u.scheme not in ("mysql", "mariadb") or not u.path.strip("/"):
        raise SourceError(f"'{dsn}' is not a MySQL DSN naming a database",
                          hint="write mysql://USER@HOST:PORT/DBNAME")
    if u.password:
        raise SourceError("passwords do not belong in DSNs",
                          hint="give password: ${env:...} or ${file:...} in the plan")
    opts = ["--protocol=TCP", f"--host={u.hostname or '127.0.0.1'}", f"--port={u.port or 3306}"]
    if u.username:
        opts.append(f"--user={unquote(u.username)}")
    return opts, unquote(u.path.strip("/"))


@dataclass(frozen=True)
class _Creds:
    """How the client tools get the password: `args` come first on their command line, and
    they must inherit `fds` to read it."""

    args: list[str] = field(default_factory=list)
    fds: tuple[int, ...] = ()


@contextmanager
def _options_file(password: str | None) -> Iterator[_Creds]:
    """The password as an option file the tools read. Preferably a memfd the tools inherit
    and read as /dev/fd/N: nothing reaches a disk, and nothing outlives the processes that
    hold it, even when restorer is killed with SIGKILL. Where memfd_create is unavailable, a
    0600 file in a private folder of the state dir, which the next run removes if this one
    is killed (see restorer.statedir)."""
    if not password:
        yield _Creds()
        return
    text = _option_text(password).encode()
    try:
        fd = os.memfd_create("restorer-client.cnf", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    if fd < 0:
        with private_file("client.cnf", text) as path:
            yield _Creds([f"--defaults-extra-file={path}"])
        return
    try:
        # a memfd starts as 0777, and the client ignores a world-writable option file
        os.fchmod(fd, 0o600)
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view):]
        # the client opens /dev/fd/N afresh, reading from the start; must come first
        yield _Creds([f"--defaults-extra-file=/dev/fd/{fd}"], (fd,))
    finally:
        os.close(fd)


def _flavor_version(text: str) -> tuple[str, tuple[int, int]] | None:
    m = re.search(r"(?:Distrib\s+)?(\d+)\.(\d+)\.\d+(-MariaDB)?", text)
    if not m:
        return None
    flavor = "MariaDB" if (m.group(3) or "MariaDB" in text) else "MySQL"
    return flavor, (int(m.group(1)), int(m.group(2)))


def check_versions(client_text: str, server_text: str, what: str) -> None:
    """A dump tool older than the server, or of the other flavour, is refused: it can
    silently leave out what it does not know."""
    c, srv = _flavor_version(client_text), _flavor_version(server_text)
    if c is None or srv is None:
        return
    if c[0] != srv[0] or c[1] < srv[1]:
        raise SourceError(
            f"{what}: the dump tool is {c[0]} {c[1][0]}.{c[1][1]} but the server is "
            f"{srv[0]} {server_text.strip()}; it may not dump everything faithfully",
            hint=f"install the {srv[0]} {srv[1][0]}.{srv[1][1]} client tools on this machine",
        )


@contextmanager
def mysql_dump(dsn: str, password: str | None, *, what: str) -> Iterator[IO[bytes]]:
    conn, db = parse_dsn(dsn)
    tool = _tool("mariadb-dump", "mysqldump")
    with _options_file(password) as extra:
        check_versions(feed([tool, "--version"], (), what=what),
                       _sql(conn, extra, "SELECT VERSION();", what, password), what)
        argv = [tool, *extra.args, *conn, "--single-transaction", "--routines", "--triggers",
                "--events", "--hex-blob", db]  # no --databases: no USE, so it restores anywhere
        with output_of(argv, what=what, secrets=[password], pass_fds=extra.fds) as out:
            yield out


def _sql(conn: list[str], extra: _Creds, sql: str, what: str, password: str | None,
         db: str | None = None) -> str:
    argv = [_tool("mariadb", "mysql"), *extra.args, *conn, "--batch", "--skip-column-names"]
    if db:
        argv.append(db)
    return feed(argv, [sql.encode()], what=what, secrets=[password], pass_fds=extra.fds)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mysql_restore_stream(chunks: Iterable[bytes], dsn: str, password: str | None, *,
                         overwrite: bool, what: str) -> None:
    """Restore into the database `dsn` names: created when absent; refused when it exists and
    holds tables, unless `overwrite` (then dropped and created again)."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        lit = _lit(db)
        tables = _sql(conn, extra, "SELECT COUNT(*) FROM information_schema.tables "
                      f"WHERE table_schema = {lit};", what, password).strip()
        exists = _sql(conn, extra, "SELECT COUNT(*) FROM information_schema.schemata "
                      f"WHERE schema_name = {lit};", what, password).strip() == "1"
        if exists and int(tables or 0) and not overwrite:
            raise RestoreError(
                f"database {db} exists and is not empty ({tables} tables)",
                hint="restore into a new database name, or pass --overwrite to replace it",
            )
        if exists and int(tables or 0):
            _sql(conn, extra, f"DROP DATABASE {_quote(db)};", what, password)
            exists = False
        if not exists:
            _sql(conn, extra, f"CREATE DATABASE {_quote(db)};", what, password)
        feed([_tool("mariadb", "mysql"), *extra.args, *conn, "--binary-mode", db],
             chunks, what=what, secrets=[password], pass_fds=extra.fds)


# Written on a database verify creates (MariaDB keeps a comment per database), so that only
# such a database is ever dropped by it.
SCRATCH_MARK = "restorer verify scratch database"


def _lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _scratch_comment(conn: list[str], extra: _Creds, db: str, what: str,
                     password: str | None) -> str | None:
    out = _sql(conn, extra, "SELECT CONCAT('x', SCHEMA_COMMENT) FROM information_schema.schemata "
               f"WHERE schema_name = {_lit(db)};", what, password)
    return out.strip()[1:] if out.strip() else None


def mysql_scratch_create(dsn: str, password: str | None, *, what: str) -> None:
    """Create the staging database `dsn` names, marked as verify's own; a marked leftover is
    dropped first, and an unmarked database of that name is refused, never touched."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        comment = _scratch_comment(conn, extra, db, what, password)
        if comment is not None:
            if not comment.startswith(SCRATCH_MARK):
                raise RestoreError(
                    f"staging database {db} already exists and was not created by restorer "
                    "verify; it is left untouched",
                    hint="point staging.dsn at a database name that does not exist: verify "
                    "creates it, restores into it and drops it")
            _sql(conn, extra, f"DROP DATABASE {_quote(db)};", what, password)
        _sql(conn, extra, f"CREATE DATABASE {_quote(db)} COMMENT {_lit(SCRATCH_MARK)};", what,
             password)


def mysql_scratch_drop(dsn: str, password: str | None, *, what: str) -> bool:
    """Drop verify's staging database; True when no database of that name is left."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        comment = _scratch_comment(conn, extra, db, what, password)
        if comment is None:
            return True
        if not comment.startswith(SCRATCH_MARK):
            return False
        _sql(conn, extra, f"DROP DATABASE {_quote(db)};", what, password)
        return _scratch_comment(conn, extra, db, what, password) is None


_BATCH_ESCAPE = re.compile(r"\\(.)")


def _unescape(m: re.Match[str]) -> str:
    return {"t": "\t", "n": "\n", "0": "\0"}.get(m.group(1), m.group(1))


def mysql_query(dsn: str, password: str | None, query: str, *, what: str,
                timeout: float) -> list[list[str]]:
    """The rows of one query, as text (NULL reads as '')."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        argv = [_tool("mariadb", "mysql"), *extra.args, *conn, "--batch", "--skip-column-names",
                "--execute", query, db]
        out = feed(argv, (), what=what, secrets=[password], timeout=timeout,
                   pass_fds=extra.fds)
    rows = []
    for line in out.splitlines():
        rows.append(["" if c == "NULL" else _BATCH_ESCAPE.sub(_unescape, c)
                     for c in line.split("\t")])
    return rows


def _option_text(password: str) -> str:
    return "[client]\npassword=\"" + password.replace("\\", "\\\\").replace('"', '\\"') + "\"\n"


@contextmanager
def mysql_dump_remote(client: Any, dsn: str, password: str | None, *,
                      what: str) -> Iterator[IO[bytes]]:
    """mysqldump run on the remote host; the password in a private option file there."""
    conn, db = parse_dsn(dsn)
    with contextlib.ExitStack() as stack:
        extra: list[str] = []
        if password:
            path = stack.enter_context(remote_secret_file(client, _option_text(password)))
            extra = [f"--defaults-extra-file={path}"]
        # the remote host may have either tool
        cmd = ("$(command -v mariadb-dump || command -v mysqldump) " + q(
            *extra, *conn, "--single-transaction", "--routines", "--triggers", "--events",
            "--hex-blob", db))
        with remote_output(client, cmd, what=what, secrets=[password]) as out:
            yield out


def _schema_objects(conn: list[str], extra: _Creds, db: str, what: str,
                    password: str | None) -> dict[str, int]:
    lit = _lit(db)
    out = _sql(conn, extra, (
        "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
        f"{lit} AND table_type = 'BASE TABLE'), (SELECT COUNT(*) FROM "
        f"information_schema.views WHERE table_schema = {lit}), (SELECT COUNT(*) FROM "
        f"information_schema.triggers WHERE trigger_schema = {lit}), (SELECT COUNT(*) FROM "
        f"information_schema.routines WHERE routine_schema = {lit}), (SELECT COUNT(*) FROM "
        f"information_schema.events WHERE event_schema = {lit});"), what, password)
    n = [int(x) for x in out.split()] if out.strip() else [0] * 5
    return dict(zip(("tables", "views", "triggers", "routines", "events"), n, strict=True))


def mysql_swap_blockers(dsn: str, password: str | None, *, what: str) -> list[str]:
    """Why this database cannot be swapped table by table (empty when it can): views,
    triggers, routines and events belong to the database and do not move with RENAME TABLE."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        objs = _schema_objects(conn, extra, db, what, password)
    return [f"{n} {k}" for k, n in objs.items() if k != "tables" and n]


def mysql_table_count(dsn: str, password: str | None, *, what: str) -> int:
    """How many base tables the DSN's database holds (0 when it does not exist)."""
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        return _schema_objects(conn, extra, db, what, password)["tables"]


def mysql_swap_databases(live_dsn: str, new_db: str, old_db: str, password: str | None, *,
                         terminate: bool, what: str) -> None:
    """Put the tables of `new_db` in place of the live database's, which move to `old_db`,
    with one RENAME TABLE statement (atomic: all tables move or none)."""
    conn, live = parse_dsn(live_dsn)
    with _options_file(password) as extra:
        for db in (live, new_db):
            objs = _schema_objects(conn, extra, db, what, password)
            blockers = [f"{n} {k}" for k, n in objs.items() if k != "tables" and n]
            if blockers:
                raise RestoreError(f"{what}: database {db} has {', '.join(blockers)}, which "
                                   "cannot be swapped table by table")
        busy = _sql(conn, extra, "SELECT id FROM information_schema.processlist WHERE db = "
                    f"{_lit(live)} AND id <> CONNECTION_ID();", what, password).split()
        if busy and not terminate:
            raise RestoreError(
                f"{what}: {len(busy)} other session(s) are connected to database {live}; it "
                "cannot be swapped while in use",
                hint="stop the application in rollback.before, or set "
                "rollback.terminate_connections: true in the plan")
        for pid in busy:
            with contextlib.suppress(SourceError):  # it may have gone by itself
                _sql(conn, extra, f"KILL {int(pid)};", what, password)

        def tables(db: str) -> list[str]:
            return _sql(conn, extra, "SELECT table_name FROM information_schema.tables WHERE "
                        f"table_schema = {_lit(db)} AND table_type = 'BASE TABLE';", what,
                        password).split("\n")

        if any(tables(old_db)):
            raise RestoreError(f"{what}: database {old_db} already exists and holds tables; "
                               "refusing to mix them with the replaced ones")
        _sql(conn, extra, f"CREATE DATABASE IF NOT EXISTS {_quote(old_db)};", what, password)
        moves = [f"{_quote(live)}.{_quote(t)} TO {_quote(old_db)}.{_quote(t)}"
                 for t in tables(live) if t]
        moves += [f"{_quote(new_db)}.{_quote(t)} TO {_quote(live)}.{_quote(t)}"
                  for t in tables(new_db) if t]
        if moves:
            # a session holding a table lock makes this wait; give up after 30 s instead
            _sql(conn, extra, "SET SESSION lock_wait_timeout = 30; RENAME TABLE "
                 + ", ".join(moves) + ";", what, password)


def mysql_drop_database(dsn: str, password: str | None, *, what: str) -> None:
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        _sql(conn, extra, f"DROP DATABASE IF EXISTS {_quote(db)};", what, password)


def mysql_database_exists(dsn: str, password: str | None, *, what: str) -> bool:
    conn, db = parse_dsn(dsn)
    with _options_file(password) as extra:
        return _sql(conn, extra, "SELECT COUNT(*) FROM information_schema.schemata WHERE "
                    f"schema_name = {_lit(db)};", what, password).strip() == "1"
