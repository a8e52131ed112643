"""One conformance provider per target kind: the only place that knows how to set a kind up.

A provider makes the source data against the real service (folders, an sshd on loopback,
PostgreSQL, MariaDB, a moto server), gives the plan fragment of one target named `t`, and
reads the live data (and a restored copy) back in a form the journeys compare. The journeys
themselves (tests/targets/test_conformance.py) know nothing of any kind.

A kind in `restorer.targets.KINDS` without a provider here fails the suite: a new kind
proves itself by adding one.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.conftest import Result, run_cli, tree_digest, unique_name
from tests.e2e.test_dumps import _my, _psql

REGION = "eu-west-1"
TARGET = "t"  # every provider's target is named so


def cli_env(extra: dict[str, str | None]) -> dict[str, str | None]:
    """The environment of a CLI run. The suite runs the CLI some 130 times; where bytecode
    is not written (PYTHONDONTWRITEBYTECODE), each run compiles restorer again, about half
    of a short command's time. Those runs keep their bytecode in a folder of their own
    instead (never beside the sources); the code that runs is the same."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return extra
    prefix = Path(tempfile.gettempdir()) / f"restorer-conformance-pycache-{os.getuid()}"
    return {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(prefix), **extra}


def _db_name(prefix: str) -> str:
    return unique_name(prefix).replace("-", "_")


def _ours(names: list[str], base: str) -> list[str]:
    """`base` and the databases named after it (base_dst1, base_rb_..., base_pre_rb_...),
    never another test's base_10 when ours is base_1."""
    return [n for n in names if n == base or n.startswith(base + "_")]


