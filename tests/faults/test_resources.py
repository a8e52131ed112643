"""Resource faults: a full disk under the restore destination or under the repository, a
read-only repository, a 5 GiB sparse file, a directory chain 1,200 deep."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import run_cli, write_plan

MiB = 1 << 20


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `where` for the test; a mount that fails fails the test."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(where)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs (the test needs root): {r.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _last_run(plan: Path) -> dict:
    return json.loads(run_cli("history", plan, "--json").out)[0]


def _files_under(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


# --- disk full ----------------------------------------------------------------------------


def test_disk_full_during_restore_is_a_clear_error_and_leaves_no_partial_file(
        tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-small.txt").write_bytes(b"small\n" * 100)
    (src / "b-medium.bin").write_bytes(os.urandom(3 * MiB))
    (src / "c-big.bin").write_bytes(os.urandom(6 * MiB))  # does not fit after the others
    plan = write_plan(tmp_path / "plan.yaml")
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text
    with tmpfs(tmp_path / "dest", "5m") as dest:
        r = cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 1, r.text
        assert "Traceback" not in r.text and "internal error" not in r.text, r.text
        assert "no space left" in r.err and str(dest) in r.err, r.err
        assert "restored before" in r.err and "MiB" in r.err, r.err  # how much was written
        left = _files_under(dest)
        assert not [n for n in left if ".restorer-tmp-" in n], f"partial files left: {left}"
        # what is there is whole: each file equals its original
        for name, data in left.items():
            assert data == (tmp_path / name).read_bytes(), f"{name} is not the original"
        assert "src/c-big.bin" not in left
        last = _last_run(plan)
        assert (last["command"], last["outcome"], last["exit_code"]) == ("restore", "failed", 1)
        # with room, the same restore succeeds and the bytes are the originals
        subprocess.run(["mount", "-o", "remount,size=64m", str(dest)], check=True)
        r = cli("restore", plan, "latest", "--to", dest, "--overwrite")
        assert r.rc == 0, r.text
        assert _files_under(dest / "src") == _files_under(src)


def test_disk_full_in_the_repository_fails_the_backup_cleanly(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "first.bin").write_bytes(os.urandom(1 * MiB))
    with tmpfs(tmp_path / "repo", "6m") as repo:
        plan = write_plan(tmp_path / "plan.yaml", repository={"url": f"file://{repo}"})
        r = cli("backup", "--init", plan, "--json")
        assert r.rc == 0, r.text
        first = json.loads(cli("snapshots", plan, "--json").out)
        assert len(first) == 1
        (src / "second.bin").write_bytes(os.urandom(8 * MiB))  # random: does not compress
        r = cli("backup", plan)
        assert r.rc == 1, r.text
        assert "Traceback" not in r.text and "internal error" not in r.text, r.text
        assert "no space left" in r.err, r.err
        assert json.loads(cli("snapshots", plan, "--json").out) == first  # no new snapshot
        assert _last_run(plan)["outcome"] == "failed"
        # after freeing space, the repository checks clean, the earlier snapshot restores,
        # and the next backup succeeds
        subprocess.run(["mount", "-o", "remount,size=64m", str(repo)], check=True)
        r = cli("check", plan, "--read-data")
        assert r.rc == 0 and "no errors were found" in r.out, r.text
        out = tmp_path / "out"
        r = cli("restore", plan, first[0]["id"], "--to", out)
        assert r.rc == 0, r.text
        assert (out / "src" / "first.bin").read_bytes() == (src / "first.bin").read_bytes()
        assert not (out / "src" / "second.bin").exists()
        r = cli("backup", plan)
        assert r.rc == 0, r.text
        out2 = tmp_path / "out2"
        assert cli("restore", plan, "latest", "--to", out2).rc == 0
        assert _files_under(out2 / "src") == _files_under(src)


# --- a read-only repository -----------------------------------------------------------------


@contextmanager
def read_only(where: Path) -> Iterator[Path]:
    """`where` bind-mounted read-only onto itself: no write succeeds, even root's."""
    for args in (["--bind", str(where), str(where)], ["-o", "remount,ro,bind", str(where)]):
        r = subprocess.run(["mount", *args], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", str(where)], capture_output=True)
            raise AssertionError(f"cannot make {where} read-only (needs root): {r.stderr}")
    try:
        probe = where / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            raise AssertionError(f"{where} is still writable")
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_read_only_repository_restores_and_checks_with_no_lock(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n")
    (src / "b.bin").write_bytes(os.urandom(300_000))
    plan = write_plan(tmp_path / "plan.yaml")
    assert cli("backup", "--init", plan).rc == 0
    with read_only(tmp_path / "repo"):
        out = tmp_path / "out"
        r = cli("restore", plan, "latest", "--to", out)
        assert r.rc == 1, r.text
        assert "read-only" in r.err.lower() and "--no-lock" in r.err, r.err
        assert not out.exists() or not any(out.iterdir())
        r = cli("check", plan)
        assert r.rc == 1 and "--no-lock" in r.err, r.text

        r = cli("restore", plan, "latest", "--to", out, "--no-lock")
        assert r.rc == 0, r.text
        assert _files_under(out / "src") == _files_under(src)
        r = cli("check", plan, "--read-data", "--no-lock")
        assert r.rc == 0 and "no errors were found" in r.out, r.text
        # commands that write never read without a lock
        for args in (["backup", plan], ["prune", plan], ["copy", plan, "--to",
                     f"file://{tmp_path / 'copy'}"], ["rollback", plan, "--yes"]):
            r = cli(*args, "--no-lock")
            assert r.rc == 2 and "--no-lock" in r.err, (args, r.text)
        assert cli("snapshots", plan).rc == 0
        assert cli("diff", plan, "latest", "latest").rc == 0


# --- a directory chain 1,200 deep -------------------------------------------------------------

DEPTH = 1200


def _make_chain(root: Path, depth: int) -> None:
    """root/d/d/.../d (depth levels) with a file at a few levels, made through directory
    descriptors: os.makedirs recurses once per level."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if level % 400 == 0 or level == depth:
                wfd = os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
                os.write(wfd, f"level {level}\n".encode() * level)
                os.close(wfd)
    finally:
        os.close(fd)


def _describe_chain(root: Path) -> list[tuple[str, int, int, bytes | None]]:
    """(relative path, mode, mtime, content) of everything below root, walked with a stack
    (os.walk recurses once per level on Python 3.11)."""
    out = []
    stack = [str(root)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in sorted(it, key=lambda e: e.name):
                st = e.stat(follow_symlinks=False)
                data = None
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    with open(e.path, "rb") as f:
                        data = f.read()
                out.append((os.path.relpath(e.path, root), st.st_mode, st.st_mtime_ns, data))
    return sorted(out)


def test_directories_nested_1200_deep_back_up_and_restore_exactly(tmp_path: Path, cli) -> None:
    try:
        _make_chain(tmp_path / "src", DEPTH)
        plan = write_plan(tmp_path / "plan.yaml")
        r = cli("backup", "--init", plan)
        assert r.rc == 0, r.text
        assert "RecursionError" not in r.text
        r = cli("restore", plan, "latest", "--to", tmp_path / "out")
        assert r.rc == 0, r.text
        restored = _describe_chain(tmp_path / "out" / "src")
        assert len([x for x in restored if x[3] is None]) == DEPTH
        assert restored == _describe_chain(tmp_path / "src")
        # a second backup walks the chain again against its parent snapshot
        r = cli("backup", plan)
        assert r.rc == 0 and "0 new" in r.out, r.text
        r = cli("check", plan, "--read-data")
        assert r.rc == 0 and "no errors were found" in r.out, r.text
        snaps = json.loads(cli("snapshots", plan, "--json").out)
        r = cli("diff", plan, snaps[0]["id"], snaps[1]["id"])
        assert r.rc == 0 and "0 added, 0 removed, 0 modified" in r.out, r.text
    finally:
        # shutil.rmtree (pytest's clean-up) also recurses once per level
        subprocess.run(["rm", "-rf", str(tmp_path / "src"), str(tmp_path / "out")], check=True)


# --- a 5 GiB sparse file ----------------------------------------------------------------------

GiB = 1 << 30


def _data_extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every data region of a file (SEEK_DATA/SEEK_HOLE); the rest are holes,
    which read as zeros."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return out


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two sparse files hold the same bytes, reading only their data regions: outside
    the data regions of both, both read as zeros."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in _data_extents(a) + _data_extents(b):
            pos = start
            while pos < end:
                n = min(end - pos, 8 << 20)
                fa.seek(pos)
                fb.seek(pos)
                if fa.read(n) != fb.read(n):
                    return False
                pos += n
    return True


def _run_measured(*args: str | Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of `restorer ARGS`. The peak is the child's own
    VmHWM, polled from /proc: wait4's ru_maxrss would also carry the parent's peak, which
    exec inherits when subprocess spawns with vfork (a long pytest run reaches hundreds of
    MiB)."""
    import sys
    import threading

    p = subprocess.Popen([sys.executable, "-m", "restorer", *map(str, args)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def poll() -> None:
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    assert p.stderr is not None
    err = p.stderr.read().decode()
    p.wait()
    watcher.join()
    assert peak[0] > 0, "could not read the child's peak memory"
    return p.returncode, err, peak[0]


def test_5gib_sparse_file_backs_up_and_restores_sparse_in_bounded_memory(tmp_path: Path,
                                                                          cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "disk.img"
    with open(big, "wb") as f:
        f.truncate(5 * GiB)
        for off in (0, 1 * GiB + 12345, 3 * GiB, 5 * GiB - MiB):  # a few MiB of real data
            f.seek(off)
            f.write(os.urandom(MiB))
    (src / "small.txt").write_text("beside the image\n")
    plan = write_plan(tmp_path / "plan.yaml")
    try:
        assert cli("init", plan).rc == 0
        t0 = time.monotonic()
        rc, err, rss = _run_measured("backup", plan)
        backup_s = time.monotonic() - t0
        assert rc == 0, err
        assert rss < 400 * MiB, f"backup peak RSS {rss / MiB:.0f} MiB"
        out = tmp_path / "out"
        rc, err, rss = _run_measured("restore", plan, "latest", "--to", out)
        assert rc == 0, err
        assert rss < 400 * MiB, f"restore peak RSS {rss / MiB:.0f} MiB"
        restored = out / "src" / "disk.img"
        st = restored.stat()
        assert st.st_size == 5 * GiB
        # restored sparse: zeros are holes, not 5 GiB of allocated blocks
        assert st.st_blocks * 512 < 64 * MiB, \
            f"restored file allocates {st.st_blocks * 512 / MiB:.0f} MiB"
        assert _same_bytes(big, restored)
        assert (out / "src" / "small.txt").read_text() == "beside the image\n"
        print(f"5 GiB sparse backup took {backup_s:.1f}s")
    finally:
        for p in (big, tmp_path / "out"):
            subprocess.run(["rm", "-rf", str(p)], check=True)
