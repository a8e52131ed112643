"""Which snapshots a retention policy keeps: a pure function of the snapshots, the policy and
what is verified, so it can be shown (prune --dry-run) before anything is removed.

Rules, per target, as in the plan's `retention` (or the target's own):
  keep_last N                 the N newest
  keep_hourly/daily/weekly/monthly/yearly N
                              the newest snapshot of each of the N newest hours, days, ISO
                              weeks, months, years that have one
  keep_within D               every snapshot less than D older than the target's newest one
                              (not than now: a target whose backups stopped keeps its last ones)
  keep_tags [..]              every snapshot with one of these tags
Always kept, whatever the rules: the newest verified snapshot (what rollback goes back to);
with `prune_verified: false` (the default) every verified snapshot; the safety snapshots of
the last rollback (what --undo needs). A target with no rule at all keeps everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from restorer.plan import models
from restorer.repo.snapshot import Snapshot

BUCKETS: dict[str, Callable[[datetime], tuple]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass
class Decision:
    snapshot: Snapshot
    reasons: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def has_rules(p: models.Retention) -> bool:
    return any(getattr(p, f"keep_{k}") for k in ("last", "hourly", "daily", "weekly",
                                                 "monthly", "yearly")) \
        or p.keep_within is not None or bool(p.keep_tags)


def decide(snaps: list[Snapshot], policy: models.Retention, verified: set[str],
           protected: set[str] | None = None, tz: str | None = None) -> list[Decision]:
    """One target's snapshots, each with the reasons it is kept (none: it goes); newest
    first."""
    zone = ZoneInfo(tz) if tz else None
    ordered = sorted(snaps, key=lambda s: s.time, reverse=True)
    out = [Decision(s) for s in ordered]
    if not ordered:
        return out
    if not has_rules(policy):
        for d in out:
            d.reasons.append("no retention rule")
        return out
    if policy.keep_last:
        for d in out[:policy.keep_last]:
            d.reasons.append("last")
    for name, bucket in BUCKETS.items():
        n = getattr(policy, f"keep_{name}")
        if not n:
            continue
        seen: set[tuple] = set()
        for d in out:  # newest first: the first one met in a bucket is its newest
            t = d.snapshot.datetime.astimezone(zone) if zone else d.snapshot.datetime
            b = bucket(t)
            if b in seen:
                continue
            if len(seen) >= n:
                break
            seen.add(b)
            d.reasons.append(name)
    if policy.keep_within is not None:
        newest = ordered[0].datetime.timestamp()
        for d in out:
            if newest - d.snapshot.datetime.timestamp() < policy.keep_within:
                d.reasons.append("within")
    if policy.keep_tags:
        for d in out:
            tags = set(policy.keep_tags) & set(d.snapshot.tags)
            if tags:
                d.reasons.append("tag " + ",".join(sorted(tags)))
    newest_verified = next((d for d in out if d.snapshot.id in verified), None)
    if newest_verified is not None:
        newest_verified.reasons.append("newest verified")
    if not policy.prune_verified:
        for d in out:
            if d.snapshot.id in verified and d is not newest_verified:
                d.reasons.append("verified")
    for d in out:
        if protected and d.snapshot.id in protected:
            d.reasons.append("undo of the last rollback")
    return out
