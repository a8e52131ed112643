"""The plan: pydantic models of what a user declares (spec only; what a run did lives elsewhere).

Every model refuses unknown keys, and every field carries a description that `restorer schema`
exports, so editors can complete plans and errors can point at the key to fix.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from restorer.plan.durations import Duration
from restorer.plan.problems import LOOPBACK, Problem, server_of
from restorer.plan.secrets import Secret, SecretRef

if TYPE_CHECKING:
    from restorer.plan.load import LoadedPlan

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_' or '-', at most 64"),
]


class Strict(BaseModel):
    # defer_build: schemas are built once, for Plan, when a plan is first validated
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class SSHOptions(Strict):
    """How to reach a host over SSH; the same keys wherever SSH appears."""

    host: str = Field(description="host name or address", examples=["db1"])
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    user: str | None = Field(None, description="login user (default: the current user)")
    key_file: str | None = Field(
        None,
        description="private key file (default: the SSH agent)",
        examples=["~/.ssh/id_ed25519"],
    )
    key_passphrase: Secret | None = Field(
        None, description="passphrase of key_file, as a reference"
    )
    known_hosts: str | None = Field(
        None, description="known_hosts file to verify the host key (default ~/.ssh/known_hosts)"
    )
    accept_new_host_key: bool = Field(
        False, description="trust and record an unknown host key on first use (never a changed one)"
    )
    connect_timeout: Duration = Field(15.0, description="time allowed to connect")


class RepositorySSHOptions(SSHOptions):
    """SSH options of an sftp:// repository: the URL gives host, port and user; these keys
    may repeat them, never contradict them."""

    host: str | None = Field(None, description="host (the URL's; may be left out)")  # type: ignore[assignment]
    port: int | None = Field(None, ge=1, le=65535,  # type: ignore[assignment]
                             description="SSH port (the URL's, else 22)")


def sftp_url_parts(url: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of sftp://[USER@]HOST[:PORT]/PATH."""
    netloc = url.split("://", 1)[1].partition("/")[0]
    user, _at, hostport = netloc.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = int(tail[1:]) if tail[1:].isdigit() else None
    elif hostport.count(":") == 1:
        host, _, p_ = hostport.partition(":")
        port = int(p_) if p_.isdigit() else None
    return user or None, host, port


