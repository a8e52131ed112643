"""What `history` prints: the plan's runs, newest first, each with its phases (--verify-chain
prints a verification, render/ledger.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, human_bytes, local_time

if TYPE_CHECKING:
    from restorer.actions.ledger_run import Run


def show_history(rs: list[Run], since: str | None, as_json: bool) -> None:
    if as_json:
        emit_json([r.to_json() for r in rs])
        return
    if not rs:
        click.echo("no runs recorded" + (f" in the last {since}" if since else ""))
        return
    for r in rs:
        dur = f"{r.duration_s:.2f}s" if r.duration_s is not None else "-"
        code = "" if r.exit_code is None else f"exit {r.exit_code}"
        click.echo(f"{local_time(r.started)}  {r.command:<8} {r.outcome:<11} {code:<7} "
                   f"{dur:>9}  {r.user}@{r.host}  run {r.run_id[:8]}")
        if r.error:
            click.echo(f"    error: {r.error}")
        for ph in r.phases:
            tgt = f" {ph['target']}" if ph.get("target") else ""
            what = (f" {ph['check']}" if ph.get("check") else
                    f" {ph['hook']} `{ph['command']}` exit {ph.get('exit_code')}"
                    if ph.get("hook") else "")
            extra = f" snapshot {ph['snapshot'][:8]}" if ph.get("snapshot") else ""
            size = f" {human_bytes(ph['bytes'])}" if ph.get("bytes") else ""
            click.echo(f"    {ph['phase']}{tgt}{what}: {ph['outcome']} "
                       f"{ph['duration_s']:.2f}s{size}{extra}")
            if ph.get("outcome") not in ("ok", None) and (ph.get("error") or ph.get("detail")):
                click.echo(f"      {ph.get('error') or ph.get('detail')}")
