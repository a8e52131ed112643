"""copy: mirror a repository's snapshots to another store (e.g. local to off-site), as they are.

The destination is a byte-for-byte copy of the same repository (same config and keys), so packs
are copied without decrypting, re-chunking or re-compressing, and later copies add only what is
new. Every pack is checked against its name (SHA-256) before it is written, so damage is never
propagated. Order of writes as in a backup: packs, then index files, then snapshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from restorer.actions.context import backend_for, locked, open_repository, retry_of
from restorer.errors import AlreadyExistsError, IntegrityError, NotFoundError, UsageError
from restorer.outcome import Outcome
from restorer.plan.load import LoadedPlan, load_plan
from restorer.progress import NoProgress, Progress
from restorer.repo.repository import Repository, pack_name
from restorer.storage import Backend, open_backend, redact_url
from restorer.storage.retry import RetryingBackend


@dataclass
class CopyResult:
    source: str
    destination: str
    created: bool
    packs_copied: int = 0
    bytes_copied: int = 0
    index_files_copied: int = 0
    snapshots_copied: list[str] = field(default_factory=list)
    snapshots_present: int = 0
    duration: float = 0.0

    @property
    def outcome(self) -> Outcome:
        return Outcome.OK

    def to_json(self) -> dict:
        return {
            "source": self.source, "destination": self.destination, "created": self.created,
            "packs_copied": self.packs_copied, "bytes_copied": self.bytes_copied,
            "index_files_copied": self.index_files_copied,
            "snapshots_copied": self.snapshots_copied,
            "snapshots_already_present": self.snapshots_present,
            "duration_s": round(self.duration, 3),
        }


def destination_backend(lp: LoadedPlan, to: str) -> Backend:
    """`to` is a repository URL (options from the standard chains: AWS_ENDPOINT_URL,
    ~/.ssh/known_hosts and the agent) or a plan file whose repository block says more."""
    p = Path(to)
    if to.endswith((".yaml", ".yml")) and p.is_file():
        return backend_for(load_plan(p))
    return RetryingBackend(open_backend(to, Path.cwd()), retry_of(lp))


def run_copy(lp: LoadedPlan, to: str, *, target: str | None = None, lock_wait: float = 0.0,
             progress: Progress | None = None) -> CopyResult:
    progress = progress or NoProgress()
    if target is not None:
        lp.targets([target])
    src = open_repository(lp)
    dst = destination_backend(lp, to)
    start = time.monotonic()
    res = CopyResult(src.backend.location, redact_url(dst.location), created=False)
    with locked(src, exclusive=False, wait=lock_wait, label=f"restorer copy {lp.name}"):
        created = _ensure_same_repository(src, dst)
        res.created = created
        dst_repo = Repository(dst, src.sealer, src.config)
        with locked(dst_repo, exclusive=True, wait=lock_wait,
                    label=f"restorer copy {lp.name}"):
            have = {o.name.rsplit("/", 1)[-1] for o in dst.list("data/")}
            src_packs = {o.name.rsplit("/", 1)[-1]: o.size for o in src.backend.list("data/")}
            index_files = [o.name for o in src.backend.list("index/")]
            needed: set[str] = set()
            for name in index_files:
                try:
                    needed.update(src.read_index_rows(name))
                except IntegrityError as e:
                    # copying it would carry the damage into the copy
                    raise IntegrityError(
                        f"{e.message}; nothing was copied",
                        hint="rebuild the source's index with `restorer repair index PLAN` "
                        "first") from None
            missing = sorted(p for p in needed if p not in have)
            gone = [p for p in missing if p not in src_packs]
            if gone:
                raise IntegrityError(
                    f"{len(gone)} pack(s) named by the source's index are missing from "
                    f"{src.backend.location} (first: {gone[0]}); nothing was copied",
                    hint="run `restorer check PLAN --read-data` on the source",
                )
            progress.start(f"copy to {res.destination}", sum(src_packs[p] for p in missing))
            try:
                for pid in missing:
                    data = src.backend.read(pack_name(pid))
                    if hashlib.sha256(data).hexdigest() != pid:
                        raise IntegrityError(
                            f"pack {pid} in {src.backend.location} does not match its name "
                            "(damaged); nothing that refers to it was copied",
                            hint="run `restorer check PLAN --read-data` on the source",
                        )
                    dst_repo.write_named(pack_name(pid), data)
                    res.packs_copied += 1
                    res.bytes_copied += len(data)
                    progress.advance(len(data))
            finally:
                progress.stop()
            have_index = {o.name for o in dst.list("index/")}
            for name in index_files:
                if name not in have_index:
                    dst_repo.write_named(name, src.backend.read(name))
                    res.index_files_copied += 1
            have_snaps = {o.name for o in dst.list("snapshots/")}
            for s in src.list_snapshots():
                if target is not None and s.target != target:
                    continue
                name = f"snapshots/{s.id}"
                if name in have_snaps:
                    res.snapshots_present += 1
                    continue
                dst_repo.write_named(name, src.backend.read(name))
                res.snapshots_copied.append(s.id)
    res.duration = time.monotonic() - start
    return res


def _ensure_same_repository(src: Repository, dst: Backend) -> bool:
    """Create the destination as a copy of the source's config and keys, or check that it is
    one. True when it was created."""
    try:
        existing = json.loads(dst.read("config"))
    except NotFoundError:
        existing = None
    if existing is not None:
        if existing.get("id") != src.config.get("id"):
            raise UsageError(
                f"{redact_url(dst.location)} holds a different repository "
                f"({str(existing.get('id'))[:8]}, not {src.config['id'][:8]})",
                hint="copy into an empty location, or into one made by an earlier copy of "
                "this repository",
            )
        return False
    for obj in src.backend.list("keys/"):
        # a key left by an interrupted copy is the same key: its name is its hash
        with contextlib.suppress(AlreadyExistsError):
            dst.write(obj.name, src.backend.read(obj.name))
    dst.write("config", src.backend.read("config"))  # last: the copy exists once complete
    return True
