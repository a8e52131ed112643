"""Backup/restore benchmark on a seeded ~1 GiB mixed dataset, against restic and borg if present.

    .venv/bin/python tests/bench/bench_backup.py [--size-mib 1024] [--workdir DIR] [--keep]

Steps, each a separate process, timed for wall clock, CPU (user+sys) and peak RSS:
init, first backup, no-change backup, backup after a small mutation (a few hundred small files
changed, an append to a log, a few KiB inserted mid-file in a large file), full restore, and
check --read-data. Every tool encrypts (restorer with a password, restic always, borg repokey).
Steps alternate between tools so that neither always runs on a warmer machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "bench-password"


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mb: float


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Measure:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{err[-2000:]}")
    return Measure(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


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


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- tools ------------------------------------------------------------------------------


class Tool:
    name = ""

    def __init__(self, work: Path, data: Path) -> None:
        self.work = work
        self.data = data
        self.repo = work / f"repo-{self.name}"
        self.env = dict(os.environ)

    def steps(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def restore_cmd(self, dest: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError


class Restorer(Tool):
    name = "restorer"

    def __init__(self, work: Path, data: Path) -> None:
        super().__init__(work, data)
        self.plan = work / "bench-plan.yaml"
        self.plan.write_text(
            "version: 1\nname: bench\n"
            f"repository: {{url: 'file://{self.repo}', password: '${{env:BENCH_PW}}'}}\n"
            f"targets:\n  - {{name: data, kind: files, paths: ['{data}']}}\n")
        self.env["BENCH_PW"] = PASSWORD
        self.exe = [sys.executable, "-m", "restorer", "-q"]

    def steps(self) -> dict[str, list[str]]:
        return {
            "init": [*self.exe, "init", str(self.plan)],
            "backup": [*self.exe, "backup", str(self.plan)],
            "check": [*self.exe, "check", str(self.plan), "--read-data"],
        }

    def restore_cmd(self, dest: Path) -> tuple[list[str], Path | None]:
        return [*self.exe, "restore", str(self.plan), "latest", "--to", str(dest)], None


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, data: Path) -> None:
        super().__init__(work, data)
        self.env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(self.repo),
                        RESTIC_CACHE_DIR=str(work / "restic-cache"))

    def steps(self) -> dict[str, list[str]]:
        return {
            "init": ["restic", "init", "-q"],
            "backup": ["restic", "backup", "-q", str(self.data)],
            "check": ["restic", "check", "-q", "--read-data"],
        }

    def restore_cmd(self, dest: Path) -> tuple[list[str], Path | None]:
        return ["restic", "restore", "-q", "latest", "--target", str(dest)], None


class Borg(Tool):
    name = "borg"

    def __init__(self, work: Path, data: Path) -> None:
        super().__init__(work, data)
        self.env.update(BORG_PASSPHRASE=PASSWORD, BORG_REPO=str(self.repo),
                        BORG_BASE_DIR=str(work / "borg-base"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        self.n = 0

    def steps(self) -> dict[str, list[str]]:
        self.n += 1
        return {
            "init": ["borg", "init", "-e", "repokey"],
            "backup": ["borg", "create", f"::b{self.n}-{time.time_ns()}", str(self.data)],
            "check": ["borg", "check", "--verify-data"],
        }

    def restore_cmd(self, dest: Path) -> tuple[list[str], Path | None]:
        dest.mkdir(parents=True, exist_ok=True)
        last = subprocess.run(["borg", "list", "--last", "1", "--short"], env=self.env,
                              capture_output=True, text=True, check=True).stdout.strip()
        return ["borg", "extract", f"::{last}"], dest


def _in_child(fn: str, *args: object) -> dict[str, int]:
    import json

    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from pathlib import Path; import bench_backup as b; "
            f"print(json.dumps(b.{fn}(Path(sys.argv[1]), *map(int, sys.argv[2:]))))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only-restorer", action="store_true")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the no-change backup this many times (median reported)")
    args = ap.parse_args()

    # /var/tmp: on some machines /tmp carries per-file overhead (watchers) that skews results
    work = args.workdir or Path(tempfile.mkdtemp(prefix="restorer-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    for p in work.glob("repo-*"):
        shutil.rmtree(p)
    print(f"work directory: {work}")
    t0 = time.perf_counter()
    # made in a child process so this one stays small: a child's peak RSS counts the parent's
    # pages it inherits at fork, which would inflate every tool's figure alike
    info = _in_child("make_dataset", str(data), args.size_mib)
    total = du(data)
    print(f"dataset: {total / 2**20:.0f} MiB, {info['small_files']} small files "
          f"({info['small_bytes'] / 2**20:.0f} MiB), made in {time.perf_counter() - t0:.1f}s")

    tools: list[Tool] = [Restorer(work, data)]
    if not args.only_restorer:
        for cls, exe in ((Restic, "restic"), (Borg, "borg")):
            if shutil.which(exe):
                tools.append(cls(work, data))
            else:
                pkg = "borgbackup" if exe == "borg" else exe
                print(f"{exe} not installed: skipped (apt-get install {pkg})")
    versions = {}
    for t in tools[1:]:
        arg = "version" if t.name == "restic" else "--version"
        out = subprocess.run([t.name, arg], capture_output=True, text=True).stdout
        versions[t.name] = out.strip().splitlines()[0] if out else "?"

    results: dict[str, dict[str, Measure]] = {t.name: {} for t in tools}
    sizes: dict[str, dict[str, int]] = {t.name: {} for t in tools}

    def step(label: str, fn) -> None:
        # alternate who goes first from step to step
        order = tools if len(results[tools[0].name]) % 2 == 0 else list(reversed(tools))
        for t in order:
            results[t.name][label] = fn(t)

    step("init", lambda t: run(t.steps()["init"], t.env))
    step("first backup", lambda t: run(t.steps()["backup"], t.env))
    for t in tools:
        sizes[t.name]["first"] = du(t.repo)
    for r in range(args.rounds):
        step(f"no-change backup#{r}", lambda t: run(t.steps()["backup"], t.env))
    for t in tools:
        ms = [results[t.name].pop(f"no-change backup#{r}") for r in range(args.rounds)]
        results[t.name]["no-change backup"] = sorted(ms, key=lambda m: m.wall)[len(ms) // 2]
    for t in tools:
        sizes[t.name]["before_mutation"] = du(t.repo)
    mut = _in_child("mutate", str(data))
    print(f"mutation: {mut['changed_small']} small files changed, "
          f"{mut['log_append'] // 1024} KiB appended to a log, {mut['insert']} B inserted "
          "mid-file in a 330 MiB file")
    step("mutated backup", lambda t: run(t.steps()["backup"], t.env))
    for t in tools:
        sizes[t.name]["after_mutation"] = du(t.repo)

    def restore(t: Tool) -> Measure:
        dest = work / f"restore-{t.name}"
        if dest.exists():
            shutil.rmtree(dest)
        cmd, cwd = t.restore_cmd(dest)
        m = run(cmd, t.env, cwd)
        restored = du(dest)
        if restored < total * 0.99:
            raise SystemExit(f"{t.name} restored only {restored} of {total} bytes")
        shutil.rmtree(dest)
        return m

    step("full restore", restore)
    step("check --read-data", lambda t: run(t.steps()["check"], t.env))

    # --- report ---
    mb = total / 1e6
    print()
    print("versions: restorer (this tree), " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    header = f"{'step':<20}"
    for t in tools:
        header += f" | {t.name + ' s':>12} {'MB/s':>7} {'CPU s':>7} {'RSS MB':>7}"
    for t in tools[1:]:
        header += f" | {'ours/' + t.name:>14}"
    print(header)
    print("-" * len(header))
    labels = list(results[tools[0].name])
    for label in labels:
        row = f"{label:<20}"
        for t in tools:
            m = results[t.name][label]
            rate = mb / m.wall if label in ("first backup", "full restore",
                                            "check --read-data") else float("nan")
            rate_s = f"{rate:7.0f}" if rate == rate else f"{'':>7}"
            row += f" | {m.wall:12.2f} {rate_s} {m.cpu:7.2f} {m.rss_mb:7.0f}"
        for t in tools[1:]:
            ratio = results[tools[0].name][label].wall / results[t.name][label].wall
            row += f" | {ratio:14.2f}"
        print(row)
    print()
    print(f"{'repository':<20}" + "".join(f" | {t.name:>14}" for t in tools))
    for key, label in (("first", "size after first"), ("after_mutation", "size after mutated")):
        print(f"{label:<20}" + "".join(f" | {sizes[t.name][key] / 1e6:11.1f} MB" for t in tools))
    print(f"{'growth by mutation':<20}" + "".join(
        f" | {(sizes[t.name]['after_mutation'] - sizes[t.name]['before_mutation']) / 1e6:11.2f} MB"
        for t in tools))
    print(f"{'peak RSS (any step)':<20}" + "".join(
        f" | {max(m.rss_mb for m in results[t.name].values()):11.0f} MB" for t in tools))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
