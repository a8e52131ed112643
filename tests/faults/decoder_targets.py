"""The decoders of repository content, as fuzz targets shared by hypothesis (in the suite) and
atheris (tests/bench/fuzz_decoders.py). Each takes raw bytes as they would be stored."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorer.errors import RestorerError
from restorer.repo import crypto
from restorer.repo.index import Index
from restorer.repo.lock import read_locks
from restorer.repo.packs import PackBuilder, read_header
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import decode_tree
from restorer.storage.local import LocalBackend

HEX = "ab" * 32


@dataclass(frozen=True)
class Target:
    valid: Any  # a JSON record the decoder accepts, the seed of the mutations (None: binary)
    decode: Callable[[bytes, Path], Any]
    names: tuple[str, ...]  # one of these must appear in every error's message
    raw: bytes | None = None  # the stored bytes of a valid record, when not JSON

    @property
    def seed(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.valid).encode()


def _tree(raw: bytes, _wd: Path) -> Any:
    return decode_tree(raw, "tree 1234")


def _snapshot(raw: bytes, _wd: Path) -> Any:
    return Snapshot.from_json(raw, HEX)


def _index(raw: bytes, _wd: Path) -> Any:
    return Index.parse(raw, "index/" + HEX)


def _store(wd: Path, name: str, raw: bytes) -> LocalBackend:
    path = wd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return LocalBackend(wd)


def _lock(raw: bytes, wd: Path) -> Any:
    # read_locks reports an unreadable lock as a foreign one; it must never raise
    backend = _store(wd / "lockrepo", "locks/" + HEX, raw)
    locks = read_locks(backend)
    assert len(locks) == 1
    return locks


def _config(raw: bytes, wd: Path) -> Any:
    return Repository.open(_store(wd / "cfgrepo", "config", raw), None)


_MASTER = crypto.MasterKey.generate()
_CHEAP_KEK = os.urandom(32)


def _key_file(raw: bytes, _wd: Path) -> Any:
    # scrypt itself is not under test (and would make each example cost 0.1 s): a fixed kek,
    # so that what is fuzzed is the parsing around it
    real, crypto._kek = crypto._kek, lambda *a: _CHEAP_KEK  # type: ignore[assignment]
    try:
        return crypto.open_key_file(raw, "pw")
    finally:
        crypto._kek = real  # type: ignore[assignment]


def _master_key(raw: bytes, _wd: Path) -> Any:
    return crypto.MasterKey.from_json(raw)


def _pack_header(raw: bytes, _wd: Path) -> Any:
    return read_header(crypto.Sealer(None), raw, "pack 1234")


def _valid_key_file() -> dict:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(crypto.NONCE)
    sealed = nonce + AESGCM(_CHEAP_KEK).encrypt(nonce, _MASTER.to_json(), b"restorer-key")
    return {"kdf": "scrypt", "n": 16384, "r": 8, "p": 1,
            "salt": base64.b64encode(os.urandom(16)).decode(),
            "data": base64.b64encode(sealed).decode(), "host": "h", "user": "u"}


def valid_pack() -> bytes:
    b = PackBuilder()
    b.add(0, os.urandom(32), b"\x00hello", 5)
    b.add(1, os.urandom(32), b"\x00{}", 2)
    return b.finish(crypto.Sealer(None))[1]


TARGETS: dict[str, Target] = {
    "tree": Target({"nodes": [
        {"name": "a", "type": "file", "mode": 420, "uid": 0, "gid": 0, "user": "root",
         "group": "root", "mtime_ns": 1, "ctime_ns": 1, "inode": 5, "dev": 1, "nlink": 1,
         "size": 3, "content": [HEX], "xattrs": {"user.a": "eA=="}},
        {"name": "d", "type": "dir", "mode": 493, "subtree": HEX},
        {"name": "l", "type": "symlink", "target": "a"}]}, _tree, ("tree 1234",)),
    "snapshot": Target({
        "time": "2026-12-01T00:00:00+00:00", "plan": "p", "target": "t", "kind": "files",
        "hostname": "h", "username": "u", "paths": ["/x"], "tree": HEX, "parent": None,
        "tags": ["a"], "summary": {"files": 1}, "warnings": [], "program_version": "1",
        "uid": 0, "gid": 0}, _snapshot, ("snapshot abababab",)),
    "index": Target({"version": 1, "packs": [{"id": HEX, "blobs": [[0, HEX, 0, 10, 8]]}]},
                    _index, ("index/",)),
    "lock": Target({"host": "h", "pid": 1, "exclusive": True, "time": 1.5, "command": "c"},
                   _lock, ("locks/",)),
    "config": Target({"version": 1, "id": secrets.token_hex(16), "encrypted": False,
                      "cipher": None, "compression": "zstd",
                      "chunker": {"avg": 1 << 20, "min": 1 << 19, "max": 1 << 22, "seed": 3},
                      "pack_size": 1 << 24}, _config, ("config",)),
    "key_file": Target(_valid_key_file(), _key_file, ("key file",)),
    "master_key": Target(json.loads(_MASTER.to_json()), _master_key, ("master key",)),
    "pack_header": Target(None, _pack_header, ("pack 1234",), raw=valid_pack()),
}


def run_one(target: Target, raw: bytes, workdir: Path) -> None:
    """Decode `raw`; a RestorerError must name the record, anything else is a finding."""
    try:
        target.decode(raw, workdir)
    except RestorerError as e:
        if not any(n in e.message for n in target.names):
            raise AssertionError(f"error does not name the record: {e.message}") from e
