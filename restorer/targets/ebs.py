"""ebs: an AWS EBS volume. Backup makes an EBS snapshot (copied to copy_to_regions) and
records its manifest; verify makes a scratch volume from it (attached to a staging instance
when the plan names one); rollback makes a new volume from it in the instance's zone, and
the swap stops the instance (only with allow_stop_instance), detaches the live volume,
attaches the new one at the same device and starts the instance again. The old volume is
kept, tagged restorer:role=rollback-old, for --undo and --cleanup."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.repo.repository import Repository
from restorer.repo.snapshot import Snapshot
from restorer.sources import ebs
from restorer.sources.aws import AWS
from restorer.sources.remote import remote_run, ssh_session
from restorer.targets.base import (
    LiveTarget,
    Restored,
    Stage,
    Swap,
    TargetContext,
    TargetRollback,
    can,
    cannot,
)
from restorer.targets.cloud import CloudKind, source_of, tags_for


class EBSSwap(Swap):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.aws = self.ctx.aws(f"rollback of {t.name}")
        self.region = t.region
        self.instance_id, self.device = self._where()
        self.record.live = f"{t.volume_id} at {self.device} of {self.instance_id} ({t.region})"
        self.source = (self.snap.cloud or {}).get("snapshots", {}).get(self.region)
        if not self.source:
            raise UsageError(f"snapshot {self.snap.short_id} names no EBS snapshot in "
                             f"{self.region}")
        self.new: str | None = None
        self.old: str | None = None
        self.was_running = False
        self.record.changes = {"aws_calls": [
            f"ec2 CreateVolume from {self.source} in the zone of {self.instance_id} ({t.region})",
            f"ec2 StopInstances {self.instance_id} (if running; allow_stop_instance: "
            f"{t.allow_stop_instance})",
            f"ec2 DetachVolume of the volume at {self.device} of {self.instance_id}",
            f"ec2 AttachVolume of the new volume at {self.device}",
            "ec2 CreateTags restorer:role=rollback-old on the detached volume",
            f"ec2 StartInstances {self.instance_id} (if it was running)"]}

    def _where(self) -> tuple[str, str]:
        """Where the target's volume is attached: the plan's instance_id and device, else
        what AWS says of the volume (or, once a rollback replaced it, of the volume that
        rollback attached)."""
        t = self.t
        if t.instance_id and t.device:
            return t.instance_id, t.device
        try:
            found = ebs.attachment(self.aws, self.region, t.volume_id)
            if found is None:
                later = ebs.attached_rollback_volume(self.aws, self.region, self.ctx.plan,
                                                     t.name)
                found = later[1:] if later else None
        except SourceError as e:
            raise self._wrap(e) from None
        if found is None:
            raise UsageError(f"target {t.name}: volume {t.volume_id} is not attached to any "
                             "instance, so there is nothing to swap it at",
                             hint="attach it, or give instance_id and device on the target")
        if t.instance_id and t.instance_id != found[0]:
            raise UsageError(f"target {t.name}: volume {t.volume_id} is attached to "
                             f"{found[0]}, not to instance_id {t.instance_id} of the plan")
        return found[0], t.device or found[1]

    def _wrap(self, e: SourceError) -> RestoreError:
        return RestoreError(e.message, e.hint)

    def restore(self) -> None:
        try:
            zone = ebs.instance(self.aws, self.region, self.instance_id)["Placement"][
                "AvailabilityZone"]
            self.new = ebs.create_volume(
                self.aws, self.region, self.source, zone,
                {ebs.PLAN: self.ctx.plan, ebs.TARGET: self.t.name, ebs.ROLE: "rollback-new",
                 ebs.RUN: self.stamp, ebs.SOURCE: self.source}, self.t.wait_timeout)
            self.record.scratch = [self.new]
        except SourceError as e:
            raise self._wrap(e) from None

    def _put(self, remove: str | None, put: str) -> None:
        t, w = self.t, self.t.wait_timeout
        state = ebs.instance(self.aws, self.region, self.instance_id)["State"]["Name"]
        running = state in ("running", "pending")
        if running and not t.allow_stop_instance:
            raise RestoreError(
                f"target {t.name}: instance {self.instance_id} is running; its volume cannot be "
                "swapped without stopping it",
                hint="set allow_stop_instance: true on the target, or stop the instance in "
                "rollback.before")
        if running:
            ebs.set_instance(self.aws, self.region, self.instance_id, False, w)
        try:
            if remove:
                ebs.detach(self.aws, self.region, remove, self.instance_id, self.device, w)
            ebs.attach(self.aws, self.region, put, self.instance_id, self.device, w)
        finally:
            if running:
                ebs.set_instance(self.aws, self.region, self.instance_id, True, w)
        self.was_running = self.was_running or running

    def swap(self) -> None:
        assert self.new is not None
        try:
            self.old = ebs.attached_volume(self.aws, self.region, self.instance_id,
                                           self.device)
            self._put(self.old, self.new)
            self.swapped = True
            if self.old:
                ebs.tag_volume(self.aws, self.region, self.old,
                               {ebs.PLAN: self.ctx.plan, ebs.TARGET: self.t.name,
                                ebs.ROLE: "rollback-old", ebs.RUN: self.stamp})
                self.record.kept = [self.old]
        except SourceError as e:
            raise self._wrap(e) from None

    def swap_back(self) -> None:
        if self.old and self.new:
            self._put(self.new, self.old)
        self.swapped = False
        self.record.kept = []

    def discard(self) -> None:
        if self.new and not self.swapped:
            ebs.delete_volume(self.aws, self.region, self.new, self.t.wait_timeout)

    def check_subject(self) -> Stage:
        return LiveTarget(self.ctx, self.repo, self.t, self.snap, env={
            "RESTORER_STAGING_VOLUME": self.new or "",
            "RESTORER_STAGING_INSTANCE": self.instance_id,
            "RESTORER_STAGING_DEVICE": self.device})


def _volume_exists(aws: Any, region: str, vid: str) -> bool:
    return ebs.volume_state(aws, region, vid) not in ("deleted", "deleting")


class EBSPutBack(EBSSwap):
    """--undo: the volume the rollback detached goes back to its device (nothing restored)."""

    def __init__(self, *a: Any) -> None:
        *rest, kept = a
        super().__init__(*rest)
        self.new = kept
        self.record.changes = {"aws_calls": [
            f"ec2 StopInstances {self.instance_id} (if running)",
            f"ec2 DetachVolume of the volume at {self.device}",
            f"ec2 AttachVolume {kept} (the volume the rollback replaced) at {self.device}",
            f"ec2 StartInstances {self.instance_id} (if it was running)"]}

    def restore(self) -> None:
        pass  # the old volume is there already

    def swap(self) -> None:
        super().swap()
        # it is the live volume again: no longer something --cleanup may delete
        ebs.tag_volume(self.aws, self.region, self.new or "", {ebs.ROLE: "live"})

    def discard(self) -> None:
        pass  # never delete the volume we put back


class EBSStage(Stage):
    """A scratch volume made from the snapshot in the staging zone, attached to the staging
    instance when the plan names one; removed afterwards, and leftovers of killed runs first."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t, staging = self.target, self.target.staging or models.Staging()
        self.aws = self.ctx.aws(f"verify of {t.name}")
        self.region, self.source = source_of(self.snap, t, "EBS snapshot")
        self.zone = staging.availability_zone or f"{self.region}a"
        self.instance, self.device = staging.instance_id, staging.device or "/dev/sdz"
        self.host = staging.host  # the staging instance, reached over SSH for command checks
        self.volume: str | None = None
        self.cwd = Path(tempfile.gettempdir())
        self.location = f"scratch volume from {self.source} in {self.zone}"
        self.cleaned = self._remove_leftovers()

    def _remove_leftovers(self) -> list[str]:
        gone = ebs.leftover_volumes(self.aws, self.region, self.ctx.plan, self.target.name,
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
                {**tags_for(self.ctx, self.target, "staging"), ebs.SOURCE: self.source},
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

        params = self.ctx.ssh(self.host, f"targets.{self.target.name}.staging.host")
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
        return ebs.leftover_volumes(self.aws, self.region, self.ctx.plan, self.target.name,
                                    "staging") == []


def _volume_exists(aws: AWS, region: str, vid: str) -> bool:
    return ebs.volume_state(aws, region, vid) not in ("deleted", "deleting")


class EBSKind(CloudKind):
    name = "ebs"
    model = models.EBSTarget
    what = "an AWS EBS volume (snapshots kept in AWS)"
    capabilities = {
        "backup": can("an EBS snapshot, copied to copy_to_regions; its manifest in the "
                      "repository"),
        "restore": cannot("an EBS snapshot is not restored to a path: verify restores it into "
                          "a staging volume, rollback puts it in place of the live one"),
        "verify": can("creates a staging volume from the snapshot and checks it"),
        "rollback": can("a new volume from the snapshot, swapped for the attached one"),
        "prune": can("deletes the AWS snapshots in every region, then the manifest"),
    }
    driver = ebs

    def resource(self, t: models.EBSTarget) -> str:
        return t.volume_id

    def stage(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot) -> Stage:
        return EBSStage(ctx, repo, t, snap)

    def swap(self, ctx: TargetContext, repo: Repository, t: Any, snap: Snapshot, stamp: str,
             record: TargetRollback, reuse: str | None = None) -> Swap:
        if reuse and self._still_there(ctx, t, reuse):
            return EBSPutBack(ctx, repo, t, snap, stamp, record, reuse)
        return EBSSwap(ctx, repo, t, snap, stamp, record)

    def _still_there(self, ctx: TargetContext, t: models.EBSTarget, kept: str) -> bool:
        """Whether the volume a rollback detached is there to be put back."""
        aws = ctx.aws(f"undo of {t.name}")
        return kept.startswith("vol-") and _volume_exists(aws, t.region, kept) and \
            ebs.volume_tags(aws, t.region, kept).get(ebs.ROLE) == "rollback-old"

    def live(self, ctx: TargetContext, t: models.EBSTarget) -> str:
        return f"{t.volume_id} at {t.device} of {t.instance_id} ({t.region})"

    def remove_kept(self, ctx: TargetContext, t: models.EBSTarget, name: str,
                    dry_run: bool = False) -> str | None:
        """A volume goes only while detached and tagged as a rollback's (never a live
        one)."""
        aws = ctx.aws(f"rollback cleanup of {t.name}")
        if not name.startswith("vol-") or not _volume_exists(aws, t.region, name):
            return None
        role = ebs.volume_tags(aws, t.region, name).get(ebs.ROLE)
        if role not in ("rollback-old", "rollback-new") or \
                ebs.volume_state(aws, t.region, name) != "available":
            return None
        if not dry_run:
            ebs.delete_volume(aws, t.region, name, t.wait_timeout)
        return f"volume {name}"


KIND = EBSKind()

