"""Files that change or vanish while being read are reported, not silently mis-stored."""

from __future__ import annotations

import os
from pathlib import Path

from restorer.repo.repository import BlobWriter, Repository
from restorer.sources.excludes import Excluder
from restorer.sources.files_backup import FilesReader
from restorer.storage.local import LocalBackend


def _repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), None)


def test_file_that_keeps_changing_while_read_is_flagged(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    log = src / "growing.log"
    log.write_bytes(os.urandom(2 << 20))
    repo = _repo(tmp_path)
    real_chunks = repo.chunker.chunks

    def chunks_while_appending(stream):
        for c in real_chunks(stream):
            with open(log, "ab") as f:  # another process appends while we read
                f.write(b"x" * 100)
            yield c

    repo.chunker.chunks = chunks_while_appending  # type: ignore[method-assign]
    with BlobWriter(repo) as w:
        reader = FilesReader(repo, w, Excluder([]))
        tree = reader.backup([src], None)
        w.flush()
    assert any("growing.log: changed while being read" in m for m in reader.stats.warnings)
    nodes = repo.load_tree(repo.load_tree(tree)[0]["subtree"])
    assert nodes[0]["changed_during_backup"] is True


def test_file_that_changes_once_is_reread_and_stored_consistently(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f.bin"
    f.write_bytes(b"a" * (1 << 20))
    repo = _repo(tmp_path)
    real_chunks = repo.chunker.chunks
    calls = {"n": 0}

    def chunks_changing_once(stream):
        for c in real_chunks(stream):
            calls["n"] += 1
            if calls["n"] == 1:  # rewritten by someone else during the first read
                f.write_bytes(b"b" * (1 << 20) + b"more")
            yield c

    repo.chunker.chunks = chunks_changing_once  # type: ignore[method-assign]
    with BlobWriter(repo) as w:
        reader = FilesReader(repo, w, Excluder([]))
        tree = reader.backup([src], None)
        w.flush()
    assert not reader.stats.warnings
    node = repo.load_tree(repo.load_tree(tree)[0]["subtree"])[0]
    data = b"".join(repo.load_blob(bytes.fromhex(c)) for c in node["content"])
    assert data == b"b" * (1 << 20) + b"more" and node["size"] == len(data)


def test_vanished_file_is_reported_and_left_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "b.txt").write_text("b")
    repo = _repo(tmp_path)
    with BlobWriter(repo) as w:
        real_add = w.add

        def add_and_delete(type_, plain, blob_id=None):
            if (src / "b.txt").exists():
                (src / "b.txt").unlink()  # deleted after the listing, before it is read
            return real_add(type_, plain, blob_id)

        w.add = add_and_delete  # type: ignore[method-assign]
        reader = FilesReader(repo, w, Excluder([]))
        tree = reader.backup([src], None)
        w.flush()
    assert any("b.txt: vanished during the backup" in m for m in reader.stats.warnings)
    names = [n["name"] for n in repo.load_tree(repo.load_tree(tree)[0]["subtree"])]
    assert names == ["a.txt"]
