"""The `restorer` command: thin Click commands that parse, call one action, render, and exit.

Exit codes: 0 done, 1 the operation failed, 2 bad usage or invalid plan,
3 partly done (some targets failed or some files were not saved), 4 another run holds the lock.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from restorer import __version__, clock
from restorer.actions.ledger_run import recorded_run
from restorer.errors import PartialError, RestorerError, UsageError
from restorer.outcome import Outcome, exit_code

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the operation failed; 2 bad usage or invalid plan; "
    "3 partly done (some targets failed or some files were not saved); "
    "4 another run holds the repository lock."
)


def _setup_logging(fmt: str, verbose: int, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from restorer.cli.logfmt import JSONFormatter

        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("restorer: %(levelname)s: %(message)s"))
    root = logging.getLogger("restorer")
    root.handlers[:] = [handler]
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose == 1 else logging.WARNING)
    root.setLevel(level)
    root.propagate = False


def _load(plan: str) -> Any:
    """The plan, refused (exit 2, file, line, key and fix) when it is invalid, including
    when it asks a kind for what the kind cannot do: every command, not only validate."""
    from restorer.targets import load_checked

    return load_checked(plan)


def _progress(ctx: click.Context, as_json: bool) -> Any:
    from restorer.cli.progress import make_progress

    return make_progress(enabled=not as_json and not ctx.obj.get("quiet"))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON on stdout.")
lock_wait_option = click.option(
    "--lock-wait", default="0s", show_default=True, metavar="DURATION",
    help="Wait this long for another run's lock before giving up with exit 4.")
# readers only: a writer without a lock could commit data a concurrent prune is deleting
no_lock_option = click.option(
    "--no-lock", is_flag=True,
    help="Read the repository without taking a lock (a read-only repository); nothing may "
    "prune it meanwhile.")


def _duration(text: str) -> float:
    from restorer.plan.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="restorer")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Format of log lines on stderr (json for cron/collectors).")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, log_format: str, verbose: int, quiet: bool, debug: bool) -> None:
    """Back up, restore, verify and roll back what a plan declares."""
    ctx.ensure_object(dict)
    ctx.obj.update(debug=debug, quiet=quiet)
    _setup_logging(log_format, verbose, quiet)


# --- plans ------------------------------------------------------------------------------


@cli.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-env", is_flag=True,
              help="Check the plan's shape only, not secrets or paths on this machine.")
@json_option
def validate(plans: tuple[str, ...], no_env: bool, as_json: bool) -> int:
    """Check plan files: shape, keys, secrets and paths. Lists every problem; exit 2 if any."""
    from restorer.cli.render.plans import show_validate
    from restorer.plan.load import validate_plan
    from restorer.targets import plan_problems

    outcomes: list[tuple[str, Any]] = []

    def each_plan() -> Iterator[tuple[str, Any]]:  # checked one by one as they are shown
        for p in plans:
            try:
                outcomes.append((p, validate_plan(p, environment=not no_env,
                                                  checks=(plan_problems,))))
            except RestorerError as e:
                outcomes.append((p, e))
            yield outcomes[-1]

    show_validate(each_plan(), as_json)
    bad = any(isinstance(found, RestorerError) or found for _, found in outcomes)
    return exit_code(Outcome.USAGE if bad else Outcome.OK)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of plan files (for editor completion and CI checks)."""
    from restorer.cli.render.plans import show_schema
    from restorer.plan.models import Plan

    s = Plan.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "restorer plan"
    show_schema(s)


# --- repository -------------------------------------------------------------------------


@cli.group("ledger")
def ledger_group() -> None:
    """The ledger as evidence: signing keys, verification, export for auditors."""


@ledger_group.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the new private key (created with mode 0600; never "
              "overwritten).")
@json_option
def ledger_keygen(out: str, as_json: bool) -> int:
    """Make an Ed25519 signing key for the ledger; print its public key and fingerprint."""
    from restorer.cli.render.ledger import show_keygen
    from restorer.ledger.signing import write_new_key

    path = Path(out)
    show_keygen(path, write_new_key(path), as_json)
    return exit_code(Outcome.OK)


