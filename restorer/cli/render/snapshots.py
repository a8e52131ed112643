"""What `snapshots` and `diff` print: the plan's snapshots as a table, and the changes
between two of them (with --json, one document each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes, local_time, plural, table

if TYPE_CHECKING:
    from restorer.repo.diff import Change
    from restorer.repo.snapshot import Snapshot


def show_snapshots(snaps: list[Snapshot], target: str | None, as_json: bool) -> None:
    if as_json:
        emit_json([{"id": s.id, "short_id": s.short_id, "time": s.time, "plan": s.plan,
                    "target": s.target, "kind": s.kind, "hostname": s.hostname,
                    "username": s.username, "paths": s.paths, "tags": s.tags,
                    "parent": s.parent, "summary": s.summary,
                    "warnings": len(s.warnings)} for s in snaps])
        return
    if not snaps:
        click.echo("no snapshots yet" + (f" of target {target}" if target else ""))
        return
    rows = [[s.short_id, local_time(s.time), s.target, s.hostname,
             str(s.summary.get("total_files", "")), human_bytes(s.summary.get("total_bytes", 0)),
             ",".join(s.tags), " ".join(s.paths)] for s in snaps]
    table(["ID", "TIME", "TARGET", "HOST", "FILES", "SIZE", "TAGS", "PATHS"], rows)
    click.echo(plural(len(snaps), "snapshot"))


def show_diff(a: Snapshot, b: Snapshot, changes: list[Change], as_json: bool) -> None:
    if as_json:
        emit_json({"from": a.id, "to": b.id, "changes": [c.to_json() for c in changes]})
        return
    for c in changes:
        click.echo(f"{c.status}  {c.path}")
    counts = {k: sum(1 for c in changes if c.status == k) for k in "+-MU"}
    click.echo(f"{a.short_id} -> {b.short_id}: {counts['+']} added, {counts['-']} removed, "
               f"{counts['M']} modified, {counts['U']} metadata changed")
