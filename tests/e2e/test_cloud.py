"""ebs and rds targets against moto's server mode (real HTTP through boto3): snapshots
tagged and copied, idempotent after a failure, pruned in every region, verified in staging
(and cleaned up), rolled back and undone."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from tests.conftest import run_cli, unique_name, write_plan
from tests.services import FaultPlan, FaultProxy

SRC, DST = "eu-west-1", "eu-central-1"


@pytest.fixture
def aws(moto_server):
    def client(service: str, region: str = SRC):
        return boto3.client(service, region_name=region, endpoint_url=moto_server.url)

    return client


@pytest.fixture
def world(aws, tmp_path: Path, moto_server):
    """A volume attached to a running instance, and an RDS instance, unique per test."""
    ec2 = aws("ec2")
    inst = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                             Placement={"AvailabilityZone": f"{SRC}a"})["Instances"][0]
    vol = ec2.create_volume(AvailabilityZone=f"{SRC}a", Size=8)["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=inst["InstanceId"], Device="/dev/sdf")
    db = unique_name("appdb")
    aws("rds").create_db_instance(DBInstanceIdentifier=db, Engine="postgres",
                                  DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                                  MasterUsername="app", MasterUserPassword="secret-pw-1")
    return {"instance": inst["InstanceId"], "volume": vol, "db": db,
            "env": {"AWS_ENDPOINT_URL": moto_server.url}}


def _plan(tmp_path: Path, w: dict, **extra) -> Path:
    ebs = {"name": "data", "kind": "ebs", "volume_id": w["volume"], "region": SRC,
           "copy_to_regions": [DST], "instance_id": w["instance"], "device": "/dev/sdf",
           "allow_stop_instance": True, "staging": {"availability_zone": f"{SRC}b"},
           "checks": [{"command": {"run": 'test -n "$RESTORER_STAGING_VOLUME"'}}]}
    rds = {"name": "db", "kind": "rds", "db_instance": w["db"], "region": SRC,
           "copy_to_regions": [DST], "staging": {"instance_class": "db.t3.micro"},
           "checks": [{"command": {"run": 'test -n "$RESTORER_STAGING_HOST"'}}]}
    for t in (ebs, rds):
        t.update(extra.get(t["name"], {}))
    return write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                      retry={"attempts": 3, "initial_delay": "0.1s", "max_delay": "0.5s"},
                      retention=extra.get("retention", {}), targets=[ebs, rds])


def _ebs_snaps(aws, region: str, w: dict) -> list[dict]:
    """This test's snapshots of its volume (the moto server is shared by the session): in
    the volume's region by volume id, elsewhere by the original each copy names."""
    def ours(r: str) -> list[dict]:
        return aws("ec2", r).describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:restorer:target", "Values": ["data"]}])["Snapshots"]

    src = [s for s in ours(SRC) if s.get("VolumeId") == w["volume"]]
    if region == SRC:
        return src
    ids = {s["SnapshotId"] for s in src}
    return [s for s in ours(region) if {t["Key"]: t["Value"] for t in s.get("Tags", [])}.get(
        "restorer:source-snapshot") in ids]


