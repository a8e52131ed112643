"""How a command ended, as its result says, and the one map from that to the exit code.

The values are the words the ledger, reports and metrics use; the exit codes are the README's
(0 done, 1 failed, 2 bad usage or invalid plan, 3 partly done, 4 locked)."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"  # done as asked (a dry run that showed what it would do included)
    PARTIAL = "partial"  # some targets done, some not; or done with a failed `after` hook
    CHECKS_FAILING = "checks_failing"  # done as asked; the state returned to fails its checks
    FAILED = "failed"
    LOCKED = "locked"  # another run holds the repository's lock
    DECLINED = "declined"  # a person said no at the prompt: nothing was done, nothing failed
    USAGE = "usage"  # a command-line mistake or an invalid plan, not a failed run


EXIT_CODES: dict[Outcome, int] = {
    Outcome.OK: 0, Outcome.DECLINED: 0, Outcome.FAILED: 1, Outcome.USAGE: 2,
    Outcome.PARTIAL: 3, Outcome.CHECKS_FAILING: 3, Outcome.LOCKED: 4,
}


def exit_code(outcome: Outcome) -> int:
    return EXIT_CODES[outcome]
