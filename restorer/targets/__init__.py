"""The target kinds restorer knows: one explicit registry, and the checks it allows before
anything runs.

Each kind lives in a module of its own (files.py, postgres.py, ...) behind the
`TargetKind` interface of base.py; `KINDS` below lists them, one line each, like restic's
backend/all. `restorer kinds` prints their capability matrix; `validate` and every command
check a plan against it; actions call `kind_of(target).<operation>` and know no kind.
"""

from __future__ import annotations

from typing import Any

from restorer.plan.load import LoadedPlan, Problem
from restorer.repo.snapshot import Snapshot
from restorer.targets import command, ebs, files, mysql, postgres, rds, sqlite, ssh_files
from restorer.targets.base import CAPABILITIES, VERBS, TargetKind

__all__ = [
    "CAPABILITIES",
    "KINDS",
    "VERBS",
    "TargetKind",
    "kind_named",
    "kind_of",
    "kind_of_snapshot",
    "load_checked",
    "matrix",
    "plan_problems",
]

KINDS: dict[str, TargetKind] = {k.name: k for k in (
    files.KIND,
    ssh_files.KIND,
    postgres.KIND,
    mysql.KIND,
    sqlite.KIND,
    command.KIND,
    ebs.KIND,
    rds.KIND,
)}


def kind_of(target: Any) -> TargetKind:
    """The kind of a plan's target."""
    return KINDS[target.kind]


def kind_named(name: str) -> TargetKind | None:
    return KINDS.get(name)


def kind_of_snapshot(snap: Snapshot) -> TargetKind | None:
    """The kind of a snapshot, whose target may be gone from the plan (None for a kind this
    version does not know)."""
    return KINDS.get(snap.kind)


def load_checked(path: Any) -> LoadedPlan:
    """A plan loaded and checked against what its kinds can do (what commands act on)."""
    from restorer.plan.load import load_plan

    return load_plan(path, (plan_problems,))


def plan_problems(lp: LoadedPlan, shown: str) -> list[Problem]:
    """What a plan asks of a kind that the kind cannot do, found before anything runs:
    a target in rollback.targets that cannot be rolled back, and a schedule.verify (which
    verifies every target) over a target that cannot be verified."""
    out: list[Problem] = []
    by_name = {t.name: (i, t) for i, t in enumerate(lp.plan.targets)}
    for j, name in enumerate(lp.plan.rollback.targets):
        if name not in by_name:
            continue  # named by plan validation already
        _i, t = by_name[name]
        k = kind_of(t)
        if not k.can("rollback", t).can:
            key = f"rollback.targets[{j}]"
            out.append(Problem(shown, key, k.refusal("rollback", t), lp.lines.get(key),
                               "remove it from rollback.targets (`restorer kinds` lists what "
                               "each kind can do)"))
    if lp.plan.schedule.verify:
        for name, (_i, t) in by_name.items():
            k = kind_of(t)
            if not k.can("verify", t).can:
                key = "schedule.verify"
                out.append(Problem(shown, key, f"the scheduled verify covers every target; "
                                   f"{k.refusal('verify', t)}", lp.lines.get(key),
                                   f"move target {name} to a plan without schedule.verify, "
                                   "or drop schedule.verify"))
    return out


def matrix() -> list[dict[str, Any]]:
    """The capability matrix, one row per kind (for `restorer kinds --json`)."""
    return [{"kind": k.name, "what": k.what,
             "capabilities": {c: {"can": k.capabilities[c].can, "how": k.capabilities[c].how}
                              for c in CAPABILITIES}}
            for k in KINDS.values()]