_public_key_option = click.option(
    "--public-key", "public_keys", multiple=True, metavar="KEY",
    help="A trusted public key (ed25519:BASE64 as keygen prints it, or a file holding it); "
    "repeat for several. Default: the plan's own signing key.")


def _broken(v: Any) -> RestorerError:
    return RestorerError(f"ledger {v.where}: {v.first.message}",
                         hint="the ledger was changed outside restorer; keep a copy of it "
                         "and of the repository's anchors/ for the investigation")


@ledger_group.command("verify")
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@_public_key_option
@json_option
def ledger_verify(source: str | None, public_keys: tuple[str, ...], as_json: bool) -> int:
    """Check every row hash, the chain, every signature and every anchor of a plan's
    ledger, or of an export (`ledger export`) with no ledger or repository at hand; exit 1
    naming the first row that fails and why."""
    from restorer.actions.evidence import verify_export, verify_plan
    from restorer.cli.render.ledger import show_verdict

    if source is not None and _is_export(Path(source)):
        v = verify_export(Path(source), public_keys)
    elif source is not None:
        v = verify_plan(_load(source), public_keys)
    else:
        from restorer.actions.evidence import trusted_keys
        from restorer.ledger import Ledger
        from restorer.ledger.verify import verify

        ledger = Ledger.open(None, Path.cwd())
        try:
            v = verify(ledger.rows(), where=ledger.where,
                       trusted=trusted_keys(None, public_keys))
        finally:
            ledger.close()
        v.notes.append("anchors not checked: give the plan, whose repository holds them")
    show_verdict(v, as_json)
    if not v.intact:
        raise _broken(v)
    return exit_code(Outcome.OK)


def _is_export(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return first.startswith(b"{") and b'"type": "header"' in first


@ledger_group.command("export")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--since", default=None, metavar="DURATION",
              help="Rows of the last DURATION (e.g. 90d), from the start of the signed "
              "segment that holds its first row; default: all.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The JSON Lines file to write.")
@json_option
def ledger_export(plan: str, since: str | None, out: str, as_json: bool) -> int:
    """Write the ledger rows, signatures and anchors an auditor needs to verify the plan's
    record offline: `restorer ledger verify FILE --public-key KEY`."""
    from restorer.actions.evidence import export_plan
    from restorer.cli.render.ledger import show_export

    cutoff = clock.timestamp() - _duration(since) if since else None
    show_export(export_plan(_load(plan), cutoff, Path(out)), as_json)
    return exit_code(Outcome.OK)


@cli.command()
@json_option
def kinds(as_json: bool) -> None:
    """What each target kind can do: backup, restore, verify, rollback, prune."""
    from restorer.cli.render.plans import show_kinds

    show_kinds(as_json)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@json_option
