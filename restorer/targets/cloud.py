"""What the cloud snapshot kinds (ebs, rds) share: the data stays in AWS, a backup makes
the AWS snapshot (and its copies) and records a small manifest snapshot in the repository,
prune deletes the AWS snapshots in every region, and a restore to a path is refused."""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from restorer.errors import RestoreError
from restorer.progress import Progress
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import ebs
from restorer.sources.aws import AWS
from restorer.sources.files_restore import RestoreStats
from restorer.targets.base import Made, RestoreRequest, TargetContext, TargetKind

log = logging.getLogger("restorer.cloud")


def recorded_ids(snaps: list[Snapshot], plan: str, target: str) -> set[str]:
    """Every AWS snapshot id the repository's manifests name for this target."""
    out: set[str] = set()
    for s in snaps:
        if s.plan == plan and s.target == target and s.cloud:
            out.update(s.cloud.get("snapshots", {}).values())
    return out


def source_of(snap: Snapshot, t: Any, what: str) -> tuple[str, str]:
    """(region, id) of the AWS snapshot a manifest names in the target's own region."""
    m = snap.cloud or {}
    region = m.get("region", t.region)
    source = m.get("snapshots", {}).get(region)
    if not source:
        raise RestoreError(f"snapshot {snap.short_id} names no {what} in {region}")
    return region, source


def tags_for(ctx: TargetContext, t: Any, role: str) -> dict[str, str]:
    return {ebs.PLAN: ctx.plan, ebs.TARGET: t.name, ebs.ROLE: role}


class SnapshotDriver(Protocol):
    """What a cloud kind's source module (sources/ebs.py, sources/rds.py) does with AWS
    snapshots."""

    def snapshot(self, aws: AWS, t: Any, plan: str, run_id: str, recorded: set[str],
                 on_progress: Callable[[str], None] | None = None) -> dict[str, Any]: ...

    def delete_snapshots(self, aws: AWS, manifest: dict[str, Any]) -> None: ...


class CloudKind(TargetKind):
    """A kind whose snapshots AWS keeps; the repository holds their manifests."""

    in_repository = False
    undo_reuses_kept = True
    #: snapshots the resource (copying to copy_to_regions) and deletes them in every region
    driver: SnapshotDriver

    @abstractmethod
    def resource(self, t: Any) -> str:
        """The resource's id (volume or instance)."""

    def backup(self, ctx: TargetContext, repo: Repository, t: Any,
               previous: list[Snapshot], progress: Progress) -> Made:
        aws = ctx.aws(f"target '{t.name}'")

        def said(state: str) -> None:
            log.info("target %s: %s snapshot %s", t.name, t.kind, state)

        manifest = self.driver.snapshot(aws, t, ctx.plan, os.urandom(8).hex(),
                                        recorded_ids(previous, ctx.plan, t.name),
                                        on_progress=said)
        manifest["aws_calls"] = len(aws.calls)
        return Made([f"{t.region}:{self.resource(t)}"], cloud=manifest, uid=None, gid=None,
                    summary={"snapshots": manifest["snapshots"],
                             "adopted": manifest["adopted"],
                             "duration_s": manifest["seconds"]})

    def restore(self, ctx: TargetContext, repo: Repository, snap: Snapshot, t: Any | None,
                req: RestoreRequest, progress: Progress) -> RestoreStats:
        where = ", ".join(f"{r} {i}" for r, i in
                          (snap.cloud or {}).get("snapshots", {}).items())
        raise RestoreError(f"snapshot {snap.short_id} is an {snap.kind} snapshot kept in "
                           f"AWS ({where})",
                           hint="`restorer verify` restores it into staging; `restorer "
                           "rollback` puts it in place of the live volume or instance")

    def forget(self, ctx: TargetContext, snap: Snapshot) -> None:
        if snap.cloud:
            self.driver.delete_snapshots(ctx.aws(f"prune of {snap.target}"), snap.cloud)


def aws_stamp(stamp: str) -> str:
    return stamp.lower().replace("_", "-")
