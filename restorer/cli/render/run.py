"""What `run [--due]` prints: one line per job as it ends (a JSON line under
--log-format json), then "nothing due" or, with --json, every job as one document."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json

if TYPE_CHECKING:
    from restorer.actions.run_due import JobResult


def show_job(r: JobResult, as_json: bool, structured: bool) -> None:
    """One job's result, as it ends (nothing with --json: the document comes at the end)."""
    if as_json:
        return
    if structured:
        from restorer.cli.logfmt import json_line

        d = r.to_json()
        level = "error" if r.failed else "info"
        msg = f"plan {r.plan}: {r.job} {r.outcome} in {r.duration_s:.1f}s" + (
            f": {r.error}" if r.error else "")
        click.echo(json_line(level, "job", msg, **{k: v for k, v in d.items()
                                                    if k != "time"}, started=d["time"]))
    else:
        extra = f": {r.error}" if r.error else ""
        click.echo(f"{r.time} plan {r.plan}: {r.job} {r.outcome} in {r.duration_s:.1f}s"
                   f"{extra}")


def show_run(results: list[JobResult], as_json: bool, structured: bool) -> None:
    """After the last job: every result with --json, else "nothing due" when no job ran."""
    if as_json:
        emit_json([r.to_json() for r in results])
    elif not any(r.outcome not in ("not due",) for r in results) and not structured:
        click.echo("nothing due")