def init(plan: str, as_json: bool) -> None:
    """Create the plan's repository (encrypted when the plan gives a password)."""
    from restorer.actions.context import init_repository
    from restorer.cli.render.repository import show_init

    lp = _load(plan)
    with recorded_run(lp, "init") as run:
        repo = init_repository(lp)
        run.record_phase("init", 0.0, encrypted=repo.sealer.encrypted)
    show_init(repo, as_json)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Back up only this target (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Add a tag to the snapshots (repeatable).")
@click.option("--init", "init_", is_flag=True, help="Create the repository if it does not exist.")
@lock_wait_option
@json_option
@click.pass_context
def backup(ctx: click.Context, plan: str, targets: tuple[str, ...], tags: tuple[str, ...],
           init_: bool, lock_wait: str, as_json: bool) -> int:
    """Take one snapshot of each target (all by default)."""

    from restorer.actions.backup import run_backup
    from restorer.cli.render.backup import show_backup

    lp = _load(plan)
    with recorded_run(lp, "backup") as run:
        res = run_backup(lp, targets, init=init_, tags=tags, lock_wait=_duration(lock_wait),
                         progress=_progress(ctx, as_json), run=run)
        show_backup(res, as_json)
        run.outcome = res.outcome
    return exit_code(res.outcome)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--target", metavar="NAME", help="Only snapshots of this target.")
@json_option
def snapshots(plan: str, target: str | None, as_json: bool) -> None:
    """List snapshots, oldest first."""
    from restorer.actions.inspect import list_snapshots
    from restorer.cli.render.snapshots import show_snapshots

    lp = _load(plan)
    show_snapshots(list_snapshots(lp, target), target, as_json)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("snapshot")
@click.option("--target", metavar="NAME", help="Target whose snapshot SNAPSHOT names "
              "(needed for 'latest' when the plan has several).")
@click.option("--to", "dest", required=True, metavar="DIR|DSN|PATH",
              help="Where to restore: a directory (files targets, created if missing), a "
              "database DSN (postgres), a file path (sqlite), or $RESTORER_TO for a command "
              "target's restore command.")
@click.option("--include", multiple=True, metavar="PATTERN",
              help="Restore only matching paths (relative to the snapshot root; repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in --to.")
@lock_wait_option
@no_lock_option
@json_option
@click.pass_context
def restore(ctx: click.Context, plan: str, snapshot: str, target: str | None, dest: str,
            include: tuple[str, ...], overwrite: bool, lock_wait: str, no_lock: bool,
            as_json: bool) -> None:
    """Restore SNAPSHOT (an id prefix, or 'latest') into a directory."""
    from restorer.actions.restore import run_restore
    from restorer.cli.render.restore import show_restore

    lp = _load(plan)
    with recorded_run(lp, "restore") as run:
        # a DSN is not a path (Path would fold its '//')
        res = run_restore(lp, snapshot, dest, target=target, include=list(include) or None,
                          overwrite=overwrite, lock_wait=_duration(lock_wait),
                          progress=_progress(ctx, as_json), run=run, no_lock=no_lock)
        show_restore(res, as_json)
        if res.failed:  # inside the run: the ledger records it as failed
            raise RestorerError(
                f"{len(res.failed)} file(s) could not be restored because their data is "
                "damaged or missing; every other file was restored and verified",
                hint="run `restorer check PLAN --read-data` to see the damage; restore those "
                "files from an older snapshot",
            )


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("snap_a")
@click.argument("snap_b")
@json_option
def diff(plan: str, snap_a: str, snap_b: str, as_json: bool) -> None:
    """Show what changed from SNAP_A to SNAP_B (+ added, - removed, M modified, U metadata)."""
    from restorer.actions.inspect import diff_snapshots
    from restorer.cli.render.snapshots import show_diff

    lp = _load(plan)
    a, b, changes = diff_snapshots(lp, snap_a, snap_b)
    show_diff(a, b, changes, as_json)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--read-data", is_flag=True, help="Read and verify every pack file.")
@click.option("--read-data-subset", type=click.FloatRange(0, 100, min_open=True),
              metavar="PERCENT", help="Read and verify a random PERCENT of the pack files.")
@lock_wait_option
@no_lock_option
@json_option
@click.pass_context
def check(ctx: click.Context, plan: str, read_data: bool, read_data_subset: float | None,
          lock_wait: str, no_lock: bool, as_json: bool) -> int:
    """Verify the repository's structure (and with --read-data, every stored byte)."""
    from restorer.actions.inspect import check_repository
    from restorer.cli.render.check import show_check
    from restorer.errors import UsageError

    if read_data and read_data_subset is not None:
        raise UsageError("give --read-data or --read-data-subset, not both")
    pct = 100.0 if read_data else (read_data_subset or 0.0)
    lp = _load(plan)
    with recorded_run(lp, "check") as run:
        res = check_repository(lp, pct, progress=_progress(ctx, as_json),
                               lock_wait=_duration(lock_wait), run=run, no_lock=no_lock)
        show_check(res, pct, as_json)
        run.outcome = res.outcome
    return exit_code(res.outcome)


@cli.group()
def repair() -> None:
    """Mend damaged repository metadata (index, snapshot records); nothing is deleted
    that could be kept: damaged files are moved aside under damaged/."""


def _repair(plan: str, what: str, dry_run: bool, yes: bool, lock_wait: str, as_json: bool,
            action: Any, show: Any, question: str) -> int:
    confirm = _confirmer(dry_run, yes, f"repair {what} rewrites repository metadata",
                         "nothing was changed", "repair", show, question)
    lp = _load(plan)
    command = f"repair {what}" + (" --dry-run" if dry_run else "")
    with recorded_run(lp, command) as run:
        res = action(lp, dry_run=dry_run, lock_wait=_duration(lock_wait), confirm=confirm,
                     run=run)
        run.outcome = res.outcome
        show(res, as_json)
    return exit_code(res.outcome)


@repair.command("index")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Read and report; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask (required when not on a terminal).")
@lock_wait_option
@json_option
def repair_index_cmd(plan: str, dry_run: bool, yes: bool, lock_wait: str,
                     as_json: bool) -> int:
    """Rebuild the index from the packs' own headers; damaged index files go to
    damaged/index/."""
    from restorer.actions.repair import repair_index
    from restorer.cli.render.check import show_index_repair

    return _repair(plan, "index", dry_run, yes, lock_wait, as_json, repair_index,
            show_index_repair, "Write the new index and replace the old index files?")


@repair.command("snapshots")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List the damaged records; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask (required when not on a terminal).")
@lock_wait_option
@json_option
def repair_snapshots_cmd(plan: str, dry_run: bool, yes: bool, lock_wait: str,
                         as_json: bool) -> int:
    """Move snapshot records that cannot be read aside to damaged/snapshots/ (never
    deleted)."""
    from restorer.actions.repair import repair_snapshots
    from restorer.cli.render.check import show_snapshot_repair

    return _repair(plan, "snapshots", dry_run, yes, lock_wait, as_json, repair_snapshots,
            show_snapshot_repair, "Move these snapshot records aside?")


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--to", "to", required=True, metavar="URL|PLAN",
              help="Destination: a repository URL (file://, s3://, sftp://) or a plan file "
              "whose repository block (endpoint, SSH options) names it.")
