"""EBS volumes: snapshots (copied to other regions), scratch volumes for restore tests, and
the volume swap of a rollback.

Everything restorer creates carries tags (restorer:plan, restorer:target, restorer:role,
restorer:run), so a run interrupted between creating a snapshot and recording it is found and
adopted by the next run instead of making a second one, and scratch volumes a killed verify
left behind are found and removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from restorer.errors import SourceError
from restorer.sources.aws import AWS, tag_map, tags

log = logging.getLogger("restorer.ebs")
PLAN, TARGET, ROLE, RUN, SOURCE = ("restorer:plan", "restorer:target", "restorer:role",
                                   "restorer:run", "restorer:source-snapshot")


def _ours(plan: str, target: str, role: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{PLAN}", "Values": [plan]},
            {"Name": f"tag:{TARGET}", "Values": [target]},
            {"Name": f"tag:{ROLE}", "Values": [role]}]


def _snapshot_state(aws: AWS, region: str, sid: str) -> str:
    snaps = aws.call("ec2", region, "describe_snapshots", SnapshotIds=[sid])["Snapshots"]
    return snaps[0]["State"] if snaps else "missing"


def snapshot(aws: AWS, t: Any, plan: str, run_id: str, recorded: set[str],
             on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One completed snapshot of the volume, copied to every region in copy_to_regions; the
    manifest the repository keeps for it."""
    started = time.time()
    base = {PLAN: plan, TARGET: t.name, RUN: run_id}
    found = aws.call("ec2", t.region, "describe_snapshots", OwnerIds=["self"],
                     Filters=_ours(plan, t.name, "backup"))["Snapshots"]
    leftovers = sorted((s for s in found if s["SnapshotId"] not in recorded
                        and s.get("VolumeId") == t.volume_id and s["State"] != "error"),
                       key=lambda s: s["StartTime"])
    adopted = bool(leftovers)
    if adopted:
        sid = leftovers[-1]["SnapshotId"]
        log.warning("%s: adopting snapshot %s, made by a run that stopped before recording it",
                    t.name, sid)
    else:
        sid = aws.call("ec2", t.region, "create_snapshot", VolumeId=t.volume_id,
                       Description=f"restorer {plan}/{t.name}",
                       TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags(
                           {**base, ROLE: "backup", **_user_tags(t)})}])["SnapshotId"]
    aws.wait(f"snapshot {sid}", lambda: _snapshot_state(aws, t.region, sid), "completed",
             t.wait_timeout, on_progress=on_progress)
    ids = {t.region: sid}
    for region in t.copy_to_regions:
        copies = aws.call("ec2", region, "describe_snapshots", OwnerIds=["self"],
                          Filters=[{"Name": f"tag:{SOURCE}", "Values": [sid]}])["Snapshots"]
        if copies:
            cid = copies[0]["SnapshotId"]
        else:
            kw: dict[str, Any] = {}
            if t.kms_key_id:
                kw = {"Encrypted": True, "KmsKeyId": t.kms_key_id}
            cid = aws.call("ec2", region, "copy_snapshot", SourceRegion=t.region,
                           SourceSnapshotId=sid, Description=f"restorer {plan}/{t.name} copy",
                           TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags(
                               {**base, ROLE: "copy", SOURCE: sid})}], **kw)["SnapshotId"]
        aws.wait(f"copy {cid} in {region}", lambda r=region, c=cid: _snapshot_state(aws, r, c),
                 "completed", t.wait_timeout, on_progress=on_progress)
        ids[region] = cid
    vol = aws.call("ec2", t.region, "describe_volumes", VolumeIds=[t.volume_id])["Volumes"][0]
    return {"provider": "aws", "resource": "ebs", "volume_id": t.volume_id,
            "region": t.region, "size_gib": vol.get("Size"), "snapshots": ids,
            "adopted": adopted, "seconds": round(time.time() - started, 3)}


def _user_tags(t: Any) -> dict[str, str]:
    return {f"restorer:tag:{x}": "1" for x in t.tags}


def delete_snapshots(aws: AWS, manifest: dict[str, Any]) -> None:
    """Every copy, then the original; one that is already gone is fine."""
    items = sorted(manifest["snapshots"].items(), key=lambda kv: kv[0] == manifest["region"])
    for region, sid in items:
        try:
            aws.call("ec2", region, "delete_snapshot", SnapshotId=sid)
        except SourceError as e:
            if "NotFound" not in e.message:
                raise


# --- scratch and swapped volumes --------------------------------------------------------


def volume_state(aws: AWS, region: str, vid: str) -> str:
    try:
        vols = aws.call("ec2", region, "describe_volumes", VolumeIds=[vid])["Volumes"]
    except SourceError as e:
        if "NotFound" in e.message:
            return "deleted"
        raise
    return vols[0]["State"] if vols else "deleted"


