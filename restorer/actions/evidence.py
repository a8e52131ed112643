"""The ledger as evidence: anchoring each signed run in the repository, verifying a plan's
ledger (rows, chain, signatures, anchors), and exporting what an auditor needs to verify it
offline."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from restorer import __version__, clock
from restorer.actions.context import backend_for, backend_options
from restorer.actions.ledger_run import open_ledger, signer_of
from restorer.errors import RestorerError, UsageError
from restorer.ledger import RunRecorder
from restorer.ledger.anchors import read_anchors, write_anchor
from restorer.ledger.chain import Anchor, Row, Signature
from restorer.ledger.signing import PublicKey, parse_public
from restorer.ledger.verify import Verdict, verify
from restorer.plan.load import LoadedPlan
from restorer.storage import open_backend
from restorer.storage.retry import RetryingBackend, RetrySettings

log = logging.getLogger("restorer.ledger")
EXPORT_SCHEMA = "restorer-ledger-export/1"
# an anchor is a few kilobytes: a store that cannot take it in half a minute is down, and
# the run it closes has finished already
ANCHOR_RETRY = RetrySettings(3, 1.0, 5.0, 30.0)


def anchor_run(lp: LoadedPlan, rec: RunRecorder) -> None:
    """Write the run's signed head into the repository; a store that does not take it
    never fails the run: a row records why."""
    closed = rec.closed
    if closed is None or closed.head is None or closed.signature is None:
        return
    anchor = Anchor(lp.name, rec.run_id, closed.time, closed.head, closed.signature,
                    closed.ledger_id)
    try:
        backend = RetryingBackend(open_backend(lp.plan.repository.url, lp.base_dir,
                                               backend_options(lp)), ANCHOR_RETRY)
        try:
            write_anchor(backend, anchor)
        finally:
            backend.close()
    except Exception as e:  # whatever the store does, the run it closes is done
        why = e.message if isinstance(e, RestorerError) else f"{type(e).__name__}: {e}"
        log.warning("plan %s: the run's signed head (row %d) could not be anchored in the "
                    "repository: %s", lp.name, closed.seq, why)
        rec.note("anchor_failed", seq=closed.seq, error=why)


def trusted_keys(lp: LoadedPlan | None, given: tuple[str, ...] | list[str]) -> list[PublicKey]:
    """The keys signatures must be by: those given (the key's text, or a file holding it),
    else the plan's `ledger.public_keys` and the public half of its signing key."""
    keys = []
    for g in given:
        text = g
        if not g.startswith("ed25519:"):
            try:
                text = Path(g).read_text()
            except (OSError, UnicodeDecodeError) as e:
                why = e.strerror if isinstance(e, OSError) else "not text"
                raise UsageError(f"--public-key {g}: not a key, and the file cannot be read "
                                 f"({why})") from None
        keys.append(parse_public(text))
    if keys or lp is None:
        return keys
    keys = [parse_public(k) for k in lp.plan.ledger_public_keys]
    if lp.plan.signing_key is not None:
        try:
            signer = signer_of(lp)
        except RestorerError:
            if not keys:
                raise
            signer = None  # the public keys given in the plan are enough to verify
        if signer is not None and signer.public not in keys:
            keys.append(signer.public)
    return keys


@dataclass
class _Read:
    rows: list[Row]
    where: str
    anchors: list[Anchor] | None  # None: not available (why_not says why)
    unreadable: list[tuple[str, str]]
    why_not: str | None
    hidden: list[str]


def _read(lp: LoadedPlan) -> _Read:
    """The plan's anchors (read first: every anchor listed was written before the rows are
    read, so a run ending meanwhile is no false alarm), then the ledger's rows."""
    anchors: list[Anchor] | None = None
    unreadable: list[tuple[str, str]] = []
    hidden: list[str] = []
    why_not = None
    try:
        backend = backend_for(lp)
        try:
            if backend.exists("config"):
                got = read_anchors(backend)
                anchors, unreadable, hidden = got.found, got.unreadable, got.hidden
            else:
                why_not = f"{backend.location}: no repository there"
        finally:
            backend.close()
    except RestorerError as e:
        why_not = e.message
    ledger = open_ledger(lp)
    try:
        rows = ledger.rows()
        where = ledger.where
    finally:
        ledger.close()
    return _Read(rows, where, anchors, unreadable, why_not, hidden)


def _verified(lp: LoadedPlan, got: _Read, trusted: list[PublicKey],
              rows: list[Row] | None = None) -> Verdict:
    use = got.rows if rows is None else rows
    last = use[-1].seq if use else 0
    # the prefix a report reads may end between a run's end and its anchor_failed note:
    # missing anchors are the whole ledger's question
    v = verify(use, where=got.where, trusted=trusted, missing_anchors=rows is None,
               plan=lp.name, plan_signs=lp.plan.signing_key is not None,
               unreadable_anchors=got.unreadable,
               anchors=None if got.anchors is None else
               [a for a in got.anchors if rows is None or a.head.seq <= last])
    if got.why_not:
        v.notes.append(f"anchors not checked: {got.why_not}")
    for name in got.hidden:
        v.notes.append(f"{name} was deleted or overwritten in the store, which kept it "
                       "(Object Lock): someone tried to remove evidence")
    return v


def verify_plan(lp: LoadedPlan, given: tuple[str, ...] | list[str] = ()) -> Verdict:
    """The plan's ledger verified against its anchors and the trusted keys."""
    return _verified(lp, _read(lp), trusted_keys(lp, given))


def ledger_evidence(lp: LoadedPlan, until: datetime,
                    through: int | None = None) -> tuple[Verdict, Verdict]:
    """For a report: the ledger as it stood at `until` (its rows up to then and up to row
    `through`, and their anchors: the same whenever it is asked, unless someone changed
    them), and the whole ledger as it is now."""
    trusted = trusted_keys(lp, ())
    got = _read(lp)
    cut = until.astimezone(UTC).isoformat(timespec="microseconds")
    before = [r for r in got.rows if r.time <= cut and (through is None or r.seq <= through)]
    last = before[-1].seq if before else 0
    return (_verified(lp, got, trusted, [r for r in got.rows if r.seq <= last]),
            _verified(lp, got, trusted))


@dataclass
class Exported:
    path: Path
    rows: int
    first_seq: int | None
    last_seq: int | None
    anchors: int
    verdict: Verdict


def export_plan(lp: LoadedPlan, since: float | None, out: Path) -> Exported:
    """The rows from the start of the signed segment holding `since` (so every exported row
    is covered by a signature in the file), the plan's anchors for them, and a header."""
    got = _read(lp)
    rows, where = got.rows, got.where
    if got.why_not:
        log.warning("the repository's anchors cannot be read, so the export holds none: %s",
                    got.why_not)
    start = _segment_start(rows, since)
    picked = [r for r in rows if r.seq >= start]
    anchors = None if got.anchors is None else [a for a in got.anchors if a.head.seq >= start]
    verdict = verify(picked, where=where, anchors=anchors, whole=start == 1,
                     trusted=trusted_keys(lp, ()), plan=lp.name,
                     plan_signs=lp.plan.signing_key is not None)
    if got.why_not:
        verdict.notes.append(f"anchors not checked: {got.why_not}")
    header = {"type": "header", "schema": EXPORT_SCHEMA, "plan": lp.name, "ledger": where,
              "exported_at": clock.iso(), "tool_version": __version__,
              "since": None if since is None else clock.from_timestamp(since),
              "from_seq": picked[0].seq if picked else None,
              "to_seq": picked[-1].seq if picked else None,
              "whole": start == 1, "anchors_included": anchors is not None,
              "plan_signs": lp.plan.signing_key is not None,
              "anchors_missing_because": got.why_not}
    lines = [header] + [r.to_json() for r in picked] + [
        {"type": "anchor", **a.to_json()} for a in anchors or []]
    try:
        out.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    return Exported(out, len(picked), header["from_seq"], header["to_seq"],
                    len(anchors or []), verdict)


def _segment_start(rows: list[Row], since: float | None) -> int:
    if since is None or not rows:
        return 1
    cutoff = clock.from_timestamp(since)
    first = next((r for r in rows if r.time >= cutoff), None)
    if first is None:
        return rows[-1].seq + 1
    for r in rows:
        if r.seq >= first.seq and r.sig is not None:
            try:
                return min(first.seq, Signature.parse(r.sig).start)
            except ValueError:
                break
    return first.seq


def verify_export(path: Path, given: tuple[str, ...] | list[str]) -> Verdict:
    """An export verified on its own: no ledger, no repository, no plan."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    rows: list[Row] = []
    anchors: list[Anchor] = []
    header = None
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
            kind = d.get("type")
            if kind == "header":
                header = d
            elif kind == "row":
                rows.append(Row.from_json(d))
            elif kind == "anchor":
                anchors.append(Anchor.from_json(d))
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError,
                RecursionError) as e:
            raise RestorerError(f"{path}:{n}: not a line of a ledger export ({e})",
                                hint="the file was damaged or edited; ask for a new export"
                                ) from None
    if header is None or header.get("schema") != EXPORT_SCHEMA:
        raise RestorerError(f"{path}: not a restorer ledger export (no {EXPORT_SCHEMA} "
                            "header)")
    rows.sort(key=lambda r: r.seq)
    included = header.get("anchors_included", True)
    v = verify(rows, where=str(path), anchors=anchors if included else None,
               trusted=trusted_keys(None, given), plan=header.get("plan"),
               whole=bool(header.get("whole")), plan_signs=bool(header.get("plan_signs")))
    if not included:
        v.notes.append("anchors not checked: the export holds none ("
                       f"{header.get('anchors_missing_because') or 'not read'})")
    return v