@click.option("--target", metavar="NAME", help="Copy only this target's snapshots.")
@lock_wait_option
@json_option
@click.pass_context
def copy(ctx: click.Context, plan: str, to: str, target: str | None, lock_wait: str,
         as_json: bool) -> int:
    """Copy snapshots to another repository as they are (no re-chunking); repeatable."""
    from restorer.actions.copy import run_copy
    from restorer.cli.render.repository import show_copy

    lp = _load(plan)
    with recorded_run(lp, "copy") as run:
        res = run_copy(lp, to, target=target, lock_wait=_duration(lock_wait),
                       progress=_progress(ctx, as_json))
        run.record_phase("copy", res.duration, bytes=res.bytes_copied,
                         snapshots_copied=len(res.snapshots_copied),
                         packs_copied=res.packs_copied)
        show_copy(res, as_json)
        run.outcome = res.outcome
    return exit_code(res.outcome)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Verify only this target (repeatable).")
@click.option("--snapshot", "snapshot_ref", default="latest", show_default=True,
              help="Snapshot id (prefix) to verify, or 'latest' per target.")
@click.option("--keep", is_flag=True, help="Leave staging in place for inspection.")
@json_option
def verify(plan: str, targets: tuple[str, ...], snapshot_ref: str, keep: bool,
           as_json: bool) -> int:
    """Restore into staging, run the plan's checks, compare with RTO/RPO, record the verdict."""
    from restorer.actions.verify import run_verify
    from restorer.cli.render.verify import show_verify

    lp = _load(plan)
    with recorded_run(lp, "verify") as run:
        results = run_verify(lp, targets, snapshot_ref=snapshot_ref, keep=keep, run=run)
        show_verify(results, as_json)
        run.outcome = results.outcome
    return exit_code(results.outcome)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Roll back only this target (repeatable; default: rollback.targets, or all).")
@click.option("--to", "to", default="latest-verified", show_default=True,
              metavar="SNAPSHOT|latest-verified|latest",
              help="The snapshot to go back to (an id or unique prefix rolls back its target).")
