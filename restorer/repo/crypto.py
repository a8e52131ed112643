"""Keys and sealing: a random master key, stored encrypted under a password-derived key.

Blobs and files are sealed with AES-256-GCM (12-byte random nonce prepended). Blob ids are
HMAC-SHA256 of the plaintext under a separate id key, so ids reveal nothing about content.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from restorer.errors import IntegrityError, RepositoryError
from restorer.repo import schema

NONCE = 12
TAG = 16
# scrypt cost: about 0.1 s and 16 MiB on a 2-core machine; stored per key file so it can grow.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1


@dataclass(frozen=True)
class MasterKey:
    enc_key: bytes  # 32 bytes, AES-256-GCM
    id_key: bytes  # 32 bytes, HMAC-SHA256 for blob ids
    chunker_seed: int  # keyed FastCDC gear table, so chunk boundaries leak nothing either

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32), secrets.token_bytes(32), secrets.randbits(63) | 1)

    def to_json(self) -> bytes:
        return json.dumps({
            "enc": base64.b64encode(self.enc_key).decode(),
            "id": base64.b64encode(self.id_key).decode(),
            "seed": self.chunker_seed,
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MasterKey:
        what = "the master key"
        d = schema.fields(schema.load_json(data, what), schema.MASTER_KEY, what)
        return cls(schema.b64(d["enc"], what, "enc", 32), schema.b64(d["id"], what, "id", 32),
                   d["seed"])


class Sealer:
    """Seals and opens byte strings; with no key it passes them through (plain repository)."""

    def __init__(self, key: MasterKey | None) -> None:
        self.key = key
        self._aead = AESGCM(key.enc_key) if key else None

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    def blob_id(self, plaintext: bytes | memoryview) -> bytes:
        if self.key is None:
            return hashlib.sha256(plaintext).digest()
        # the one-shot form: no HMAC object per blob, and OpenSSL hashes without the GIL
        return hmac.digest(self.key.id_key, plaintext, "sha256")

    def seal(self, data: bytes, aad: bytes = b"") -> bytes:
        if self._aead is None:
            return data
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, data, aad or None)

    def open(self, data: bytes, aad: bytes = b"", what: str = "object") -> bytes:
        if self._aead is None:
            return data
        if len(data) < NONCE + TAG:
            raise IntegrityError(f"{what}: too short to be sealed data ({len(data)} bytes)")
        try:
            return self._aead.decrypt(data[:NONCE], data[NONCE:], aad or None)
        except InvalidTag:
            raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from None


def _kek(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def make_key_file(master: MasterKey, password: str, host: str, user: str) -> bytes:
    """A key file: the master key sealed under a key derived from `password` with scrypt."""
    salt = os.urandom(16)
    kek = _kek(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    nonce = os.urandom(NONCE)
    sealed = nonce + AESGCM(kek).encrypt(nonce, master.to_json(), b"restorer-key")
    return json.dumps({
        "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(sealed).decode(),
        "host": host, "user": user,
    }, indent=1).encode()


def open_key_file(raw: bytes, password: str) -> MasterKey | None:
    """The master key if `password` opens this key file, else None."""
    what = "a key file"
    d = schema.fields(schema.load_json(raw, what), schema.KEY_FILE, what)
    if d["kdf"] != "scrypt":
        raise RepositoryError(f"{what}: unsupported key derivation {d['kdf']!r}")
    if d["n"] & (d["n"] - 1):
        raise schema.fail(what, "n", "must be a power of two")
    kek = _kek(password, schema.b64(d["salt"], what, "salt"), d["n"], d["r"], d["p"])
    sealed = schema.b64(d["data"], what, "data")
    if len(sealed) < NONCE + TAG:
        raise schema.fail(what, "data", "is too short to hold a sealed key")
    try:
        plain = AESGCM(kek).decrypt(sealed[:NONCE], sealed[NONCE:], b"restorer-key")
    except InvalidTag:
        return None
    return MasterKey.from_json(plain)
