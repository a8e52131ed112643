"""The current time, as every record (snapshots, verdicts, ledger rows) and every schedule
decision sees it.

RESTORER_NOW=2026-03-01T03:00:00Z makes restorer act as if it were that time: for drills
and tests of schedules and retention (a simulated outage, months of snapshots). Durations
(how long a restore took) are always measured with the real monotonic clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from restorer.errors import UsageError


def now() -> datetime:
    fake = os.environ.get("RESTORER_NOW")
    if not fake:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(fake.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"RESTORER_NOW={fake!r} is not an ISO 8601 time",
                         hint="e.g. RESTORER_NOW=2026-03-01T03:00:00Z, or unset it") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso() -> str:
    return now().isoformat(timespec="microseconds")


def timestamp() -> float:
    return now().timestamp()


def from_timestamp(t: float) -> str:
    """`t` written as the ledger writes times (UTC, microseconds)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
