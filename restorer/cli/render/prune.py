"""What `prune [--dry-run]` prints: every snapshot with `keep` and why, or `FORGET`, then
the packs deleted and repacked and the bytes freed (with --json, one document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes, local_time, table

if TYPE_CHECKING:
    from restorer.actions.prune import PruneResult


def show_prune(res: PruneResult, dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_json())
        return
    rows = []
    for target, ds in res.decisions.items():
        for d in ds:
            rows.append([target, d.snapshot.id[:8], local_time(d.snapshot.time),
                         "keep" if d.keep else "FORGET", ", ".join(d.reasons)])
    if rows:
        table(["TARGET", "SNAPSHOT", "TIME", "", "WHY KEPT"], rows)
    r = res.repo
    assert r is not None
    verb = "would forget" if dry_run else "forgot"
    click.echo(f"{verb} {len(res.forgotten)} snapshot(s); "
               f"{'would delete' if dry_run else 'deleted'} "
               f"{len(r.delete_packs) + len(r.orphan_packs)} pack(s), "
               f"{'would repack' if dry_run else 'repacked'} {len(r.repack_packs)}; "
               f"{human_bytes(r.bytes_freed)} {'would be ' if dry_run else ''}freed")
    if res.untouched:
        click.echo(f"{len(res.untouched)} snapshot(s) of targets no longer in the plan were "
                   "left alone")
