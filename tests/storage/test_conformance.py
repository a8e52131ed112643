"""One conformance suite for every storage backend: local, S3 (moto server), SFTP (sshd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorer.errors import AlreadyExistsError, NotFoundError
from restorer.storage.base import Backend
from tests.conftest import unique_name


@pytest.fixture(params=["local", "s3", "sftp"])
def backend(request, tmp_path: Path) -> Backend:
    kind = request.param
    if kind == "local":
        from restorer.storage.local import LocalBackend

        b: Backend = LocalBackend(tmp_path / "store")
    elif kind == "s3":
        from restorer.storage.s3 import S3Backend

        moto = request.getfixturevalue("moto_server")
        bucket = moto.make_bucket(unique_name("conf"))
        b = S3Backend(bucket, "some/prefix", endpoint_url=moto.url, region="us-east-1")
    else:
        from restorer.storage.sftp import SFTPBackend

        ssh = request.getfixturevalue("sshd")
        b = SFTPBackend("127.0.0.1", str(ssh.root / unique_name("conf")), port=ssh.port,
                        user=ssh.user, key_file=str(ssh.key_file),
                        known_hosts=str(ssh.known_hosts))
    yield b
    b.close()


def test_write_read_stat_list_delete(backend: Backend) -> None:
    backend.write("data/ab/abcdef", b"hello world")
    backend.write("index/1234", b"x" * 100)
    assert backend.read("data/ab/abcdef") == b"hello world"
    assert backend.read("data/ab/abcdef", 6, 5) == b"world"
    assert backend.read("data/ab/abcdef", 6) == b"world"
    assert backend.stat("data/ab/abcdef") == 11
    assert backend.exists("index/1234") and not backend.exists("index/nope")
    assert sorted((o.name, o.size) for o in backend.list("data/")) == [("data/ab/abcdef", 11)]
    assert [o.name for o in backend.list("index/")] == ["index/1234"]
    assert backend.list("snapshots/") == []
    backend.delete("index/1234")
    backend.delete("index/1234")  # deleting what is gone is not an error
    assert backend.list("index/") == []


def test_objects_are_write_once(backend: Backend) -> None:
    backend.write("snapshots/aa", b"first")
    with pytest.raises(AlreadyExistsError):
        backend.write("snapshots/aa", b"second")
    assert backend.read("snapshots/aa") == b"first"


def test_missing_objects_raise_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        backend.read("data/zz/none")
    with pytest.raises(NotFoundError):
        backend.stat("data/zz/none")


def test_large_object_round_trip(backend: Backend) -> None:
    import os

    data = os.urandom(20 << 20)  # above the S3 multipart threshold
    backend.write("data/12/big", data)
    assert backend.stat("data/12/big") == len(data)
    assert backend.read("data/12/big", 19 << 20, 1000) == data[19 << 20: (19 << 20) + 1000]
    assert backend.read("data/12/big") == data


def test_s3_listing_follows_pagination(moto_server) -> None:
    from restorer.storage.s3 import S3Backend

    bucket = moto_server.make_bucket(unique_name("page"))
    c = moto_server.client()
    for i in range(1005):  # one more page than S3's 1000 keys
        c.put_object(Bucket=bucket, Key=f"p/locks/{i:05d}", Body=b"")
    b = S3Backend(bucket, "p", endpoint_url=moto_server.url, region="us-east-1")
    assert len(b.list("locks/")) == 1005


# --- a listing error is an error, never "nothing there" ----------------------------------

# root reads unreadable folders through these capabilities; without them chmod 000 holds
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
_LIST_LOCAL = """
import sys
from pathlib import Path
from restorer.errors import StorageError
from restorer.storage.local import LocalBackend
try:
    print(LocalBackend(Path(sys.argv[1])).list("snapshots/"))
except StorageError as e:
    print("StorageError:", e.message)
"""


@pytest.mark.parametrize("kind", ["local", "s3", "sftp"])
def test_listing_error_raises_never_reads_as_empty(kind: str, request, tmp_path: Path) -> None:
    """restic #4612: a listing that drops an error reads as "no snapshots", and prune then
    deletes every pack. Every backend must raise instead."""
    import os
    import subprocess
    import sys

    from restorer.errors import StorageError

    if kind == "s3":
        from restorer.storage.s3 import S3Backend

        moto = request.getfixturevalue("moto_server")
        bucket = moto.make_bucket(unique_name("listerr"))
        b: Backend = S3Backend(bucket, "p", endpoint_url=moto.url, region="us-east-1")
        b.write("snapshots/aa", b"x")
        moto.client().delete_object(Bucket=bucket, Key="p/snapshots/aa")
        moto.client().delete_bucket(Bucket=bucket)
        with pytest.raises(StorageError):
            b.list("snapshots/")
        return
    store = tmp_path / "store"
    (store / "snapshots").mkdir(parents=True)
    (store / "snapshots" / "aa").write_bytes(b"x")
    os.chmod(store / "snapshots", 0)
    try:
        if kind == "local":
            p = subprocess.run([*NO_DAC, sys.executable, "-c", _LIST_LOCAL, str(store)],
                               capture_output=True, text=True, timeout=60)
            assert p.stdout.startswith("StorageError:"), p.stdout + p.stderr
            assert "Permission denied" in p.stdout
        else:
            from restorer.storage.sftp import SFTPBackend
            from tests.services import start_sshd

            ssh = start_sshd(tmp_path / "sshd", wrap=NO_DAC)
            try:
                b = SFTPBackend("127.0.0.1", str(store), port=ssh.port, user=ssh.user,
                                key_file=str(ssh.key_file), known_hosts=str(ssh.known_hosts))
                with pytest.raises(StorageError):
                    b.list("snapshots/")
                b.close()
            finally:
                ssh.stop()
    finally:
        os.chmod(store / "snapshots", 0o700)


def test_every_version_holds_what_was_written(backend: Backend) -> None:
    # what the ledger's anchors are read with: every object under the prefix, its bytes
    backend.write("anchors/000000000004-aa", b"first")
    backend.write("anchors/000000000008-bb", b"second")
    backend.write("other/x", b"not listed")
    got = sorted(backend.every_version("anchors/"))
    assert got == [("anchors/000000000004-aa", False, b"first"),
                   ("anchors/000000000008-bb", False, b"second")]
