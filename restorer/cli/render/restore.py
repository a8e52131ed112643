"""What `restore` prints: what was restored where, and each file skipped or not restored
(with --json, the result as one document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes, plural

if TYPE_CHECKING:
    from restorer.actions.restore import RestoreResult


def show_restore(res: RestoreResult, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(f"restored snapshot {res.snapshot[:8]} of {res.target} to {res.destination}: "
               f"{plural(res.files, 'file')}, {plural(res.dirs, 'dir')}, "
               f"{plural(res.links, 'symlink')}, "
               f"{human_bytes(res.bytes_written)} in {res.duration:.2f}s")
    for p, why in res.skipped[:20]:
        click.echo(f"  skipped {p}: {why}", err=True)
    for p, err in res.failed[:50]:
        click.echo(f"  NOT RESTORED {p}: {err}", err=True)