@click.option("--allow-unverified", is_flag=True,
              help="Take the newest snapshot when a target has no verified one.")
@click.option("--dry-run", is_flag=True, help="Print what would happen; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask (required when not on a terminal).")
@click.option("--undo", is_flag=True,
              help="Return the targets of the last rollback to its safety snapshots.")
@click.option("--cleanup", is_flag=True,
              help="Remove what earlier rollbacks kept (replaced databases and trees).")
@json_option
def rollback(plan: str, targets: tuple[str, ...], to: str, allow_unverified: bool,
             dry_run: bool, yes: bool, undo: bool, cleanup: bool, as_json: bool) -> int:
    """Put targets back to their newest verified snapshot, reversibly (safety snapshot
    first, atomic swap, checks after)."""
    from restorer.actions.rollback import run_rollback
    from restorer.cli.render.rollback import render_plan, show_rollback

    lp = _load(plan)
    if cleanup:
        return _cleanup(lp, plan, dry_run, yes, as_json)
    confirm = _confirmer(dry_run, yes, "rollback changes live data", "nothing was changed",
                         "roll back", lambda preview: render_plan(preview, plan),
                         "Roll back now?")

    command = "rollback" + (" --undo" if undo else "") + (" --dry-run" if dry_run else "")
    with recorded_run(lp, command) as run:
        res = run_rollback(lp, targets, to=to, allow_unverified=allow_unverified,
                           dry_run=dry_run, undo=undo, confirm=confirm, run=run)
        show_rollback(res, plan, dry_run, as_json)
        run.outcome = res.outcome
    return exit_code(res.outcome)


def _confirmer(dry_run: bool, yes: bool, what: str, unchanged: str, verb: str,
               show: Any, question: str) -> Any:
    """How a destructive command asks: never on a dry run, not with --yes, on a terminal
    after showing what it will do; elsewhere without --yes it refuses (exit 2)."""
    if not dry_run and not yes and not sys.stdin.isatty():
        raise UsageError(f"{what} and needs confirmation; this is not a terminal, so "
                         f"{unchanged}", hint=f"pass --yes to {verb}, or --dry-run to see "
                         "what it would do")

    def confirm(preview: Any) -> bool:
        if yes:
            return True
        show(preview)
        return click.confirm(question, default=False)

    return confirm


def _cleanup(lp: Any, plan: str, dry_run: bool, yes: bool, as_json: bool) -> int:
    from restorer.actions.rollback import cleanup as do_cleanup
    from restorer.cli.render.rollback import render_cleanup, show_cleanup

    confirm = _confirmer(dry_run, yes, "rollback --cleanup deletes what rollbacks kept",
                         "nothing was removed", "remove", render_cleanup, "Remove these now?")

    command = "rollback --cleanup" + (" --dry-run" if dry_run else "")
    with recorded_run(lp, command) as run:
        res = do_cleanup(lp, dry_run=dry_run, confirm=confirm, run=run)
        show_cleanup(res, as_json)
        run.outcome = res.outcome
    return exit_code(res.outcome)


@cli.command()
@click.argument("plans", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--since", default=None, metavar="DURATION",
              help="The period ending now (default 90d).")
@click.option("--from", "from_", default=None, metavar="DATE", help="Start (YYYY-MM-DD or ISO).")
@click.option("--to", "to", default=None, metavar="DATE",
              help="End (YYYY-MM-DD: the end of that day; default now).")
