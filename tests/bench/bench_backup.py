"""Backup and restore benchmark, restorer beside restic and borg (when installed).

    .venv/bin/python tests/bench/bench_backup.py [--cases seeded,real,s3,sftp,many,history,db]
        [--size-mib 1024] [--rounds 2] [--many-files 500000] [--history-snapshots 100]
        [--db-scale 20] [--workdir DIR] [--keep]

Cases (each tool runs each step as a separate process, timed for wall clock, CPU user+sys of
the process and everything it waited for, and peak RSS: the largest of the kernel's figure and
the sum over the process tree sampled every 20 ms, so writer processes count):
  seeded   a seeded mixed set (--size-mib): first, no-change and mutated backups (a few hundred
           small files changed, a log appended to, 4 KiB inserted mid-file), full restore,
           check --read-data; repository size and growth
  real     /usr/share + /usr/include + /usr/lib/python3.11 (on every Debian machine; contents
           differ between machines, never within a run): first and no-change backups, restore
  s3, sftp the real tree into a moto server / a real sshd on loopback (restorer and restic)
  many     --many-files small files under /var/tmp (kept between runs): first and no-change
           backups, time per file
  history  a repository grown to --history-snapshots snapshots (each adds 100 new small
           files: one index entry each): no-change backup and a first backup of a new tree,
           at 1 snapshot and at the last, time and RSS per index entry
  db       PostgreSQL (pgbench -i -s --db-scale): `pg_dump | zstd -3 > /dev/null` beside our
           backup, `psql < dump` into a new database beside our restore
Every tool encrypts (restorer with a password, restic always, borg repokey). Steps alternate
which tool goes first, --rounds times, and the median wall time is kept. Restored trees are
deleted only at the end of their case: ext4 makes creating files right after deleting many
slow for whoever comes next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.services

PASSWORD = "bench-password"
REAL_TREE = [Path("/usr/share"), Path("/usr/include"), Path("/usr/lib/python3.11")]


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mb: float


def _tree_rss_kb(pid: int) -> int:
    from tests.services import process_tree

    total = 0
    for p in process_tree(pid)[1:]:  # below GNU time
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, ValueError, IndexError):
            continue
    return total


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None,
        shell: bool = False) -> Measure:
    """Run `cmd` under GNU time, whose own figures are the tool's alone: a process forked
    from this one would count this one's pages in its peak RSS, even after exec."""
    out = Path(tempfile.mktemp(prefix="bench-time-", dir="/var/tmp"))
    full = ["/usr/bin/time", "-q", "-f", "%e %U %S %M", "-o", str(out),
            *(cmd if not shell else ["bash", "-c", cmd[0]])]
    t0 = time.perf_counter()
    p = subprocess.Popen(full, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss_kb(p.pid))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    code = p.wait()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{err[-2000:]}")
    _e, user, sys_, maxrss = out.read_text().split()[-4:]
    out.unlink()
    # the larger of the tool's own peak and the sum over its process tree (writer
    # processes beside a restore)
    return Measure(wall, float(user) + float(sys_), max(int(maxrss), peak[0]) / 1024)


# --- dataset ----------------------------------------------------------------------------

WORDS = [
    "backup", "restore", "verify", "rollback", "ledger", "snapshot", "chunk", "pack", "index",
    "tree", "blob", "objective", "staging", "target", "plan", "retention", "schedule", "alert",
    "metric", "lock", "repository", "error", "warning", "info", "debug", "request", "response",
    "latency", "user", "order", "invoice",
]


def text_pool(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16)))
        out += f"{rng.randint(0, 10**9):010d} {line}\n".encode()
    return bytes(out[:size])


def random_bytes(rng: random.Random, size: int) -> bytes:
    """Seeded incompressible bytes, made in 16 MiB pieces (randbytes caps one call)."""
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(min(16 << 20, size - len(out)))
    return bytes(out)


def compressible(rng: random.Random, pool: bytes, size: int) -> bytes:
    """Text that compresses ~3x and never repeats at chunk scale."""
    parts, n = [], 0
    while n < size:
        ln = rng.randint(256, 8192)
        off = rng.randrange(0, len(pool) - ln)
        parts.append(pool[off:off + ln])
        n += ln
    return b"".join(parts)[:size]