def test_backup_tags_copies_and_is_idempotent_after_a_failure(aws, world, tmp_path: Path,
                                                              moto_server) -> None:
    plan = _plan(tmp_path, world)
    # the copies to the second region fail (a permanent error) after the snapshots exist
    proxy = FaultProxy(moto_server.port, FaultPlan(decide_body=lambda b: (
        ("status", 400, "InvalidParameterValue")
        if b"Action=CopySnapshot" in b or b"Action=CopyDBSnapshot" in b else None)))
    try:
        r = run_cli("backup", "--init", plan, "--json", env={"AWS_ENDPOINT_URL": proxy.url})
    finally:
        proxy.close()
    assert r.rc == 1, r.text
    assert json.loads(run_cli("snapshots", plan, "--json").out) == []  # nothing recorded
    assert len(_ebs_snaps(aws, SRC, world)) == 1  # but the AWS snapshot exists
    # the retried backup adopts it: still exactly one snapshot, now copied and recorded
    r = run_cli("backup", plan, "--json", env=world["env"])
    assert r.rc == 0, r.text
    res = {t["target"]: t for t in json.loads(r.out)["targets"]}
    src = _ebs_snaps(aws, SRC, world)
    dst = _ebs_snaps(aws, DST, world)
    assert len(src) == 1 and len(dst) == 1
    tags = {t["Key"]: t["Value"] for t in src[0]["Tags"]}
    assert tags["restorer:role"] == "backup" and tags["restorer:target"] == "data"
    assert res["data"]["summary"]["adopted"] is True
    assert res["data"]["summary"]["snapshots"] == {SRC: src[0]["SnapshotId"],
                                                   DST: dst[0]["SnapshotId"]}
    rds_src = aws("rds", SRC).describe_db_snapshots(DBInstanceIdentifier=world["db"],
                                                    SnapshotType="manual")["DBSnapshots"]
    assert len(rds_src) == 1 and res["db"]["summary"]["adopted"] is True
    ident = rds_src[0]["DBSnapshotIdentifier"]
    assert aws("rds", DST).describe_db_snapshots(DBSnapshotIdentifier=ident)["DBSnapshots"]
    # a second, clean backup makes one more of each, never more
    assert run_cli("backup", plan, env=world["env"]).rc == 0
    assert len(_ebs_snaps(aws, SRC, world)) == 2 and len(_ebs_snaps(aws, DST, world)) == 2
    snaps = json.loads(run_cli("snapshots", plan, "--json").out)
    assert sorted(s["kind"] for s in snaps) == ["ebs", "ebs", "rds", "rds"]


def test_throttling_is_retried_by_the_plans_policy(aws, world, tmp_path: Path,
                                                   moto_server) -> None:
    plan = _plan(tmp_path, world)
    plan_ = FaultPlan(decide_body=lambda b: (
        ("status", 503, "RequestLimitExceeded") if b"Action=CreateSnapshot" in b
        and plan_.faults < 2 else None))
    proxy = FaultProxy(moto_server.port, plan_)
    try:
        r = run_cli("backup", "--init", plan, "--target", "data",
                    env={"AWS_ENDPOINT_URL": proxy.url})
    finally:
        proxy.close()
    assert r.rc == 0, r.text
    assert plan_.faults == 2 and "retrying" in r.err
    assert len(_ebs_snaps(aws, SRC, world)) == 1


def test_prune_deletes_in_every_region_but_keeps_newest_verified(aws, world,
                                                                 tmp_path: Path) -> None:
    plan = _plan(tmp_path, world, retention={"keep_last": 1})
    env = world["env"]
    assert run_cli("backup", "--init", plan, "--target", "data", env=env).rc == 0
    r = run_cli("verify", plan, "--target", "data", env=env)
    assert r.rc == 0, r.text
    verified = _ebs_snaps(aws, SRC, world)[0]["SnapshotId"]
    for _ in range(2):
        assert run_cli("backup", plan, "--target", "data", env=env).rc == 0
    assert len(_ebs_snaps(aws, SRC, world)) == 3 and len(_ebs_snaps(aws, DST, world)) == 3
    r = run_cli("prune", plan, "--json", env=env)
    assert r.rc == 0, r.text
    left = {s["SnapshotId"] for s in _ebs_snaps(aws, SRC, world)}
    assert len(left) == 2 and verified in left  # the newest, and the newest verified
    assert len(_ebs_snaps(aws, DST, world)) == 2
    assert len(json.loads(run_cli("snapshots", plan, "--json").out)) == 2