@click.option("--format", "fmt", type=click.Choice(["html", "json", "junit", "md"]),
              default="html", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout.")
@click.option("--verify", "verify_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Check a report against the ledger; exit 1 if it differs.")
@click.option("--untested", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True,
              help="JUnit: a target never restore-tested in the period fails, or is skipped.")
def report(plans: tuple[str, ...], since: str | None, from_: str | None, to: str | None,
           fmt: str, output: str | None, verify_file: str | None, untested: str) -> int:
    """Restore-test report for auditors, from the ledger: coverage, tests, RTO, RPO,
    rollbacks, failures, and evidence that it was not edited."""
    from datetime import UTC, datetime, timedelta
    from pathlib import Path as _Path

    from restorer import clock
    from restorer.actions.report import Period, build
    from restorer.actions.report import verify_file as check_file
    from restorer.cli.render.report import show_report, show_report_check
    from restorer.report import render

    if verify_file:
        problems = check_file(_Path(verify_file).read_text())
        show_report_check(verify_file, problems)
        return exit_code(Outcome.FAILED if problems else Outcome.OK)
    if not plans:
        raise UsageError("name at least one plan (or --verify FILE)")
    if since and (from_ or to):
        raise UsageError("give --since, or --from/--to, not both")

    def when(text: str, end: bool) -> datetime:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"'{text}' is not a date (YYYY-MM-DD) or ISO time") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        if end and len(text) == 10:
            t += timedelta(days=1, microseconds=-1)
        return t

    now = clock.now()
    if from_ or to:
        start = when(from_, False) if from_ else now - timedelta(days=90)
        end = when(to, True) if to else now
    else:
        end, start = now, now - timedelta(seconds=_duration(since or "90d"))
    text = render(build(list(plans), Period(start, end), untested=untested), fmt)
    if output:
        _Path(output).write_text(text)
    show_report(text, output)
    return exit_code(Outcome.OK)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--install", is_flag=True,
              help="Put the block into the crontab (between marker comments; idempotent).")
@click.option("--user", default=None, help="With --install: this user's crontab (root only).")
@click.option("--systemd", "systemd_dir", default=None, type=click.Path(file_okay=False),
              help="Write restorer-run.service and restorer-run.timer into this folder.")
@click.option("--log-file", default=None, type=click.Path(dir_okay=False),
              help="Where the cron entry appends its output (default: STATE_DIR/run.log).")
@click.option("--env-file", default=None, type=click.Path(dir_okay=False),
              help="A root-only KEY=VALUE file with the secrets the plans reference "
              "(${env:X}); passed to `run --env-file` (systemd: EnvironmentFile=).")
@click.option("--uninstall", is_flag=True,
              help="Remove our block from the crontab (every other line kept).")
def schedule(paths: tuple[str, ...], install: bool, user: str | None,
             systemd_dir: str | None, log_file: str | None, env_file: str | None,
             uninstall: bool) -> None:
    """Print (or install) the cron entry or systemd timer that runs the plans' due jobs.

    The entry pins the state folder (default ledger) this shell uses; secrets come from
    --env-file, since cron's environment has none of the shell's variables."""
    from pathlib import Path as _Path

    from restorer.actions.schedule import (
        cron_environment,
        crontab_block,
        install_crontab,
        load_plans,
        systemd_units,
        unresolved_under_cron,
        write_units,
    )
    from restorer.cli.render.schedule import (
        show_block,
        show_installed,
        show_uninstalled,
        show_units,
        warn_unresolved,
    )

    if sum([install, bool(systemd_dir), uninstall]) > 1:
        raise UsageError("give one of --install, --uninstall and --systemd")
    if uninstall:
        before, after = install_crontab(None, user)
        show_uninstalled(before, after, user)
        return
    absolute = [_Path(p).resolve() for p in paths]
    env = _Path(env_file).resolve() if env_file else None
    plans = load_plans(absolute)  # every path a plan or a folder of plans, every plan read
    missing = unresolved_under_cron(plans, cron_environment(user, env))
    if missing and (install or systemd_dir):
        raise UsageError("scheduled runs would fail: " + "; ".join(missing),
                         hint="put the variables into a file readable only by the runner "
                         "(chmod 600) and pass --env-file FILE")
    warn_unresolved(missing)
    if systemd_dir:
        show_units(write_units(systemd_units(absolute, env), _Path(systemd_dir)))
        return
    block = crontab_block(absolute, plans, _Path(log_file).resolve() if log_file else None,
                          env)
    if not install:
        show_block(block)
        return
    before, after = install_crontab(block, user)
    show_installed(before, after, user)


@cli.command("run")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--due", "only_due", is_flag=True,
              help="Run only the jobs whose schedule slot has come since their last success.")
