"""Ed25519 keys for signing the ledger: made once by `restorer ledger keygen`, the private
key kept in a file only its owner can read, the public key given to whoever verifies."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from restorer.errors import PlanError, UsageError


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # the 32 bytes of an Ed25519 public key

    @property
    def text(self) -> str:
        """How the key is written for people and plans: ed25519:BASE64."""
        return "ed25519:" + base64.b64encode(self.raw).decode()

    @property
    def fingerprint(self) -> str:
        """SHA256:BASE64 of the raw key, the way OpenSSH shows fingerprints."""
        digest = hashlib.sha256(self.raw).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_of(key: Ed25519PrivateKey) -> PublicKey:
    return PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw))


def write_new_key(path: Path) -> PublicKey:
    """A new private key in `path` (PEM, PKCS#8, mode 0600, created, never overwritten);
    its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; a signing key is never overwritten (the runs it "
                         "signed would no longer verify against a new one)",
                         hint="choose another --out, or remove the old key yourself") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return public_of(key)


def parse_public(text: str) -> PublicKey:
    """A public key as `keygen` prints it (ed25519:BASE64), or the OpenSSH-like PEM of
    one; UsageError saying what is expected otherwise."""
    text = text.strip()
    try:
        if text.startswith("ed25519:"):
            raw = base64.b64decode(text[len("ed25519:"):], validate=True)
        elif text.startswith("-----BEGIN PUBLIC KEY-----"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raise ValueError("unknown form")
        if len(raw) != 32:
            raise ValueError("wrong length")
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        # never echoed: it may be any file the caller pointed at (a password, a private key)
        raise UsageError("the public key given is not an Ed25519 public key",
                         hint="give the key `restorer ledger keygen` printed: ed25519:BASE64, "
                         "or a file holding only that") from None
    return PublicKey(raw)


def valid(public: PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public.raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """The private key a plan signs its runs with (from `ledger.signing_key`)."""

    key: Ed25519PrivateKey
    public: PublicKey

    @classmethod
    def from_pem(cls, pem: str, where: str) -> Signer:
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise PlanError(f"{where}: not an Ed25519 private key in PEM form",
                            hint="make one with `restorer ledger keygen --out FILE` and refer "
                            "to it as ${file:FILE}")
        return cls(key, public_of(key))

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)
