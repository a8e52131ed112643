"""One verification of a ledger, run the same way by `ledger verify`, `history
--verify-chain`, `report --verify` and on an export: row hashes, the chain, every signature
and every anchor, with the first row that fails named and why.

It proves what it says and no more: without a trusted public key a signature shows only that
the rows agree with whoever signed them, so the verdict is then "unchecked" or "unsigned",
never "signed".
"""

from __future__ import annotations

import bisect
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from restorer import clock
from restorer.errors import UsageError
from restorer.ledger.chain import GENESIS, MAX_SEGMENT, Anchor, Head, Row, Signature
from restorer.ledger.signing import PublicKey, parse_public, valid

What = Literal["edited", "deleted", "inserted", "unlinked", "other_key", "bad_signature",
               "unsigned", "missing_anchor", "anchor_forged", "anchor_unreadable",
               "truncated"]


# how long after a run's end its anchor may still be on its way
PENDING_S = 600


@dataclass(frozen=True)
class Finding:
    seq: int | None  # the row it is about (None: the ledger as a whole)
    what: What
    message: str


@dataclass
class Verdict:
    where: str
    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    signed: int = 0  # signatures checked and good
    signed_through: int | None = None
    anchors: int = 0  # anchors that match the rows
    anchors_checked: bool = False
    keys: list[str] = field(default_factory=list)  # fingerprints of the keys that signed
    expected: list[str] = field(default_factory=list)  # fingerprints trusted
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings

    @property
    def status(self) -> Literal["broken", "signed", "unanchored", "unchecked", "unsigned"]:
        if self.findings:
            return "broken"
        if self.signed and self.expected:
            return "signed" if self.anchors_checked else "unanchored"
        return "unchecked" if self.signed else "unsigned"

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def summary(self) -> str:
        span = (f"rows {self.first_seq}–{self.last_seq}" if self.rows else "no rows")
        if self.findings:
            more = len(self.findings) - 1
            return (f"BROKEN: {self.findings[0].message}"
                    + (f" (and {more} more finding{'s' if more > 1 else ''})" if more else ""))
        if self.status in ("signed", "unanchored"):
            tail = (f"; rows {self.signed_through + 1}–{self.last_seq} come after the last "
                    "signature and are not covered yet"
                    if self.signed_through and self.last_seq and self.last_seq > self.signed_through
                    else "")
            anchored = (f", {self.anchors} anchor{'s' if self.anchors != 1 else ''} match"
                        if self.anchors_checked else ", but its anchors were not checked (so "
                        "rows cut off after a signature would not show)")
            return (f"signed: {span} intact, covered through row {self.signed_through} by "
                    f"{self.signed} signature{'s' if self.signed != 1 else ''} of "
                    f"{', '.join(self.expected)}{anchored}{tail}")
        if self.status == "unchecked":
            return (f"unchecked: {span} intact and signed by {', '.join(self.keys)}, but no "
                    "trusted public key was given, so this does not show who wrote them "
                    "(pass --public-key, or give the plan its ledger.signing_key)")
        return (f"unsigned: hash chain intact over {span}; without signatures by a trusted "
                "key anyone who can write the ledger can rewrite it and recompute the hashes")

    def to_json(self) -> dict[str, Any]:
        return {"ledger": self.where, "status": self.status, "intact": self.intact,
                "rows": self.rows, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "signatures": self.signed, "signed_through": self.signed_through,
                "anchors": self.anchors, "anchors_checked": self.anchors_checked,
                "signed_by": self.keys, "trusted_keys": self.expected,
                "first_problem": None if self.first is None else {
                    "seq": self.first.seq, "what": self.first.what,
                    "message": self.first.message},
                "findings": [{"seq": f.seq, "what": f.what, "message": f.message}
                             for f in self.findings],
                "notes": self.notes, "summary": self.summary()}


