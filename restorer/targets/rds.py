"""rds: an AWS RDS instance. Backup makes a DB snapshot (copied to copy_to_regions) and
records its manifest; verify restores a scratch instance from it (class and subnet group
from staging) and runs sql checks through staging.dsn with its endpoint as host; rollback
restores a new instance and the swap renames the live one aside (`DB-pre-rb-STAMP`) and the
new one into its name, so the endpoint applications use reaches the restored data. The old
instance is kept for --undo and --cleanup."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import rds
from restorer.targets.base import (
    LiveTarget,
    Restored,
    Stage,
    Swap,
    TargetContext,
    TargetRollback,
    can,
    cannot,
    query_database,
)
from restorer.targets.cloud import CloudKind, aws_stamp, source_of, tags_for


class RDSSwap(Swap):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.aws = self.ctx.aws(f"rollback of {t.name}")
        self.region = t.region
        self.source = (self.snap.cloud or {}).get("snapshots", {}).get(self.region)
        if not self.source:
            raise UsageError(f"snapshot {self.snap.short_id} names no DB snapshot in "
                             f"{self.region}")
        s = aws_stamp(self.stamp)
        self.new = f"{t.db_instance}-rb-{s}"[:63].rstrip("-")
        self.old = f"{t.db_instance}-pre-rb-{s}"[:63].rstrip("-")
        self.record.scratch = [self.new]
        self.created = False
        self.renamed_live = False
        self.record.changes = {"aws_calls": [
            f"rds RestoreDBInstanceFromDBSnapshot {self.source} as {self.new} ({t.region})",
            f"rds ModifyDBInstance {t.db_instance} -> {self.old} (rename, applied now)",
            f"rds ModifyDBInstance {self.new} -> {t.db_instance} (rename, applied now)"]}

    def restore(self) -> None:
        try:
            self.created = True
            rds.restore(self.aws, self.region, self.source, self.new,
                        {"restorer:plan": self.ctx.plan, "restorer:target": self.t.name,
                         "restorer:role": "rollback-new"}, self.t.wait_timeout)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None

    def swap(self) -> None:
        w = self.t.wait_timeout
        try:
            rds.rename(self.aws, self.region, self.t.db_instance, self.old, w)
            self.renamed_live = True
            rds.rename(self.aws, self.region, self.new, self.t.db_instance, w)
        except SourceError as e:
            if self.renamed_live:  # the name must not stay empty: put the old one back
                rds.rename(self.aws, self.region, self.old, self.t.db_instance, w)
                self.renamed_live = False
            raise RestoreError(e.message, e.hint) from None
        self.swapped = True
        self.record.kept = [self.old]

    def swap_back(self) -> None:
        w = self.t.wait_timeout
        rds.rename(self.aws, self.region, self.t.db_instance, self.new, w)
        rds.rename(self.aws, self.region, self.old, self.t.db_instance, w)
        self.swapped = False
        self.record.kept = []

    def discard(self) -> None:
        if self.created and not self.swapped:
            rds.delete_instance(self.aws, self.region, self.new, self.t.wait_timeout)

    def check_subject(self) -> Stage:
        live = self.aws.call("rds", self.region, "describe_db_instances",
                             DBInstanceIdentifier=self.t.db_instance)["DBInstances"][0]
        ep = live.get("Endpoint") or {}
        return LiveTarget(self.ctx, self.repo, self.t, self.snap, env={
            "RESTORER_STAGING_INSTANCE": self.t.db_instance,
            "RESTORER_STAGING_HOST": ep.get("Address", ""),
            "RESTORER_STAGING_PORT": str(ep.get("Port", ""))})



class RDSPutBack(RDSSwap):
    """--undo: the instance the rollback renamed aside gets its name back."""

    def __init__(self, *a: Any) -> None:
        *rest, kept = a
        super().__init__(*rest)
        self.old, self.new = self.new.replace("-rb-", "-undone-", 1)[:63], kept
        self.record.changes = {"aws_calls": [
            f"rds ModifyDBInstance {self.t.db_instance} -> {self.old} (rename, applied now)",
            f"rds ModifyDBInstance {kept} -> {self.t.db_instance} (rename, applied now)"]}

    def restore(self) -> None:
        pass

    def discard(self) -> None:
        pass


class RDSStage(Stage):
    """A scratch instance restored from the DB snapshot (class and subnet group from
    staging); sql checks reach it through staging.dsn with the instance's endpoint as host."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t, staging = self.target, self.target.staging or models.Staging()
        self.aws = self.ctx.aws(f"verify of {t.name}")
        self.region, self.source = source_of(self.snap, t, "DB snapshot")
        self.pfx = f"{t.db_instance}-verify-"[:55]
        self.ident = self.pfx + secrets.token_hex(3)
        self.instance_class, self.subnet_group = staging.instance_class, staging.subnet_group
        self.dsn_template = self.ctx.secret(staging.dsn, f"targets.{t.name}.staging.dsn") \
            if staging.dsn else None
        self.password = self.ctx.secret(staging.password, f"targets.{t.name}.staging.password")
        self.secrets = [self.password]
        self.cwd = Path(tempfile.gettempdir())
        self.location = f"scratch instance {self.ident} from {self.source}"
        self.created = False
        self.cleaned = rds.instances_with_prefix(self.aws, self.region, self.pfx)
        for ident in self.cleaned:
            rds.delete_instance(self.aws, self.region, ident, t.wait_timeout)
        self.dsn: str | None = None

    def restore(self) -> Restored:
        try:
            self.created = True
            inst = rds.restore(self.aws, self.region, self.source, self.ident,
                               tags_for(self.ctx, self.target, "staging"),
                               self.target.wait_timeout, self.instance_class,
                               self.subnet_group)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        ep = inst.get("Endpoint") or {}
        host, port = ep.get("Address", ""), str(ep.get("Port", ""))
        self.env = {"RESTORER_STAGING_INSTANCE": self.ident, "RESTORER_STAGING_HOST": host,
                    "RESTORER_STAGING_PORT": port}
        if self.dsn_template:
            u = urlsplit(self.dsn_template)
            user = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
            self.dsn = urlunsplit(u._replace(netloc=f"{user}{host}:{port}"))
            self.env["RESTORER_STAGING_DSN"] = self.dsn
        self.restored.files = 1
        return self.restored

    def manifest(self) -> tuple[bool, str]:
        state = rds.instance_state(self.aws, self.region, self.ident)
        return state == "available", f"instance {self.ident} restored from {self.source}: {state}"

    def query(self, sql: str, timeout: float) -> list[list[str]]:
        if not self.dsn:
            raise UsageError(f"target {self.target.name}: sql checks need staging.dsn (its host "
                             "is replaced by the scratch instance's endpoint)")
        return query_database(self.dsn, self.password, sql,
                              what=f"sql check of {self.target.name}", timeout=timeout)

    def teardown(self) -> bool:
        if not self.created:
            return True
        rds.delete_instance(self.aws, self.region, self.ident, self.target.wait_timeout)
        return rds.instance_state(self.aws, self.region, self.ident) == "deleted"


