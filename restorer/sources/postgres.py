"""PostgreSQL targets: pg_dump (plain SQL, so day-to-day dumps dedup) streamed into the
repository, and psql streaming it back into a database created for it.

The password reaches the tools through PGPASSWORD in their environment, never argv.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from restorer.errors import RestoreError, SourceError
from restorer.sources.process import feed, output_of, run
from restorer.sources.remote import q, remote_output, remote_secret_file


def _env(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    return env


def split_dsn(dsn: str) -> tuple[str, str]:
    """(DSN of the server's maintenance database `postgres`, database name)."""
    u = urlsplit(dsn)
    if u.scheme not in ("postgresql", "postgres") or not u.path.strip("/"):
        raise RestoreError(f"'{safe_dsn(dsn)}' is not a PostgreSQL DSN naming a database",
                           hint="write postgresql://USER@HOST:PORT/DBNAME")
    name = unquote(u.path.strip("/"))
    return urlunsplit((u.scheme, u.netloc, "/postgres", u.query, "")), name


def safe_dsn(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def _major(version: str) -> int:
    m = re.search(r"(\d+)(?:\.(\d+))?", version)
    if not m:
        raise SourceError(f"cannot read a version from {version!r}")
    return int(m.group(1))


def check_versions(dsn: str, password: str | None, what: str) -> None:
    """pg_dump must be at least as new as the server, or it refuses (or dumps badly)."""
    client = run(["pg_dump", "--version"], what=what)
    server = run(["psql", "-X", "-A", "-t", "-c", "SHOW server_version", "--dbname", dsn],
                 what=what, env=_env(password), secrets=[password])
    if _major(client) < _major(server):
        raise SourceError(
            f"{what}: {client.strip()} is older than the server (PostgreSQL {server.strip()}); "
            "it cannot make a faithful dump",
            hint=f"install the PostgreSQL {_major(server)} client tools (postgresql-client-"
            f"{_major(server)}) on this machine",
        )


def dump_argv(dsn: str, all_databases: bool, fmt: str) -> list[str]:
    if all_databases:
        return ["pg_dumpall", "--dbname", dsn]
    # custom format uncompressed: pg_restore can pick objects, and chunking still dedups
    extra = ["--format=custom", "--compress=0"] if fmt == "custom" else ["--format=plain"]
    return ["pg_dump", *extra, "--no-password", "--dbname", dsn]


@contextmanager
def pg_dump(dsn: str, password: str | None, *, what: str, all_databases: bool = False,
            fmt: str = "plain") -> Iterator[IO[bytes]]:
    check_versions(dsn, password, what)
    argv = dump_argv(dsn, all_databases, fmt)
    with output_of(argv, what=what, env=_env(password), secrets=[password]) as out:
        yield out


def _psql(dsn: str, password: str | None, sql: str, what: str, **variables: str) -> str:
    argv = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--dbname", dsn]
    for k, v in variables.items():
        argv += ["-v", f"{k}={v}"]
    return feed(argv, [sql.encode()], what=what, env=_env(password), secrets=[password])


# Written on a database verify creates, so that only such a database is ever dropped by it
# (a leftover of a killed run is recognised; a real database at the same name never is).
SCRATCH_MARK = "restorer verify scratch database"


def _scratch_comment(admin: str, password: str | None, name: str, what: str) -> str | None:
    out = _psql(admin, password, "SELECT 'x' || coalesce(shobj_description(oid, 'pg_database'), "
                "'') FROM pg_database WHERE datname = :'name';", what, name=name)
    return out.strip()[1:] if out.strip() else None


def pg_scratch_create(dsn: str, password: str | None, *, what: str) -> None:
    """Create the staging database `dsn` names, marked as verify's own; a marked leftover is
    dropped first, and an unmarked database of that name is refused, never touched."""
    admin, name = split_dsn(dsn)
    comment = _scratch_comment(admin, password, name, what)
    if comment is not None:
        if not comment.startswith(SCRATCH_MARK):
            raise RestoreError(
                f"staging database {name} at {safe_dsn(admin)} already exists and was not "
                "created by restorer verify; it is left untouched",
                hint="point staging.dsn at a database name that does not exist: verify "
                "creates it, restores into it and drops it")
        _psql(admin, password, 'DROP DATABASE :"name" WITH (FORCE);', what, name=name)
    _psql(admin, password, 'CREATE DATABASE :"name";', what, name=name)
    _psql(admin, password, "COMMENT ON DATABASE :\"name\" IS :'mark';", what, name=name,
          mark=f"{SCRATCH_MARK}; safe to drop")


def pg_scratch_drop(dsn: str, password: str | None, *, what: str) -> bool:
    """Drop verify's staging database; True when no database of that name is left."""
    admin, name = split_dsn(dsn)
    comment = _scratch_comment(admin, password, name, what)
    if comment is None:
        return True
    if not comment.startswith(SCRATCH_MARK):
        return False
    _psql(admin, password, 'DROP DATABASE :"name" WITH (FORCE);', what, name=name)
    return _scratch_comment(admin, password, name, what) is None


def pg_query(dsn: str, password: str | None, query: str, *, what: str,
             timeout: float) -> list[list[str]]:
    """The rows of one query, as text (NULL reads as '')."""
    argv = ["psql", "-X", "-q", "--csv", "-t", "-v", "ON_ERROR_STOP=1", "--dbname", dsn,
            "-c", query]
    out = feed(argv, (), what=what, env=_env(password), secrets=[password], timeout=timeout)
    return [row for row in csv.reader(io.StringIO(out)) if row]


def is_cluster_dump(first_chunk: bytes) -> bool:
    """Whether a dump is pg_dumpall's (roles and databases) rather than one database's."""
    return b"PostgreSQL database cluster dump" in first_chunk[:4096]


def pg_restore_stream(chunks: Iterable[bytes], dsn: str, password: str | None, *,
                      overwrite: bool, what: str) -> None:
    """Restore a plain dump into the database `dsn` names: created when absent; refused when
    it exists and holds tables, unless `overwrite` (then dropped and created again)."""
    it = iter(chunks)
    first = next(it, b"")
    if is_cluster_dump(first):
        _restore_cluster(itertools.chain([first], it), dsn, password, what)
        return
    chunks = itertools.chain([first], it)
    admin, name = split_dsn(dsn)
    exists = _psql(admin, password, "SELECT 1 FROM pg_database WHERE datname = :'name';",
                   what, name=name).strip() == "1"
    if exists:
        tables = int(_psql(dsn, password, (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r','v','m','S','p') AND n.nspname NOT IN "
            "('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%';"),
            what).strip() or 0)
        if tables and not overwrite:
            raise RestoreError(
                f"database {name} at {safe_dsn(admin)} exists and is not empty ({tables} "
                "relations)",
                hint="restore into a new database name, or pass --overwrite to replace it",
            )
        if tables:
            _psql(admin, password, 'DROP DATABASE :"name" WITH (FORCE);', what, name=name)
            exists = False
    if not exists:
        _psql(admin, password, 'CREATE DATABASE :"name";', what, name=name)
    it = iter(chunks)
    first = next(it, b"")
    if first.startswith(b"PGDMP"):  # custom format
        argv = ["pg_restore", "--exit-on-error", "--single-transaction", "--dbname", dsn]
    else:
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                "--dbname", dsn]
    feed(argv, itertools.chain([first], it), what=what, env=_env(password), secrets=[password])


def _pgpass_line(password: str) -> str:
    esc = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{esc}\n"


@contextmanager
def pg_dump_remote(client: Any, dsn: str, password: str | None, *, what: str,
                   all_databases: bool = False, fmt: str = "plain") -> Iterator[IO[bytes]]:
    """pg_dump run on the remote host; the password in a private PGPASSFILE there."""
    with contextlib.ExitStack() as stack:
        prefix = ""
        if password:
            path = stack.enter_context(remote_secret_file(client, _pgpass_line(password)))
            prefix = f"PGPASSFILE={q(path)} "
        client_v = _read_remote(client, "pg_dump --version", what)
        server_v = _read_remote(client, prefix + q("psql", "-X", "-A", "-t", "-c",
                                                    "SHOW server_version", "--dbname", dsn),
                                what, [password])
        if _major(client_v) < _major(server_v):
            raise SourceError(
                f"{what}: the remote {client_v.strip()} is older than the server "
                f"(PostgreSQL {server_v.strip()}); it cannot make a faithful dump",
                hint=f"install postgresql-client-{_major(server_v)} on the remote host",
            )
        argv = dump_argv(dsn, all_databases, fmt)
        with remote_output(client, prefix + q(*argv), what=what, secrets=[password]) as out:
            yield out


def _read_remote(client: Any, command: str, what: str,
                 secrets: list[str | None] | None = None) -> str:
    with remote_output(client, command, what=what, secrets=secrets or []) as out:
        return out.read().decode("utf-8", "replace")


def _restore_cluster(chunks: Iterable[bytes], dsn: str, password: str | None,
                     what: str) -> None:
    """A pg_dumpall dump (roles, databases) into the server `dsn` points at. It creates its
    own databases; the server's existing roles (its superuser, at least) are expected to
    collide with the dump's CREATE ROLE, and those errors alone are tolerated."""
    u = urlsplit(dsn)
    admin = urlunsplit((u.scheme, u.netloc, "/postgres", u.query, ""))
    lines: list[str] = []
    feed(["psql", "-X", "-q", "--dbname", admin], chunks, what=what, env=_env(password),
         secrets=[password], stderr_lines=lines)
    errors = [x for x in lines if "ERROR:" in x
              and not re.search(r'role "[^"]+" already exists', x)]
    if errors:
        shown = "\n".join(errors[:10])
        raise RestoreError(f"{what}: the cluster dump did not apply cleanly "
                           f"({len(errors)} error(s)):\n{shown}",
                           hint="restore a cluster dump into an empty server")


def pg_database_exists(dsn: str, password: str | None, *, what: str) -> bool:
    admin, name = split_dsn(dsn)
    return _psql(admin, password, "SELECT 1 FROM pg_database WHERE datname = :'name';",
                 what, name=name).strip() == "1"


def pg_sessions(admin: str, password: str | None, name: str, what: str) -> int:
    return int(_psql(admin, password, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                     ":'name' AND pid <> pg_backend_pid();", what, name=name).strip() or 0)


def pg_swap_databases(live_dsn: str, new_name: str, old_name: str, password: str | None, *,
                      terminate: bool, what: str, wait: float = 15.0) -> None:
    """Put database `new_name` in place of the live one, which is kept as `old_name`.

    New connections to the live database are refused first; other sessions are ended only
    when `terminate`, else the swap is refused while any remain. The two renames then happen
    in one transaction: the live name always names one whole database.
    """
    import time

    admin, live = split_dsn(live_dsn)
    _psql(admin, password, 'ALTER DATABASE :"name" WITH ALLOW_CONNECTIONS false;', what,
          name=live)
    try:
        busy = pg_sessions(admin, password, live, what)
        if busy and not terminate:
            raise RestoreError(
                f"{what}: {busy} other session(s) are connected to database {live}; it cannot "
                "be swapped while in use",
                hint="stop the application in rollback.before, or set "
                "rollback.terminate_connections: true in the plan")
        deadline = time.monotonic() + wait
        while busy:
            _psql(admin, password, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = :'name' AND pid <> pg_backend_pid();", what, name=live)
            time.sleep(0.2)
            busy = pg_sessions(admin, password, live, what)
            if busy and time.monotonic() > deadline:
                raise RestoreError(f"{what}: {busy} session(s) on {live} did not end within "
                                   f"{wait:g}s")
        owner = _psql(admin, password, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                      "WHERE datname = :'name';", what, name=live).strip()
        _psql(admin, password, 'BEGIN; ALTER DATABASE :"new" OWNER TO :"owner"; '
              'ALTER DATABASE :"live" RENAME TO :"old"; ALTER DATABASE :"new" RENAME TO '
              ':"live"; COMMIT;', what, new=new_name, owner=owner, live=live, old=old_name)
        # the database now live may be one an earlier swap closed (a swap back, the
        # recovery of a killed rollback): it takes connections again
        _psql(admin, password, 'ALTER DATABASE :"name" WITH ALLOW_CONNECTIONS true;', what,
              name=live)
    except BaseException:
        if pg_database_exists(urlunsplit(urlsplit(admin)._replace(path="/" + live)), password,
                              what=what):
            _psql(admin, password, 'ALTER DATABASE :"name" WITH ALLOW_CONNECTIONS true;',
                  what, name=live)
        raise


def pg_drop_database(dsn: str, password: str | None, *, what: str) -> None:
    admin, name = split_dsn(dsn)
    _psql(admin, password, 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);', what, name=name)
