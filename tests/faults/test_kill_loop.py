"""SIGKILL anywhere, as a seeded loop over backup, prune, copy, verify and rollback.

Each point kills one run, either after a random delay or at the N-th call of one file
operation (write, link, rename, unlink, fsync) through strace's fault injection, with N drawn
from the counts of a clean run of the same command. After every kill:
  - `check --read-data` passes on the repository (and on the copy's, after a copy);
  - no snapshot that existed is gone (prune: the ones its policy keeps), and snapshots restore
    byte for byte to what their source held;
  - after `rollback --cleanup`, the rolled-back folder is as a whole what it was or what a
    snapshot holds, never a mix;
  - the next run of the same command succeeds.

The suite runs a short sample (one point per command); `pytest tests/faults/test_kill_loop.py
--faults-long` (run by tests/bench/run.sh) runs the long loop and prints the counts.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from restorer.storage.local import TMP_PREFIX
from tests.conftest import run_cli, tree_digest, write_plan

OPS = ("backup", "prune", "copy", "verify", "rollback")
# the *at forms too: os.unlink and os.link use the plain calls, the rollback's exchange renameat2
FILE_OPS = ("write", "fsync", "link", "linkat", "rename", "renameat2", "unlink", "unlinkat")
SEED = 20261201


@dataclass
class World:
    root: Path
    plan: Path
    copy_plan: Path
    src: Path
    digest_of: dict[str, str] = field(default_factory=dict)  # snapshot id -> source digest
    calls: dict[str, Counter] = field(default_factory=dict)  # op -> syscall -> count
    seconds: dict[str, float] = field(default_factory=dict)  # op -> clean run time

    def args(self, op: str) -> list[str]:
        return {
            "backup": ["backup", str(self.plan)],
            "prune": ["prune", str(self.plan)],
            "copy": ["copy", str(self.plan), "--to", f"file://{self.root / 'copyrepo'}"],
            "verify": ["verify", str(self.plan)],
            "rollback": ["rollback", str(self.plan), "--yes", "--allow-unverified"],
        }[op]

    def snapshots(self) -> list[dict]:
        r = run_cli("snapshots", self.plan, "--json")
        assert r.rc == 0, r.text
        return json.loads(r.out)


def _change(src: Path, rng: random.Random, step: int) -> None:
    (src / "log.txt").open("a").write(f"step {step}\n" * rng.randint(1, 50))
    (src / f"new{step % 5}.bin").write_bytes(rng.randbytes(rng.randint(1, 300) << 10))
    (src / "sub" / f"s{rng.randint(0, 19)}.txt").write_text(f"changed at {step}")


def _world(tmp_path: Path, rng: random.Random) -> World:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / "sub" / f"s{i}.txt").write_text(f"file {i} " * rng.randint(1, 200))
    (src / "big.bin").write_bytes(rng.randbytes(2 << 20))
    repo = {"url": "file://repo", "pack_size": "256KiB"}
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db", repository=repo,
                      retention={"keep_last": 3},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                "staging": {"path": "staging"}}])
    copy_plan = write_plan(tmp_path / "copy.yaml", repository={"url": "file://copyrepo"},
                           targets=[{"name": "data", "kind": "files", "paths": ["src"]}])
    w = World(tmp_path, plan, copy_plan, src)
    r = run_cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    w.digest_of[json.loads(r.out)["targets"][0]["snapshot"]] = tree_digest(src)
    return w


def _strace(args: list[str], extra: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["strace", "-f", "-qq", *extra, sys.executable, "-m", "restorer",
                           "-q", *args], capture_output=True, text=True, timeout=timeout)


def _measure(w: World, op: str, step: int, rng: random.Random) -> None:
    """A clean run of `op` under `strace -c`: how many of each file operation it makes."""
    before = {s["id"] for s in w.snapshots()}
    digest = tree_digest(w.src)
    out = w.root / f"count-{op}.txt"
    t0 = time.monotonic()
    p = _strace(w.args(op), ["-c", "-o", str(out), "-e", "trace=" + ",".join(FILE_OPS)])
    w.seconds[op] = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    counts: Counter = Counter()
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) in FILE_OPS:
            counts[m.group(2)] = int(m.group(1))
    w.calls[op] = counts
    _note_new_snapshots(w, before, digest)


def _note_new_snapshots(w: World, before: set[str], digest: str) -> None:
    for s in w.snapshots():
        if s["id"] not in before and s["id"] not in w.digest_of:
            w.digest_of[s["id"]] = digest  # a backup, or a rollback's safety snapshot


def _kill_once(w: World, op: str, rng: random.Random) -> str:
    """Run `op` and kill it at a drawn point; 'killed' or 'completed' (the point lay past
    its end)."""
    choices = [c for c in FILE_OPS if w.calls[op][c]]
    if rng.random() < 0.6 and choices:
        call = rng.choice(choices)
        n = rng.randint(1, w.calls[op][call])
        p = _strace(w.args(op), ["-o", "/dev/null", "-e", f"trace={call}",
                                 "-e", f"inject={call}:signal=KILL:when={n}"])
        how = f"{call}#{n}"
        rc = p.returncode
    else:
        delay = rng.uniform(0.2, max(0.4, w.seconds[op]))
        proc = subprocess.Popen([sys.executable, "-m", "restorer", "-q", *w.args(op)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        how = f"after {delay:.2f}s"
    return ("killed" if rc in (-9, 137) else "completed") + f" ({how}, rc {rc})"


def _restores(w: World, sid: str, dest: Path) -> None:
    r = run_cli("restore", w.plan, sid, "--to", dest)
    assert r.rc == 0, r.text
    assert tree_digest(dest / "src") == w.digest_of[sid], f"snapshot {sid[:8]} differs"


def _invariants(w: World, op: str, before: list[dict], old_src: str, point: int,
                rng: random.Random, restore_all: bool) -> None:
    if op == "rollback":
        r = run_cli("rollback", w.plan, "--cleanup", "--yes")
        assert r.rc == 0, r.text
        now = tree_digest(w.src)
        assert now == old_src or now in w.digest_of.values(), "rolled-back folder is a mix"
    r = run_cli("check", w.plan, "--read-data")
    assert r.rc == 0, f"point {point} ({op}): {r.text}"
    if op == "copy" and (w.root / "copyrepo" / "config").exists():
        r = run_cli("check", w.copy_plan, "--read-data")
        assert r.rc == 0, f"point {point} (copy destination): {r.text}"
    after = w.snapshots()
    ids = {s["id"] for s in after}
    must_stay = before if op != "prune" else sorted(before, key=lambda s: s["time"])[-3:]
    lost = [s["id"][:8] for s in must_stay if s["id"] not in ids]
    assert not lost, f"point {point} ({op}) lost snapshots {lost}"
    known = [s["id"] for s in after if s["id"] in w.digest_of]
    pick = known if restore_all else [known[-1], rng.choice(known)]
    for sid in dict.fromkeys(pick):
        _restores(w, sid, w.root / f"out-{point}-{sid[:8]}")


def _loop(tmp_path: Path, points: int, restore_all: bool) -> Counter:
    rng = random.Random(SEED)
    w = _world(tmp_path, rng)
    for i, op in enumerate(OPS):
        if op == "backup":
            _change(w.src, rng, -1)
        _measure(w, op, i, rng)
    tally: Counter = Counter()
    for point in range(points):
        op = OPS[point % len(OPS)]
        if op == "backup":
            _change(w.src, rng, point)
        before = w.snapshots()
        old_src = tree_digest(w.src)
        outcome = _kill_once(w, op, rng)
        tally[f"{op} {outcome.split()[0]}"] += 1
        _note_new_snapshots(w, {s["id"] for s in before}, old_src)
        _invariants(w, op, before, old_src, point, rng, restore_all)
        # the next run of the same command succeeds
        before = {s["id"] for s in w.snapshots()}
        digest = tree_digest(w.src)
        r = run_cli(*w.args(op))
        assert r.rc == 0, f"point {point}: the run after the kill ({op}) failed: {r.text}"
        _note_new_snapshots(w, before, digest)
    for sid in {s["id"] for s in w.snapshots()}:
        _restores(w, sid, tmp_path / f"final-{sid[:8]}")
    return tally


def _report(tally: Counter) -> None:
    killed = sum(v for k, v in tally.items() if k.endswith("killed"))
    lines = [f"  {k}: {v}" for k, v in sorted(tally.items())]
    print(f"\nkill loop: {sum(tally.values())} points, {killed} killed mid-run\n"
          + "\n".join(lines))
    out = os.environ.get("RESTORER_FAULTS_REPORT")
    if out:
        Path(out).write_text(json.dumps(dict(tally), indent=1))


def test_sigkill_loop_across_commands(tmp_path: Path, faults_long: bool) -> None:
    """5 points (one per command) in the suite; 100 (every snapshot restored at each) with
    --faults-long."""
    points, need = (100, 50) if faults_long else (5, 3)
    tally = _loop(tmp_path, points, restore_all=faults_long)
    _report(tally)
    assert sum(v for k, v in tally.items() if k.endswith("killed")) >= need, tally


def test_prune_killed_at_every_deletion_step_loses_nothing_kept(tmp_path: Path) -> None:
    """prune deletes in an order that keeps the repository valid: kill it at spread points
    of its unlinks (snapshots, old index files, packs) and of its links into place
    (repacked packs, the new index); each time the kept snapshot restores and prune finishes."""
    import shutil

    rng = random.Random(SEED + 1)
    w = _world(tmp_path, rng)
    for step in range(3):
        _change(w.src, rng, step)
        r = run_cli("backup", w.plan, "--json")
        assert r.rc == 0, r.text
        w.digest_of[json.loads(r.out)["targets"][0]["snapshot"]] = tree_digest(w.src)
    pristine = tmp_path / "repo-before-prune"
    shutil.copytree(tmp_path / "repo", pristine)
    counts = tmp_path / "counts.txt"
    p = _strace(w.args("prune"), ["-c", "-o", str(counts), "-e", "trace=unlink,link"])
    assert p.returncode == 0, p.stderr
    calls = {m.group(2): int(m.group(1)) for m in re.finditer(
        r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", counts.read_text(), re.M)}
    assert calls.get("unlink", 0) >= 3 and calls.get("link", 0) >= 1, calls
    kept = sorted(w.snapshots(), key=lambda s: s["time"])[-3:]
    # strace counts calls per thread: the last few may fall in a thread that makes fewer
    points = [("unlink", n) for n in sorted({1, 2, 3, calls["unlink"] // 2})]
    points += [("link", n) for n in sorted({1, 2})]
    killed = 0
    for call, n in points:
        shutil.rmtree(tmp_path / "repo")
        shutil.copytree(pristine, tmp_path / "repo")
        p = _strace(w.args("prune"), ["-o", "/dev/null", "-e", f"trace={call}",
                                      "-e", f"inject={call}:signal=KILL:when={n}"])
        assert p.returncode in (-9, 137, 0), f"{call}#{n}: {p.stderr}"
        killed += p.returncode != 0
        r = run_cli("check", w.plan, "--read-data")
        assert r.rc == 0, f"after {call}#{n}: {r.text}"
        ids = {s["id"] for s in w.snapshots()}
        assert all(s["id"] in ids for s in kept), f"after {call}#{n}: a kept snapshot is gone"
        _restores(w, kept[-1]["id"], tmp_path / f"out-{call}-{n}")
        r = run_cli("prune", w.plan)
        assert r.rc == 0, f"prune after {call}#{n}: {r.text}"
        r = run_cli("check", w.plan, "--read-data")
        assert r.rc == 0, r.text
    assert killed >= len(points) - 1, f"only {killed} of {len(points)} points killed prune"


def test_repair_index_killed_at_its_links_and_unlinks_loses_nothing(tmp_path: Path) -> None:
    """repair index writes the new index before the old goes and copies a damaged file
    before removing it: killed at its first and last links and unlinks, every snapshot
    still restores, and a second repair finishes the job."""
    import shutil

    rng = random.Random(SEED + 2)
    w = _world(tmp_path, rng)
    for step in range(2):
        _change(w.src, rng, step)
        r = run_cli("backup", w.plan, "--json")
        assert r.rc == 0, r.text
        w.digest_of[json.loads(r.out)["targets"][0]["snapshot"]] = tree_digest(w.src)
    repo = tmp_path / "repo"
    index = sorted((repo / "index").iterdir())
    a, b = index[0], index[1]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)  # two index files swapped: both damaged
    b.write_bytes(da)
    damaged = tmp_path / "repo-damaged"
    shutil.copytree(repo, damaged)
    args = ["repair", "index", str(w.plan), "--yes"]
    counts = tmp_path / "repair-counts.txt"
    p = _strace(args, ["-c", "-o", str(counts), "-e", "trace=unlink,link"])
    assert p.returncode == 0, p.stderr
    calls = {m.group(2): int(m.group(1)) for m in re.finditer(
        r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", counts.read_text(), re.M)}
    assert calls.get("link", 0) >= 3 and calls.get("unlink", 0) >= 3, calls
    killed = 0
    # the first steps (a damaged file's copy, the first new index file) and the last
    points = [(c, n) for c in ("link", "unlink") for n in sorted({1, 2, calls[c]})]
    for call, n in points:
        shutil.rmtree(repo)
        shutil.copytree(damaged, repo)
        p = _strace(args, ["-o", "/dev/null", "-e", f"trace={call}",
                           "-e", f"inject={call}:signal=KILL:when={n}"])
        assert p.returncode in (-9, 137, 0), f"{call}#{n}: {p.stderr}"
        killed += p.returncode != 0
        sid = rng.choice(sorted(w.digest_of))
        _restores(w, sid, tmp_path / f"out-{call}-{n}")
        r = run_cli(*args)
        assert r.rc == 0, f"repair after {call}#{n}: {r.text}"
        r = run_cli("check", w.plan, "--read-data")
        assert r.rc == 0, f"after {call}#{n} and a second repair: {r.text}"
        # (a write killed before its link leaves a temporary file, as any killed write does)
        assert {p.name for p in (repo / "damaged" / "index").iterdir()
                if not p.name.startswith(TMP_PREFIX)} == {a.name, b.name}
    assert killed >= len(points) - 2, f"only {killed} of {len(points)} points killed repair"