def test_verify_creates_and_removes_staging_even_on_failure(aws, world,
                                                            tmp_path: Path) -> None:
    env = world["env"]
    plan = _plan(tmp_path, world)
    assert run_cli("backup", "--init", plan, env=env).rc == 0
    r = run_cli("verify", plan, "--json", env=env)
    assert r.rc == 0, r.text
    v = {x["target"]: x for x in json.loads(r.out)}
    assert v["data"]["ok"] and v["db"]["ok"] and v["data"]["restore_s"] > 0
    assert "made from snap-" in v["data"]["checks"][0]["detail"]

    def staging_volumes() -> list[str]:
        return [x["VolumeId"] for x in aws("ec2").describe_volumes(Filters=[
            {"Name": "tag:restorer:role", "Values": ["staging"]}])["Volumes"]]

    def staging_instances() -> list[str]:
        return [d["DBInstanceIdentifier"] for d in
                aws("rds").describe_db_instances()["DBInstances"]
                if d["DBInstanceIdentifier"].startswith(world["db"] + "-verify-")]

    assert staging_volumes() == [] and staging_instances() == []
    # a failing check: still removed
    bad = _plan(tmp_path, world, data={"checks": [{"command": {"run": "exit 3"}}]},
                db={"checks": [{"command": {"run": "exit 4"}}]})
    r = run_cli("verify", bad, "--json", env=env)
    assert r.rc == 1
    assert staging_volumes() == [] and staging_instances() == []
    # leftovers of a killed run (made here by hand, tagged as verify tags them) go first
    snap = _ebs_snaps(aws, SRC, world)[0]["SnapshotId"]
    aws("ec2").create_volume(AvailabilityZone=f"{SRC}b", SnapshotId=snap, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [
            {"Key": "restorer:plan", "Value": "test"}, {"Key": "restorer:target", "Value": "data"},
            {"Key": "restorer:role", "Value": "staging"}]}])
    ident = aws("rds").describe_db_snapshots(DBInstanceIdentifier=world["db"],
                                             SnapshotType="manual")["DBSnapshots"][0]
    aws("rds").restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier=world["db"] + "-verify-dead00",
        DBSnapshotIdentifier=ident["DBSnapshotIdentifier"])
    assert len(staging_volumes()) == 1 and len(staging_instances()) == 1
    plan = _plan(tmp_path, world)  # the passing checks again
    r = run_cli("verify", plan, env=env)
    assert r.rc == 0, r.text
    assert staging_volumes() == [] and staging_instances() == []


def _at_device(ec2, instance: str, device: str = "/dev/sdf") -> str:
    """The volume attached at `device` of `instance`."""
    inst = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    return next(m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]
                if m["DeviceName"] == device)


def test_rollback_and_undo_ebs_and_rds(aws, world, tmp_path: Path) -> None:
    env = world["env"]
    plan = _plan(tmp_path, world)
    assert run_cli("backup", "--init", plan, env=env).rc == 0
    assert run_cli("verify", plan, env=env).rc == 0
    ec2 = aws("ec2")

    def at_device() -> str:
        return _at_device(ec2, world["instance"])

    original_db = str(aws("rds").describe_db_instances(DBInstanceIdentifier=world["db"])[
        "DBInstances"][0]["InstanceCreateTime"])
    r = run_cli("rollback", plan, "--dry-run", env=env)
    assert r.rc == 0 and "ec2 DetachVolume" in r.out and "rds ModifyDBInstance" in r.out
    assert at_device() == world["volume"]
    r = run_cli("rollback", plan, "--yes", env=env)
    assert r.rc == 0, r.text
    new = at_device()
    assert new != world["volume"]
    vol = ec2.describe_volumes(VolumeIds=[new])["Volumes"][0]
    verified = json.loads(run_cli("snapshots", plan, "--json").out)[0]
    assert vol["SnapshotId"] == verified["summary"]["snapshots"][SRC]
    state = ec2.describe_instances(InstanceIds=[world["instance"]])["Reservations"][0][
        "Instances"][0]["State"]["Name"]
    assert state == "running"
    rds_ = aws("rds")

    def by_name() -> dict[str, str]:
        return {d["DBInstanceIdentifier"]: str(d["InstanceCreateTime"])
                for d in rds_.describe_db_instances()["DBInstances"]}

    names = by_name()
    kept_db = next(n for n in names if n.startswith(world["db"] + "-pre-rb-"))
    assert names[world["db"]] != original_db  # the name now points at the restored instance
    assert names[kept_db] == original_db
    r = run_cli("rollback", plan, "--undo", "--yes", env=env)
    assert r.rc == 0, r.text
    assert at_device() == world["volume"]  # the old volume is back at its device
    assert by_name()[world["db"]] == original_db  # and the original instance has its name
    assert kept_db not in by_name()
    r = run_cli("rollback", plan, "--cleanup", "--yes", env=env)
    assert r.rc == 0, r.text
    vols = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert new not in vols and world["volume"] in vols  # the replaced one went, not ours
    assert set(by_name()) & {n for n in names if n.startswith(world["db"] + "-")} == set()


