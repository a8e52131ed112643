"""`restorer ledger keygen`: a signing key only its owner can read, a public key and
fingerprint to hand to whoever verifies, and an existing key never overwritten."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _public_raw(key_file: Path) -> bytes:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def test_keygen_writes_a_private_key_and_prints_its_public_key(tmp_path: Path, cli) -> None:
    out = tmp_path / "ledger.key"
    r = cli("ledger", "keygen", "--out", out, "--json")
    assert r.rc == 0, r.text
    info = json.loads(r.out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    raw = _public_raw(out)
    assert info["public_key"] == "ed25519:" + base64.b64encode(raw).decode()
    assert info["fingerprint"] == "SHA256:" + base64.b64encode(
        hashlib.sha256(raw).digest()).decode().rstrip("=")
    assert info["private_key_file"] == str(out)
    # the private key is in the file, never in the output
    assert b"PRIVATE KEY" in out.read_bytes() and "PRIVATE" not in r.text
    # the text form says the same
    r2 = cli("ledger", "keygen", "--out", tmp_path / "second.key")
    assert r2.rc == 0 and "public key:  ed25519:" in r2.out and "fingerprint: SHA256:" in r2.out
    assert _public_raw(tmp_path / "second.key") != raw  # a new key each time


def test_keygen_never_overwrites_a_key(tmp_path: Path, cli) -> None:
    out = tmp_path / "ledger.key"
    assert cli("ledger", "keygen", "--out", out).rc == 0
    before = out.read_bytes()
    r = cli("ledger", "keygen", "--out", out)
    assert r.rc == 2
    assert f"{out} exists; a signing key is never overwritten" in r.err
    assert out.read_bytes() == before