@click.option("--metrics-file", type=click.Path(dir_okay=False), default=None,
              help="Write Prometheus metrics (textfile collector format) here after the run.")
@click.option("--env-file", default=None, type=click.Path(dir_okay=False),
              help="Load KEY=VALUE variables (secrets for ${env:X}) from this file first; "
              "refused when group or others can read it.")
@json_option
@click.pass_context
def run_cmd(ctx: click.Context, paths: tuple[str, ...], only_due: bool,
            metrics_file: str | None, env_file: str | None, as_json: bool) -> int:
    """Run the jobs of plans (files, or folders of *.yaml): backup, prune, verify, check.

    One crontab line serves every plan: */5 * * * * restorer run --due /etc/restorer/plans
    """
    from restorer.actions.run_due import run_paths
    from restorer.cli.render.run import show_job, show_run

    if env_file:
        from restorer.envfile import load_env_file

        load_env_file(env_file)

    structured = ctx.find_root().params.get("log_format") == "json"

    results = run_paths(paths, only_due=only_due,
                        on_result=lambda _lp, r: show_job(r, as_json, structured))
    if metrics_file:
        from restorer.actions.metrics import write_metrics

        write_metrics(metrics_file, paths)
    show_run(results, as_json, structured)
    return exit_code(results.outcome)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True,
              help="List what would be forgotten and the bytes freed; change nothing.")
@click.option("--allow-remove-all", is_flag=True,
              help="Let the policy forget every snapshot of a target (refused otherwise).")
@lock_wait_option
@json_option
def prune(plan: str, dry_run: bool, allow_remove_all: bool, lock_wait: str,
          as_json: bool) -> int:
    """Forget snapshots the retention policy does not keep; remove data only they needed."""
    from restorer.actions.prune import run_prune
    from restorer.cli.render.prune import show_prune

    lp = _load(plan)
    with recorded_run(lp, "prune --dry-run" if dry_run else "prune") as run:
        res = run_prune(lp, dry_run=dry_run, lock_wait=_duration(lock_wait),
                        allow_remove_all=allow_remove_all, run=run)
        run.outcome = res.outcome
    show_prune(res, dry_run, as_json)
    return exit_code(res.outcome)


@cli.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
def status(plans: tuple[str, ...], as_json: bool) -> int:
    """One glance per target: latest backup, newest verified snapshot, RPO/RTO. Exit 1 when
    an objective is breached."""
    from restorer.actions.verify import Statuses, plan_status
    from restorer.cli.render.verify import show_status

    rows_all = Statuses()
    for p in plans:
        rows_all += plan_status(_load(p))
    show_status(rows_all, as_json)
    return exit_code(rows_all.outcome)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--since", default=None, metavar="DURATION",
              help="Only runs that started within this long ago (e.g. 30d).")
@click.option("--verify-chain", is_flag=True,
              help="Verify the ledger as `ledger verify PLAN` does (hashes, chain, signatures, "
              "anchors); exit 1 naming the first row that fails.")
@json_option
def history(plan: str, since: str | None, verify_chain: bool, as_json: bool) -> None:
    """The plan's runs with their phases and timings, newest first."""

    from restorer.actions.ledger_run import open_ledger, runs
    from restorer.cli.render.history import show_history

    lp = _load(plan)
    if verify_chain:
        from restorer.actions.evidence import verify_plan
        from restorer.cli.render.ledger import show_verdict

        v = verify_plan(lp)
        ledger = open_ledger(lp)
        try:
            last = ledger.last_hash()
        finally:
            ledger.close()
        show_verdict(v, as_json, last)
        if not v.intact:
            raise _broken(v)
        return
    cutoff = clock.timestamp() - _duration(since) if since else None
    show_history(runs(lp, cutoff), since, as_json)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--all", "remove_all", is_flag=True,
              help="Remove every lock, not only stale ones (only when no run is active).")
