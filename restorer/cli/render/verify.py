"""What `verify` and `status` print: a table per target of restore time against the RTO,
data age against the RPO, and the checks (failed ones with their detail on stderr); with
--json, one document."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from restorer.cli.render import emit_json, table
from restorer.plan.durations import format_duration as fd

if TYPE_CHECKING:
    from restorer.actions.verify import TargetStatus, TargetVerification


def show_verify(results: list[TargetVerification], as_json: bool) -> None:
    if as_json:
        emit_json([r.to_json() for r in results])
        return
    rows = []
    for r in results:
        rto = "-" if r.restore_s is None else fd(r.restore_s) + (
            f" / {fd(r.rto_s)}" if r.rto_s else "") + (" BREACH" if r.rto_breached
                                                         else "")
        age = "none verified" if r.data_age_s is None else fd(r.data_age_s)
        rpo = age + (f" / {fd(r.rpo_s)}" if r.rpo_s else "") + (
            " BREACH" if r.rpo_breached else "")
        passed = f"{sum(c.passed for c in r.checks)}/{len(r.checks)}"
        rows.append([r.target, (r.snapshot or "-")[:8], rto, rpo, passed,
                     "PASS" if r.ok else "FAIL"])
    table(["TARGET", "SNAPSHOT", "RESTORE / RTO", "DATA AGE / RPO", "CHECKS",
           "VERDICT"], rows)
    for r in results:
        if r.error:
            click.echo(f"{r.target}: {r.error}", err=True)
        for c in r.checks:
            if not c.passed:
                click.echo(f"{r.target}: check {c.name} FAILED: {c.detail}", err=True)
        if r.kept:
            click.echo(f"{r.target}: staging kept at {r.staging}")


def show_status(rows_all: list[TargetStatus], as_json: bool) -> None:
    if as_json:
        emit_json([r.to_json() for r in rows_all])
        return

    def ago(x: float | None) -> str:
        return "never" if x is None else f"{fd(x)} ago"

    rows = []
    for r in rows_all:
        rpo = ago(r.data_age_s) + (f" / {fd(r.rpo_s)}" if r.rpo_s else "") + (
            " BREACH" if r.rpo_breached else "")
        rto = ("-" if r.last_restore_s is None else fd(r.last_restore_s)) + (
            f" / {fd(r.rto_s)}" if r.rto_s else "") + (" BREACH" if r.rto_breached else "")
        tested = ago(r.last_test_age_s) + (
            f" / {fd(r.verify_every_s)}" if r.verify_every_s else "") + (
            " BREACH" if r.verify_breached else "")
        rows.append([r.plan, r.target, r.kind,
                     f"{(r.latest_snapshot or '-')[:8]} {ago(r.latest_age_s)}",
                     f"{(r.verified_snapshot or '-')[:8]}", rpo, rto, tested])
    table(["PLAN", "TARGET", "KIND", "LATEST BACKUP", "VERIFIED", "VERIFIED AGE / RPO",
           "RESTORE / RTO", "LAST TEST / EVERY"], rows)
