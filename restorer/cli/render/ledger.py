"""What `restorer ledger` prints."""

from __future__ import annotations

from pathlib import Path

import click

from restorer.cli.render import emit_json
from restorer.ledger.signing import PublicKey


def show_keygen(path: Path, public: PublicKey, as_json: bool) -> None:
    if as_json:
        emit_json({"private_key_file": str(path), "public_key": public.text,
                   "fingerprint": public.fingerprint})
        return
    click.echo(f"wrote the private signing key to {path} (mode 0600; keep it readable only "
               "by the user that runs restorer)")
    click.echo(f"public key:  {public.text}")
    click.echo(f"fingerprint: {public.fingerprint}")
