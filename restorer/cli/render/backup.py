"""What `backup` prints: per target the snapshot saved and what it read and added, or why
it failed (with --json, the result as one document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes

if TYPE_CHECKING:
    from restorer.actions.backup import BackupResult


def show_backup(res: BackupResult, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_json())
        return
    if res.initialized:
        click.echo(f"created repository for plan {res.plan}")
    for t in res.targets:
        if not t.ok:
            click.echo(f"target {t.target}: FAILED: {t.error}", err=True)
            if t.hint:
                click.echo(f"Hint: {t.hint}", err=True)
            continue
        s = t.summary
        parent = f" (parent {t.parent[:8]})" if t.parent else ""
        click.echo(f"target {t.target}: snapshot {t.snapshot[:8]} saved{parent}")  # type: ignore[index]
        if "snapshots" in s:  # ebs, rds: the AWS snapshot and its copies
            click.echo("  AWS snapshots: " + ", ".join(
                f"{region} {sid}" for region, sid in s["snapshots"].items())
                + (" (adopted from an interrupted run)" if s.get("adopted") else "")
                + f" in {t.duration:.1f}s")
            continue
        if s.get("stream"):  # a database dump or a command's output: one stream
            click.echo(f"  dump: {human_bytes(s['bytes_read'])} read in {t.duration:.2f}s")
        else:
            click.echo(
                f"  files: {s['files_new']} new, {s['files_changed']} changed, "
                f"{s['files_unmodified']} unmodified; {human_bytes(s['bytes_read'])} read "
                f"of {human_bytes(s['total_bytes'])} in {t.duration:.2f}s")
        click.echo(f"  added to the repository: {human_bytes(s['data_added'])} "
                   f"({human_bytes(s['data_added_stored'])} stored)")
        for w in t.warnings[:20]:
            click.echo(f"  warning: {w}", err=True)
        if len(t.warnings) > 20:
            click.echo(f"  ... and {len(t.warnings) - 20} more warnings", err=True)
