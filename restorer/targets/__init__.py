"""The target kinds restorer knows, and what each can do: one explicit registry.

This is the first piece of the `targets` layer (shared/DESIGN.md): the capability matrix that
`restorer kinds` prints, that `validate` and every command check before anything runs, and
that `rollback` and `verify` consult instead of lists of kinds of their own. The kinds'
operations still live in `actions/` and `sources/`; they move here one kind at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from restorer.plan import models
from restorer.plan.load import LoadedPlan, Problem

CAPABILITIES = ("backup", "restore", "verify", "rollback", "prune")
VERBS = {"backup": "back up", "restore": "restore", "verify": "verify",
         "rollback": "roll back", "prune": "prune"}


@dataclass(frozen=True)
class Capability:
    can: bool
    how: str  # what it does, or why it cannot


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[models.TargetBase]
    what: str
    capabilities: dict[str, Capability]

    def can(self, capability: str, target: Any = None) -> Capability:
        """Whether this kind can do `capability`, for `target` when given (a database or
        command reached over `via_ssh` cannot be rolled back)."""
        c = self.capabilities[capability]
        if not c.can:
            return c
        if capability == "rollback" and getattr(target, "via_ssh", None) is not None:
            return Capability(False, "not built yet for a target reached over via_ssh; "
                              "restore it with `restorer restore` instead")
        if capability in ("verify", "rollback") and getattr(target, "all_databases", False):
            return Capability(False, "a pg_dumpall snapshot (all_databases) holds a whole "
                              "cluster, which has no scratch database to restore into and no "
                              "single database to swap")
        return c

    def refusal(self, capability: str, target: Any) -> str:
        """'kind X cannot Y: reason', the one wording of every gap."""
        return (f"target {target.name}: kind {self.name} cannot {VERBS[capability]}: "
                f"{self.can(capability, target).how}")


def _c(how: str) -> Capability:
    return Capability(True, how)


def _no(why: str) -> Capability:
    return Capability(False, why)


_DUMP_RESTORE = "streams the dump back into the DSN given with --to"
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("files", models.FilesTarget, "local folders and files", {
        "backup": _c("walks the paths into trees, deduplicated"),
        "restore": _c("into the folder given with --to, never outside it"),
        "verify": _c("restores into staging.path (or staging.host over SFTP) and checks"),
        "rollback": _c("swaps each path with the snapshot's copy (an atomic exchange where "
                       "the file system has one)"),
        "prune": _c("forgets snapshots; their data goes when no snapshot needs it"),
    }),
    Kind("ssh-files", models.SSHFilesTarget, "folders on another host, read over SFTP", {
        "backup": _c("walks the remote paths over SFTP"),
        "restore": _c("into a local folder given with --to, or back over SFTP"),
        "verify": _c("restores into staging and checks"),
        "rollback": _no("a remote tree cannot be swapped atomically over SFTP"),
        "prune": _c("as files"),
    }),
    Kind("postgres", models.PostgresTarget, "one PostgreSQL database, or all (pg_dumpall)", {
        "backup": _c("pg_dump's output, streamed and deduplicated"),
        "restore": _c(_DUMP_RESTORE),
        "verify": _c("restores into a scratch database and runs the checks"),
        "rollback": _c("restores beside the live database, then swaps the names"),
        "prune": _c("as files"),
    }),
    Kind("mysql", models.MySQLTarget, "one MariaDB/MySQL database", {
        "backup": _c("mariadb-dump's output, streamed and deduplicated"),
        "restore": _c(_DUMP_RESTORE),
        "verify": _c("restores into a scratch database and runs the checks"),
        "rollback": _c("restores beside the live database, then renames the tables"),
        "prune": _c("as files"),
    }),
    Kind("sqlite", models.SQLiteTarget, "one SQLite database file", {
        "backup": _c("a consistent copy through SQLite's online backup API, then streamed"),
        "restore": _c("into the path given with --to"),
        "verify": _c("restores into staging and runs the checks"),
        "rollback": _no("not built yet: restore the snapshot with `restorer restore` and "
                        "replace the file while the application is stopped"),
        "prune": _c("as files"),
    }),
    Kind("command", models.CommandTarget, "any program's stdout (backup) and stdin (restore)", {
        "backup": _c("the backup command's stdout, streamed"),
        "restore": _c("feeds the snapshot to the restore command, with RESTORER_TO set"),
        "verify": _no("restorer cannot know where a command's restore lands to check it; "
                      "verify the system it restores into with a target of its own kind"),
        "rollback": _no("a command has no live state restorer could swap"),
        "prune": _c("as files"),
    }),
    Kind("ebs", models.EBSTarget, "an AWS EBS volume (snapshots kept in AWS)", {
        "backup": _c("an EBS snapshot, copied to copy_to_regions; its manifest in the "
                     "repository"),
        "restore": _no("an EBS snapshot is not restored to a path: verify restores it into a "
                       "staging volume, rollback puts it in place of the live one"),
        "verify": _c("creates a staging volume from the snapshot and checks it"),
        "rollback": _c("a new volume from the snapshot, swapped for the attached one"),
        "prune": _c("deletes the AWS snapshots in every region, then the manifest"),
    }),
    Kind("rds", models.RDSTarget, "an AWS RDS instance (snapshots kept in AWS)", {
        "backup": _c("an RDS snapshot, copied to copy_to_regions; its manifest in the "
                     "repository"),
        "restore": _no("an RDS snapshot is not restored to a path: verify restores it into a "
                       "staging instance, rollback puts it in place of the live one"),
        "verify": _c("restores a staging instance from the snapshot and checks it"),
        "rollback": _c("a new instance from the snapshot, renamed into the live one's place"),
        "prune": _c("deletes the AWS snapshots in every region, then the manifest"),
    }),
)}


def kind_of(target: Any) -> Kind:
    return KINDS[target.kind]


def load_checked(path: Any) -> LoadedPlan:
    """A plan loaded and checked against what its kinds can do (what commands act on)."""
    from restorer.plan.load import load_plan

    return load_plan(path, (plan_problems,))


def kind_named(name: str) -> Kind | None:
    """The kind of a snapshot (whose target may be gone from the plan)."""
    return KINDS.get(name)


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
