"""What the ledger's evidence is made of: rows chained by hash, the signed head of the chain
that closes each run, and the anchor, the copy of a signed head kept in the repository.

A row's hash covers its content and the previous row's hash, so changing a row changes every
hash after it. Anyone can recompute hashes, so the chain alone proves nothing against someone
who can write the ledger; the signature over the head (Ed25519, a key the forger lacks) does,
and the anchor, written once outside the ledger, shows what the head was when it was signed:
which rows existed, and each one's hash, so the first changed row can be named.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
HEAD_SCHEMA = "restorer-ledger-head/1"
ANCHOR_SCHEMA = "restorer-anchor/1"
# a head lists the hashes of the rows since the previous signed one, at most this many
# (a first signature on a long unsigned ledger covers the older rows through the chain alone)
MAX_SEGMENT = 10_000
_HEX64 = frozenset("0123456789abcdef")


def row_hash(prev: str, seq: int, t: str, run_id: str, kind: str, data: str) -> str:
    body = json.dumps([prev, seq, t, run_id, kind, data], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Row:
    seq: int
    time: str
    run_id: str
    kind: str
    data: str  # the JSON text exactly as hashed
    prev_hash: str
    hash: str
    sig: str | None = None

    def recomputed(self, prev: str | None = None, seq: int | None = None) -> str:
        """This row's hash, or what it would be after `prev` at position `seq`."""
        return row_hash(self.prev_hash if prev is None else prev,
                        self.seq if seq is None else seq,
                        self.time, self.run_id, self.kind, self.data)

    def plan(self) -> str | None:
        try:
            d = json.loads(self.data)
        except (ValueError, TypeError, RecursionError):
            return None
        return d.get("plan") if isinstance(d, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {"type": "row", "seq": self.seq, "time": self.time, "run_id": self.run_id,
                "kind": self.kind, "data": self.data, "prev_hash": self.prev_hash,
                "hash": self.hash, "sig": self.sig}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        seq = d["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
            raise ValueError("seq is not a row number")
        for k in ("time", "run_id", "kind", "data", "prev_hash", "hash"):
            if not isinstance(d[k], str):
                raise ValueError(f"{k} is not text")
        if d.get("sig") is not None and not isinstance(d["sig"], str):
            raise ValueError("sig is not text")
        return cls(seq, d["time"], d["run_id"], d["kind"], d["data"], d["prev_hash"],
                   d["hash"], d.get("sig"))


def digest(hashes: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


@dataclass(frozen=True)
class Head:
    """What one signature covers: row `seq` with hash `hash`, and the rows `start`..`seq`
    (their hashes, in order) after the row whose hash is `prev`."""

    seq: int
    hash: str
    start: int
    prev: str
    hashes: tuple[str, ...]

    def message(self) -> bytes:
        return json.dumps({"schema": HEAD_SCHEMA, "seq": self.seq, "hash": self.hash,
                           "from": self.start, "prev": self.prev,
                           "digest": digest(self.hashes)},
                          sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signature:
    """The `sig` column of a run's closing row: who signed, the signature, where its
    segment starts."""

    key: str  # ed25519:BASE64 public key
    sig: str  # BASE64 signature of Head.message()
    start: int

    def text(self) -> str:
        return json.dumps({"key": self.key, "sig": self.sig, "from": self.start},
                          sort_keys=True, separators=(",", ":"))

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.sig, validate=True)

    @classmethod
    def parse(cls, text: str) -> Signature:
        """ValueError when `text` is not a signature."""
        try:
            d = json.loads(text)
            s = cls(str(d["key"]), str(d["sig"]), int(d["from"]))
            s.raw  # noqa: B018 - decodes, or raises
        except (ValueError, KeyError, TypeError, binascii.Error, ArithmeticError,
                RecursionError):
            raise ValueError("the signature field cannot be read") from None
        return s


@dataclass(frozen=True)
class Anchor:
    """A signed head written once into the repository (anchors/), with the run it closed."""

    plan: str
    run_id: str
    time: str
    head: Head
    signature: Signature
    # the hash of the first row of the ledger it was written from (for messages: not signed)
    ledger: str | None = None

    @property
    def name(self) -> str:
        return f"anchors/{self.head.seq:012d}-{self.head.hash[:16]}"

    def to_json(self) -> dict[str, Any]:
        return {"schema": ANCHOR_SCHEMA, "plan": self.plan, "run_id": self.run_id,
                "time": self.time, "seq": self.head.seq, "hash": self.head.hash,
                "from": self.head.start, "prev": self.head.prev,
                "hashes": list(self.head.hashes), "key": self.signature.key,
                "sig": self.signature.sig, "ledger": self.ledger}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, indent=0).encode()

    @classmethod
    def from_json(cls, d: Any) -> Anchor:
        """ValueError naming what is wrong when `d` is not an anchor."""
        if not isinstance(d, dict) or d.get("schema") != ANCHOR_SCHEMA:
            raise ValueError(f"not a {ANCHOR_SCHEMA} document")
        try:
            seq, start = d["seq"], d["from"]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                       for n in (seq, start)) or start > seq:
                raise ValueError("seq and from are not row numbers")
            hashes = d["hashes"]
            if not isinstance(hashes, list) or not all(
                    isinstance(h, str) and len(h) == 64 and set(h) <= _HEX64 for h in hashes):
                raise ValueError("hashes is not a list of row hashes")
            if len(hashes) > MAX_SEGMENT or not hashes or hashes[-1] != d["hash"]:
                raise ValueError("hashes does not end with the head's hash")
            sig = Signature(str(d["key"]), str(d["sig"]), start)
            sig.raw  # noqa: B018 - decodes, or raises
            ledger = d.get("ledger")
            return cls(str(d["plan"]), str(d["run_id"]), str(d["time"]),
                       Head(seq, str(d["hash"]), start, str(d["prev"]), tuple(hashes)), sig,
                       ledger if isinstance(ledger, str) else None)
        except (KeyError, TypeError, binascii.Error, ArithmeticError) as e:
            raise ValueError(f"a field is missing or wrong ({e})") from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Anchor:
        try:
            d = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError("not JSON (or nested beyond reason)") from None
        return cls.from_json(d)
