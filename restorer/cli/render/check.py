"""What `check` and `repair index|snapshots` print: what was read, every damaged pack,
index file and snapshot record with what it takes with it, and the repair that would mend
it (with --json, the result as one document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes, plural

if TYPE_CHECKING:
    from restorer.actions.repair import IndexRepair, SnapshotRepair
    from restorer.repo.checker import CheckResult


def show_check(res: CheckResult, pct: float, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(f"{plural(res.snapshots, 'snapshot')}, {plural(res.trees, 'tree')}, "
               f"{res.blobs_referenced} data "
               f"blobs referenced, {res.packs_indexed} packs indexed")
    if pct:
        click.echo(f"read {res.packs_read} packs ({human_bytes(res.bytes_read)})")
    if res.unreferenced_packs and res.unindexed:
        click.echo(f"{len(res.unreferenced_packs)} pack(s) not referenced by any index, "
                   "while snapshots need data that no index names: these packs may hold "
                   "it (an index file is lost, not necessarily the data); do not prune, "
                   "which would delete them", err=True)
    elif res.unreferenced_packs:
        click.echo(f"{len(res.unreferenced_packs)} pack(s) not referenced by any index "
                   "and needed by no snapshot (left by an interrupted run; prune removes "
                   "them)")
    for e in res.errors:
        click.echo(f"error: {e}", err=True)
    for pack, problem in res.damaged_packs.items():
        click.echo(f"damaged pack {pack}: {problem}", err=True)
    for sid, paths in res.affected.items():
        click.echo(f"snapshot {sid[:8]} is affected: {len(paths)} path(s)", err=True)
        for p in paths[:20]:
            click.echo(f"  {p}", err=True)
        if len(paths) > 20:
            click.echo(f"  ... and {len(paths) - 20} more", err=True)
    for what in res.repairs:
        click.echo(f"hint: `restorer repair {what} PLAN --dry-run` shows how it would be "
                   "mended", err=True)
    click.echo("no errors were found" if res.ok else "the repository is damaged")


def show_index_repair(res: IndexRepair, as_json: bool = False) -> None:
    """The rebuilt index: after the repair, and as the preview the prompt shows (text)."""
    if as_json:
        emit_json(res.to_json())
        return
    done = not (res.dry_run or res.declined) and res.written
    click.echo(f"read the headers of {plural(res.packs_read, 'pack')}: "
               f"{plural(res.blobs, 'blob')}; the index has "
               f"{plural(res.index_files_before, 'file')}")
    for name, problem in res.damaged_index.items():
        click.echo(f"damaged index file {name}: {problem}", err=True)
    for pack, problem in res.unreadable_packs.items():
        kept = " (kept from the old index)" if pack in res.kept_from_old_index else \
            " (its blobs cannot be indexed)"
        click.echo(f"pack {pack[:16]}: header unreadable: {problem}{kept}", err=True)
    if res.newly_indexed_packs:
        click.echo(f"{plural(len(res.newly_indexed_packs), 'pack')} no readable index named "
                   "will be indexed")
    if res.dropped_missing_packs:
        click.echo(f"{plural(len(res.dropped_missing_packs), 'indexed pack')} no longer "
                   "exist; their entries are dropped", err=True)
    if done:
        click.echo(f"wrote {plural(len(res.written), 'index file')}; removed "
                   f"{len(res.removed)} old, moved {len(res.moved_aside)} damaged aside to "
                   "damaged/index/")
    elif res.declined:
        click.echo("declined at the prompt; nothing was changed")
    elif res.dry_run:
        click.echo(f"dry run: would write the index anew and replace the "
                   f"{res.index_files_before} index file(s); nothing was changed")


def show_snapshot_repair(res: SnapshotRepair, as_json: bool = False) -> None:
    """The damaged snapshot records: after the repair, and as the preview the prompt shows
    (text)."""
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(f"{plural(res.readable, 'snapshot record')} readable, "
               f"{len(res.damaged)} damaged")
    for sid, problem in res.damaged.items():
        where = res.moved_aside.get(sid)
        tail = f" -> moved to {where}" if where else ""
        click.echo(f"damaged snapshot {sid[:8]}: {problem}{tail}", err=True)
    if res.declined:
        click.echo("declined at the prompt; nothing was changed")
    elif res.dry_run and res.damaged:
        click.echo("dry run: would move these aside to damaged/snapshots/; nothing was changed")
    elif res.moved_aside:
        click.echo("the data only these records use stays until the next prune; put a record "
                   "back into snapshots/ before pruning to keep it")
    elif not res.damaged:
        click.echo("nothing to repair")