class Provider:
    """Base: a target of one kind over real data, and how to read that data back."""

    kind: ClassVar[str]
    #: variant name -> the target keys it adds, as `TargetKind.can` sees them (collection time)
    variants: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, request: pytest.FixtureRequest, tmp: Path,
                 variant: str | None = None) -> None:
        self.request = request
        self.tmp = tmp
        self.variant = variant
        self.plan_name = unique_name("conf")  # cloud resources are tagged with it
        self.env: dict[str, str | None] = {}
        self._dests = 0
        request.addfinalizer(self.teardown)
        self.setup()

    # --- to be given by each kind -------------------------------------------------------

    def setup(self) -> None:
        raise NotImplementedError

    def target(self) -> dict[str, Any]:
        """The plan fragment of target `t`, with staging and checks for verify."""
        raise NotImplementedError

    def live(self) -> Any:
        """The live data, in a form that compares equal exactly when the data is equal."""
        raise NotImplementedError

    def change(self) -> None:
        """Make the live data differ from what was backed up (a newer state)."""
        raise NotImplementedError

    def restored(self, dest: str) -> Any:
        """What `restore --to dest` wrote, comparable with `live()`."""
        raise NotImplementedError

    def staging_left(self) -> list[str]:
        """What verify left behind of its staging (must be nothing)."""
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    # --- shared ----------------------------------------------------------------------------

    def cli(self, *args: Any) -> Result:
        return run_cli(*args, env=cli_env(self.env))

    def plan(self, filename: str = "plan.yaml", **overrides: Any) -> Path:
        plan: dict[str, Any] = {
            "version": 1, "name": self.plan_name, "repository": {"url": "file://repo"},
            "ledger": "sqlite:///ledger.db",
            "retry": {"attempts": 3, "initial_delay": "0.1s", "max_delay": "0.5s"},
            "targets": [self.target()], **overrides}
        path = self.tmp / filename
        path.write_text(yaml.safe_dump(plan, sort_keys=False))
        return path

    def restore_to(self) -> str:
        """A fresh --to destination (a folder by default)."""
        self._dests += 1
        return str(self.tmp / f"restored{self._dests}")

    def assert_rolled_back(self, backup: dict[str, Any], at_backup: Any) -> None:
        """After a rollback to `backup` (its `backup --json` entry): the live data is the
        snapshot's."""
        assert self.live() == at_backup

    def assert_pruned(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """After prune forgot `old` and kept `new`: what lives outside the repository.
        Repository kinds have nothing there (the journey restores `new`)."""


# --- folders ---------------------------------------------------------------------------


def _small_tree(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    (root / "index.html").write_text("<h1>good</h1>\n")
    (root / "img" / "logo.bin").write_bytes(os.urandom(40_000))
    (root / "empty").mkdir()
    (root / "secret.key").write_text("k\n")
    os.chmod(root / "secret.key", 0o600)
    os.symlink("index.html", root / "home")
    for i, p in enumerate(sorted(root.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))


def _change_tree(root: Path) -> None:
    (root / "index.html").write_text("<h1>bad deploy</h1>\n")
    (root / "img" / "logo.bin").unlink()
    (root / "new.js").write_text("oops\n")


class Files(Provider):
    kind = "files"

    def setup(self) -> None:
        self.src = self.tmp / "src"
        _small_tree(self.src)
        self.staging = self.tmp / "staging"

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "files", "paths": ["src"],
                "staging": {"path": "staging"},
                "checks": [{"files": {"exist": ["index.html"], "min_count": 2}}]}

    def live(self) -> str:
        return tree_digest(self.src)  # contents, modes, owners, mtimes, xattrs, links

    def change(self) -> None:
        _change_tree(self.src)

    def restored(self, dest: str) -> str:
        return tree_digest(Path(dest) / "src")

    def staging_left(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir()) if self.staging.exists() else []


def _sftp_digest(root: Path) -> dict[str, tuple]:
    """What SFTP carries: type, mode, whole-second mtime, content or link target."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[str(p.relative_to(root))] = ("link", os.readlink(p))
        else:
            body = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             int(st.st_mtime), body)
    return out


def _ssh_options(sshd: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}


class SSHFiles(Provider):
    kind = "ssh-files"

    def setup(self) -> None:
        self.ssh = _ssh_options(self.request.getfixturevalue("sshd"))
        self.remote = self.tmp / "remote"  # "on the host": the sshd runs here
        _small_tree(self.remote)
        self.staging = self.tmp / "staging"

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "ssh-files", "host": self.ssh,
                "paths": [str(self.remote)], "staging": {"path": str(self.staging)},
                "checks": [{"files": {"exist": ["index.html"], "min_count": 2}}]}

    def live(self) -> dict[str, tuple]:
        return _sftp_digest(self.remote)

    def change(self) -> None:
        _change_tree(self.remote)

    def restored(self, dest: str) -> dict[str, tuple]:
        return _sftp_digest(Path(dest) / "remote")

    def staging_left(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir()) if self.staging.exists() else []


# --- databases -------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
INSERT INTO items(name, qty) SELECT 'item ' || g, g % 17 FROM generate_series(1, 300) g;
"""


class Postgres(Provider):
    kind = "postgres"
    variants = {"via_ssh": {"via_ssh": {"host": "db1"}},
                "all_databases": {"all_databases": True}}

    def setup(self) -> None:
        # pg_dumpall dumps every database of its server: a server of the suite's own
        self.server = self.request.getfixturevalue(
            "pg_cluster" if self.variant == "all_databases" else "pg_server")
        self.db = _db_name("kpg")
        _psql(f"{self.server}/postgres", f"CREATE DATABASE {self.db}")
        _psql(self.dsn, PG_SCHEMA)
        if self.variant == "via_ssh":
            self.ssh = _ssh_options(self.request.getfixturevalue("sshd"))

    @property
    def dsn(self) -> str:
        return f"{self.server}/{self.db}"

    def target(self) -> dict[str, Any]:
        t: dict[str, Any] = {
            "name": TARGET, "kind": "postgres", "dsn": self.dsn,
            "staging": {"dsn": f"{self.server}/{self.db}_verify"},
            "checks": [{"sql": {"query": "select count(*) from items", "min": 1}}]}
        if self.variant == "via_ssh":
            t["via_ssh"] = self.ssh
        elif self.variant == "all_databases":
            t.update(dsn=f"{self.server}/postgres", all_databases=True)
            del t["staging"], t["checks"]
        return t

    def _state(self, dsn: str) -> str:
        return _psql(dsn, "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) "
                          "FROM items t")

    def live(self) -> str:
        return self._state(self.dsn)

    def change(self) -> None:
        _psql(self.dsn, "DELETE FROM items WHERE id % 3 = 0; UPDATE items SET qty = -1 "
                        "WHERE id < 50")

    def restore_to(self) -> str:
        self._dests += 1
        return f"{self.server}/{self.db}_dst{self._dests}"

    def restored(self, dest: str) -> str:
        return self._state(dest)

    def _databases(self) -> list[str]:
        return _ours(_psql(f"{self.server}/postgres",
                           "SELECT datname FROM pg_database").split(), self.db)

    def staging_left(self) -> list[str]:
        return [d for d in self._databases() if d == f"{self.db}_verify"]

    def teardown(self) -> None:
        if not hasattr(self, "db"):
            return  # setup failed before making it
        for d in self._databases():
            _psql(f"{self.server}/postgres", f"DROP DATABASE IF EXISTS {d} WITH (FORCE)")


class MySQL(Provider):
    kind = "mysql"
    variants = {"via_ssh": {"via_ssh": {"host": "db1"}}}

    def setup(self) -> None:
        self.server = self.request.getfixturevalue("mariadb_server")
        self.db = _db_name("kmy")
        _my(self.server, f"CREATE DATABASE {self.db}")
        _my(self.server, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(30), qty INT) "
            "ENGINE=InnoDB; INSERT INTO items SELECT seq, CONCAT('item ', seq), seq % 17 "
            "FROM seq_1_to_300;", self.db)
        if self.variant == "via_ssh":
            self.ssh = _ssh_options(self.request.getfixturevalue("sshd"))

    def target(self) -> dict[str, Any]:
        t: dict[str, Any] = {
            "name": TARGET, "kind": "mysql", "dsn": f"{self.server}/{self.db}",
            "staging": {"dsn": f"{self.server}/{self.db}_verify"},
            "checks": [{"sql": {"query": "SELECT COUNT(*) FROM items", "min": 1}}]}
        if self.variant == "via_ssh":
            t["via_ssh"] = self.ssh
        return t

    def _state(self, db: str) -> str:
        return _my(self.server, "SELECT (SELECT COUNT(*) FROM items), (SELECT MD5(GROUP_CONCAT("
                   "CONCAT_WS(':', id, name, qty) ORDER BY id)) FROM items), (SELECT "
                   "GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables "
                   f"WHERE table_schema = '{db}')", db)

    def live(self) -> str:
        return self._state(self.db)

    def change(self) -> None:
        _my(self.server, "DELETE FROM items WHERE id % 3 = 0; UPDATE items SET qty = -1 "
            "WHERE id < 50; CREATE TABLE junk (x INT);", self.db)

    def restore_to(self) -> str:
        self._dests += 1
        return f"{self.server}/{self.db}_dst{self._dests}"

    def restored(self, dest: str) -> str:
        return self._state(dest.rsplit("/", 1)[1])

    def _databases(self) -> list[str]:
        return _ours(_my(self.server, "SHOW DATABASES").split(), self.db)

    def staging_left(self) -> list[str]:
        return [d for d in self._databases() if d == f"{self.db}_verify"]

    def teardown(self) -> None:
        if not hasattr(self, "db"):
            return
        for d in self._databases():
            _my(self.server, f"DROP DATABASE IF EXISTS `{d}`")