@json_option
def unlock(plan: str, remove_all: bool, as_json: bool) -> int:
    """Remove stale repository locks (dead process or not refreshed)."""
    from restorer.actions.unlock import run_unlock
    from restorer.cli.render.repository import show_unlock

    lp = _load(plan)
    with recorded_run(lp, "unlock --all" if remove_all else "unlock") as run:
        res = run_unlock(lp, remove_all=remove_all, run=run)
        run.outcome = res.outcome
    show_unlock(res.removed, res.kept, as_json)
    return exit_code(res.outcome)


GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--debug"}


def hoist_globals(args: list[str]) -> list[str]:
    """Global options given after the command (`restorer backup PLAN -q`, as restic takes
    them) moved before it, where Click looks for them."""
    names = set(cli.commands)
    try:
        at = next(i for i, a in enumerate(args) if a in names)
    except StopIteration:
        return args
    head, tail, moved = args[:at + 1], [], []
    rest = args[at + 1:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            tail += rest[i:]
            break
        if a in GLOBAL_FLAGS:
            moved.append(a)
        elif a == "--log-format" and i + 1 < len(rest):
            moved += [a, rest[i + 1]]
            i += 1
        elif a.startswith("--log-format="):
            moved.append(a)
        else:
            tail.append(a)
        i += 1
    return [*head[:-1], *moved, head[-1], *tail]


def _log_format(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a == "--log-format" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--log-format="):
            return a.split("=", 1)[1]
    return "text"


def _fail(structured: bool, level: str, message: str, code: int,
          hint: str | None = None) -> None:
    """Print a fatal error (one JSON line under --log-format json) and exit with `code`."""
    from restorer.cli.render.errors import show_fatal

    show_fatal(structured, level, message, code, hint)
    sys.exit(code)


def _on_signal(signum: int, _frame: Any) -> None:
    """The first SIGTERM/SIGHUP/SIGINT ends the run through its clean-up (locks, ledger);
    a second one while it cleans up ends the process at once."""
    import signal

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, lambda n, _f: os._exit(128 + n))
    from restorer.errors import Terminated

    raise Terminated(signum)


def _install_signal_handlers() -> None:
    import signal

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(s) is not signal.SIG_IGN:  # nohup, background jobs: kept
            signal.signal(s, _on_signal)


def _remove_leftovers() -> None:
    """Private files of earlier runs killed before they could remove them (a password
    option file), whichever command this run is."""
    from restorer.statedir import remove_leftovers

    try:
        remove_leftovers()
    except OSError as e:  # never a reason not to run; the next run tries again
        logging.getLogger("restorer.state").warning(
            "cannot remove what killed runs left in the state folder: %s", e)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and map every failure to a documented exit code."""
    from restorer.errors import Terminated

    _install_signal_handlers()
    _remove_leftovers()
    args = hoist_globals(list(argv if argv is not None else sys.argv[1:]))
    debug = "--debug" in args
    structured = _log_format(args) == "json"
    try:
        rv = cli.main(args=args, prog_name="restorer", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        _fail(structured, "error", "aborted", 130)
    except click.ClickException as e:
        if structured:
            _fail(True, "error", e.format_message(), exit_code(Outcome.USAGE))
        e.show()
        sys.exit(exit_code(Outcome.USAGE))
    except PartialError as e:
        _fail(structured, "warning", e.message, exit_code(Outcome.PARTIAL), e.hint)
    except RestorerError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(structured, "error", e.message, e.exit_code, e.hint)
    except Terminated as e:
        _fail(structured, "error", f"{e}; the repository lock was released and nothing "
              "partial was kept (the next run goes on from what was stored)", e.exit_code)
    except KeyboardInterrupt:
        _fail(structured, "error", "interrupted", 130)
    except BrokenPipeError:
        os._exit(exit_code(Outcome.OK))
    except Exception as e:  # a bug: still one clear line, the traceback only when asked
        if debug:
            import traceback

            traceback.print_exc()
        _fail(structured, "error", f"internal error: {type(e).__name__}: {e}",
              exit_code(Outcome.FAILED),
              "this is a bug in restorer; run again with --debug for the traceback and "
              "report it")
    sys.exit(rv if isinstance(rv, int) else exit_code(Outcome.OK))
