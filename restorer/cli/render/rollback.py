"""What rollback prints: the plan before it acts (--dry-run, the confirmation prompt), and a
summary afterwards that a responder can paste into the incident channel."""

from __future__ import annotations

import shlex
from datetime import datetime

import click

from restorer import clock
from restorer.actions.rollback import CleanupResult, Recovery, RollbackResult, TargetRollback
from restorer.cli.render import emit_json, local_time
from restorer.plan.durations import format_duration as fd


def _age(iso: str) -> str:
    return fd(max(0.0, clock.timestamp() - datetime.fromisoformat(iso).timestamp()))


def _snapshot_line(t: TargetRollback) -> str:
    verified = (f"verified {local_time(t.verified_at)}" if t.verified_at
                else "NOT VERIFIED")
    return (f"snapshot {t.snapshot[:8]} of {local_time(t.snapshot_time)} "
            f"({_age(t.snapshot_time)} old; {verified})")


def _changes(t: TargetRollback) -> str:
    c = t.changes
    if "aws_calls" in c:
        return "these AWS calls:\n      " + "\n      ".join(c["aws_calls"])
    if "database" in c:
        return (f"database {c['database']} is replaced by a restore of the snapshot; the "
                "current one is kept under a dated name until `rollback --cleanup`")
    text = f"{c['added']} added, {c['changed']} changed, {c['removed']} removed"
    if c.get("kept"):
        text += f"; {c['kept']} kept as they are (excluded from backups)"
    for kind in ("added", "changed", "removed", "kept"):
        ex = c["examples"].get(kind, [])
        if ex:
            text += f"\n      {kind}: " + ", ".join(ex[:5]) + (" ..." if c[kind] > 5 else "")
    return text


def _warn_unverified(res: RollbackResult) -> None:
    if res.unverified:
        click.secho("WARNING: at least one target goes back to a snapshot that was never "
                    "verified (--allow-unverified)", fg="red", bold=True, err=True)


def show_rollback(res: RollbackResult, plan: str, dry_run: bool, as_json: bool) -> None:
    """The outcome of `rollback [--undo]`: the plan for a dry run, else the summary."""
    if as_json:
        emit_json(res.to_json())
    elif dry_run:
        render_plan(res, plan)
    else:
        render_result(res, plan)


def show_cleanup(res: CleanupResult, as_json: bool) -> None:
    """The outcome of `rollback --cleanup`."""
    if as_json:
        emit_json(res.to_json())
    else:
        render_cleanup(res)


def render_plan(res: RollbackResult, plan: str) -> None:
    render_recoveries(res.recovered, res.dry_run)
    what = "undo of rollback " + res.undo_of[:8] if res.undo_of else "rollback"
    click.echo(f"{what} of plan {res.plan}" + (" (dry run: nothing is changed)"
                                               if res.dry_run else ""))
    _warn_unverified(res)
    for t in res.targets:
        click.echo(f"  {t.target} ({t.kind}) at {t.live}")
        click.echo(f"    to   {_snapshot_line(t)}")
        click.echo(f"    does {_changes(t)}")
        click.echo("    first a safety snapshot of its current state, tagged pre-rollback")
    click.echo("  rollback.before hooks: " + ("; ".join(res.before_hooks) or "none"))
    click.echo("  rollback.after hooks:  " + ("; ".join(res.after_hooks) or "none"))
    click.echo(f"  then the plan's checks against the live targets; undo with: "
               f"restorer rollback {shlex.quote(plan)} --undo --yes")


def render_result(res: RollbackResult, plan: str) -> None:
    render_recoveries(res.recovered, False)
    _warn_unverified(res)
    tm = res.timings
    steps = ", ".join(f"{label} {fd(tm[k])}" for k, label in (
        ("decide_s", "decide"), ("restore_s", "restore"),
        ("safety_snapshot_s", "safety snapshot"), ("swap_s", "swap"), ("checks_s", "checks"))
        if k in tm)
    what = f"Undo of rollback {res.undo_of[:8]}" if res.undo_of else "Rollback"
    if res.declined:
        click.echo(f"{what} of plan {res.plan}: declined at the prompt; nothing was changed")
        return
    if res.ok:
        head = f"{what} of plan {res.plan}: done in {fd(tm.get('total_s', 0))} ({steps})"
    elif res.outcome == "checks_failing":
        failing = sum(not c["passed"] for c in res.checks)
        head = (f"{what} of plan {res.plan}: done in {fd(tm.get('total_s', 0))} ({steps}); "
                f"{failing} of {len(res.checks)} checks fail on the state it returned to "
                "(the state before the rollback)")
    else:
        head = (f"{what} of plan {res.plan}: FAILED after {fd(tm.get('total_s', 0))} "
                f"({steps}); targets: {res.state}")
    click.echo(head)
    for t in res.targets:
        click.echo(f"- {t.target}: {t.live} -> {_snapshot_line(t)}: {t.state.upper()}"
                   + ("" if t.atomic else " (swapped with two renames: the filesystem "
                      "has no atomic exchange)"))
        if t.kept:
            click.echo(f"  replaced data kept at {', '.join(t.kept)}")
        if t.error:
            click.echo(f"  {t.error}")
    if res.checks:
        passed = sum(c["passed"] for c in res.checks)
        click.echo(f"Checks after the swap: {passed}/{len(res.checks)} passed")
        for c in res.checks:
            if not c["passed"]:
                click.echo(f"  FAILED {c['target']} {c['name']}: {c['detail']}")
    for h in res.hooks:
        code = "killed at its timeout" if h.exit_code is None else f"exit {h.exit_code}"
        click.echo(f"Hook rollback.{h.phase}: `{h.command}`: {code} in {fd(h.duration_s)}")
        for line in h.output.splitlines()[-5:]:
            click.echo(f"  | {line}")
    safety = ", ".join(f"{t.target} {t.safety_snapshot[:8]}" for t in res.targets
                       if t.safety_snapshot)
    if safety:
        click.echo(f"Safety snapshots (pre-rollback): {safety}")
        click.echo(f"Undo: restorer rollback {shlex.quote(plan)} --undo --yes")
    if res.error:
        click.echo(f"restorer: error: {res.error}", err=True)
    for w in res.warnings:
        click.echo(f"restorer: warning: {w}", err=True)
    for n in res.notes:
        click.echo(f"Note: {n}")


def render_recoveries(recs: list[Recovery], dry_run: bool) -> None:
    for rv in recs:
        verb = "would be put back" if dry_run else "put back"
        click.echo(f"rollback {rv.run_id[:8]} was killed ({rv.reached}); {verb} first:")
        for target, what in rv.targets.items():
            click.echo(f"  {target}: {what}")
        if rv.error:
            click.secho(f"  could not be put back: {rv.error}", fg="red", err=True)
        if rv.reached != "started":
            click.echo("  its rollback.after hooks may not have run: check that the service "
                       "is up")


def render_cleanup(res: CleanupResult) -> None:
    render_recoveries(res.recovered, res.dry_run or res.declined)
    if res.declined:
        click.echo("declined at the prompt; nothing was removed")
        return
    verb = "would remove" if res.dry_run else "removed"
    for item in res.items:
        click.echo(f"{verb} {item}")
    if not res.items:
        click.echo("nothing to clean up")
    elif res.dry_run:
        click.echo("(dry run: nothing was removed)")