class RDSKind(CloudKind):
    name = "rds"
    model = models.RDSTarget
    what = "an AWS RDS instance (snapshots kept in AWS)"
    capabilities = {
        "backup": can("an RDS snapshot, copied to copy_to_regions; its manifest in the "
                      "repository"),
        "restore": cannot("an RDS snapshot is not restored to a path: verify restores it into "
                          "a staging instance, rollback puts it in place of the live one"),
        "verify": can("restores a staging instance from the snapshot and checks it"),
        "rollback": can("a new instance from the snapshot, renamed into the live one's place"),
        "prune": can("deletes the AWS snapshots in every region, then the manifest"),
    }
    driver = rds

    def resource(self, t: models.RDSTarget) -> str:
        return t.db_instance

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return RDSStage(ctx, repo, t, snap)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        if reuse and rds.instance_state(ctx.aws(f"undo of {t.name}"), t.region,
                                        reuse) == "available":
            return RDSPutBack(ctx, repo, t, snap, stamp, record, reuse)
        return RDSSwap(ctx, repo, t, snap, stamp, record)

    def live(self, ctx: TargetContext, t: models.RDSTarget) -> str:
        return f"RDS instance {t.db_instance} ({t.region})"

    def remove_kept(self, ctx: TargetContext, t: models.RDSTarget, name: str,
                    dry_run: bool = False) -> str | None:
        aws = ctx.aws(f"rollback cleanup of {t.name}")
        if rds.instance_state(aws, t.region, name) == "deleted":
            return None
        if not dry_run:
            rds.delete_instance(aws, t.region, name, t.wait_timeout)
        return f"DB instance {name}"


KIND = RDSKind()