def create_volume(aws: AWS, region: str, snapshot_id: str, zone: str, tag: dict[str, str],
                  timeout: float) -> str:
    vid = aws.call("ec2", region, "create_volume", SnapshotId=snapshot_id,
                   AvailabilityZone=zone,
                   TagSpecifications=[{"ResourceType": "volume", "Tags": tags(tag)}])["VolumeId"]
    aws.wait(f"volume {vid}", lambda: volume_state(aws, region, vid), "available", timeout)
    return vid


def attach(aws: AWS, region: str, vid: str, instance: str, device: str,
           timeout: float) -> None:
    aws.call("ec2", region, "attach_volume", VolumeId=vid, InstanceId=instance, Device=device)
    aws.wait(f"attaching {vid}", lambda: volume_state(aws, region, vid), "in-use", timeout)


def detach(aws: AWS, region: str, vid: str, instance: str, device: str,
           timeout: float) -> None:
    aws.call("ec2", region, "detach_volume", VolumeId=vid, InstanceId=instance, Device=device)
    aws.wait(f"detaching {vid}", lambda: volume_state(aws, region, vid), "available", timeout)


def delete_volume(aws: AWS, region: str, vid: str, timeout: float) -> bool:
    try:
        aws.call("ec2", region, "delete_volume", VolumeId=vid)
    except SourceError as e:
        if "NotFound" not in e.message:
            raise
    aws.wait(f"deleting {vid}", lambda: volume_state(aws, region, vid), "deleted", timeout)
    return True


def leftover_volumes(aws: AWS, region: str, plan: str, target: str, role: str) -> list[str]:
    vols = aws.call("ec2", region, "describe_volumes",
                    Filters=_ours(plan, target, role))["Volumes"]
    return [v["VolumeId"] for v in vols if v["State"] not in ("deleting", "deleted")]


def instance(aws: AWS, region: str, iid: str) -> dict[str, Any]:
    r = aws.call("ec2", region, "describe_instances", InstanceIds=[iid])["Reservations"]
    return r[0]["Instances"][0]


def attachment(aws: AWS, region: str, vid: str) -> tuple[str, str] | None:
    """(instance id, device) the volume is attached at, from DescribeVolumes; None when it
    is attached nowhere."""
    vols = aws.call("ec2", region, "describe_volumes", VolumeIds=[vid])["Volumes"]
    for a in (vols[0].get("Attachments") or []) if vols else []:
        if a.get("State") in ("attached", "attaching") and a.get("InstanceId"):
            return a["InstanceId"], a["Device"]
    return None


def attached_rollback_volume(aws: AWS, region: str, plan: str, target: str
                             ) -> tuple[str, str, str] | None:
    """(volume, instance, device) of the newest volume an earlier rollback of the target
    attached and that is attached still: where the target lives after a rollback."""
    vols = aws.call("ec2", region, "describe_volumes", Filters=[
        {"Name": f"tag:{PLAN}", "Values": [plan]}, {"Name": f"tag:{TARGET}", "Values": [target]},
        {"Name": f"tag:{ROLE}", "Values": ["rollback-new"]}])["Volumes"]
    for v in sorted(vols, key=lambda v: str(v.get("CreateTime", "")), reverse=True):
        for a in v.get("Attachments") or []:
            if a.get("State") in ("attached", "attaching") and a.get("InstanceId"):
                return v["VolumeId"], a["InstanceId"], a["Device"]
    return None


def attached_volume(aws: AWS, region: str, iid: str, device: str) -> str | None:
    for m in instance(aws, region, iid).get("BlockDeviceMappings", []):
        if m.get("DeviceName") == device:
            return m["Ebs"]["VolumeId"]
    return None


def set_instance(aws: AWS, region: str, iid: str, running: bool, timeout: float) -> None:
    op, want = ("start_instances", "running") if running else ("stop_instances", "stopped")
    aws.call("ec2", region, op, InstanceIds=[iid])
    aws.wait(f"instance {iid} {want}",
             lambda: instance(aws, region, iid)["State"]["Name"], want, timeout,
             bad=("terminated",))


def volume_tags(aws: AWS, region: str, vid: str) -> dict[str, str]:
    vols = aws.call("ec2", region, "describe_volumes", VolumeIds=[vid])["Volumes"]
    return tag_map(vols[0].get("Tags")) if vols else {}


def tag_volume(aws: AWS, region: str, vid: str, tag: dict[str, str]) -> None:
    aws.call("ec2", region, "create_tags", Resources=[vid], Tags=tags(tag))


