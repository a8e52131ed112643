"""RDS instances: DB snapshots (copied to other regions), scratch instances for restore
tests, and the rename swap of a rollback.

Snapshot identifiers are `restorer-PLAN-TARGET-TIME`, so a run interrupted between creating
a snapshot and recording it is found by name and adopted by the next run instead of making a
second one; scratch instances are `INSTANCE-verify-XXXXXX` and a later verify removes any a
killed run left behind.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from restorer import clock
from restorer.errors import SourceError
from restorer.sources.aws import AWS, tags

log = logging.getLogger("restorer.rds")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def prefix(plan: str, target: str) -> str:
    return f"restorer-{_slug(plan)}-{_slug(target)}-"


def _snapshot_state(aws: AWS, region: str, ident: str) -> str:
    try:
        s = aws.call("rds", region, "describe_db_snapshots", DBSnapshotIdentifier=ident)
    except SourceError as e:
        if "NotFound" in e.message:
            return "missing"
        raise
    return s["DBSnapshots"][0]["Status"] if s["DBSnapshots"] else "missing"


def snapshot(aws: AWS, t: Any, plan: str, run_id: str, recorded: set[str],
             on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    started = time.time()
    mine = prefix(plan, t.name)
    found = aws.call("rds", t.region, "describe_db_snapshots",
                     DBInstanceIdentifier=t.db_instance, SnapshotType="manual")["DBSnapshots"]
    leftovers = sorted((s for s in found if s["DBSnapshotIdentifier"].startswith(mine)
                        and s["DBSnapshotIdentifier"] not in recorded
                        and s["Status"] not in ("failed", "deleting")),
                       key=lambda s: s["DBSnapshotIdentifier"])
    adopted = bool(leftovers)
    if adopted:
        ident = leftovers[-1]["DBSnapshotIdentifier"]
        log.warning("%s: adopting DB snapshot %s, made by a run that stopped before recording "
                    "it", t.name, ident)
    else:
        ident = mine + clock.now().strftime("%Y%m%d-%H%M%S") + "-" + run_id[:6]
        aws.call("rds", t.region, "create_db_snapshot", DBSnapshotIdentifier=ident,
                 DBInstanceIdentifier=t.db_instance,
                 Tags=tags({"restorer:plan": plan, "restorer:target": t.name,
                            "restorer:run": run_id, "restorer:role": "backup"}))
    aws.wait(f"DB snapshot {ident}", lambda: _snapshot_state(aws, t.region, ident),
             "available", t.wait_timeout, bad=("failed", "missing"), on_progress=on_progress)
    ids = {t.region: ident}
    arn = aws.call("rds", t.region, "describe_db_snapshots",
                   DBSnapshotIdentifier=ident)["DBSnapshots"][0]["DBSnapshotArn"]
    for region in t.copy_to_regions:
        if _snapshot_state(aws, region, ident) == "missing":
            kw: dict[str, Any] = {"KmsKeyId": t.kms_key_id} if t.kms_key_id else {}
            aws.call("rds", region, "copy_db_snapshot", SourceDBSnapshotIdentifier=arn,
                     TargetDBSnapshotIdentifier=ident, SourceRegion=t.region, CopyTags=True,
                     **kw)
        aws.wait(f"DB snapshot copy {ident} in {region}",
                 lambda r=region: _snapshot_state(aws, r, ident), "available",
                 t.wait_timeout, bad=("failed",), on_progress=on_progress)
        ids[region] = ident
    return {"provider": "aws", "resource": "rds", "db_instance": t.db_instance,
            "region": t.region, "snapshots": ids, "adopted": adopted,
            "seconds": round(time.time() - started, 3)}


def delete_snapshots(aws: AWS, manifest: dict[str, Any]) -> None:
    items = sorted(manifest["snapshots"].items(), key=lambda kv: kv[0] == manifest["region"])
    for region, ident in items:
        try:
            aws.call("rds", region, "delete_db_snapshot", DBSnapshotIdentifier=ident)
        except SourceError as e:
            if "NotFound" not in e.message:
                raise


# --- instances ------------------------------------------------------------------------------


def instance_state(aws: AWS, region: str, ident: str) -> str:
    try:
        r = aws.call("rds", region, "describe_db_instances", DBInstanceIdentifier=ident)
    except SourceError as e:
        if "NotFound" in e.message:
            return "deleted"
        raise
    return r["DBInstances"][0]["DBInstanceStatus"] if r["DBInstances"] else "deleted"


def restore(aws: AWS, region: str, snapshot_ident: str, new_ident: str, tag: dict[str, str],
            timeout: float, instance_class: str | None = None,
            subnet_group: str | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if instance_class:
        kw["DBInstanceClass"] = instance_class
    if subnet_group:
        kw["DBSubnetGroupName"] = subnet_group
    aws.call("rds", region, "restore_db_instance_from_db_snapshot",
             DBInstanceIdentifier=new_ident, DBSnapshotIdentifier=snapshot_ident,
             Tags=tags(tag), **kw)
    aws.wait(f"DB instance {new_ident}", lambda: instance_state(aws, region, new_ident),
             "available", timeout, bad=("failed", "incompatible-restore", "deleted"))
    return aws.call("rds", region, "describe_db_instances",
                    DBInstanceIdentifier=new_ident)["DBInstances"][0]


def delete_instance(aws: AWS, region: str, ident: str, timeout: float) -> bool:
    try:
        aws.call("rds", region, "delete_db_instance", DBInstanceIdentifier=ident,
                 SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    except SourceError as e:
        if "NotFound" not in e.message:
            raise
    aws.wait(f"deleting DB instance {ident}", lambda: instance_state(aws, region, ident),
             "deleted", timeout, bad=())
    return True


def rename(aws: AWS, region: str, ident: str, new_ident: str, timeout: float) -> None:
    aws.call("rds", region, "modify_db_instance", DBInstanceIdentifier=ident,
             NewDBInstanceIdentifier=new_ident, ApplyImmediately=True)
    aws.wait(f"renaming {ident} to {new_ident}",
             lambda: instance_state(aws, region, new_ident), "available", timeout,
             bad=("failed",))


def instances_with_prefix(aws: AWS, region: str, pfx: str) -> list[str]:
    r = aws.call("rds", region, "describe_db_instances")["DBInstances"]
    return [d["DBInstanceIdentifier"] for d in r if d["DBInstanceIdentifier"].startswith(pfx)
            and d["DBInstanceStatus"] != "deleting"]
