"""Cloud snapshot targets (ebs, rds) as the other actions see them: a backup makes the AWS
snapshot (and its copies) and records a small manifest snapshot in the repository; prune
deletes the AWS snapshots with it; verify and rollback use the stages and swaps below."""

from __future__ import annotations

import getpass
import logging
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any

from restorer import __version__, clock
from restorer.actions.staging import Restored, Stage, query_database
from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.plan.load import LoadedPlan
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import ebs, rds
from restorer.sources.aws import AWS, RetrySettings

CLOUD_KINDS = ("ebs", "rds")
log = logging.getLogger("restorer.cloud")


def aws_for(lp: LoadedPlan, what: str) -> AWS:
    r = lp.plan.retry
    return AWS(RetrySettings(r.attempts, r.initial_delay, r.max_delay, r.max_time), what)


def recorded_ids(snaps: list[Snapshot], plan: str, target: str) -> set[str]:
    """Every AWS snapshot id the repository's manifests name for this target."""
    out: set[str] = set()
    for s in snaps:
        if s.plan == plan and s.target == target and s.cloud:
            out.update(s.cloud.get("snapshots", {}).values())
    return out


def backup_cloud(lp: LoadedPlan, repo: Repository, t: Any, snaps: list[Snapshot],
                 tags: tuple[str, ...], run_id: str) -> Snapshot:
    aws = aws_for(lp, f"target '{t.name}'")
    module = ebs if isinstance(t, models.EBSTarget) else rds
    def progress(state: str) -> None:
        log.info("target %s: %s snapshot %s", t.name, t.kind, state)

    manifest = module.snapshot(aws, t, lp.name, run_id, recorded_ids(snaps, lp.name, t.name),
                               on_progress=progress)
    manifest["aws_calls"] = len(aws.calls)
    snap = Snapshot(time=clock.iso(), plan=lp.name, target=t.name, kind=t.kind,
                    hostname=socket.gethostname(), username=getpass.getuser(),
                    paths=[f"{t.region}:{getattr(t, 'volume_id', None) or t.db_instance}"],
                    tags=sorted(set(t.tags) | set(tags)), program_version=__version__,
                    cloud=manifest,
                    summary={"snapshots": manifest["snapshots"], "adopted": manifest["adopted"],
                             "duration_s": manifest["seconds"]})
    repo.save_snapshot(snap)
    snaps.append(snap)
    return snap


def delete_cloud(lp: LoadedPlan, snap: Snapshot) -> None:
    """The AWS snapshots a manifest names, in every region (prune)."""
    if not snap.cloud:
        return
    aws = aws_for(lp, f"prune of {snap.target}")
    (ebs if snap.cloud["resource"] == "ebs" else rds).delete_snapshots(aws, snap.cloud)


def _source(snap: Snapshot, t: Any, what: str) -> tuple[str, str]:
    """(region, id) of the AWS snapshot a manifest names in the target's own region."""
    m = snap.cloud or {}
    region = m.get("region", t.region)
    source = m.get("snapshots", {}).get(region)
    if not source:
        raise RestoreError(f"snapshot {snap.short_id} names no {what} in {region}")
    return region, source


def _tags(lp: LoadedPlan, t: Any, role: str) -> dict[str, str]:
    return {ebs.PLAN: lp.name, ebs.TARGET: t.name, ebs.ROLE: role}