class SQLite(Provider):
    kind = "sqlite"

    def setup(self) -> None:
        self.path = self.tmp / "app.db"
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT)")
        db.executemany("INSERT INTO users(email) VALUES (?)", [(f"u{i}@x",) for i in range(250)])
        db.commit()
        db.close()
        self.staging = self.tmp / "staging"

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "sqlite", "path": "app.db",
                "staging": {"path": "staging"},
                "checks": [{"sql": {"query": "select count(*) from users", "min": 1}}]}

    @staticmethod
    def _state(path: Path) -> tuple:
        db = sqlite3.connect(path)
        try:
            return (db.execute("PRAGMA integrity_check").fetchone()[0],
                    db.execute("SELECT id, email FROM users ORDER BY id").fetchall())
        finally:
            db.close()

    def live(self) -> tuple:
        return self._state(self.path)

    def change(self) -> None:
        db = sqlite3.connect(self.path)
        db.execute("DELETE FROM users WHERE id % 3 = 0")
        db.execute("INSERT INTO users(email) VALUES ('late@x')")
        db.commit()
        db.close()

    def restore_to(self) -> str:
        return super().restore_to() + ".db"

    def restored(self, dest: str) -> tuple:
        return self._state(Path(dest))

    def staging_left(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir()) if self.staging.exists() else []


