"""Shared fixtures: run the real CLI as a subprocess, write plans, build and compare trees."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# every CLI run records to a ledger: keep the tests' records out of the user's state folder,
# one folder per test process (xdist workers inherit the parent's environment, and a test
# reading "the last run" must not see another worker's)
os.environ["RESTORER_STATE_DIR"] = tempfile.mkdtemp(
    prefix=f"restorer-test-state-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")


# the longest modules first: --dist loadscope hands modules to the two workers in collection
# order, and a long one handed out last leaves the other worker idle at the end
LONGEST_FIRST = (
    "tests/targets/test_conformance.py", "tests/faults/test_kill_loop.py",
    "tests/e2e/test_offsite.py", "tests/e2e/test_dumps.py",
    "tests/faults/test_damaged_repository.py", "tests/e2e/test_cloud.py",
    "tests/faults/test_network.py", "tests/e2e/test_rollback.py", "tests/e2e/test_report.py",
    "tests/e2e/test_data_loss.py", "tests/faults/test_resources.py", "tests/e2e/test_prune.py",
    "tests/e2e/test_report_controls.py", "tests/e2e/test_ledger_evidence.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {m: i for i, m in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(it.nodeid.split("::")[0], len(rank)))  # stable


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--faults-long", action="store_true",
                     help="run the fault catalogue's long loops (tests/bench/run.sh does)")


@pytest.fixture
def faults_long(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--faults-long"))


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*args: str | Path, env: dict[str, str | None] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> Result:
    """`restorer ARGS...` in a subprocess, as a user would run it (env None values unset)."""
    e = {**os.environ}
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    p = subprocess.run(
        [sys.executable, "-m", "restorer", *map(str, args)],
        capture_output=True, text=True, env=e, timeout=timeout, cwd=cwd,
    )
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def cli():
    return run_cli


def write_plan(path: Path, **overrides: Any) -> Path:
    """A plan file with one files target `data` over `path.parent / 'src'` by default."""
    plan: dict[str, Any] = {
        "version": 1,
        "name": "test",
        "repository": {"url": "file://repo"},
        "targets": [{"name": "data", "kind": "files", "paths": ["src"]}],
    }
    plan.update(overrides)
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    write_plan(tmp_path / "plan.yaml")
    return tmp_path


# --- trees ------------------------------------------------------------------------------


def make_odd_tree(root: Path) -> None:
    """Unicode, spaces, newlines and non-UTF-8 bytes in names, empty files and dirs,
    symlinks (relative, absolute, dangling), hard links, odd modes, a FIFO, xattrs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "plain.txt").write_text("hello\n")
    (root / "empty file").write_bytes(b"")
    (root / "ünïcødé ✓ 名前.txt").write_text("unicode name\n")
    (root / "line\nbreak.txt").write_text("newline in the name\n")
    (root / "-leading dash").write_text("dash\n")
    os.makedirs(root / "deep" / "er" / "est")
    (root / "deep" / "er" / "est" / "bottom.bin").write_bytes(os.urandom(70_000))
    (root / "empty dir").mkdir()
    (root / "big.bin").write_bytes(os.urandom(1_500_000) + b"tail" * 100_000)
    os.symlink("plain.txt", root / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("does/not/exist", root / "dangling")
    os.link(root / "plain.txt", root / "hard-link-to-plain")
    os.link(root / "deep" / "er" / "est" / "bottom.bin", root / "deep" / "hard-bottom")
    bad = os.fsencode(str(root)) + b"/not-utf8-\xff\xfe.bin"
    with open(bad, "wb") as f:
        f.write(b"bytes name\n")
    (root / "secret.key").write_text("0600\n")
    os.chmod(root / "secret.key", 0o600)
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o4755)
    os.chmod(root / "deep" / "er", 0o750)
    os.mkfifo(root / "a-fifo")
    os.setxattr(root / "plain.txt", "user.origin", b"restorer-test")
    if os.geteuid() == 0:
        os.chown(root / "secret.key", 1234, 5678)
        os.lchown(root / "rel-link", 4321, 8765)
    # fixed, distinct mtimes so a restore that forgets them is caught
    for i, (dirpath, _dirs, files) in enumerate(os.walk(root, topdown=False)):
        for j, n in enumerate(sorted(files)):
            p = os.path.join(dirpath, n)
            os.utime(p, ns=(1_600_000_000_000_000_000 + i * 1000 + j,) * 2, follow_symlinks=False)
        os.utime(dirpath, ns=(1_500_000_000_123_456_789 + i,) * 2)


def describe_tree(root: Path) -> dict[bytes, tuple]:
    """Everything a restore must reproduce, keyed by relative path (bytes)."""
    out: dict[bytes, tuple] = {}
    broot = os.fsencode(str(root))
    inode_first: dict[int, bytes] = {}
    for dirpath, dirs, files in os.walk(broot):
        dirs.sort()
        for n in sorted(dirs) + sorted(files):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, broot)
            st = os.lstat(p)
            t = stat.S_IFMT(st.st_mode)
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            link_group = None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                link_group = inode_first.setdefault(st.st_ino, rel)
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                for x in os.listxattr(p):
                    xattrs[x] = os.getxattr(p, x)
            mtime = st.st_mtime_ns
            out[rel] = (t, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else None, mtime,
                        st.st_uid, st.st_gid, content, link_group, tuple(sorted(xattrs.items())))
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    da, db = describe_tree(a), describe_tree(b)
    assert sorted(da) == sorted(db), f"entries differ: {set(da) ^ set(db)}"
    for k in da:
        assert da[k] == db[k], f"{k!r} differs:\n  source   {da[k]}\n  restored {db[k]}"


def tree_digest(root: Path) -> str:
    return hashlib.sha256(repr(sorted(describe_tree(root).items())).encode()).hexdigest()


# --- services ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server():
    from tests.services import start_moto

    server = start_moto()
    yield server
    server.server.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from tests.services import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


_bucket_counter = [0]


def unique_name(prefix: str) -> str:
    _bucket_counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_bucket_counter[0]}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    from tests.services import start_postgres

    dsn, stop = start_postgres(tmp_path_factory.mktemp("pg"))
    yield dsn
    stop()


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory):
    from tests.services import start_mariadb

    dsn, stop = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield dsn
    stop()
