"""What `restorer ledger` prints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from restorer.cli.render import emit_json
from restorer.ledger.signing import PublicKey

if TYPE_CHECKING:
    from restorer.actions.evidence import Exported
    from restorer.ledger.verify import Verdict


def show_keygen(path: Path, public: PublicKey, as_json: bool) -> None:
    if as_json:
        emit_json({"private_key_file": str(path), "public_key": public.text,
                   "fingerprint": public.fingerprint})
        return
    click.echo(f"wrote the private signing key to {path} (mode 0600; keep it readable only "
               "by the user that runs restorer)")
    click.echo(f"public key:  {public.text}")
    click.echo(f"fingerprint: {public.fingerprint}")


def verdict_json(v: Verdict, last_hash: str | None = None) -> dict[str, Any]:
    return {**v.to_json(), "first_broken_row": v.first.seq if v.first else None,
            "problem": v.first.message if v.first else None,
            "last_hash": last_hash if v.intact else None}


def show_verdict(v: Verdict, as_json: bool, last_hash: str | None = None) -> None:
    """What a verification found (a broken ledger is then an error; the caller raises it,
    so the first finding goes to stderr as well)."""
    if as_json:
        emit_json(verdict_json(v, last_hash))
        return
    click.echo(f"ledger {v.where}: {v.summary()}")
    for f in v.findings[1:10]:
        click.echo(f"  also: {f.message}")
    if len(v.findings) > 10:
        click.echo(f"  ... and {len(v.findings) - 10} more")
    for n in v.notes:
        click.echo(f"  note: {n}")
    if v.intact and last_hash:
        click.echo(f"  last hash {last_hash}")


def show_export(e: Exported, as_json: bool) -> None:
    if as_json:
        emit_json({"file": str(e.path), "rows": e.rows, "from_seq": e.first_seq,
                   "to_seq": e.last_seq, "anchors": e.anchors,
                   "verification": e.verdict.to_json()})
        return
    span = f"rows {e.first_seq}–{e.last_seq}" if e.rows else "no rows"
    click.echo(f"wrote {span} and {e.anchors} anchor{'s' if e.anchors != 1 else ''} to "
               f"{e.path}")
    click.echo(f"as exported: {e.verdict.summary()}")
    click.echo(f"verify it anywhere: restorer ledger verify {e.path} --public-key KEY")