class EBSStage(Stage):
    """A scratch volume made from the snapshot in the staging zone, attached to the staging
    instance when the plan names one; removed afterwards, and leftovers of killed runs first."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t, st = self.target, self.target.staging or models.Staging()
        self.aws = aws_for(self.lp, f"verify of {t.name}")
        self.region, self.source = _source(self.snap, t, "EBS snapshot")
        self.zone = st.availability_zone or f"{self.region}a"
        self.instance, self.device = st.instance_id, st.device or "/dev/sdz"
        self.host = st.host  # the staging instance, reached over SSH for command checks
        self.volume: str | None = None
        self.cwd = Path(tempfile.gettempdir())
        self.location = f"scratch volume from {self.source} in {self.zone}"
        self.cleaned = self._remove_leftovers()

    def _remove_leftovers(self) -> list[str]:
        gone = ebs.leftover_volumes(self.aws, self.region, self.lp.name, self.target.name,
                                    "staging")
        for vid in gone:
            self._drop(vid)
        return gone

    def _drop(self, vid: str) -> None:
        for a in self.aws.call("ec2", self.region, "describe_volumes",
                               VolumeIds=[vid])["Volumes"][0].get("Attachments", []):
            ebs.detach(self.aws, self.region, vid, a["InstanceId"], a["Device"],
                       self.target.wait_timeout)
        ebs.delete_volume(self.aws, self.region, vid, self.target.wait_timeout)

    def restore(self) -> Restored:
        try:
            self.volume = ebs.create_volume(
                self.aws, self.region, self.source, self.zone,
                {**_tags(self.lp, self.target, "staging"), ebs.SOURCE: self.source},
                self.target.wait_timeout)
            if self.instance:
                ebs.attach(self.aws, self.region, self.volume, self.instance, self.device,
                           self.target.wait_timeout)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        self.location = f"{self.volume} ({self.zone})" + (
            f" on {self.instance} at {self.device}" if self.instance else "")
        self.env = {"RESTORER_STAGING_VOLUME": self.volume,
                    "RESTORER_STAGING_INSTANCE": self.instance or "",
                    "RESTORER_STAGING_DEVICE": self.device if self.instance else ""}
        self.restored.files = 1
        return self.restored

    def run(self, command: str, timeout: float) -> tuple[int | None, str]:
        """Command checks run on the staging instance when staging.host says how to reach
        it (where the volume is attached), else here."""
        if self.host is None:
            return super().run(command, timeout)
        from restorer.actions.backup import ssh_params
        from restorer.sources.remote import remote_run, ssh_session

        params = ssh_params(self.lp, self.host, f"targets.{self.target.name}.staging.host")
        with ssh_session(params, f"check of {self.target.name}") as client:
            return remote_run(client, command, timeout, env=self.env)

    def manifest(self) -> tuple[bool, str]:
        v = self.aws.call("ec2", self.region, "describe_volumes",
                          VolumeIds=[self.volume])["Volumes"][0]
        size = (self.snap.cloud or {}).get("size_gib")
        ok = v.get("SnapshotId") == self.source and (size is None or v.get("Size") == size)
        return ok, (f"volume {self.volume} made from {v.get('SnapshotId')}, {v.get('Size')} "
                    f"GiB, {v.get('State')}" + ("" if ok else f"; expected {self.source}, "
                                                f"{size} GiB"))

    def teardown(self) -> bool:
        if self.volume is None:
            return True
        self._drop(self.volume)
        return ebs.leftover_volumes(self.aws, self.region, self.lp.name, self.target.name,
                                    "staging") == []


class RDSStage(Stage):
    """A scratch instance restored from the DB snapshot (class and subnet group from
    staging); sql checks reach it through staging.dsn with the instance's endpoint as host."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t, st = self.target, self.target.staging or models.Staging()
        self.aws = aws_for(self.lp, f"verify of {t.name}")
        self.region, self.source = _source(self.snap, t, "DB snapshot")
        self.pfx = f"{t.db_instance}-verify-"[:55]
        self.ident = self.pfx + secrets.token_hex(3)
        self.instance_class, self.subnet_group = st.instance_class, st.subnet_group
        self.dsn_template = self.lp.secret(st.dsn, f"targets.{t.name}.staging.dsn") \
            if st.dsn else None
        self.password = self.lp.secret(st.password, f"targets.{t.name}.staging.password")
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
                               _tags(self.lp, self.target, "staging"),
                               self.target.wait_timeout, self.instance_class,
                               self.subnet_group)
        except SourceError as e:
            raise RestoreError(e.message, e.hint) from None
        ep = inst.get("Endpoint") or {}
        host, port = ep.get("Address", ""), str(ep.get("Port", ""))
        self.env = {"RESTORER_STAGING_INSTANCE": self.ident, "RESTORER_STAGING_HOST": host,
                    "RESTORER_STAGING_PORT": port}
        if self.dsn_template:
            from urllib.parse import urlsplit, urlunsplit

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

