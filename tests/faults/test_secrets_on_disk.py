"""Secrets on disk: a MariaDB password given to the client tools must not be left in a file
when restorer is killed with SIGKILL in the middle of a dump, and never reach a command line.

The dump is held still, deterministically, by another session holding `LOCK TABLES ... WRITE`
on the table being dumped: mariadb-dump waits for the metadata lock while restorer is alive
with its password handed to the tools.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from restorer.fsutil import walk
from tests.conftest import ROOT, unique_name, write_plan
from tests.e2e.test_dumps import _my
from tests.services import process_tree

# runs restorer as if on a system without memfd_create (an old kernel, a seccomp filter),
# to prove the on-disk fallback's clean-up
NO_MEMFD = ("import os, runpy, sys; del os.memfd_create; sys.argv[0] = 'restorer'; "
            "runpy.run_module('restorer', run_name='__main__', alter_sys=True)")


def _files_holding(secret: bytes, roots: list[Path], since: float) -> list[str]:
    """Regular files under `roots` written since `since` that contain `secret`."""
    found: list[str] = []
    for root in roots:
        # restorer's own walk: os.walk recurses per level, and /tmp may hold deep trees
        for dirpath, _dirs, files in walk(root):
            for n in files:
                p = os.path.join(dirpath, n)
                try:
                    st = os.lstat(p)
                    if not stat.S_ISREG(st.st_mode) or st.st_mtime < since or \
                            st.st_size > 1 << 20:
                        continue
                    with open(p, "rb") as f:
                        if secret in f.read():
                            found.append(p)
                except OSError:
                    continue
    return sorted(set(found))  # the state dir may lie under /tmp


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _wait_for(what: str, cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def _table_locked(server: str, db: str) -> Iterator[None]:
    """Another session holds a write lock on db.t, so a dump of it waits."""
    from urllib.parse import urlsplit

    u = urlsplit(server)
    locker = subprocess.Popen(
        ["mariadb", "--protocol=TCP", "-h", str(u.hostname), "-P", str(u.port), "-u",
         str(u.username), db, "-e", "LOCK TABLES t WRITE; SELECT SLEEP(120);"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for("the locking session", lambda: _my(
            server, "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE info = 'SELECT SLEEP(120)'") == "1")
        yield
    finally:
        locker.kill()
        locker.wait()


def _dump_waiting(server: str) -> bool:
    return _my(server, "SELECT COUNT(*) FROM information_schema.processlist "
               "WHERE state LIKE 'Waiting for table metadata lock%'") != "0"


def _start(args: list[str], env: dict[str, str], disk_fallback: bool) -> subprocess.Popen:
    head = [sys.executable, "-c", NO_MEMFD] if disk_fallback else \
        [sys.executable, "-m", "restorer"]
    return subprocess.Popen([*head, *args], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(args: list[str], env: dict[str, str], disk_fallback: bool = False,
         ) -> tuple[int, str, str]:
    p = _start(args, env, disk_fallback)
    out, err = p.communicate(timeout=120)
    return p.returncode, out.decode(), err.decode()


def _check_sigkill_during_dump(tmp_path: Path, mariadb_server: str,
                               disk_fallback: bool) -> None:
    db = unique_name("sec").replace("-", "_")
    user = unique_name("u").replace("-", "_")
    password = f"kill9-{os.urandom(6).hex()}-pw"
    _my(mariadb_server, f"CREATE DATABASE {db}; CREATE TABLE {db}.t (i INT); "
        f"INSERT INTO {db}.t VALUES (1), (2);")
    for host in ("%", "localhost"):
        _my(mariadb_server, f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'; "
            f"GRANT ALL ON *.* TO '{user}'@'{host}';")
    state = tmp_path / "state"
    env = {"MY_PW": password, "RESTORER_STATE_DIR": str(state)}
    server = mariadb_server.replace("root@", f"{user}@")
    plan = write_plan(tmp_path / "plan.yaml", targets=[
        {"name": "db", "kind": "mysql", "dsn": f"{server}/{db}", "password": "${env:MY_PW}"}])
    secret = password.encode()
    roots = [Path("/tmp"), Path("/var/tmp"), state]
    since = time.time() - 1
    try:
        rc, out, err = _run(["init", str(plan)], env)
        assert rc == 0, err
        with _table_locked(mariadb_server, db):
            proc = _start(["backup", str(plan)], env, disk_fallback)
            try:
                _wait_for("the dump to wait for the table lock",
                          lambda: proc.poll() is None and _dump_waiting(mariadb_server))
                children = process_tree(proc.pid)[1:]
                assert any(b"mariadb-dump" in _cmdline(c) for c in children), children
                for c in children:
                    assert secret not in _cmdline(c), f"password on the command line of {c}"
                on_disk = _files_holding(secret, roots, since)
                if disk_fallback:
                    # the fallback: one 0600 file in a 0700 folder of the state dir, nowhere
                    # else
                    assert len(on_disk) == 1 and on_disk[0].startswith(str(state)), on_disk
                    f = Path(on_disk[0])
                    assert stat.S_IMODE(f.stat().st_mode) == 0o600
                    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
                    # a run that starts meanwhile leaves the live run's file alone
                    rc, out, err = _run(["snapshots", str(plan)], env, disk_fallback=True)
                    assert rc == 0, err
                    assert f.exists(), "a live run's option file was removed"
                else:
                    assert on_disk == [], f"the password was written to disk: {on_disk}"
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
        # the orphaned mariadb-dump, no longer blocked, meets the closed pipe and ends
        _wait_for("the orphaned dump to end", lambda: not any(
            b"mariadb-dump" in cmd and db.encode() in cmd
            for cmd in map(_cmdline, (int(d) for d in os.listdir("/proc") if d.isdigit()))))
        # the next run of restorer, whatever it is, removes what the killed one left
        rc, out, err = _run(["snapshots", str(plan), "--json"], env)
        assert rc == 0, err
        assert json.loads(out) == [], "the killed backup left a snapshot"
        assert _files_holding(secret, roots, since) == [], \
            "a file holding the password outlived the killed run and the next one"
        rc, out, err = _run(["backup", str(plan)], env, disk_fallback)
        assert rc == 0 and "snapshot" in out, out + err
        assert _files_holding(secret, roots, since) == []
    finally:
        _my(mariadb_server, f"DROP DATABASE IF EXISTS {db}; DROP USER IF EXISTS "
            f"'{user}'@'%'; DROP USER IF EXISTS '{user}'@'localhost';")


def test_sigkill_during_a_mariadb_dump_leaves_no_password_on_disk(tmp_path: Path,
                                                                  mariadb_server) -> None:
    _check_sigkill_during_dump(tmp_path, mariadb_server, disk_fallback=False)


def test_without_memfd_the_option_file_of_a_killed_run_is_removed_by_the_next_run(
        tmp_path: Path, mariadb_server) -> None:
    _check_sigkill_during_dump(tmp_path, mariadb_server, disk_fallback=True)
