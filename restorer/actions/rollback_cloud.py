"""Rollback of cloud snapshot targets.

EBS: a new volume from the chosen snapshot in the instance's zone; the swap stops the
instance (only with allow_stop_instance), detaches the live volume, attaches the new one at
the same device and starts the instance again; the old volume is kept, tagged
restorer:role=rollback-old, for --undo and --cleanup.
RDS: a new instance restored from the chosen DB snapshot; the swap renames the live instance
aside (`DB-pre-rb-STAMP`) and the new one into its name, so the endpoint name applications
use points at the restored data; the old instance is kept for --undo and --cleanup.
"""

from __future__ import annotations

from typing import Any

from restorer.actions.cloud import aws_for
from restorer.actions.rollback_swaps import Swap
from restorer.actions.staging import LiveTarget, Stage
from restorer.errors import RestoreError, SourceError, UsageError
from restorer.plan import models
from restorer.sources import ebs, rds


def _stamp(stamp: str) -> str:
    return stamp.lower().replace("_", "-")


class EBSSwap(Swap):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.aws = aws_for(self.lp, f"rollback of {t.name}")
        self.region = t.region
        self.instance_id, self.device = self._where()
        self.out.live = f"{t.volume_id} at {self.device} of {self.instance_id} ({t.region})"
        self.source = (self.snap.cloud or {}).get("snapshots", {}).get(self.region)
        if not self.source:
            raise UsageError(f"snapshot {self.snap.short_id} names no EBS snapshot in "
                             f"{self.region}")
        self.new: str | None = None
        self.old: str | None = None
        self.was_running = False
        self.out.changes = {"aws_calls": [
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
                later = ebs.attached_rollback_volume(self.aws, self.region, self.lp.name,
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
                {ebs.PLAN: self.lp.name, ebs.TARGET: self.t.name, ebs.ROLE: "rollback-new",
                 ebs.RUN: self.stamp, ebs.SOURCE: self.source}, self.t.wait_timeout)
            self.out.scratch = [self.new]
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
                               {ebs.PLAN: self.lp.name, ebs.TARGET: self.t.name,
                                ebs.ROLE: "rollback-old", ebs.RUN: self.stamp})
                self.out.kept = [self.old]
        except SourceError as e:
            raise self._wrap(e) from None

    def swap_back(self) -> None:
        if self.old and self.new:
            self._put(self.new, self.old)
        self.swapped = False
        self.out.kept = []

    def discard(self) -> None:
        if self.new and not self.swapped:
            ebs.delete_volume(self.aws, self.region, self.new, self.t.wait_timeout)

    def check_subject(self) -> Stage:
        return LiveTarget(self.lp, self.repo, self.t, self.snap, env={
            "RESTORER_STAGING_VOLUME": self.new or "",
            "RESTORER_STAGING_INSTANCE": self.instance_id,
            "RESTORER_STAGING_DEVICE": self.device})


class RDSSwap(Swap):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        t = self.t
        self.aws = aws_for(self.lp, f"rollback of {t.name}")
        self.region = t.region
        self.source = (self.snap.cloud or {}).get("snapshots", {}).get(self.region)
        if not self.source:
            raise UsageError(f"snapshot {self.snap.short_id} names no DB snapshot in "
                             f"{self.region}")
        s = _stamp(self.stamp)
        self.new = f"{t.db_instance}-rb-{s}"[:63].rstrip("-")
        self.old = f"{t.db_instance}-pre-rb-{s}"[:63].rstrip("-")
        self.out.scratch = [self.new]
        self.created = False
        self.renamed_live = False
        self.out.changes = {"aws_calls": [
            f"rds RestoreDBInstanceFromDBSnapshot {self.source} as {self.new} ({t.region})",
            f"rds ModifyDBInstance {t.db_instance} -> {self.old} (rename, applied now)",
            f"rds ModifyDBInstance {self.new} -> {t.db_instance} (rename, applied now)"]}

    def restore(self) -> None:
        try:
            self.created = True
            rds.restore(self.aws, self.region, self.source, self.new,
                        {"restorer:plan": self.lp.name, "restorer:target": self.t.name,
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
        self.out.kept = [self.old]

    def swap_back(self) -> None:
        w = self.t.wait_timeout
        rds.rename(self.aws, self.region, self.t.db_instance, self.new, w)
        rds.rename(self.aws, self.region, self.old, self.t.db_instance, w)
        self.swapped = False
        self.out.kept = []

    def discard(self) -> None:
        if self.created and not self.swapped:
            rds.delete_instance(self.aws, self.region, self.new, self.t.wait_timeout)

    def check_subject(self) -> Stage:
        live = self.aws.call("rds", self.region, "describe_db_instances",
                             DBInstanceIdentifier=self.t.db_instance)["DBInstances"][0]
        ep = live.get("Endpoint") or {}
        return LiveTarget(self.lp, self.repo, self.t, self.snap, env={
            "RESTORER_STAGING_INSTANCE": self.t.db_instance,
            "RESTORER_STAGING_HOST": ep.get("Address", ""),
            "RESTORER_STAGING_PORT": str(ep.get("Port", ""))})


def still_there(lp: Any, t: Any, kept: str) -> bool:
    aws = aws_for(lp, f"undo of {t.name}")
    if isinstance(t, models.EBSTarget):
        return ebs.volume_tags(aws, t.region, kept).get(ebs.ROLE) == "rollback-old" \
            if kept.startswith("vol-") and _volume_exists(aws, t.region, kept) else False
    return rds.instance_state(aws, t.region, kept) == "available"


def _volume_exists(aws: Any, region: str, vid: str) -> bool:
    return ebs._volume_state(aws, region, vid) not in ("deleted", "deleting")


class EBSPutBack(EBSSwap):
    """--undo: the volume the rollback detached goes back to its device (nothing restored)."""

    def __init__(self, *a: Any) -> None:
        *rest, kept = a
        super().__init__(*rest)
        self.new = kept
        self.out.changes = {"aws_calls": [
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


class RDSPutBack(RDSSwap):
    """--undo: the instance the rollback renamed aside gets its name back."""

    def __init__(self, *a: Any) -> None:
        *rest, kept = a
        super().__init__(*rest)
        self.old, self.new = self.new.replace("-rb-", "-undone-", 1)[:63], kept
        self.out.changes = {"aws_calls": [
            f"rds ModifyDBInstance {self.t.db_instance} -> {self.old} (rename, applied now)",
            f"rds ModifyDBInstance {kept} -> {self.t.db_instance} (rename, applied now)"]}

    def restore(self) -> None:
        pass

    def discard(self) -> None:
        pass


def cleanup_kept(lp: Any, t: Any, kept: str, dry_run: bool = False) -> str | None:
    """Remove what a cloud rollback kept or left half made; a description of what went (or
    would go, on a dry run), or None. A volume goes only while detached and tagged as a
    rollback's (never a live one)."""
    aws = aws_for(lp, f"rollback cleanup of {t.name}")
    if isinstance(t, models.EBSTarget):
        if not kept.startswith("vol-") or not _volume_exists(aws, t.region, kept):
            return None
        role = ebs.volume_tags(aws, t.region, kept).get(ebs.ROLE)
        if role not in ("rollback-old", "rollback-new") or \
                ebs._volume_state(aws, t.region, kept) != "available":
            return None
        if not dry_run:
            ebs.delete_volume(aws, t.region, kept, t.wait_timeout)
        return f"volume {kept}"
    if rds.instance_state(aws, t.region, kept) == "deleted":
        return None
    if not dry_run:
        rds.delete_instance(aws, t.region, kept, t.wait_timeout)
    return f"DB instance {kept}"
