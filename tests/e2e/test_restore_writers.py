"""Restores of many small files, which go through the writer processes
(restorer/sources/file_writes.py): exact trees, damaged data, a full disk, a kill, a signal."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_same_tree, run_cli, write_plan
from tests.faults.test_resources import tmpfs

# above restorer.sources.files_restore._POOL_MIN_FILES, so the writer processes are used
FILES = 300


def _small_tree(root: Path, files: int = FILES, seed: int = 3) -> None:
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 3}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:04d}.txt"
        p.write_bytes(rng.randbytes(rng.randint(0, 20_000)))
        os.chmod(p, rng.choice([0o600, 0o644, 0o755, 0o444]))
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i * 7))
    # what the writers must keep too: a small file of zeros (holes), an empty file, an
    # xattr, a hard link pair, a symlink
    (root / "d0" / "zeros.bin").write_bytes(bytes(200_000))
    (root / "d0" / "empty").write_bytes(b"")
    os.setxattr(root / "d1" / "e1" / "f0001.txt", "user.tag", b"kept")
    os.link(root / "d0" / "zeros.bin", root / "d2" / "zeros-link.bin")
    os.symlink("../d0/empty", root / "d1" / "to-empty")


def _pattern(dest: Path) -> str:
    """The command line of the writer processes of a restore into `dest` (not another
    test's, running beside this one)."""
    return f"restorer.sources.file_writes [0-9]+ {dest} "


def _writers(dest: Path) -> list[str]:
    return subprocess.run(["pgrep", "-f", _pattern(dest)], capture_output=True,
                          text=True).stdout.split()


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".restorer-tmp-")]


def _whole(src: Path, dest: Path) -> int:
    """Every regular file in `dest` equals its source; returns how many there are."""
    n = 0
    for p in dest.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert p.read_bytes() == (src / p.relative_to(dest)).read_bytes(), \
                f"{p} is presented under its name but is not whole"
            n += 1
    return n


def test_many_small_files_restore_exactly_with_their_metadata(plan_dir: Path, cli) -> None:
    src = plan_dir / "src"
    _small_tree(src)
    plan = plan_dir / "plan.yaml"
    assert cli("backup", "--init", plan).rc == 0
    dest = plan_dir / "out"
    r = cli("restore", plan, "latest", "--to", dest, "--json")
    assert r.rc == 0, r.text
    assert_same_tree(src, dest / "src")
    assert (dest / "src" / "d0" / "zeros.bin").stat().st_blocks == 0, "holes were filled"
    assert not _temporaries(dest)
    out = json.loads(r.out)
    assert out["files"] == FILES + 3, out  # zeros.bin, empty and the second hard link
    assert not _writers(dest), "a writer process outlived the restore"


