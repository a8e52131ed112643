"""restorer.repo.crypto: sealing, keyed blob ids, master keys and password-sealed key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from restorer.errors import IntegrityError, RepositoryError, UsageError, WrongPasswordError
from restorer.repo import crypto
from restorer.repo.crypto import NONCE, TAG, MasterKey, Sealer
from restorer.repo.repository import Repository
from restorer.storage.local import LocalBackend

PLAIN = b"the quick brown fox jumps over the lazy dog" * 10


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(scope="module")
def key_file(key: MasterKey) -> bytes:
    return crypto.make_key_file(key, "correct horse", "host1", "alice")


# --- sealing ------------------------------------------------------------------------------

def test_seal_then_open_gives_the_plaintext_back(key: MasterKey) -> None:
    s = Sealer(key)
    assert s.encrypted
    sealed = s.seal(PLAIN, aad=b"ctx")
    assert PLAIN not in sealed
    assert len(sealed) == len(PLAIN) + NONCE + TAG
    assert s.open(sealed, aad=b"ctx") == PLAIN
    # a fresh nonce every time: the same plaintext never seals to the same bytes
    assert s.seal(PLAIN, aad=b"ctx") != sealed


@pytest.mark.parametrize("where", [0, NONCE, NONCE + 5, -1])  # nonce, body, tag
def test_a_flipped_byte_anywhere_is_refused(key: MasterKey, where: int) -> None:
    s = Sealer(key)
    sealed = bytearray(s.seal(PLAIN))
    sealed[where] ^= 0x01
    with pytest.raises(IntegrityError, match="index 7: authentication failed"):
        s.open(bytes(sealed), what="index 7")


def test_a_wrong_key_is_refused(key: MasterKey) -> None:
    sealed = Sealer(key).seal(PLAIN)
    with pytest.raises(IntegrityError, match="authentication failed"):
        Sealer(MasterKey.generate()).open(sealed)


def test_associated_data_binds_a_sealed_blob_to_its_id(key: MasterKey) -> None:
    # a blob moved under another id (or a header under a blob's context) does not open
    s = Sealer(key)
    sealed = s.seal(PLAIN, aad=b"id-a")
    with pytest.raises(IntegrityError):
        s.open(sealed, aad=b"id-b")
    with pytest.raises(IntegrityError):
        s.open(sealed)


def test_data_too_short_to_be_sealed_is_refused(key: MasterKey) -> None:
    with pytest.raises(IntegrityError, match=r"snap: too short to be sealed data \(27 bytes\)"):
        Sealer(key).open(b"x" * (NONCE + TAG - 1), what="snap")


def test_a_plain_sealer_passes_bytes_through() -> None:
    s = Sealer(None)
    assert not s.encrypted
    assert s.seal(PLAIN, aad=b"x") == PLAIN
    assert s.open(PLAIN, aad=b"x") == PLAIN


# --- blob ids -----------------------------------------------------------------------------

def test_plain_blob_ids_are_sha256_of_the_plaintext() -> None:
    s = Sealer(None)
    assert s.blob_id(PLAIN) == hashlib.sha256(PLAIN).digest()
    assert s.blob_id(memoryview(PLAIN)) == s.blob_id(PLAIN)


def test_encrypted_blob_ids_are_keyed_and_reveal_nothing(key: MasterKey) -> None:
    s = Sealer(key)
    bid = s.blob_id(PLAIN)
    assert len(bid) == 32
    assert bid == hmac.new(key.id_key, PLAIN, "sha256").digest()
    assert bid != hashlib.sha256(PLAIN).digest()  # not guessable from known content
    assert s.blob_id(PLAIN) == bid  # stable: dedup works
    assert s.blob_id(PLAIN + b".") != bid
    # the id key is not the encryption key
    assert key.id_key != key.enc_key


def test_two_encrypted_repositories_give_one_plaintext_different_ids(tmp_path: Path) -> None:
    a = Repository.init(LocalBackend(tmp_path / "a"), "pw")
    b = Repository.init(LocalBackend(tmp_path / "b"), "pw")
    plain = Repository.init(LocalBackend(tmp_path / "c"), None)
    assert a.sealer.blob_id(PLAIN) != b.sealer.blob_id(PLAIN)
    assert plain.sealer.blob_id(PLAIN) == hashlib.sha256(PLAIN).digest()
    assert a.sealer.blob_id(PLAIN) != plain.sealer.blob_id(PLAIN)


# --- master keys --------------------------------------------------------------------------

def test_master_keys_are_random_and_round_trip_through_json(key: MasterKey) -> None:
    other = MasterKey.generate()
    assert other.enc_key != key.enc_key and other.id_key != key.id_key
    assert len(key.enc_key) == len(key.id_key) == 32
    assert MasterKey.from_json(key.to_json()) == key


@pytest.mark.parametrize(("change", "message"), [
    ({"enc": "not base64!"}, "enc is not valid base64"),
    ({"id": base64.b64encode(b"short").decode()}, "id must hold 32 bytes, not 5"),
    ({"seed": -1}, "seed is out of range"),
    ({"seed": "12"}, "seed must be an integer"),
    ({"enc": None}, "enc must be a string"),
])
def test_a_damaged_master_key_is_refused_naming_the_field(key: MasterKey, change: dict,
                                                          message: str) -> None:
    d = json.loads(key.to_json())
    d.update(change)
    with pytest.raises(IntegrityError, match=message):
        MasterKey.from_json(json.dumps(d).encode())


# --- key files ----------------------------------------------------------------------------

def test_a_key_file_opens_with_its_password_only(key: MasterKey, key_file: bytes) -> None:
    assert crypto.open_key_file(key_file, "correct horse") == key
    assert crypto.open_key_file(key_file, "wrong horse") is None


def test_a_key_file_holds_no_key_material_in_clear(key: MasterKey, key_file: bytes) -> None:
    d = json.loads(key_file)
    assert d["kdf"] == "scrypt" and d["host"] == "host1" and d["user"] == "alice"
    for secret in (key.enc_key, key.id_key):
        assert secret not in key_file
        assert base64.b64encode(secret) not in key_file
    # two key files of the same key and password differ (random salt and nonce)
    again = crypto.make_key_file(key, "correct horse", "host1", "alice")
    assert json.loads(again)["salt"] != d["salt"]


def _edited(key_file: bytes, **change: object) -> bytes:
    d = json.loads(key_file)
    d.update(change)
    return json.dumps(d).encode()


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"kdf": "pbkdf2"}, RepositoryError, "unsupported key derivation 'pbkdf2'"),
    ({"n": 3000}, IntegrityError, "n must be a power of two"),
    # scrypt memory is 128*n*r: a crafted key file must not cost gigabytes to try
    ({"n": 1 << 24}, IntegrityError, "n is out of range"),
    ({"r": 1000}, IntegrityError, "r is out of range"),
    ({"salt": "***"}, IntegrityError, "salt is not valid base64"),
    ({"data": base64.b64encode(b"x" * 10).decode()}, IntegrityError,
     "data is too short to hold a sealed key"),
])
def test_a_crafted_key_file_is_refused_before_use(key_file: bytes, change: dict,
                                                  error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        crypto.open_key_file(_edited(key_file, **change), "correct horse")


def test_a_key_file_that_is_not_json_is_refused() -> None:
    with pytest.raises(IntegrityError, match="a key file: not readable JSON"):
        crypto.open_key_file(b"\x00garbage", "pw")


def test_a_tampered_sealed_key_reads_as_a_wrong_password(key_file: bytes) -> None:
    d = json.loads(key_file)
    raw = bytearray(base64.b64decode(d["data"]))
    raw[-1] ^= 0x80
    assert crypto.open_key_file(_edited(key_file, data=base64.b64encode(raw).decode()),
                                "correct horse") is None


# --- the repository's keys ------------------------------------------------------------------

def test_an_encrypted_repository_opens_with_its_password_only(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, "pw")
    assert repo.config["encrypted"] is True
    (name,) = [o.name for o in backend.list("keys/")]
    assert name == "keys/" + hashlib.sha256(backend.read(name)).hexdigest()
    opened = Repository.open(backend, "pw")
    assert opened.sealer.key == repo.sealer.key
    with pytest.raises(WrongPasswordError, match="no key opens with it"):
        Repository.open(backend, "pW")
    with pytest.raises(UsageError, match="is encrypted and the plan gives no password"):
        Repository.open(backend, None)


def test_a_plain_repository_has_no_keys(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, None)
    assert not repo.sealer.encrypted
    assert backend.list("keys/") == []
    assert Repository.open(backend, None).config["chunker"]["seed"] == \
        repo.config["chunker"]["seed"]