def verify(rows: list[Row], *, where: str, anchors: list[Anchor] | None = None,
           unreadable_anchors: list[tuple[str, str]] | None = None,
           trusted: list[PublicKey] | None = None, plan: str | None = None,
           whole: bool = True, plan_signs: bool = False,
           missing_anchors: bool = True) -> Verdict:
    """`rows` in seq order; `whole`: they start at the ledger's first row (else an export,
    trusted only from its first row on). `anchors` None: not available (not checked).
    `plan`: the plan whose signed run ends must each have an anchor (`missing_anchors`),
    and, when it signs now (`plan_signs`), must end signed or say why not."""
    trusted = trusted or []
    v = Verdict(where, rows=len(rows), expected=[k.fingerprint for k in trusted])
    if rows:
        v.first_seq, v.last_seq, v.last_hash = rows[0].seq, rows[-1].seq, rows[-1].hash
    found: list[Finding] = []
    by_seq = {r.seq: r for r in rows}
    seqs = [r.seq for r in rows]
    _chain(rows, whole, found)
    signed_ok: set[int] = set()
    for r in rows:
        if r.sig is not None:
            _signature(r, by_seq, rows, seqs, trusted, plan, v, signed_ok, found)
    _stripped(by_seq, signed_ok, found)
    if plan is not None and trusted and plan_signs:
        _unsigned_tail(rows, plan, signed_ok, by_seq, found)
    if anchors is not None:
        v.anchors_checked = True
        # this plan's anchors, and any signed by a trusted key whatever plan they name
        unique: dict[tuple[int, str, str, str], Anchor] = {}
        for a in anchors:
            if a.plan == plan or plan is None or _key(a.signature.key) in trusted:
                sig = a.signature
                unique.setdefault((a.head.seq, a.head.hash, sig.sig, sig.key), a)
        anchors = list(unique.values())
        _anchors(anchors, by_seq, rows, trusted, v, found)
        for name, why in unreadable_anchors or []:
            found.append(Finding(None, "anchor_unreadable",
                                 f"{name} is not an anchor ({why}): damaged or planted"))
        if plan is not None and missing_anchors:
            _missing_anchors(rows, anchors, plan, found, v)
    # one finding per row, the first by row number leading (None last)
    seen: set[int | None] = set()
    for f in sorted(found, key=lambda f: (f.seq is None, f.seq or 0, _RANK[f.what])):
        if f.seq is None or f.seq not in seen:
            v.findings.append(f)
            seen.add(f.seq)
    return v


# which of several findings about one row names the cause
_RANK: dict[str, int] = {w: i for i, w in enumerate(
    ("inserted", "deleted", "edited", "unlinked", "truncated", "other_key", "bad_signature",
     "unsigned", "missing_anchor", "anchor_forged", "anchor_unreadable"))}


def _chain(rows: list[Row], whole: bool, found: list[Finding]) -> None:
    if not rows:
        return
    prev = GENESIS if whole else rows[0].prev_hash
    expected = 1 if whole else rows[0].seq
    for r in rows:
        if r.seq > expected:
            gone = f"row {expected} is" if r.seq == expected + 1 else \
                f"rows {expected}–{r.seq - 1} are"
            found.append(Finding(expected, "deleted",
                                 f"{gone} missing: deleted from the ledger"))
        elif r.seq < expected:
            found.append(Finding(r.seq, "inserted", f"row {r.seq} appears twice or out of "
                                 "order: inserted"))
        elif r.prev_hash != prev:
            found.append(Finding(r.seq, "unlinked", f"row {r.seq} does not follow row "
                                 f"{r.seq - 1}: a row before it was replaced or inserted"))
        if r.recomputed() != r.hash:
            found.append(Finding(r.seq, "edited", f"row {r.seq} was changed after it was "
                                 "written: its hash no longer matches its content"))
        prev, expected = r.hash, max(expected, r.seq + 1)


def _head_of(rows: list[Row], by_seq: dict[int, Row], seqs: list[int], seq: int,
             start: int) -> Head | None:
    """The head as the signer saw it, from the stored rows (None: rows before these)."""
    if start < rows[0].seq:
        return None
    prev = by_seq[start - 1].hash if start - 1 in by_seq else (
        rows[0].prev_hash if start == rows[0].seq else GENESIS)
    lo, hi = bisect.bisect_left(seqs, start), bisect.bisect_right(seqs, seq)
    hashes = tuple(r.hash for r in rows[lo:hi])
    return Head(seq, by_seq[seq].hash, start, prev, hashes)


def _key(text: str) -> PublicKey | None:
    """A key named in ledger data: only the ed25519:BASE64 form (no PEM to parse)."""
    if not isinstance(text, str) or not text.startswith("ed25519:"):
        return None
    try:
        return parse_public(text)
    except UsageError:
        return None