class Command(Provider):
    kind = "command"

    def setup(self) -> None:
        self.state = self.tmp / "state.bin"
        self.state.write_bytes(os.urandom(64_000))

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "command", "backup": f"cat {self.state}",
                "restore": 'cat > "$RESTORER_TO"'}

    def live(self) -> str:
        return hashlib.sha256(self.state.read_bytes()).hexdigest()

    def change(self) -> None:
        self.state.write_bytes(os.urandom(64_000))

    def restore_to(self) -> str:
        return super().restore_to() + ".bin"

    def restored(self, dest: str) -> str:
        return hashlib.sha256(Path(dest).read_bytes()).hexdigest()

    def staging_left(self) -> list[str]:
        return []  # a command target is never staged


# --- AWS (moto server) -----------------------------------------------------------------


class _Cloud(Provider):
    def setup(self) -> None:
        import boto3

        moto = self.request.getfixturevalue("moto_server")
        self.env = {"AWS_ENDPOINT_URL": moto.url}
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url)
        self.rds = boto3.client("rds", region_name=REGION, endpoint_url=moto.url)
        self.make()

    def make(self) -> None:
        raise NotImplementedError

    def change(self) -> None:
        pass  # every backup is a new AWS snapshot; the live resource stays as it is

    def restored(self, dest: str) -> Any:
        raise AssertionError(f"kind {self.kind} restores nothing to {dest}")

    def aws_snapshot_exists(self, ident: str) -> bool:
        raise NotImplementedError

    def assert_pruned(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        (old_id,) = old["summary"]["snapshots"].values()
        (new_id,) = new["summary"]["snapshots"].values()
        assert not self.aws_snapshot_exists(old_id), f"{old_id} is still in AWS"
        assert self.aws_snapshot_exists(new_id), f"{new_id} is gone from AWS"


class EBS(_Cloud):
    kind = "ebs"

    def make(self) -> None:
        inst = self.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                      Placement={"AvailabilityZone": f"{REGION}a"})
        self.instance = inst["Instances"][0]["InstanceId"]
        self.volume = self.ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
        self.ec2.attach_volume(VolumeId=self.volume, InstanceId=self.instance,
                               Device="/dev/sdf")

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "ebs", "volume_id": self.volume, "region": REGION,
                "instance_id": self.instance, "device": "/dev/sdf",
                "allow_stop_instance": True,
                "staging": {"availability_zone": f"{REGION}b"},
                "checks": [{"command": {"run": 'test -n "$RESTORER_STAGING_VOLUME"'}}]}

    def live(self) -> str:
        """The volume attached at the target's device."""
        inst = self.ec2.describe_instances(InstanceIds=[self.instance])
        maps = inst["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
        return next(m["Ebs"]["VolumeId"] for m in maps if m["DeviceName"] == "/dev/sdf")

    def assert_rolled_back(self, backup: dict[str, Any], at_backup: Any) -> None:
        now = self.live()
        assert now != self.volume, "the original volume is still attached"
        vol = self.ec2.describe_volumes(VolumeIds=[now])["Volumes"][0]
        assert vol["SnapshotId"] == backup["summary"]["snapshots"][REGION]

    def staging_left(self) -> list[str]:
        return [v["VolumeId"] for v in self.ec2.describe_volumes(Filters=[
            {"Name": "tag:restorer:role", "Values": ["staging"]},
            {"Name": "tag:restorer:plan", "Values": [self.plan_name]}])["Volumes"]]

    def aws_snapshot_exists(self, ident: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            return bool(self.ec2.describe_snapshots(SnapshotIds=[ident])["Snapshots"])
        except ClientError as e:
            if "NotFound" in e.response["Error"]["Code"]:
                return False
            raise


class RDS(_Cloud):
    kind = "rds"

    def make(self) -> None:
        self.db = unique_name("kdb")
        self.rds.create_db_instance(DBInstanceIdentifier=self.db, Engine="postgres",
                                    DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                                    MasterUsername="app", MasterUserPassword="secret-pw-1")
        self.original = self.live()

    def target(self) -> dict[str, Any]:
        return {"name": TARGET, "kind": "rds", "db_instance": self.db, "region": REGION,
                "staging": {"instance_class": "db.t3.micro"},
                "checks": [{"command": {"run": 'test -n "$RESTORER_STAGING_HOST"'}}]}

    def _instances(self) -> dict[str, dict[str, Any]]:
        return {d["DBInstanceIdentifier"]: d
                for d in self.rds.describe_db_instances()["DBInstances"]
                if d["DBInstanceIdentifier"] == self.db
                or d["DBInstanceIdentifier"].startswith(self.db + "-")}

    def live(self) -> str:
        """Which instance answers to the target's name (by its creation time: moto derives
        DbiResourceId from the name)."""
        return str(self._instances()[self.db]["InstanceCreateTime"])

    def assert_rolled_back(self, backup: dict[str, Any], at_backup: Any) -> None:
        inst = {n: (str(d["InstanceCreateTime"]), d) for n, d in self._instances().items()}
        assert inst[self.db][0] != self.original, "the name is still the old instance's"
        # the original is kept under another name, and the one named so was restored from
        # the snapshot (moto names no source snapshot: restorer's tag on it says so)
        kept = [n for n, (created, _d) in inst.items() if created == self.original]
        assert kept and kept[0].startswith(self.db + "-pre-rb-"), inst.keys()
        arn = inst[self.db][1]["DBInstanceArn"]
        tags = {t["Key"]: t["Value"]
                for t in self.rds.list_tags_for_resource(ResourceName=arn)["TagList"]}
        assert tags.get("restorer:role") == "rollback-new", tags

    def staging_left(self) -> list[str]:
        return [n for n in self._instances() if n.startswith(self.db + "-verify-")]

    def aws_snapshot_exists(self, ident: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            return bool(self.rds.describe_db_snapshots(
                DBSnapshotIdentifier=ident)["DBSnapshots"])
        except ClientError as e:
            if "NotFound" in e.response["Error"]["Code"]:
                return False
            raise


PROVIDERS: dict[str, type[Provider]] = {p.kind: p for p in (
    Files, SSHFiles, Postgres, MySQL, SQLite, Command, EBS, RDS)}


def provider_for(kind: str, request: pytest.FixtureRequest, tmp: Path,
                 variant: str | None = None) -> Provider:
    cls = PROVIDERS.get(kind)
    if cls is None:
        pytest.fail(f"kind {kind} has no conformance provider (add one to "
                    "tests/targets/kinds.py)", pytrace=False)
    return cls(request, tmp, variant)
