"""A backup killed with SIGKILL at any point leaves the repository valid and restorable."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli, tree_digest, write_plan


def _fill(src: Path, rng: random.Random, version: int) -> None:
    for i in range(12):
        (src / f"blob{i}.bin").write_bytes(rng.randbytes(3 << 20))
    for i in range(200):
        (src / "small" / f"s{i}.txt").write_text(f"v{version} {i} " * rng.randint(10, 400))


def test_sigkill_at_random_points_leaves_repository_valid(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    _fill(src, rng, 1)
    # small packs so that a killed run has written some packs but not its index or snapshot
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": "file://repo", "pack_size": "2MiB"})
    r = run_cli("backup", "--init", plan, "--json")
    assert r.rc == 0, r.text
    first = json.loads(r.out)["targets"][0]["snapshot"]
    digest_v1 = tree_digest(src)
    _fill(src, rng, 2)

    killed_mid_write = 0
    packs_dir = tmp_path / "repo" / "data"
    for attempt in range(6):
        packs_before = sum(1 for _ in packs_dir.rglob("*") if _.is_file())
        snaps_before = len(os.listdir(tmp_path / "repo" / "snapshots"))
        proc = subprocess.Popen([sys.executable, "-m", "restorer", "-q", "backup", str(plan)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt % 2:
            time.sleep(rng.uniform(0.1, 1.6))  # anywhere: start-up, walking, writing
        else:
            # right after new packs land, before the index and snapshot: the riskiest window
            deadline = time.monotonic() + 60
            while (sum(1 for _ in packs_dir.rglob("*") if _.is_file()) <= packs_before
                   and proc.poll() is None and time.monotonic() < deadline):
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        packs_after = sum(1 for _ in packs_dir.rglob("*") if _.is_file())
        snaps_after = len(os.listdir(tmp_path / "repo" / "snapshots"))
        if packs_after > packs_before and snaps_after == snaps_before:
            killed_mid_write += 1

        r = run_cli("check", plan, "--json")
        assert r.rc == 0, f"attempt {attempt}: {r.text}"
        assert json.loads(r.out)["ok"]
        dest = tmp_path / f"restore{attempt}"
        r = run_cli("restore", plan, first[:12], "--to", dest)
        assert r.rc == 0, r.text
        assert tree_digest(dest / "src") == digest_v1
        # a partial file must never appear under a final name in the repository
        assert not list((tmp_path / "repo").rglob("*.partial"))
    assert killed_mid_write >= 1, "no kill landed while packs were being written"

    r = run_cli("backup", plan, "--json")
    assert r.rc == 0, r.text
    r = run_cli("check", plan, "--read-data")
    assert r.rc == 0, r.text
    dest = tmp_path / "final"
    assert run_cli("restore", plan, "latest", "--to", dest).rc == 0
    assert tree_digest(dest / "src") == tree_digest(src)