def test_damaged_small_file_fails_alone_and_leaves_no_partial_file(tmp_path: Path,
                                                                    cli) -> None:
    src = tmp_path / "src"
    rng = random.Random(11)
    for i in range(FILES):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i:04d}.bin").write_bytes(rng.randbytes(3000))
    plan = write_plan(tmp_path / "plan.yaml")
    assert cli("backup", "--init", plan).rc == 0
    pack = max((p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside one small file's blob
    pack.write_bytes(bytes(data))
    dest = tmp_path / "out"
    r = cli("restore", plan, "latest", "--to", dest)
    assert r.rc == 1, r.text
    assert "NOT RESTORED" in r.err and "could not be restored" in r.err, r.err
    restored = _whole(src, dest / "src")
    assert restored == FILES - 1, f"{restored} of {FILES} files restored"
    missing = [p for p in src.rglob("*.bin") if not (dest / "src" / p.relative_to(src)).exists()]
    assert len(missing) == 1 and missing[0].name in r.err, (missing, r.err)
    assert not _temporaries(dest)


def test_full_disk_under_many_small_files_is_one_clear_error(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    rng = random.Random(12)
    for i in range(FILES):
        (src / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 5}" / f"f{i:04d}.bin").write_bytes(rng.randbytes(8000))
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")
    assert cli("backup", "--init", plan).rc == 0
    with tmpfs(tmp_path / "dest", "1m") as dest:  # room for about half of the 2.4 MB
        r = cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 1, r.text
        assert "Traceback" not in r.text and "internal error" not in r.text, r.text
        assert "no space left" in r.err and str(dest) in r.err, r.err
        assert not _temporaries(dest), "a partial file was left"
        assert 0 < _whole(src, dest / "src") < FILES
        assert not _writers(dest)
    last = json.loads(run_cli("history", plan, "--json").out)[0]
    assert (last["command"], last["outcome"], last["exit_code"]) == ("restore", "failed", 1)


def _start_restore(plan: Path, dest: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "restorer", "restore", str(plan), "latest",
                             "--to", str(dest)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop_mid_way(proc: subprocess.Popen[str], dest: Path, total: int) -> None:
    """SIGSTOP the restore (and its writers) once some files are in place."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(1 for p in dest.rglob("*.bin")) if dest.exists() else 0
        if done >= 50:
            subprocess.run(["pkill", "-STOP", "-f", _pattern(dest)])
            os.kill(proc.pid, signal.SIGSTOP)
            assert sum(1 for p in dest.rglob("*.bin")) < total, "finished before the stop"
            return
        if proc.poll() is not None:
            pytest.fail(f"the restore ended early: {proc.communicate()}")
        time.sleep(0.002)
    pytest.fail("the restore wrote nothing in 60 s")


@pytest.fixture
def big_small_tree(tmp_path: Path) -> tuple[Path, Path, int]:
    src = tmp_path / "src"
    rng = random.Random(13)
    total = 3000
    for i in range(total):
        (src / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 30}" / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1, 40_000)))
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")
    assert run_cli("backup", "--init", plan).rc == 0
    return src, plan, total


def test_restore_killed_leaves_only_whole_files_and_no_writer(
        tmp_path: Path, big_small_tree: tuple[Path, Path, int]) -> None:
    src, plan, total = big_small_tree
    dest = tmp_path / "out"
    proc = _start_restore(plan, dest)
    _stop_mid_way(proc, dest, total)
    proc.kill()  # the restoring process, without a chance to clean up
    proc.wait()
    subprocess.run(["pkill", "-CONT", "-f", _pattern(dest)])
    proc.communicate(timeout=60)  # the writers share its stderr: ended once they end
    deadline = time.monotonic() + 30
    while _writers(dest) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _writers(dest), "writer processes outlived the killed restore"
    assert not _temporaries(dest), "a writer left a partial file"
    assert 0 < _whole(src, dest / "src") < total
    r = run_cli("restore", plan, "latest", "--to", dest, "--overwrite")
    assert r.rc == 0, r.text
    assert _whole(src, dest / "src") == total


def test_restore_terminated_cleans_up_before_it_exits(
        tmp_path: Path, big_small_tree: tuple[Path, Path, int]) -> None:
    src, plan, total = big_small_tree
    dest = tmp_path / "out"
    proc = _start_restore(plan, dest)
    _stop_mid_way(proc, dest, total)
    os.kill(proc.pid, signal.SIGTERM)
    subprocess.run(["pkill", "-CONT", "-f", _pattern(dest)])
    os.kill(proc.pid, signal.SIGCONT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    # by the time it exited, its writers had finished the batch in hand and gone
    assert not _writers(dest)
    assert not _temporaries(dest)
    assert 0 < _whole(src, dest / "src") < total
    last = json.loads(run_cli("history", plan, "--json").out)[0]
    assert (last["command"], last["outcome"]) == ("restore", "terminated"), last


def test_contents_shared_by_many_files_restore_exactly_and_fail_together(
        tmp_path: Path, cli) -> None:
    """The same content in many files, far apart in the tree, is read once and kept for the
    later files (restorer.repo.repository.stream_blobs); when it is damaged every file
    holding it fails, and no other."""
    src = tmp_path / "src"
    rng = random.Random(14)
    shared = rng.randbytes(5000)
    for i in range(FILES):
        (src / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        data = shared if i % 7 == 0 else rng.randbytes(rng.randint(100, 9000))
        (src / f"d{i % 10}" / f"f{i:04d}.bin").write_bytes(data)
    plan = write_plan(tmp_path / "plan.yaml")
    assert cli("backup", "--init", plan).rc == 0
    dest = tmp_path / "out"
    r = cli("restore", plan, "latest", "--to", dest)
    assert r.rc == 0, r.text
    assert_same_tree(src, dest / "src")
    # damage the shared blob: find it in the pack by its (plain repository) bytes
    pack = next(p for p in (tmp_path / "repo" / "data").rglob("*")
                if p.is_file() and shared[:64] in p.read_bytes())
    data = bytearray(pack.read_bytes())
    at = data.index(shared[:64]) + 100
    data[at] ^= 0x01
    pack.write_bytes(bytes(data))
    dest2 = tmp_path / "out2"
    r = cli("restore", plan, "latest", "--to", dest2)
    assert r.rc == 1, r.text
    holders = {p.relative_to(src) for p in src.rglob("*.bin") if p.read_bytes() == shared}
    missing = {p.relative_to(src) for p in src.rglob("*.bin")
               if not (dest2 / "src" / p.relative_to(src)).exists()}
    assert missing == holders and len(holders) == len(range(0, FILES, 7)), (missing, holders)
    assert _whole(src, dest2 / "src") == FILES - len(holders)
    assert not _temporaries(dest2)


def test_writers_under_cron_with_an_encrypted_repository_excludes_and_include(
        tmp_path: Path) -> None:
    """The seams of the writer processes: the installed `restorer` script as cron runs it
    (env -i HOME PATH=/usr/bin:/bin, no PYTHONPATH, the working folder HOME, so the writers
    must find the package from the script's interpreter alone), an encrypted repository, a
    backup with excludes and a restore with --include."""
    src = tmp_path / "src"
    _small_tree(src)
    for i in range(80):  # excluded at backup: must never appear in the restore
        (src / "d0" / f"skip{i:02d}.tmp").write_bytes(b"excluded")
    plan = write_plan(tmp_path / "plan.yaml",
                      repository={"url": f"file://{tmp_path / 'repo'}",
                                  "password": "${env:BENCH_PW}"},
                      targets=[{"name": "data", "kind": "files", "paths": [str(src)],
                                "exclude": ["*.tmp"]}])
    home = tmp_path / "home"
    home.mkdir()
    exe = str(Path(sys.executable).parent / "restorer")
    cron = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LOGNAME": "root", "SHELL": "/bin/sh",
            "BENCH_PW": "cron-secret"}

    def under_cron(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in cron.items()), exe,
                               *map(str, args)], capture_output=True, text=True, cwd=home,
                              timeout=120)

    for args in (("init", plan), ("backup", plan)):
        r = under_cron(*args)
        assert r.returncode == 0, r.stderr
    dest = tmp_path / "out"
    r = under_cron("restore", plan, "latest", "--to", dest, "--include", "src/d1", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert_same_tree(src / "d1", dest / "src" / "d1")
    assert sorted(p.name for p in (dest / "src").iterdir()) == ["d1"]
    assert json.loads(r.stdout)["files"] == sum(1 for p in (src / "d1").rglob("*")
                                                if p.is_file() and not p.is_symlink())
    assert sum(1 for _ in (src / "d1").rglob("*.txt")) >= 64, "too few files for the writers"
    r = under_cron("restore", plan, "latest", "--to", tmp_path / "all")
    assert r.returncode == 0, r.stderr
    assert not list((tmp_path / "all").rglob("*.tmp")), "an excluded file was restored"
    assert not _temporaries(dest) and not _temporaries(tmp_path / "all")
    assert "cron-secret" not in r.stdout + r.stderr