def _json(text: str) -> Any:
    """The JSON value of a row's data, or None when it is not JSON (or absurdly nested)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def _field(r: Row, key: str) -> Any:
    d = _json(r.data)
    return d.get(key) if isinstance(d, dict) else None


def _signature(r: Row, by_seq: dict[int, Row], rows: list[Row], seqs: list[int],
               trusted: list[PublicKey], plan: str | None, v: Verdict, signed_ok: set[int],
               found: list[Finding]) -> None:
    try:
        s = Signature.parse(r.sig or "")
    except ValueError:
        found.append(Finding(r.seq, "bad_signature", f"row {r.seq}'s signature cannot be "
                             "read: damaged or forged"))
        return
    key = _key(s.key)
    if s.start < 1 or s.start > r.seq:
        found.append(Finding(r.seq, "bad_signature", f"row {r.seq}'s signature claims to "
                             f"cover rows from {s.start}, which cannot be: forged"))
        return
    head = _head_of(rows, by_seq, seqs, r.seq, s.start)
    if key is None:
        found.append(Finding(r.seq, "bad_signature", f"row {r.seq} names a signing key that "
                             "is not an Ed25519 key: forged"))
        return
    if head is None:
        v.notes.append(f"row {r.seq}'s signature covers rows before this export; it is "
                       "checked in the ledger itself")
        return
    if trusted and key not in trusted and plan is not None and r.plan() != plan:
        # a fleet's shared ledger: another plan's runs, signed with that plan's key; they
        # must still match their own key (a row changed under them shows here too)
        if not valid(key, head.message(), s.raw):
            found.append(Finding(r.seq, "bad_signature", f"rows {s.start}–{r.seq} were "
                                 f"changed after row {r.seq} (of another plan) was signed: "
                                 "its signature no longer matches"))
        elif not any(n.startswith("rows of other plans") for n in v.notes):
            v.notes.append("rows of other plans signed by their own keys are checked against "
                           "those keys, not trusted as this plan's")
        return
    if trusted and key not in trusted:
        found.append(Finding(r.seq, "other_key", f"row {r.seq} is signed by another key "
                             f"({key.fingerprint}, not {', '.join(v.expected)}): someone "
                             "re-signed the ledger"))
        return
    if not valid(key, head.message(), s.raw):
        found.append(Finding(r.seq, "bad_signature", f"rows {s.start}–{r.seq} were changed "
                             f"after row {r.seq} was signed: its signature no longer matches"))
        return
    signed_ok.add(r.seq)
    over = _field(r, "signed_over")
    if over:
        found.append(Finding(r.seq, "edited", f"when row {r.seq} was signed, the signer "
                             f"found {over}"))
    v.signed += 1
    v.signed_through = r.seq
    if key.fingerprint not in v.keys:
        v.keys.append(key.fingerprint)


def _anchors(anchors: list[Anchor], by_seq: dict[int, Row], rows: list[Row],
             trusted: list[PublicKey], v: Verdict, found: list[Finding]) -> None:
    last = rows[-1].seq if rows else 0
    first = rows[0].seq if rows else 1
    for a in anchors:
        key = _key(a.signature.key)
        if key is None or not valid(key, a.head.message(), a.signature.raw):
            found.append(Finding(a.head.seq, "anchor_forged", f"{a.name} does not match its "
                                 "own signature: damaged or forged"))
            continue
        if trusted and key not in trusted:
            found.append(Finding(a.head.seq, "other_key", f"{a.name} is signed by another "
                                 f"key ({key.fingerprint}): planted"))
            continue
        if a.head.seq > last:
            found.append(Finding(last + 1, "truncated", f"rows {last + 1}–{a.head.seq} were "
                                 f"deleted: the ledger ends at row {last}, but {a.name} "
                                 f"(the end of run {a.run_id} at {a.time}) names row "
                                 f"{a.head.seq}" + _other_ledger(a, by_seq)))
            continue
        if a.head.seq < first:
            continue  # before an export's first row
        f = _compare(a, by_seq)
        if f is not None:
            found.append(f)
            continue
        v.anchors += 1
        row = by_seq.get(a.head.seq)
        if row is not None and row.sig is None:
            found.append(Finding(a.head.seq, "unsigned", f"row {a.head.seq}'s signature was "
                                 f"removed: {a.name} holds it"))


def _compare(a: Anchor, by_seq: dict[int, Row]) -> Finding | None:
    """The first row that differs from the anchored hashes, and how."""
    prev = a.head.prev
    hashes = a.head.hashes
    before = by_seq.get(a.head.start - 1)
    if before is not None and before.hash != prev:
        return Finding(before.seq, "edited", f"row {before.seq} or one before it was "
                       f"rewritten: its hash differs from the one {a.name} holds for it, and "
                       "the rows after it were re-hashed to hide it")
    for i, want in enumerate(hashes):
        s = a.head.start + i
        r = by_seq.get(s)
        if r is not None and r.hash == want:
            prev = want
            continue
        if r is None:
            return Finding(s, "deleted", f"row {s} was deleted: {a.name} holds its hash")
        nxt = by_seq.get(s + 1)
        if nxt is not None and nxt.recomputed(prev, s) == want:
            return Finding(s, "inserted", f"row {s} was inserted: the row anchored as {s} "
                           f"in {a.name} is now row {s + 1}, and the rows after it were "
                           "renumbered and re-hashed")
        if i + 1 < len(hashes) and r.recomputed(want, s + 1) == hashes[i + 1]:
            return Finding(s, "deleted", f"row {s} was deleted: the row now numbered {s} is "
                           f"row {s + 1} in {a.name}, and the rows after it were renumbered "
                           "and re-hashed")
        return Finding(s, "edited", f"row {s} was rewritten: its hash differs from the one "
                       f"in {a.name}, and the rows after it were re-hashed to hide it"
                       + _other_ledger(a, by_seq))
    return None


def _stripped(by_seq: dict[int, Row], signed_ok: set[int], found: list[Finding]) -> None:
    """A good signature whose segment starts at S says row S-1 was signed when it was made
    (a segment starts after the previous signed row, unless it hit MAX_SEGMENT): a row S-1
    without a signature now had it removed."""
    for seq in signed_ok:
        start = starts_of(by_seq[seq])
        before = by_seq.get(start - 1) if start else None
        if before is not None and before.sig is None and seq - start + 1 < MAX_SEGMENT:
            found.append(Finding(before.seq, "unsigned", f"row {before.seq} carried a "
                                 f"signature when row {seq} was signed, and has none now: it "
                                 "was removed"))


def starts_of(r: Row) -> int | None:
    try:
        return Signature.parse(r.sig or "").start
    except ValueError:
        return None


def _unsigned_tail(rows: list[Row], plan: str, signed_ok: set[int], by_seq: dict[int, Row],
                   found: list[Finding]) -> None:
    """After the plan's last good signature, a run of the plan that ends with neither a
    signature nor a reason (a plan that signs always gives one) had its signature removed."""
    mine = [s for s in signed_ok if by_seq[s].plan() == plan]
    if not mine:
        return
    last = max(mine)
    for r in rows:
        if r.seq > last and r.kind == "run_end" and r.sig is None and r.plan() == plan \
                and not _field(r, "unsigned"):
            found.append(Finding(r.seq, "unsigned", f"row {r.seq} (the end of run "
                                 f"{r.run_id}) carries no signature and says of no reason: "
                                 "its signature was removed"))


def _other_ledger(a: Anchor, by_seq: dict[int, Row]) -> str:
    """A hint when the anchor names a ledger that began differently from this one."""
    first = by_seq.get(1)
    if a.ledger and first is not None and first.hash != a.ledger:
        return (f" (or {a.name} was written from another ledger of this plan: its first row "
                f"hashes to {a.ledger[:12]}, this ledger's to {first.hash[:12]})")
    return ""


def _missing_anchors(rows: list[Row], anchors: list[Anchor], plan: str,
                     found: list[Finding], v: Verdict) -> None:
    have = {a.head.seq for a in anchors}
    failed: set[int] = set()
    for r in rows:
        if r.kind == "anchor_failed":
            with contextlib.suppress(ValueError, TypeError, AttributeError, ArithmeticError):
                failed.add(int(_field(r, "seq")))
    ends = [r for r in rows if r.sig is not None and r.kind == "run_end"
            and r.seq not in have and r.seq not in failed and r.plan() == plan]
    last_signed = max((r.seq for r in rows if r.sig is not None and r.kind == "run_end"
                       and r.plan() == plan), default=None)
    for r in ends:
        if r.seq == last_signed and _recent(r.time):
            # the run that just ended may be writing it now
            v.notes.append(f"row {r.seq} (the end of run {r.run_id}, a moment ago) has no "
                           "anchor yet")
            continue
        found.append(Finding(r.seq, "missing_anchor", f"row {r.seq} (the end of run "
                             f"{r.run_id}) has no anchor in the repository: it was deleted "
                             "(or the run was killed between signing and anchoring)"))


def _recent(iso: str) -> bool:
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return False
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return abs((clock.now() - t).total_seconds()) < PENDING_S