def make_dataset(root: Path, size_mib: int, seed: int = 42) -> dict[str, int]:
    rng = random.Random(seed)
    pool = text_pool(rng, 8 << 20)
    scale = size_mib / 1024
    root.mkdir(parents=True)
    big = root / "big"
    big.mkdir()
    (big / "compressible.txt").write_bytes(compressible(rng, pool, int(330 * scale) << 20))
    (big / "random.bin").write_bytes(random_bytes(rng, int(330 * scale) << 20))
    (big / "app.log").write_bytes(compressible(rng, pool, int(130 * scale) << 20))
    n_small = max(100, int(20_000 * scale))
    total = 0
    for i in range(n_small):
        d = root / "small" / f"d{i % 40:02d}" / f"e{(i // 40) % 25:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = int(2 ** rng.uniform(7, 15.8))  # 128 B .. ~57 KiB, mean ~9 KiB
        data = rng.randbytes(size) if i % 5 == 0 else compressible(rng, pool, size)
        (d / f"f{i:05d}.dat").write_bytes(data)
        total += size
    return {"small_files": n_small, "small_bytes": total}


def mutate(root: Path, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    files = sorted((root / "small").rglob("*.dat"))
    changed = rng.sample(files, min(300, len(files)))
    for f in changed:
        f.write_bytes(f.read_bytes() + rng.randbytes(200))
    with open(root / "big" / "app.log", "ab") as f:
        f.write(text_pool(rng, 256 << 10))
    big = root / "big" / "compressible.txt"
    data = big.read_bytes()
    mid = len(data) // 2
    big.write_bytes(data[:mid] + rng.randbytes(4096) + data[mid:])
    return {"changed_small": len(changed), "log_append": 256 << 10, "insert": 4096}


def make_many(root: Path, n: int, seed: int = 9) -> dict[str, int]:
    """`n` small files (mean ~1 KiB, a fifth incompressible) in folders of 1,000."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(n):
        return {"files": n, "made": 0}
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    pool = text_pool(rng, 4 << 20)
    for i in range(n):
        d = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        size = int(2 ** rng.uniform(5, 11.5))  # 32 B .. 2.9 KiB
        off = rng.randrange(0, len(pool) - size)
        data = rng.randbytes(size) if i % 5 == 0 else pool[off:off + size]
        with open(d / f"f{i:06d}", "wb") as f:
            f.write(data)
    marker.write_text(str(n))
    return {"files": n, "made": 1}


def grow(root: Path, round_: int, files: int = 100, seed: int = 21) -> None:
    """One more snapshot's worth: `files` new incompressible 8 KiB files."""
    rng = random.Random(seed * 100_003 + round_)
    d = root / f"r{round_:03d}"
    d.mkdir(parents=True)
    for i in range(files):
        (d / f"f{i:03d}").write_bytes(rng.randbytes(8192))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_files(paths: list[Path]) -> tuple[int, int]:
    files = size = 0
    for top in paths:
        for dirpath, _dirs, names in os.walk(top):
            for n in names:
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue
                if not os.path.islink(os.path.join(dirpath, n)):
                    files += 1
                    size += st.st_size
    return files, size


# --- where a repository lives ------------------------------------------------------------


@dataclass
class Remote:
    kind: str  # local, s3, sftp
    restorer_repo: dict
    restic_repo: str
    restic_args: list[str]
    env: dict[str, str]


def local_remote(case_dir: Path) -> Remote:
    return Remote("local", {}, "", [], {})


class MotoProcess:
    """A moto server in its own process: its memory and CPU are no tool's."""

    def __init__(self) -> None:
        from tests.services import AWS_ENV, free_port, wait_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
             str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        import boto3

        self.bucket = f"bench-{os.getpid()}"
        boto3.client("s3", endpoint_url=self.url, **{
            "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": "us-east-1"}).create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def s3_remote(moto: MotoProcess) -> Remote:
    from tests.services import AWS_ENV

    bucket = moto.bucket
    return Remote("s3", {"url": f"s3://{bucket}/restorer", "endpoint_url": moto.url,
                         "region": "us-east-1"},
                  f"s3:{moto.url}/{bucket}/restic", [], dict(AWS_ENV))


def sftp_remote(sshd, root: Path) -> Remote:
    ssh = (f"ssh -p {sshd.port} -i {sshd.key_file} -o UserKnownHostsFile={sshd.known_hosts} "
           f"-o BatchMode=yes {sshd.user}@127.0.0.1 -s sftp")
    return Remote("sftp", {"url": sshd.url(root / "restorer"),
                           "ssh": {"host": "127.0.0.1", "key_file": str(sshd.key_file),
                                   "known_hosts": str(sshd.known_hosts)}},
                  f"sftp:{sshd.user}@127.0.0.1:{root / 'restic'}",
                  ["-o", f"sftp.command={ssh}"], {})


# --- tools ------------------------------------------------------------------------------


class Tool:
    name = ""

    def __init__(self, case_dir: Path, paths: list[Path], remote: Remote) -> None:
        self.dir = case_dir
        self.paths = paths
        self.remote = remote
        self.repo = case_dir / f"repo-{self.name}"
        self.env = {**os.environ, **remote.env}

    def init(self) -> list[str]:
        raise NotImplementedError

    def backup(self, paths: list[Path] | None = None) -> list[str]:
        raise NotImplementedError

    def restore(self, dest: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def check(self) -> list[str]:
        raise NotImplementedError


class Restorer(Tool):
    name = "restorer"

    def __init__(self, case_dir: Path, paths: list[Path], remote: Remote) -> None:
        super().__init__(case_dir, paths, remote)
        self.env["BENCH_PW"] = PASSWORD
        self.exe = [sys.executable, "-m", "restorer", "-q"]
        self.n = 0

    def _plan(self, paths: list[Path]) -> Path:
        repo = {"url": f"file://{self.repo}", **self.remote.restorer_repo,
                "password": "${env:BENCH_PW}"}
        self.n += 1
        plan = self.dir / f"restorer-plan-{self.n}.yaml"
        plan.write_text(json.dumps({  # JSON is YAML
            "version": 1, "name": "bench", "repository": repo,
            "targets": [{"name": f"data{abs(hash(tuple(paths))) % 10**6}", "kind": "files",
                         "paths": [str(p) for p in paths]}]}))
        return plan

    def init(self) -> list[str]:
        return [*self.exe, "init", str(self._plan(self.paths))]

    def backup(self, paths: list[Path] | None = None) -> list[str]:
        return [*self.exe, "backup", str(self._plan(paths or self.paths))]

    def restore(self, dest: Path) -> tuple[list[str], Path | None]:
        return [*self.exe, "restore", str(self._plan(self.paths)), "latest", "--to",
                str(dest)], None

    def check(self) -> list[str]:
        return [*self.exe, "check", str(self._plan(self.paths)), "--read-data"]


class Restic(Tool):
    name = "restic"

    def __init__(self, case_dir: Path, paths: list[Path], remote: Remote) -> None:
        super().__init__(case_dir, paths, remote)
        self.env.update(RESTIC_PASSWORD=PASSWORD,
                        RESTIC_REPOSITORY=remote.restic_repo or str(self.repo),
                        RESTIC_CACHE_DIR=str(case_dir / "restic-cache"))
        self.x = ["restic", *remote.restic_args]

    def init(self) -> list[str]:
        return [*self.x, "init", "-q"]

    def backup(self, paths: list[Path] | None = None) -> list[str]:
        return [*self.x, "backup", "-q", *map(str, paths or self.paths)]

    def restore(self, dest: Path) -> tuple[list[str], Path | None]:
        return [*self.x, "restore", "-q", "latest", "--target", str(dest)], None

    def check(self) -> list[str]:
        return [*self.x, "check", "-q", "--read-data"]


class Borg(Tool):
    name = "borg"

    def __init__(self, case_dir: Path, paths: list[Path], remote: Remote) -> None:
        super().__init__(case_dir, paths, remote)
        self.env.update(BORG_PASSPHRASE=PASSWORD, BORG_REPO=str(self.repo),
                        BORG_BASE_DIR=str(case_dir / "borg-base"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def init(self) -> list[str]:
        return ["borg", "init", "-e", "repokey"]

    def backup(self, paths: list[Path] | None = None) -> list[str]:
        return ["borg", "create", f"::b{time.time_ns()}", *map(str, paths or self.paths)]

    def restore(self, dest: Path) -> tuple[list[str], Path | None]:
        dest.mkdir(parents=True, exist_ok=True)
        last = subprocess.run(["borg", "list", "--last", "1", "--short"], env=self.env,
                              capture_output=True, text=True, check=True).stdout.strip()
        return ["borg", "extract", f"::{last}"], dest

    def check(self) -> list[str]:
        return ["borg", "check", "--verify-data"]


def _in_child(fn: str, *args: object) -> dict[str, int]:
    """A dataset function in a child process, so this one stays small: a child's peak RSS
    counts the parent's pages it inherits at fork."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from pathlib import Path; import bench_backup as b; "
            f"print(json.dumps(b.{fn}(Path(sys.argv[1]), *map(int, sys.argv[2:]))))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


# --- running a case ---------------------------------------------------------------------


class Case:
    """The tools on one data set and one kind of repository; steps alternate who goes first."""

    def __init__(self, title: str, work: Path, paths: list[Path], remote: Remote,
                 tool_names: list[str], rounds: int) -> None:
        self.title = title
        self.dir = work / title
        self.dir.mkdir(parents=True, exist_ok=True)
        classes = {"restorer": Restorer, "restic": Restic, "borg": Borg}
        self.tools = [classes[n](self.dir, paths, remote) for n in tool_names]
        self.rounds = rounds
        self.results: dict[str, dict[str, Measure]] = {t.name: {} for t in self.tools}
        self.rates: dict[str, float] = {}  # step -> MB processed, for MB/s
        self.notes: list[str] = []
        self._flip = 0

    def step(self, label: str, fn, rounds: int | None = None, mb: float | None = None) -> None:
        ms: dict[str, list[Measure]] = {t.name: [] for t in self.tools}
        for _ in range(rounds or 1):
            order = self.tools if self._flip % 2 == 0 else list(reversed(self.tools))
            self._flip += 1
            for t in order:
                ms[t.name].append(fn(t))
        for name, lst in ms.items():
            self.results[name][label] = sorted(lst, key=lambda m: m.wall)[len(lst) // 2]
        if mb:
            self.rates[label] = mb

    def restore_step(self, label: str, expect_bytes: int) -> None:
        def restore(t: Tool) -> Measure:
            dest = self.dir / f"restored-{t.name}-{time.time_ns()}"
            cmd, cwd = t.restore(dest)
            m = run(cmd, t.env, cwd)
            got = du(dest)
            if got < expect_bytes * 0.99:
                raise SystemExit(f"{t.name} restored only {got} of {expect_bytes} bytes")
            return m
        self.step(label, restore, self.rounds, expect_bytes / 1e6)

    def clean_restores(self) -> None:
        for p in self.dir.glob("restored-*"):
            shutil.rmtree(p)

    def table(self) -> str:
        tools = self.tools
        lines = [f"== {self.title}"]
        header = f"{'step':<24}"
        for t in tools:
            header += f" | {t.name + ' s':>11} {'MB/s':>6} {'CPU s':>7} {'RSS MB':>6}"
        for t in tools[1:]:
            header += f" | {'ours/' + t.name:>12}"
        lines += [header, "-" * len(header)]
        for label in self.results[tools[0].name]:
            row = f"{label:<24}"
            for t in tools:
                m = self.results[t.name][label]
                rate = f"{self.rates[label] / m.wall:6.0f}" if label in self.rates else " " * 6
                row += f" | {m.wall:11.2f} {rate} {m.cpu:7.2f} {m.rss_mb:6.0f}"
            for t in tools[1:]:
                ratio = self.results[tools[0].name][label].wall / self.results[t.name][label].wall
                row += f" | {ratio:12.2f}"
            lines.append(row)
        return "\n".join(lines + self.notes)


def case_seeded(work: Path, names: list[str], args: argparse.Namespace) -> Case:
    data = work / "seeded-data"
    if data.exists():
        shutil.rmtree(data)
    t0 = time.perf_counter()
    info = _in_child("make_dataset", str(data), args.size_mib)
    total = du(data)
    c = Case("seeded", work, [data], local_remote(work), names, args.rounds)
    c.notes.append(f"dataset: {total / 2**20:.0f} MiB, {info['small_files']} small files "
                   f"({info['small_bytes'] / 2**20:.0f} MiB), made in "
                   f"{time.perf_counter() - t0:.1f}s")
    c.step("init", lambda t: run(t.init(), t.env))
    c.step("first backup", lambda t: run(t.backup(), t.env), mb=total / 1e6)
    sizes = {t.name: {"first": du(t.repo)} for t in c.tools}
    c.step("no-change backup", lambda t: run(t.backup(), t.env), args.rounds)
    for t in c.tools:
        sizes[t.name]["before"] = du(t.repo)
    mut = _in_child("mutate", str(data))
    c.notes.append(f"mutation: {mut['changed_small']} small files changed, "
                   f"{mut['log_append'] // 1024} KiB appended to a log, {mut['insert']} B "
                   "inserted mid-file in a large file")
    c.step("mutated backup", lambda t: run(t.backup(), t.env))
    for t in c.tools:
        sizes[t.name]["after"] = du(t.repo)
    c.restore_step("full restore", total)
    c.clean_restores()
    c.step("check --read-data", lambda t: run(t.check(), t.env), mb=total / 1e6)
    c.notes.append(f"{'repository':<24}" + "".join(f" | {t.name:>14}" for t in c.tools))
    for key, label in (("first", "size after first"), ("after", "size after mutated")):
        c.notes.append(f"{label:<24}" + "".join(
            f" | {sizes[t.name][key] / 1e6:11.1f} MB" for t in c.tools))
    c.notes.append(f"{'growth by mutation':<24}" + "".join(
        f" | {(sizes[t.name]['after'] - sizes[t.name]['before']) / 1e6:11.2f} MB"
        for t in c.tools))
    shutil.rmtree(data)
    return c


def case_tree(work: Path, names: list[str], args: argparse.Namespace, title: str,
              remote: Remote) -> Case:
    paths = [p for p in REAL_TREE if p.is_dir()]
    files, size = count_files(paths)
    c = Case(title, work, paths, remote, names, args.rounds)
    c.notes.append(f"tree: {' + '.join(map(str, paths))}: {files} files, "
                   f"{size / 2**20:.0f} MiB; repository: {remote.kind}")
    c.step("init", lambda t: run(t.init(), t.env))
    c.step("first backup", lambda t: run(t.backup(), t.env), mb=size / 1e6)
    c.step("no-change backup", lambda t: run(t.backup(), t.env), args.rounds)
    c.restore_step("full restore", size)
    c.clean_restores()
    return c


def case_many(work: Path, names: list[str], args: argparse.Namespace) -> Case:
    root = Path("/var/tmp") / f"restorer-bench-many-{args.many_files}"
    t0 = time.perf_counter()
    info = _in_child("make_many", str(root), args.many_files)
    c = Case("many", work, [root], local_remote(work), names, 1)
    c.notes.append(f"{args.many_files} small files in {root} "
                   f"({'made' if info['made'] else 'kept from an earlier run'} in "
                   f"{time.perf_counter() - t0:.0f}s)")
    c.step("init", lambda t: run(t.init(), t.env))
    c.step("first backup", lambda t: run(t.backup(), t.env))
    c.step("no-change backup", lambda t: run(t.backup(), t.env))
    for label in ("first backup", "no-change backup"):
        c.notes.append(f"{label} per file: " + ", ".join(
            f"{t.name} {c.results[t.name][label].wall / args.many_files * 1e6:.1f} µs, "
            f"{c.results[t.name][label].rss_mb * 1e6 / args.many_files:.0f} B RSS"
            for t in c.tools))
    return c


def case_history(work: Path, names: list[str], args: argparse.Namespace) -> Case:
    root = work / "history-data"
    fresh = work / "history-fresh"
    for p in (root, fresh):
        if p.exists():
            shutil.rmtree(p)
    _in_child("make_many", str(root / "base"), 2000)
    _in_child("make_many", str(fresh), 2000)
    c = Case("history", work, [root], local_remote(work), names, args.rounds)
    c.step("init", lambda t: run(t.init(), t.env))
    _in_child("grow", str(root), 0)
    c.step("backup 1 (first)", lambda t: run(t.backup(), t.env))
    c.step("no-change @1", lambda t: run(t.backup(), t.env), args.rounds)
    c.step("new tree @1", lambda t: run(t.backup([fresh]), t.env))
    build = {t.name: 0.0 for t in c.tools}
    t0 = time.perf_counter()
    for r in range(1, args.history_snapshots):
        _in_child("grow", str(root), r)
        for t in c.tools:
            build[t.name] += run(t.backup(), t.env).wall
    c.notes.append(f"grew to {args.history_snapshots} snapshots in "
                   f"{time.perf_counter() - t0:.0f}s (" + ", ".join(
                       f"{n} {s:.0f}s" for n, s in build.items()) + ")")
    c.step(f"no-change @{args.history_snapshots}", lambda t: run(t.backup(), t.env), args.rounds)
    _in_child("make_many", str(fresh / "more"), 2000)
    c.step(f"new tree @{args.history_snapshots}", lambda t: run(t.backup([fresh]), t.env))
    entries = (args.history_snapshots - 1) * 100
    for a, b in (("no-change @1", f"no-change @{args.history_snapshots}"),
                 ("new tree @1", f"new tree @{args.history_snapshots}")):
        per = []
        for t in c.tools:
            ra, rb = c.results[t.name][a], c.results[t.name][b]
            per.append(f"{t.name} {(rb.wall - ra.wall) / entries * 1e6:+.1f} µs "
                       f"{(rb.rss_mb - ra.rss_mb) * 1e6 / entries:+.0f} B RSS")
        c.notes.append(f"{b.split(' @')[0]}: per index entry added " + ", ".join(per)
                       + f" ({entries} entries added)")
    shutil.rmtree(root)
    shutil.rmtree(fresh)
    return c


def case_db(work: Path, args: argparse.Namespace) -> str:
    from tests.services import start_postgres

    server, stop = start_postgres(work)
    src, dst, plain = "restorer_bench_src", "restorer_bench_dst", "restorer_bench_psql"
    env = {**os.environ, "BENCH_PW": PASSWORD}
    psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", f"{server}/postgres", "-c"]
    try:
        for db in (src, dst, plain):
            subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=True)
        subprocess.run([*psql, f"CREATE DATABASE {src}"], check=True)
        subprocess.run(["pgbench", "-q", "-i", "-s", str(args.db_scale), f"{server}/{src}"],
                       check=True, capture_output=True)
        size = int(subprocess.run(["psql", "-At", "-d", f"{server}/{src}", "-c",
                                   "SELECT pg_database_size(current_database())"],
                                  capture_output=True, text=True, check=True).stdout)
        d = work / "db"
        d.mkdir(exist_ok=True)
        dump = d / "dump.sql"
        plan = d / "plan.yaml"
        plan.write_text(json.dumps({
            "version": 1, "name": "benchdb",
            "repository": {"url": f"file://{d / 'repo'}", "password": "${env:BENCH_PW}"},
            "targets": [{"name": "db", "kind": "postgres", "dsn": f"{server}/{src}"}]}))
        r = [sys.executable, "-m", "restorer", "-q"]
        run([*r, "init", str(plan)], env)
        rows = []
        for _ in range(max(1, args.rounds)):
            dump_z = run([f"pg_dump -d {server}/{src} | zstd -3 -q > /dev/null"], env,
                         shell=True)
            ours_b = run([*r, "backup", str(plan)], env)
            subprocess.run(["pg_dump", "-d", f"{server}/{src}", "-f", str(dump)], check=True)
            subprocess.run([*psql, f"CREATE DATABASE {plain}"], check=True)
            load = run([f"psql -q -v ON_ERROR_STOP=1 -d {server}/{plain} < {dump}"], env,
                       shell=True)
            ours_r = run([*r, "restore", str(plan), "latest", "--to", f"{server}/{dst}"], env)
            for db in (dst, plain):
                subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                               check=True)
            rows.append((dump_z, ours_b, load, ours_r))
        mid = sorted(rows, key=lambda x: x[1].wall)[len(rows) // 2]
        dump_z, ours_b, load, ours_r = mid
        mb = size / 1e6
        out = [f"== db (PostgreSQL, pgbench scale {args.db_scale}, database {mb:.0f} MB, "
               f"dump {dump.stat().st_size / 1e6:.0f} MB)",
               f"{'step':<34} | {'s':>7} {'CPU s':>7} {'RSS MB':>6} | {'MB/s of db':>10}"]
        for label, m in (("pg_dump | zstd -3 > /dev/null", dump_z), ("restorer backup", ours_b),
                         ("psql < dump (new database)", load),
                         ("restorer restore (new database)", ours_r)):
            out.append(f"{label:<34} | {m.wall:7.2f} {m.cpu:7.2f} {m.rss_mb:6.0f} | "
                       f"{mb / m.wall:10.0f}")
        out.append(f"backup / dump tool: {ours_b.wall / dump_z.wall:.2f}; "
                   f"restore / psql: {ours_r.wall / load.wall:.2f}")
        dump.unlink()
        return "\n".join(out)
    finally:
        for db in (src, dst, plain):
            subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                           capture_output=True)
        stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="seeded,real,s3,sftp,many,history,db")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds of the no-change backups and restores (median)")
    ap.add_argument("--many-files", type=int, default=500_000)
    ap.add_argument("--history-snapshots", type=int, default=100)
    ap.add_argument("--db-scale", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only-restorer", action="store_true")
    args = ap.parse_args()
    cases = args.cases.split(",")

    # /var/tmp: on some machines /tmp carries per-file overhead that skews results
    work = args.workdir or Path(tempfile.mkdtemp(prefix="restorer-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {work}", flush=True)
    names = ["restorer"]
    if not args.only_restorer:
        for exe in ("restic", "borg"):
            if shutil.which(exe):
                names.append(exe)
            else:
                print(f"{exe} not installed: skipped (apt-get install "
                      f"{'borgbackup' if exe == 'borg' else exe})")
    versions = {}
    for n in names[1:]:
        out = subprocess.run([n, "version" if n == "restic" else "--version"],
                             capture_output=True, text=True).stdout
        versions[n] = out.strip().splitlines()[0] if out else "?"
    print("versions: restorer (this tree), "
          + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    t_all = time.perf_counter()
    remote_names = [n for n in names if n != "borg"]  # borg speaks neither S3 nor SFTP
    for name in cases:
        t0 = time.perf_counter()
        if name == "seeded":
            text = case_seeded(work, names, args).table()
        elif name == "real":
            text = case_tree(work, names, args, "real", local_remote(work)).table()
        elif name == "s3":
            moto = MotoProcess()
            try:
                text = case_tree(work, remote_names, args, "s3", s3_remote(moto)).table()
            finally:
                moto.stop()
        elif name == "sftp":
            from tests.services import start_sshd

            sshd = start_sshd(work / "sshd")
            try:
                root = work / "sftp-store"
                root.mkdir(exist_ok=True)
                text = case_tree(work, remote_names, args, "sftp",
                                 sftp_remote(sshd, root)).table()
            finally:
                sshd.stop()
        elif name == "many":
            text = case_many(work, names, args).table()
        elif name == "history":
            text = case_history(work, names, args).table()
        elif name == "db":
            text = case_db(work, args)
        else:
            raise SystemExit(f"unknown case {name}")
        print(f"\n{text}\n({name}: {time.perf_counter() - t0:.0f}s)", flush=True)
    print(f"\nall cases: {time.perf_counter() - t_all:.0f}s")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
