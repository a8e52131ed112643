"""Opening a ledger run around a command, and reading runs back for `history`."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from restorer.errors import PlanError, RestorerError, Terminated, UsageError
from restorer.ledger import Ledger, LedgerError, RunRecorder
from restorer.ledger.signing import Signer
from restorer.outcome import Outcome, exit_code
from restorer.pids import pid_alive
from restorer.plan.load import LoadedPlan
from restorer.plan.models import LedgerConfig

log = logging.getLogger("restorer.ledger")


def open_ledger(lp: LoadedPlan) -> Ledger:
    key = "ledger.url" if isinstance(lp.plan.ledger, LedgerConfig) else "ledger"
    return Ledger.open(lp.secret(lp.plan.ledger_url, key), lp.base_dir)


def signer_of(lp: LoadedPlan) -> Signer | None:
    """The plan's signing key (None: the plan does not sign; PlanError: it cannot be read)."""
    pem = lp.secret(lp.plan.signing_key, "ledger.signing_key")
    return None if pem is None else Signer.from_pem(pem, f"{lp.path}: ledger.signing_key")


@contextmanager
def recorded_run(lp: LoadedPlan, command: str) -> Iterator[RunRecorder]:
    """A ledger run around a command: its start, then its end with the outcome the command
    set from its result (`rec.outcome`) and the exit code that outcome maps to; an error
    raised instead ends it as usage, locked, partial or failed. A process killed in between
    leaves a run that history shows as interrupted."""
    try:
        ledger: Ledger | None = open_ledger(lp)
    except (LedgerError, PlanError) as e:  # a ledger problem never stops the work itself
        log.error("%s; this run is not recorded", e.message)
        ledger = None
    unsigned = None
    try:
        signer = signer_of(lp)
    except PlanError as e:  # nor does a key that cannot be read: the run says why
        log.error("%s; this run is recorded unsigned", e.message)
        signer, unsigned = None, e.message
    rec = RunRecorder(ledger, lp.name, command, lp.digest, signer)
    notifying = bool(lp.plan.notify) and command in NOTIFY_COMMANDS
    previous = _previous_outcome(lp, command) if notifying else None
    rec.begin()
    if notifying:
        from restorer.actions.notify import ping_start

        ping_start(lp, rec)

    def end(outcome: str, code: int, error: str | None = None) -> None:
        if notifying:
            from restorer.actions.notify import send

            send(lp, rec, outcome, error, previous)
        rec.end(outcome, code, error, unsigned)
        if rec.closed is not None and rec.closed.signature is not None:
            from restorer.actions.evidence import anchor_run

            anchor_run(lp, rec)

    try:
        yield rec
    except Terminated as e:
        end("terminated", e.exit_code, f"terminated by {e.name}")
        raise
    except UsageError as e:
        # a command-line mistake, not a failed backup: history shows it, reports do not
        end("usage", e.exit_code, e.message)
        raise
    except RestorerError as e:
        # a plan that cannot run (a secret that does not resolve under cron) is a failure
        outcome = e.outcome if e.outcome in (Outcome.LOCKED, Outcome.PARTIAL) else \
            Outcome.FAILED
        end(outcome, e.exit_code, e.message)
        raise
    except BaseException as e:
        end("failed", 1, f"{type(e).__name__}: {e}")
        raise
    else:
        # the command set the outcome from its result; the exit code follows from it
        outcome = Outcome(rec.outcome or Outcome.OK)
        end(outcome, exit_code(outcome))
    finally:
        if ledger is not None:
            ledger.close()


# what runs unattended, and so must be heard about (a restore or a dry run has a person
# watching)
NOTIFY_COMMANDS = ("backup", "verify", "prune", "check", "report", "rollback",
                   "rollback --undo", "watch")


def _previous_outcome(lp: LoadedPlan, command: str) -> str | None:
    try:
        mine = [r for r in runs(lp) if r.command == command]
    except (LedgerError, PlanError):
        return None
    return mine[0].outcome if mine else None


@dataclass
class Run:
    run_id: str
    started: str
    plan: str
    command: str
    host: str
    user: str
    pid: int
    version: str
    plan_digest: str
    outcome: str = "running"
    exit_code: int | None = None
    duration_s: float | None = None
    error: str | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def last_seq(lp: LoadedPlan) -> int:
    """The number of the ledger's last row (0 when empty)."""
    ledger = open_ledger(lp)
    try:
        return ledger.last_seq()
    finally:
        ledger.close()


def runs(lp: LoadedPlan, since: float | None = None, through: int | None = None) -> list[Run]:
    """The plan's runs, newest first (`through`: from the rows up to that one only)."""
    ledger = open_ledger(lp)
    try:
        by_id: dict[str, Run] = {}
        ended_later: set[str] = set()  # runs still going at row `through`
        for seq, t, run_id, kind, d in ledger.entries(since):
            if d.get("plan") != lp.name:
                continue
            if through is not None and seq > through:
                if kind == "run_end":
                    ended_later.add(run_id)
                continue
            if kind == "run_start":
                by_id[run_id] = Run(run_id, t, d["plan"], d.get("command", ""),
                                    d.get("host", ""), d.get("user", ""), int(d.get("pid", 0)),
                                    d.get("version", ""), d.get("plan_digest", ""))
            elif run_id in by_id and kind == "phase":
                by_id[run_id].phases.append({k: v for k, v in d.items() if k != "plan"})
            elif run_id in by_id and kind == "run_end":
                r = by_id[run_id]
                r.outcome, r.exit_code = d.get("outcome", "?"), d.get("exit_code")
                r.duration_s, r.error = d.get("duration_s"), d.get("error")
    finally:
        ledger.close()
    out = list(by_id.values())
    for r in out:
        if r.outcome == "running" and r.run_id not in ended_later and not (
                r.host == socket.gethostname() and pid_alive(r.pid)):
            r.outcome = "interrupted"
    out.sort(key=lambda r: r.started, reverse=True)
    return out
