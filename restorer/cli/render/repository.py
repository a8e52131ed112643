"""What `init`, `copy` and `unlock` print: the repository created, the snapshots copied,
the locks removed and kept (with --json, one document each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes

if TYPE_CHECKING:
    from restorer.actions.copy import CopyResult
    from restorer.repo.lock import LockInfo
    from restorer.repo.repository import Repository


def show_init(repo: Repository, as_json: bool) -> None:
    info = {"repository": repo.backend.location, "id": repo.config["id"],
            "encrypted": repo.sealer.encrypted}
    if as_json:
        emit_json(info)
    else:
        enc = "encrypted (AES-256-GCM)" if repo.sealer.encrypted else "not encrypted"
        click.echo(f"created repository {info['id'][:8]} at {info['repository']}, {enc}")


def show_copy(res: CopyResult, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_json())
        return
    if res.created:
        click.echo(f"created {res.destination} as a copy of {res.source}")
    click.echo(f"copied {len(res.snapshots_copied)} snapshot(s) ({res.snapshots_present} "
               f"already there), {res.packs_copied} pack(s), {human_bytes(res.bytes_copied)} "
               f"in {res.duration:.2f}s to {res.destination}")


def show_unlock(removed: list[LockInfo], kept: list[LockInfo], as_json: bool) -> None:
    if as_json:
        emit_json({"removed": [lk.describe() for lk in removed],
                   "kept": [lk.describe() for lk in kept]})
        return
    for lk in removed:
        click.echo(f"removed {lk.describe()}")
    for lk in kept:
        click.echo(f"kept live {lk.describe()} (use --all if you are sure it is gone)")
    if not removed and not kept:
        click.echo("no locks")