class RepositoryConfig(Strict):
    """Where snapshots of file-like targets live."""

    url: str = Field(
        description="file:///path, a plain path (relative to the plan), s3://BUCKET/PREFIX, "
        "or sftp://USER@HOST[:PORT]/PATH",
        examples=["file:///var/backups/webapp", "s3://acme-backups/webapp"],
    )
    password: Secret | None = Field(
        None, description="repository password reference; present means encrypted"
    )
    pack_size: str = Field("16MiB", description="target size of pack files, e.g. '16MiB'")
    region: str | None = Field(None, description="S3: region")
    endpoint_url: str | None = Field(None, description="S3: endpoint of an S3-compatible store")
    profile: str | None = Field(None, description="S3: AWS profile from the standard chain")
    storage_class: str | None = Field(None, description="S3: storage class of packs")
    sse: Literal["AES256", "aws:kms"] | None = Field(None, description="S3: server-side encryption")
    kms_key_id: str | None = Field(None, description="S3: KMS key id for sse: aws:kms")
    object_lock_days: int | None = Field(
        None, ge=1, description="S3: Object Lock retention in days on packs and snapshots"
    )
    ssh: RepositorySSHOptions | None = Field(
        None, description="SFTP: SSH options beyond the URL (host, port and user come from it)")
    request_timeout: Duration = Field(
        60.0, description="S3/SFTP: how long a request may go without receiving a byte "
        "before it counts as failed (and is retried); an idle timeout, so a slow but "
        "steady transfer is not cut off")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if "://" in v and v.split("://", 1)[0] not in ("file", "s3", "sftp"):
            raise ValueError(
                f"unsupported repository URL scheme in '{v}'; use file://, s3:// or sftp://"
            )
        if not v.strip():
            raise ValueError("the repository URL is empty")
        return v

    @field_validator("pack_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @model_validator(mode="after")
    def _ssh_agrees_with_url(self) -> RepositoryConfig:
        if self.ssh is None or not self.url.startswith("sftp://"):
            return self
        user, host, port = sftp_url_parts(self.url)
        for key, mine, theirs in (("host", self.ssh.host, host), ("port", self.ssh.port, port),
                                  ("user", self.ssh.user, user)):
            if mine is not None and theirs not in (None, "") and mine != theirs:
                raise ValueError(
                    f"ssh.{key} is {mine!r} but the repository URL says {theirs!r}; the URL "
                    f"names the {key}: leave ssh.{key} out or make the two agree")
        return self


def parse_size(text: str) -> int:
    """Bytes in '16MiB', '512KiB', '1GiB', '4096'."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", str(text))
    if not m:
        raise ValueError(f"'{text}' is not a size; write e.g. '16MiB' or '512KiB'")
    mult = {None: 1, "B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30,
            "KB": 1000, "MB": 10**6, "GB": 10**9}[m.group(2)]
    return int(m.group(1)) * mult


class RetryPolicy(Strict):
    """How storage and cloud calls are retried when they fail transiently."""

    attempts: int = Field(6, ge=1, le=100, description="attempts per operation, first included")
    initial_delay: Duration = Field(1.0, description="delay before the first retry")
    max_delay: Duration = Field(60.0, description="cap on one delay (exponential, with jitter)")
    max_time: Duration = Field(900.0, description="cap on the total time spent on one operation")


class Objectives(Strict):
    """Recovery objectives checked by verify and status."""

    rpo: Duration | None = Field(None, description="max age of the newest verified snapshot")
    rto: Duration | None = Field(None, description="max wall time of a restore into staging")
    verify_every: Duration | None = Field(
        None, description="max time between passing restore tests (verify) of each target; "
        "past it the target is in breach in status, metrics, alerts and the report",
        examples=["7d"])


CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
               ("day-of-week", 0, 7))


class Schedule(Strict):
    """Cron expressions (5 fields) for unattended runs."""

    backup: str | None = Field(None, examples=["0 3 * * *"])
    verify: str | None = Field(None, examples=["30 4 * * 0"])
    prune: str | None = Field(None, examples=["0 5 * * *"])
    check: str | None = Field(None, examples=["0 6 1 * *"])
    report: str | None = Field(None, examples=["0 6 * * *"], description="when `run --due` "
                               "writes the report (see `report`)")
    timezone: str | None = Field(None, description="IANA time zone of the schedule (default UTC)")

    @field_validator("backup", "verify", "prune", "check", "report")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from croniter import croniter

        fields = v.split()
        if len(fields) != 5:
            raise ValueError(
                f"'{v}' is not a 5-field cron expression (minute hour day month weekday), "
                "e.g. '0 3 * * *'"
            )
        for text, (what, low, high) in zip(fields, CRON_FIELDS, strict=True):
            for n in re.findall(r"\d+", text.split("/")[0]):
                if not low <= int(n) <= high:
                    raise ValueError(f"'{v}': the {what} field '{text}' is out of range: "
                                     f"{what} goes from {low} to {high}")
        if not croniter.is_valid(v):
            raise ValueError(f"'{v}' is not a valid cron expression (minute hour day month "
                             "weekday), e.g. '0 3 * * *'")
        try:
            croniter(v).get_next(float)
        except Exception:
            raise ValueError(f"'{v}' never fires (no date matches it, as 30 February); "
                             "give a day and month that exist together") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone '{v}'; use an IANA name like 'Europe/Berlin'"
            ) from None
        return v


class Retention(Strict):
    """Which snapshots prune keeps (per target); everything not kept by some rule goes."""

    keep_last: int | None = Field(None, ge=0)
    keep_hourly: int | None = Field(None, ge=0)
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)
    keep_monthly: int | None = Field(None, ge=0)
    keep_yearly: int | None = Field(None, ge=0)
    keep_within: Duration | None = Field(None, description="keep everything newer than this")
    keep_tags: list[str] = Field(default_factory=list, description="keep snapshots with these tags")
    prune_verified: bool = Field(
        False, description="allow prune to remove verified snapshots the rules do not keep"
    )

    @field_validator("keep_within")
    @classmethod
    def _within_positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("keep_within of zero keeps nothing and would forget every "
                             "snapshot; give a duration such as 7d, or leave the key out")
        return v


# --- checks -------------------------------------------------------------------------------


class FilesCheckSpec(Strict):
    exist: list[str] = Field(default_factory=list, description="paths that must exist (relative)")
    min_count: int | None = Field(None, ge=0, description="minimum number of regular files")
    min_bytes: int | None = Field(None, ge=0, description="minimum total size in bytes")


class CommandCheckSpec(Strict):
    run: str = Field(description="shell command; passes on exit 0; cwd is the restored copy")
    timeout: Duration = Field(60.0)


class SQLCheckSpec(Strict):
    query: str = Field(description="a query against the restored database; its first column "
                       "of its first row is the value compared")
    equals: Any | None = Field(None, description="the value must equal this (numbers compare "
                               "as numbers)")
    min: float | None = Field(None, description="the value must be a number >= min")
    max: float | None = Field(None, description="the value must be a number <= max")
    non_empty: bool | None = Field(None, description="the query must return a non-empty value")
    timeout: Duration = Field(60.0, description="time the query may take")


class HTTPCheckSpec(Strict):
    url: str = Field(description="http(s) URL to GET", examples=["http://127.0.0.1:8080/"])
    serve: str | None = Field(
        None, description="command that serves the restored copy (cwd = the restored copy), "
        "started before the request and stopped after it")
    status: int = Field(200, ge=100, le=599, description="expected HTTP status")
    contains: str | None = Field(None, description="text the response body must contain")
    timeout: Duration = Field(30.0, description="time allowed for the server to answer")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"'{v}' is not an http:// or https:// URL")
        return v


class FilesCheck(Strict):
    files: FilesCheckSpec


class CommandCheck(Strict):
    command: CommandCheckSpec


class SQLCheck(Strict):
    sql: SQLCheckSpec


class HTTPCheck(Strict):
    http: HTTPCheckSpec


class ManifestCheck(Strict):
    manifest: bool = Field(True, description="compare every restored file with the snapshot")


CHECK_KINDS = ("files", "command", "sql", "http", "manifest")


def _check_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in value if k in CHECK_KINDS]
        return keys[0] if len(keys) == 1 else None
    return getattr(value, "kind", None)


Check = Annotated[
    Annotated[FilesCheck, Tag("files")]
    | Annotated[CommandCheck, Tag("command")]
    | Annotated[SQLCheck, Tag("sql")]
    | Annotated[HTTPCheck, Tag("http")]
    | Annotated[ManifestCheck, Tag("manifest")],
    Discriminator(
        _check_kind,
        custom_error_type="check_kind",
        custom_error_message="a check is one of: files, command, sql, http, manifest",
    ),
]


_DSN_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@?#]*:[^/@?#]*@|[?&]password=", re.I)


def _no_password_in_dsn(v: Any) -> Any:
    """A DSN ends up on a dump tool's command line, which every user of the machine can
    read (`ps`): its password belongs in `password:`, passed to the tool another way."""
    if isinstance(v, str) and _DSN_PASSWORD.search(v):
        raise ValueError("the DSN holds a password, which would reach the command line of "
                         "pg_dump/psql/mysql (visible to every user in `ps`); remove it from "
                         "the DSN and write password: ${file:/etc/restorer/db.pass} (or "
                         "${env:NAME}) beside it")
    return v


class Staging(Strict):
    """Where restore tests land; which keys apply depends on the target kind."""

    path: str | None = Field(None, description="files: a scratch directory")
    dsn: Secret | str | None = Field(
        None, description="databases: the scratch database verify creates, restores into and "
        "drops (it must not exist, or be a leftover of an earlier verify)")
    password: Secret | None = Field(None, description="databases: password for staging.dsn")
    host: SSHOptions | None = Field(None, description="ssh-files: a host to restore onto")
    availability_zone: str | None = Field(None, description="ebs: zone of the scratch volume")
    instance_id: str | None = Field(None, description="ebs: staging instance to attach to")
    device: str | None = Field(None, description="ebs: device name when attaching")
    instance_class: str | None = Field(None, description="rds: class of the scratch instance")
    subnet_group: str | None = Field(None, description="rds: DB subnet group")
    keep: bool = Field(False, description="leave staging in place after verify")

    @field_validator("dsn")
    @classmethod
    def _dsn_has_no_password(cls, v: Any) -> Any:
        return _no_password_in_dsn(v)


class TargetHooks(Strict):
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    on_error: list[str] = Field(default_factory=list)
    timeout: Duration = Field(300.0)
    remote: bool = Field(
        False, description="run these hooks on the target's host (its via_ssh or ssh-files "
        "host) instead of here")


# --- targets ------------------------------------------------------------------------------


Verdict = Literal["pass", "fail", "n/a"]


def _local_separation(staging: Staging | None) -> tuple[Verdict, str]:
    """Kinds whose data and restore tests are both on the restorer host."""
    if staging is None:
        return "fail", "no staging is declared, so no restore test runs"
    if staging.host is not None and staging.host.host not in LOOPBACK:
        return "pass", f"restore tests run on {staging.host.host}, the source on this machine"
    return "fail", ("restore tests run on the machine that holds the source"
                    + (f" (into {staging.path})" if staging.path else ""))


def _server_separation(dsn: str, staging: Staging | None,
                       via: SSHOptions | None) -> tuple[Verdict, str]:
    if staging is None or not staging.dsn:
        return "fail", "no staging database is declared, so no restore test runs"
    src, dst = server_of(dsn), server_of(str(staging.dsn))
    if src is None or dst is None:
        return "n/a", "the servers cannot be told from the DSNs"
    if via is not None and via.host not in LOOPBACK:
        return "pass", (f"the source is on {via.host} (through SSH); restore tests run on "
                        f"{dst[0]}:{dst[1]}")
    if src == dst:
        return "fail", (f"restore tests run on the source's own server ({src[0]}:{src[1]}), "
                        "in another database")
    return "pass", f"restore tests run on {dst[0]}:{dst[1]}, the source on {src[0]}:{src[1]}"


class TargetBase(Strict):
    name: Name = Field(description="unique within the plan")
    staging: Staging | None = None
    checks: list[Check] = Field(default_factory=list)
    objectives: Objectives | None = Field(None, description="overrides the plan's objectives")
    retention: Retention | None = Field(None, description="overrides the plan's retention")
    hooks: TargetHooks | None = None
    tags: list[str] = Field(default_factory=list, description="tags added to every snapshot")

    # what plan validation asks of each kind (targets/ holds what a kind does)
    #: the staging keys the kind uses; validation refuses the others
    staging_keys: ClassVar[tuple[str, ...]] = ("keep",)
    #: whether sql checks can run against a restored copy
    takes_sql_checks: ClassVar[bool] = False

    def local_sources(self, lp: LoadedPlan) -> list[tuple[int, Path, list[str]]]:
        """(index in `paths`, resolved path, exclude patterns) of each local path it backs
        up."""
        return []

    def sources_on(self, host: SSHOptions, lp: LoadedPlan) -> list[str]:
        """Its source paths on `host`, when `host` is the machine its data lives on."""
        return []

    def production_dsn(self) -> str | None:
        """The live database it backs up, which staging must never reach."""
        return None

    def plan_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        """What is wrong with this target that only its kind can tell."""
        return []

    def separation(self) -> tuple[Verdict, str]:
        """Whether its restore tests run on a system other than the one its data lives on
        (DORA asks for restores onto separate systems), and why."""
        return "n/a", "this kind does not say where its restore tests run"

    def environment_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        """What only this machine can show (a source path missing, unreadable)."""
        return []


class FilesTarget(TargetBase):
    kind: Literal["files"]
    paths: list[str] = Field(
        min_length=1, description="directories or files (relative to the plan)"
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="glob patterns; 'name' matches at any depth, 'dir/' only directories, "
        "'/a/b' is anchored to the backed-up path",
    )
    one_file_system: bool = Field(False, description="do not cross mount points")
    xattrs: bool = Field(True, description="record extended attributes")

    staging_keys: ClassVar[tuple[str, ...]] = ("path", "host", "keep")

    def local_sources(self, lp: LoadedPlan) -> list[tuple[int, Path, list[str]]]:
        return [(j, lp.resolve_path(p).resolve(), self.exclude)
                for j, p in enumerate(self.paths)]

    def sources_on(self, host: SSHOptions, lp: LoadedPlan) -> list[str]:
        if host.host not in LOOPBACK:
            return []
        return [str(lp.resolve_path(p).resolve()) for p in self.paths]

    def separation(self) -> tuple[Verdict, str]:
        return _local_separation(self.staging)

    def plan_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        if not self.staging or not self.staging.path:
            return []
        out = []
        st = lp.resolve_path(self.staging.path).resolve()
        for p in self.paths:
            src = lp.resolve_path(p).resolve()
            if st == src or st.is_relative_to(src) or src.is_relative_to(st):
                key = f"targets[{i}].staging.path"
                out.append(Problem(
                    shown, key,
                    f"staging path {st} overlaps the target's source {src}; a restore test "
                    "would overwrite production data",
                    lp.lines.get(key), "point staging at a scratch directory elsewhere",
                ))
        return out

    def environment_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        out = []
        for j, p in enumerate(self.paths):
            rp = lp.resolve_path(p)
            key = f"targets[{i}].paths[{j}]"
            if not os.path.lexists(rp):
                out.append(Problem(shown, key, f"{rp} does not exist", lp.lines.get(key),
                                   "fix the path or create it"))
            elif not os.access(rp, os.R_OK) or (rp.is_dir() and not os.access(rp, os.X_OK)):
                out.append(Problem(shown, key, f"{rp} is not readable by this user",
                                   lp.lines.get(key), "run as a user that can read it"))
        return out


class SSHFilesTarget(TargetBase):
    kind: Literal["ssh-files"]
    host: SSHOptions
    paths: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)

    staging_keys: ClassVar[tuple[str, ...]] = ("path", "host", "keep")

    def sources_on(self, host: SSHOptions, lp: LoadedPlan) -> list[str]:
        same = (host.host, host.port) == (self.host.host, self.host.port) or (
            host.host in LOOPBACK and self.host.host in LOOPBACK)
        return [posixpath.normpath(p) for p in self.paths] if same else []

    def separation(self) -> tuple[Verdict, str]:
        where = self.staging.host if self.staging and self.staging.host else None
        if self.staging is None:
            return "fail", "no staging is declared, so no restore test runs"
        if where is not None and ((where.host, where.port) == (self.host.host, self.host.port)
                                  or {where.host, self.host.host} <= LOOPBACK):
            return "fail", f"restore tests run on {where.host}, the source's own host"
        if where is None and self.host.host in LOOPBACK:
            return "fail", "the source is on this machine, and restore tests run here too"
        return "pass", (f"restore tests run on {where.host if where else 'the restorer host'}, "
                        f"the source is on {self.host.host}")


class PostgresTarget(TargetBase):
    kind: Literal["postgres"]
    dsn: str = Field(description="postgresql://user@host:port/db (no password here)")
    password: Secret | None = None
    all_databases: bool = Field(False, description="pg_dumpall instead of one database")
    format: Literal["plain", "custom"] = "plain"
    via_ssh: SSHOptions | None = None

    staging_keys: ClassVar[tuple[str, ...]] = ("dsn", "password", "keep")
    takes_sql_checks: ClassVar[bool] = True

    def production_dsn(self) -> str | None:
        return self.dsn

    def separation(self) -> tuple[Verdict, str]:
        return _server_separation(self.dsn, self.staging, self.via_ssh)

    @field_validator("dsn")
    @classmethod
    def _dsn_has_no_password(cls, v: Any) -> Any:
        return _no_password_in_dsn(v)


class MySQLTarget(TargetBase):
    kind: Literal["mysql"]
    dsn: str = Field(description="mysql://user@host:port/db (no password here)")
    password: Secret | None = None
    via_ssh: SSHOptions | None = None

    staging_keys: ClassVar[tuple[str, ...]] = ("dsn", "password", "keep")
    takes_sql_checks: ClassVar[bool] = True

    def production_dsn(self) -> str | None:
        return self.dsn

    def separation(self) -> tuple[Verdict, str]:
        return _server_separation(self.dsn, self.staging, self.via_ssh)

    @field_validator("dsn")
    @classmethod
    def _dsn_has_no_password(cls, v: Any) -> Any:
        return _no_password_in_dsn(v)


class SQLiteTarget(TargetBase):
    kind: Literal["sqlite"]
    path: str

    staging_keys: ClassVar[tuple[str, ...]] = ("path", "keep")
    takes_sql_checks: ClassVar[bool] = True

    def plan_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        if not self.staging or not self.staging.path:
            return []
        st = lp.resolve_path(self.staging.path).resolve()
        if st != lp.resolve_path(self.path).resolve():
            return []
        key = f"targets[{i}].staging.path"
        return [Problem(shown, key, f"staging path {st} is the target's database file",
                        lp.lines.get(key), "point staging at a scratch directory")]

    def separation(self) -> tuple[Verdict, str]:
        return _local_separation(self.staging)

    def environment_problems(self, i: int, lp: LoadedPlan, shown: str) -> list[Problem]:
        rp = lp.resolve_path(self.path)
        key = f"targets[{i}].path"
        if rp.is_file():
            return []
        return [Problem(shown, key, f"{rp} is not an existing SQLite database file",
                        lp.lines.get(key), "fix the path or create the database")]


class CommandTarget(TargetBase):
    kind: Literal["command"]
    backup: str = Field(description="command whose stdout is the backup")
    restore: str = Field(description="command that restores from stdin")
    via_ssh: SSHOptions | None = None
    timeout: Duration = Field(3600.0)


class EBSTarget(TargetBase):
    kind: Literal["ebs"]
    volume_id: str = Field(pattern=r"^vol-[0-9a-f]{8,17}$")
    region: str
    copy_to_regions: list[str] = Field(default_factory=list)
    kms_key_id: str | None = None
    instance_id: str | None = Field(None, description="instance the volume is attached to")
    device: str | None = None
    allow_stop_instance: bool = False
    wait_timeout: Duration = Field(3600.0)

    staging_keys: ClassVar[tuple[str, ...]] = ("availability_zone", "instance_id", "device",
                                               "host", "keep")

    def separation(self) -> tuple[Verdict, str]:
        if self.staging is None:
            return "fail", "no staging is declared, so no restore test runs"
        if self.staging.instance_id and self.staging.instance_id == self.instance_id:
            return "fail", (f"restore tests attach the new volume to {self.instance_id}, the "
                            "source's own instance")
        return "pass", ("restore tests create a new volume from the snapshot"
                        + (f", attached to {self.staging.instance_id}"
                           if self.staging.instance_id else ""))


class RDSTarget(TargetBase):
    kind: Literal["rds"]
    db_instance: str
    region: str
    copy_to_regions: list[str] = Field(default_factory=list)
    kms_key_id: str | None = None
    wait_timeout: Duration = Field(7200.0)

    staging_keys: ClassVar[tuple[str, ...]] = ("instance_class", "subnet_group", "dsn",
                                               "password", "keep")

    def separation(self) -> tuple[Verdict, str]:
        if self.staging is None:
            return "fail", "no staging is declared, so no restore test runs"
        return "pass", (f"restore tests restore a new DB instance, not {self.db_instance}")


Target = Annotated[
    FilesTarget
    | SSHFilesTarget
    | PostgresTarget
    | MySQLTarget
    | SQLiteTarget
    | CommandTarget
    | EBSTarget
    | RDSTarget,
    Field(discriminator="kind"),
]
TARGET_KINDS = ("files", "ssh-files", "postgres", "mysql", "sqlite", "command", "ebs", "rds")
TARGET_MODELS: tuple[type[TargetBase], ...] = (
    FilesTarget, SSHFilesTarget, PostgresTarget, MySQLTarget, SQLiteTarget, CommandTarget,
    EBSTarget, RDSTarget)
#: which staging keys each kind takes (for the message that refuses the others)
STAGING_KEYS = {kind: m.staging_keys for kind, m in zip(TARGET_KINDS, TARGET_MODELS,
                                                          strict=True)}


class Hooks(Strict):
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    on_error: list[str] = Field(default_factory=list)
    timeout: Duration = Field(300.0)


class RollbackConfig(Strict):
    targets: list[str] = Field(default_factory=list, description="targets rolled back together")
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    terminate_connections: bool = Field(False, description="databases: may end other sessions")


NotifyEvent = Literal["failure", "success", "objective_breach", "recovered"]


class Notify(Strict):
    on: list[NotifyEvent] = Field(min_length=1)
    webhook: Secret | str | None = None
    ping: Secret | str | None = None
    format: Literal["json", "slack", "pagerduty", "zenduty"] = "json"
    routing_key: Secret | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> Notify:
        if (self.webhook is None) == (self.ping is None):
            raise ValueError("give exactly one of 'webhook' or 'ping'")
        return self


def _check_ledger_url(v: str) -> None:
    scheme = v.split("://", 1)[0] if "://" in v else ""
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError(f"'{v}' is not a ledger URL; write sqlite:///PATH or "
                         "postgresql://USER@HOST/DB")
    if not isinstance(v, SecretRef) and re.search(r"://[^/@]*:[^/@]*@", v):
        raise ValueError("the ledger URL holds a password in clear text; write it as a "
                         "reference, e.g. postgresql://USER:${env:LEDGER_PASSWORD}@HOST/DB, "
                         "or leave it to ~/.pgpass")


class LedgerConfig(Strict):
    """The ledger, signed: every run's closing row carries an Ed25519 signature over the
    chain head, and the signed head is anchored in the repository."""

    url: Secret | str | None = Field(
        None, description="sqlite:///path or postgresql://USER@HOST/DB (default: the per-user "
        "state file)")
    signing_key: Secret | None = Field(
        None, description="the Ed25519 private key from `restorer ledger keygen`, as a "
        "reference: ${file:/etc/restorer/ledger.key}; every run of the plan is signed with it",
        examples=["${file:/etc/restorer/ledger.key}"])
    public_keys: list[str] = Field(
        default_factory=list, description="public keys (ed25519:BASE64) whose signatures "
        "verification also trusts: the keys before a rotation, or, in a copy of the plan "
        "without signing_key, the key an auditor verifies with")

    @field_validator("public_keys")
    @classmethod
    def _public(cls, v: list[str]) -> list[str]:
        for k in v:
            if not re.fullmatch(r"ed25519:[A-Za-z0-9+/]{43}=", k.strip()):
                raise ValueError(f"'{k[:20]}...' is not an Ed25519 public key; give the "
                                 "ed25519:BASE64 text `restorer ledger keygen` printed")
        return [k.strip() for k in v]

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_ledger_url(v)
        return v


def _ledger_form(v: Any) -> str:
    return "ledger-config" if isinstance(v, dict | LedgerConfig) else "ledger-url"


# a URL or {url, signing_key, public_keys}: told apart by shape, so a mistake in one form is
# not also reported as a mistake in the other
LedgerSpec = Annotated[
    Annotated[LedgerConfig, Tag("ledger-config")] | Annotated[Secret | str, Tag("ledger-url")],
    Discriminator(_ledger_form)]


class ReportConfig(Strict):
    """Reports written by `run --due` on `schedule.report`."""

    formats: list[Literal["html", "json", "junit", "markdown"]] = Field(
        default_factory=lambda: ["html", "json"], min_length=1,
        description="the formats written each time")
    dir: str | None = Field(
        None, description="folder the reports go into (relative to the plan); default: the "
        "repository's reports/ (written once)")
    period: Duration = Field(
        86400.0, description="how far back each scheduled report looks (default 1d)")


class Plan(Strict):
    """One plan file: what to protect, where copies go, how restores are proven."""

    version: Literal[1] = Field(description="plan format version; 1")
    name: Name
    description: str | None = None
    repository: RepositoryConfig
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    objectives: Objectives = Field(default_factory=Objectives)
    schedule: Schedule = Field(default_factory=Schedule)
    retention: Retention = Field(default_factory=Retention)
    ledger: LedgerSpec | None = Field(
        None, description="where runs are recorded: a URL (sqlite:///path or "
        "postgresql://USER@HOST/DB, a password only as a reference, "
        "postgresql://USER:${env:X}@HOST/DB), or {url, signing_key} to sign every run "
        "(default: a per-user state file, unsigned)",
    )
    targets: list[Target] = Field(min_length=1)
    hooks: Hooks = Field(default_factory=Hooks)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    notify: list[Notify] = Field(default_factory=list)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, v: str | LedgerConfig | None) -> str | LedgerConfig | None:
        if isinstance(v, str):
            _check_ledger_url(v)
        return v

    @property
    def ledger_url(self) -> str | None:
        return self.ledger.url if isinstance(self.ledger, LedgerConfig) else self.ledger

    @property
    def signing_key(self) -> str | None:
        return self.ledger.signing_key if isinstance(self.ledger, LedgerConfig) else None

    @property
    def ledger_public_keys(self) -> list[str]:
        return self.ledger.public_keys if isinstance(self.ledger, LedgerConfig) else []

    def target(self, name: str) -> Any:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)