def test_ebs_checks_run_on_the_staging_host_over_ssh(aws, world, tmp_path: Path,
                                                     sshd) -> None:
    host = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    plan = _plan(tmp_path, world, data={
        "staging": {"availability_zone": f"{SRC}a", "instance_id": world["instance"],
                    "device": "/dev/sdg", "host": host},
        "checks": [{"command": {"run": 'echo "on $SSH_CONNECTION: $RESTORER_STAGING_VOLUME '
                                       'at $RESTORER_STAGING_DEVICE"; '
                                       'test -n "$SSH_CONNECTION"'}}]})
    env = world["env"]
    assert run_cli("backup", "--init", plan, "--target", "data", env=env).rc == 0
    r = run_cli("verify", plan, "--target", "data", "--json", env=env)
    assert r.rc == 0, r.text
    (v,) = json.loads(r.out)
    detail = v["checks"][1]["detail"]
    assert "on 127.0.0.1" in detail and "vol-" in detail and "at /dev/sdg" in detail
    assert f"on {world['instance']} at /dev/sdg" in v["staging"]
    attached = aws("ec2").describe_volumes(Filters=[
        {"Name": "attachment.instance-id", "Values": [world["instance"]]}])["Volumes"]
    devices = {a["Device"] for v_ in attached for a in v_["Attachments"]}
    assert "/dev/sdg" not in devices and "/dev/sdf" in devices  # detached again


def test_ebs_rollback_finds_the_attachment_without_instance_and_device(aws, world,
                                                                       tmp_path: Path) -> None:
    env = world["env"]
    plan = _plan(tmp_path, world, data={"instance_id": None, "device": None})
    ec2 = aws("ec2")

    def at_device() -> str:
        return _at_device(ec2, world["instance"])

    assert run_cli("backup", "--init", plan, "--target", "data", env=env).rc == 0
    assert run_cli("verify", plan, "--target", "data", env=env).rc == 0
    r = run_cli("rollback", plan, "--target", "data", "--dry-run", env=env)
    assert r.rc == 0, r.text
    assert f"at /dev/sdf of {world['instance']}" in r.out
    r = run_cli("rollback", plan, "--target", "data", "--yes", env=env)
    assert r.rc == 0, r.text
    assert at_device() != world["volume"]
    # after the rollback the plan's volume is detached: the undo finds where it belonged
    r = run_cli("rollback", plan, "--undo", "--yes", env=env)
    assert r.rc == 0, r.text
    assert at_device() == world["volume"]
    # a volume attached nowhere is refused clearly, before anything happens
    ec2.detach_volume(VolumeId=world["volume"], InstanceId=world["instance"])
    r = run_cli("rollback", plan, "--target", "data", "--yes", env=env)
    assert r.rc == 2 and "is not attached to any instance" in r.err, r.text
