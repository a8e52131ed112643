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
