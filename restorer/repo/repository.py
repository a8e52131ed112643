"""The repository: config, keys, packs, index, trees and snapshots over any Backend.

Layout (every file written once, never modified):
    config              plain JSON: format version, id, whether encrypted, chunker sizes
    keys/<id>           the master key sealed under a password-derived key
    data/<xx>/<packid>  pack files (name = SHA-256 of the bytes)
    index/<id>          which pack holds which blob (written after its packs)
    snapshots/<id>      snapshot manifests (written last)
    locks/<id>          lock files
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import secrets
import socket
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from restorer.errors import (
    AlreadyExistsError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
    StorageError,
    UsageError,
    WrongPasswordError,
)
from restorer.repo import blobs, crypto, schema
from restorer.repo.blobs import DATA, TREE
from restorer.repo.chunker import AVG_SIZE, MAX_SIZE, MIN_SIZE, Chunker
from restorer.repo.index import Index
from restorer.repo.packs import TAIL_SIZE, PackBuilder, PackEntry, header_span, parse_header
from restorer.repo.snapshot import Snapshot
from restorer.repo.tree import Node, decode_tree, encode_tree
from restorer.storage.base import Backend

log = logging.getLogger("restorer.repo")
FORMAT_VERSION = 1
DEFAULT_PACK_SIZE = 16 << 20


# stream_blobs: what a job does with each blob of its batch
_READ, _KEEP, _REUSE, _REUSE_LAST = 0, 1, 2, 3
_REUSE_MAX = 32 << 20  # plaintext kept for blobs needed again later in the same stream
_REUSE_BLOB_MAX = 1 << 20


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


@dataclass
class WriteStats:
    blobs_new: int = 0
    data_added: int = 0  # plaintext bytes of new blobs
    data_added_stored: int = 0  # bytes written to packs (compressed, sealed)
    packs: int = 0


class Repository:
    def __init__(self, backend: Backend, sealer: crypto.Sealer, config: dict) -> None:
        self.backend = backend
        self.sealer = sealer
        self.config = config
        self.index = Index()
        self._index_loaded = False
        self._tree_cache: OrderedDict[bytes, list[Node]] = OrderedDict()
        self._pack_cache: OrderedDict[str, bytes] = OrderedDict()
        self._pack_lock = threading.Lock()
        seed = sealer.key.chunker_seed if sealer.key else int(config["chunker"]["seed"])
        ch = config["chunker"]
        self.chunker = Chunker(seed, ch["avg"], ch["min"], ch["max"])
        self.pack_size = int(config.get("pack_size", DEFAULT_PACK_SIZE))
        # set while a lock is held: raises when the lock was taken over (repo.lock)
        self.lock_guard: Callable[[], None] | None = None
        # what could not be read, by name: the warnings name them, `check` lists them
        self.damaged_index: dict[str, str] = {}
        self.damaged_snapshots: dict[str, str] = {}
        self.unreadable_packs: dict[str, str] = {}

    # --- creating and opening -----------------------------------------------------------

    @classmethod
    def init(cls, backend: Backend, password: str | None,
             pack_size: int = DEFAULT_PACK_SIZE) -> Repository:
        if backend.exists("config"):
            raise RepositoryError(
                f"a repository already exists at {backend.location}",
                hint="use it as it is, or point the plan at an empty location",
            )
        key = crypto.MasterKey.generate() if password is not None else None
        chunker = {"avg": AVG_SIZE, "min": MIN_SIZE, "max": MAX_SIZE}
        if key is None:
            chunker["seed"] = secrets.randbits(63) | 1
        config = {
            "version": FORMAT_VERSION,
            "id": secrets.token_hex(16),
            "encrypted": key is not None,
            "cipher": "aes-256-gcm" if key else None,
            "compression": "zstd",
            "chunker": chunker,
            "pack_size": pack_size,
        }
        if key is not None:
            assert password is not None
            kf = crypto.make_key_file(key, password, socket.gethostname(), getpass.getuser())
            backend.write(f"keys/{hashlib.sha256(kf).hexdigest()}", kf)
        # config last: a repository exists only once it is complete
        backend.write("config", json.dumps(config, indent=1).encode())
        return cls(backend, crypto.Sealer(key), config)

    @classmethod
    def open(cls, backend: Backend, password: str | None) -> Repository:
        try:
            raw = backend.read("config")
        except NotFoundError:
            raise RepositoryError(
                f"no repository at {backend.location}",
                hint="create it with `restorer init PLAN`",
            ) from None
        what = f"{backend.location}/config"
        doc = schema.load_json(raw, what)
        version = doc.get("version") if isinstance(doc, dict) else None
        if type(version) is int and version != FORMAT_VERSION:
            # before the shape check: a newer format may hold other keys
            raise RepositoryError(
                f"{what}: repository format {version} is not supported by this restorer "
                f"(format {FORMAT_VERSION})"
            )
        config = schema.config(doc, what)
        if config.get("version") != FORMAT_VERSION:
            raise RepositoryError(
                f"{backend.location}: repository format {config.get('version')} is not supported "
                f"by this restorer (format {FORMAT_VERSION})"
            )
        key = None
        if config.get("encrypted"):
            if password is None:
                raise UsageError(
                    f"the repository at {backend.location} is encrypted and the plan gives no "
                    "password",
                    hint="add repository.password: ${env:RESTORER_PASSWORD} (or ${file:...})",
                )
            for obj in backend.list("keys/"):
                key = crypto.open_key_file(backend.read(obj.name), password)
                if key is not None:
                    break
            if key is None:
                raise WrongPasswordError(
                    f"wrong password for the repository at {backend.location}: no key opens "
                    "with it",
                    hint="check the secret the plan's repository.password refers to",
                )
        elif password is not None:
            log.warning("the repository at %s is not encrypted; the plan's password is unused",
                        backend.location)
        return cls(backend, crypto.Sealer(key), config)

    # --- index --------------------------------------------------------------------------

    def load_index(self, strict: bool = False) -> None:
        """Merge every index file into memory.

        An index file that cannot be read is named in a warning and skipped; the packs no
        readable index names are then read for their own headers, so every snapshot stays
        restorable and backups keep deduplicating. With `strict` (prune, which deletes what
        the index does not name) it raises instead."""
        if self._index_loaded:
            return
        for obj in self.backend.list("index/"):
            try:
                rows = self.read_index_rows(obj.name)
            except IntegrityError as e:
                if strict:
                    raise RepositoryError(
                        f"{e.message}; nothing is deleted while an index file is unreadable "
                        "(the packs it names would look unused)",
                        hint="rebuild the index with `restorer repair index PLAN`") from None
                log.warning("%s; skipping it (run `restorer repair index` to rebuild the "
                            "index from the packs)", e.message)
                self.damaged_index[obj.name] = e.message
                continue
            for pack, r in rows.items():
                self.index.add_rows(pack, r)
        if self.damaged_index:
            found = self.recover_unindexed_packs()
            log.warning("read the headers of %d pack(s) that no readable index names",
                        found)
        self._index_loaded = True

    def recover_unindexed_packs(self) -> int:
        """Add to the in-memory index the packs no index file names, from their headers;
        returns how many were read. A pack whose header is unreadable is left out."""
        n = 0
        for obj in self.backend.list("data/"):
            pid = obj.name.rsplit("/", 1)[-1]
            if pid in self.index.packs:
                continue
            try:
                entries = self.read_pack_header(pid, obj.size)
            except (IntegrityError, NotFoundError) as e:
                log.warning("pack %s: header unreadable (%s)", pid[:16], e.message)
                self.unreadable_packs[pid] = e.message
                continue
            self.index.add(pid, entries)
            n += 1
        return n

    def read_pack_header(self, pack: str, size: int) -> list[PackEntry]:
        """A pack's entries from its own header: two ranged reads, not the whole pack."""
        what = f"pack {pack[:16]}"
        tail = self.backend.read(pack_name(pack), max(size - TAIL_SIZE, 0), TAIL_SIZE)
        start, hlen = header_span(tail, size, what)
        sealed = self.backend.read(pack_name(pack), start, hlen)
        return parse_header(self.sealer, sealed, start, what)

    def read_index_rows(self, name: str) -> dict[str, list[list]]:
        raw = self.backend.read(name)
        if hashlib.sha256(raw).hexdigest() != name.rsplit("/", 1)[-1]:
            raise IntegrityError(f"index file {name} does not match its name (damaged)")
        return Index.parse_rows(blobs.decode_file(self.sealer, raw, name), name)

    def read_index_file(self, name: str) -> dict[str, list[PackEntry]]:
        return Index.entries(self.read_index_rows(name))

    def write_file(self, folder: str, plain: bytes) -> str:
        if folder in ("index", "snapshots") and self.lock_guard is not None:
            # what makes data referenceable: only while this run still holds its lock
            self.lock_guard()
        stored = blobs.encode_file(self.sealer, plain)
        fid = hashlib.sha256(stored).hexdigest()
        self.write_named(f"{folder}/{fid}", stored)
        return fid

    def read_records(self, folder: str, strict: bool = False
                     ) -> list[tuple[str, dict[str, Any]]]:
        """(file name, content) of the small JSON records in `folder` (verifications,
        rollbacks), oldest first by their `time`; one that cannot be read is skipped: a record
        is a note about the repository, never needed to restore from it. With `strict` (a
        caller about to delete, for whom a lost record could be the one protecting a
        snapshot) it raises instead."""
        out = []
        for obj in self.backend.list(f"{folder}/"):
            try:
                rec = json.loads(blobs.decode_file(self.sealer, self.backend.read(obj.name),
                                                   obj.name))
            except Exception as e:
                why = e.message if isinstance(e, RepositoryError | StorageError) else str(e)
                if strict:
                    raise RepositoryError(
                        f"record {obj.name} cannot be read ({why}); nothing is deleted while "
                        "a record that may protect a snapshot is unreadable",
                        hint="make it readable again, or move it out of the repository if it "
                        "is damaged") from None
                log.warning("record %s cannot be read (%s); ignoring it", obj.name, why)
                continue
            if isinstance(rec, dict):
                out.append((obj.name, rec))
        # `time` may be a drill's fixed clock: the real write time orders records of one time
        return sorted(out, key=lambda nr: (str(nr[1].get("time", "")), _ns(nr[1])))

    def write_named(self, name: str, data: bytes) -> None:
        """Write a content-addressed file. If it exists already (left by an interrupted run
        that produced the very same bytes), the name proves the content: keep it."""
        try:
            self.backend.write(name, data)
        except AlreadyExistsError:
            size = self.backend.stat(name)
            if size != len(data):
                raise IntegrityError(
                    f"{name} exists with {size} bytes where its name promises {len(data)} "
                    "(damaged)", hint="run `restorer check --read-data`") from None
            log.info("%s already present (left by an interrupted run); reusing it", name)

    # --- blobs --------------------------------------------------------------------------

    def load_blob(self, blob_id: bytes) -> bytes:
        loc = self.index.get(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in any index (missing data)")
        what = f"blob {blob_id.hex()[:16]} in pack {loc.pack[:16]}"
        try:
            if loc.type == TREE:
                # trees are small and read in bursts: one read per tree pack, not per tree
                whole = self._tree_pack(loc.pack)
                stored = whole[loc.offset: loc.offset + loc.length]
            else:
                stored = self.backend.read(pack_name(loc.pack), loc.offset, loc.length)
        except NotFoundError:
            raise IntegrityError(f"{what}: the pack file is missing") from None
        if len(stored) != loc.length:
            raise IntegrityError(f"{what}: the pack file is truncated")
        return blobs.decode_blob(self.sealer, blob_id, stored, loc.raw_length, what)

    def _tree_pack(self, pack: str) -> bytes:
        with self._pack_lock:
            data = self._pack_cache.get(pack)
            if data is not None:
                self._pack_cache.move_to_end(pack)
                return data
        data = self.backend.read(pack_name(pack))
        with self._pack_lock:
            self._pack_cache[pack] = data
            while len(self._pack_cache) > 4:
                self._pack_cache.popitem(last=False)
        return data

    def load_tree(self, tree_id: str, where: str = "", keep: bool = True) -> list[Node]:
        """The checked nodes of a tree; with `keep` False (a reader that visits each tree
        once, like a backup comparing against its parent) it is not added to the cache,
        which would otherwise hold every listing of a large tree."""
        bid = bytes.fromhex(tree_id)
        cached = self._tree_cache.get(bid)
        if cached is not None:
            self._tree_cache.move_to_end(bid)
            return cached
        nodes = decode_tree(self.load_blob(bid), where or f"tree {tree_id[:16]}")
        if not keep:
            return nodes
        self._tree_cache[bid] = nodes
        if len(self._tree_cache) > 4096:
            self._tree_cache.popitem(last=False)
        return nodes

    def walk(self, tree_id: str, seen: set[bytes] | None = None,
             where: str = "") -> Iterator[tuple[str, Node]]:
        """(path relative to the tree, node) for every entry below `tree_id`, each directory
        before its entries, in listing order. With `seen`, a subtree whose id is in it is not
        entered again (and every entered tree's id is added). An explicit stack: the depth of
        a tree is the repository's to choose, and must not be Python's recursion limit."""
        if seen is not None:
            seen.add(bytes.fromhex(tree_id))
        where = where or f"tree {tree_id[:16]}"
        stack = [_under("", self.load_tree(tree_id, where))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            path, node = step
            yield step
            sub = node.get("subtree") if node["type"] == "dir" else None
            if sub:
                if seen is not None:
                    bid = bytes.fromhex(sub)
                    if bid in seen:
                        continue
                    seen.add(bid)
                here = f"{where}/{path}"
                stack.append(_under(path, self.load_tree(sub, here)))

    def stream_blobs(self, ids: Iterable[bytes], workers: int | None = None
                     ) -> Iterator[tuple[bytes, bytes | Exception]]:
        """(id, plaintext or the error loading it) for each id in order, read ahead by threads.

        Consecutive blobs stored close together in one pack are read with one request and
        decoded by one job: most small files sit side by side in their packs. The store says
        how many reads to keep in flight and how long a span one may cover
        (`Backend.parallel_reads`, `read_span`: a remote store's requests cost more than the
        bytes between the blobs). A batch holds at most `read_span` stored bytes and as much
        plaintext, and `workers + 2` batches wait. A blob needed again later (the same
        content in several files) is kept, up to _REUSE_MAX of plaintext, instead of being
        read again out of line: memory is bounded by those, whatever the files' sizes.
        """
        be = self.backend
        workers = workers or max(1, be.parallel_reads)
        window = workers + 2
        kept: dict[bytes, bytes | Exception] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="read") as ex:
            q: deque[tuple[list[tuple[bytes, int]],
                           Future[list[tuple[bytes, bytes | Exception | None]]]]] = deque()
            batches = self._batches(list(ids), be.read_span, be.read_gap)
            try:
                for batch in batches:
                    q.append((batch, ex.submit(self._load_batch, batch)))
                    if len(q) >= window:
                        break
                while q:
                    batch, fut = q.popleft()
                    nxt = next(batches, None)
                    if nxt is not None:
                        q.append((nxt, ex.submit(self._load_batch, nxt)))
                    for (bid, mode), (_, data) in zip(batch, fut.result(), strict=True):
                        if mode == _KEEP:
                            assert data is not None
                            kept[bid] = data
                        elif mode in (_REUSE, _REUSE_LAST):
                            data = kept[bid] if mode == _REUSE else kept.pop(bid)
                        assert data is not None
                        yield bid, data
            finally:
                for _, f in q:
                    f.cancel()

    def _batches(self, ids: list[bytes], max_bytes: int = 2 << 20,
                 max_gap: int = 64 << 10) -> Iterator[list[tuple[bytes, int]]]:
        """Batches of (id, _READ/_KEEP/_REUSE/_REUSE_LAST), in order: what one job loads."""
        left = Counter(ids)  # uses of each id not planned yet
        kept: dict[bytes, int] = {}  # id -> plaintext size, for ids planned to be kept
        kept_bytes = 0
        batch: list[tuple[bytes, int]] = []
        pack, end, start, plain = None, 0, 0, 0
        for bid in ids:
            left[bid] -= 1
            if bid in kept:
                if left[bid] == 0:
                    kept_bytes -= kept.pop(bid)
                    batch.append((bid, _REUSE_LAST))
                else:
                    batch.append((bid, _REUSE))
                continue
            loc = self.index.get(bid)
            # a batch of kept blobs only has no span yet: it takes this blob's
            if pack is not None and (
                loc is None or loc.pack != pack or loc.offset < end
                or loc.offset - end > max_gap or loc.offset + loc.length - start > max_bytes
                or plain + loc.raw_length > max_bytes
            ):
                yield batch
                batch = []
                pack = None
            if pack is None and loc is not None:
                pack, start, plain = loc.pack, loc.offset, 0
            mode = _READ
            if (loc is not None and left[bid] > 0 and loc.raw_length <= _REUSE_BLOB_MAX
                    and kept_bytes + loc.raw_length <= _REUSE_MAX):
                mode = _KEEP
                kept[bid] = loc.raw_length
                kept_bytes += loc.raw_length
            batch.append((bid, mode))
            if loc is None:  # reported by _load_batch, alone
                yield batch
                batch = []
                pack = None
                continue
            end = loc.offset + loc.length
            plain += loc.raw_length
        if batch:
            yield batch

    def _load_batch(self, batch: list[tuple[bytes, int]]
                    ) -> list[tuple[bytes, bytes | Exception | None]]:
        """The plaintext (or error) of each blob of a batch to read; None for those that
        come from what stream_blobs kept."""
        ids = [b for b, mode in batch if mode in (_READ, _KEEP)]
        loaded = dict(self._load_span(ids)) if ids else {}
        return [(b, loaded[b] if mode in (_READ, _KEEP) else None) for b, mode in batch]

    def _load_span(self, ids: list[bytes]) -> list[tuple[bytes, bytes | Exception]]:
        locs = [self.index.get(b) for b in ids]
        if len(ids) == 1 or any(loc is None for loc in locs) or locs[0].type == TREE:
            return [(b, self._load_or_error(b)) for b in ids]
        first = locs[0]
        last = locs[-1]
        try:
            raw = self.backend.read(pack_name(first.pack), first.offset,
                                    last.offset + last.length - first.offset)
        except (NotFoundError, IntegrityError, RepositoryError):
            return [(b, self._load_or_error(b)) for b in ids]
        out: list[tuple[bytes, bytes | Exception]] = []
        for b, loc in zip(ids, locs, strict=True):
            assert loc is not None
            piece = raw[loc.offset - first.offset: loc.offset - first.offset + loc.length]
            what = f"blob {b.hex()[:16]} in pack {loc.pack[:16]}"
            if len(piece) != loc.length:
                out.append((b, IntegrityError(f"{what}: the pack file is truncated")))
                continue
            try:
                out.append((b, blobs.decode_blob(self.sealer, b, piece, loc.raw_length, what)))
            except IntegrityError as e:
                out.append((b, e))
        return out

    def _load_or_error(self, blob_id: bytes) -> bytes | Exception:
        try:
            return self.load_blob(blob_id)
        except (IntegrityError, RepositoryError) as e:
            return e

    # --- snapshots ----------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> str:
        snap.id = self.write_file("snapshots", snap.to_json())
        return snap.id

    def list_snapshots(self, on_error: Callable[[str, Exception], None] | None = None,
                       strict: bool = False) -> list[Snapshot]:
        """Every readable snapshot, oldest first. One that cannot be read is passed to
        `on_error`, or with `strict` raises (a caller about to delete), or else is named in a
        warning, kept in `damaged_snapshots` and skipped: one damaged record must not hide
        the others."""
        out = []
        for obj in self.backend.list("snapshots/"):
            sid = obj.name.rsplit("/", 1)[-1]
            try:
                out.append(self.read_snapshot(obj.name))
            except RepositoryError as e:
                if on_error is not None:
                    on_error(sid, e)
                    continue
                if strict:
                    raise RepositoryError(
                        f"snapshot {sid[:8]} cannot be read ({e.message}); nothing is deleted "
                        "while a snapshot record is unreadable",
                        hint="move damaged records aside with `restorer repair snapshots PLAN`"
                    ) from None
                if sid not in self.damaged_snapshots:
                    log.warning("snapshot %s cannot be read (%s); skipping it (`restorer "
                                "repair snapshots` moves it aside)", sid[:8], e.message)
                self.damaged_snapshots[sid] = e.message
        out.sort(key=lambda s: (s.time, s.id))
        return out

    def read_snapshot(self, name: str) -> Snapshot:
        sid = name.rsplit("/", 1)[-1]
        raw = self.backend.read(name)
        if hashlib.sha256(raw).hexdigest() != sid:
            raise IntegrityError("its content does not match its name (damaged, or another "
                                 "snapshot's file copied over it)")
        return Snapshot.from_json(blobs.decode_file(self.sealer, raw, name), sid)

    def find_snapshot(self, ref: str, target: str | None = None,
                      snapshots: list[Snapshot] | None = None) -> Snapshot:
        """`latest` (of `target`), or a unique id prefix; UsageError explains what did not match."""
        snaps = self.list_snapshots() if snapshots is None else snapshots
        if target is not None:
            snaps = [s for s in snaps if s.target == target]
        if ref == "latest":
            if not snaps:
                raise UsageError(
                    "no snapshot" + (f" of target '{target}'" if target else "") + " yet",
                    hint="run `restorer backup PLAN` first",
                )
            targets = {s.target for s in snaps}
            if len(targets) > 1:
                raise UsageError(
                    f"'latest' is per target and this plan has snapshots of several "
                    f"({', '.join(sorted(targets))})",
                    hint="add --target NAME",
                )
            return snaps[-1]
        ref_l = ref.lower()
        matches = [s for s in snaps if s.id.startswith(ref_l)]
        if not matches:
            raise UsageError(
                f"no snapshot id starts with '{ref}'"
                + (f" among snapshots of target '{target}'" if target else ""),
                hint="list them with `restorer snapshots PLAN`",
            )
        if len(matches) > 1:
            raise UsageError(
                f"snapshot id prefix '{ref}' is ambiguous: "
                + ", ".join(s.short_id for s in matches[:5]),
                hint="give more characters of the id",
            )
        return matches[0]


def _ns(rec: dict[str, Any]) -> int:
    v = rec.get("written_ns")
    return v if type(v) is int else 0  # a record's note, never worth a crash


def _under(path: str, nodes: list[Node]) -> Iterator[tuple[str, Node]]:
    for n in nodes:
        yield (f"{path}/{n['name']}" if path else n["name"]), n


class BlobWriter:
    """Adds blobs to the repository: dedups against the index, compresses and seals in worker
    threads, fills pack files, uploads them from one background thread, and writes index files.

    Nothing it writes is referenced until `flush()` has written the index covering it.
    """

    def __init__(self, repo: Repository, workers: int = 2, max_inflight: int = 32 << 20) -> None:
        self.repo = repo
        self.stats = WriteStats()
        self._encode = ThreadPoolExecutor(workers, thread_name_prefix="encode")
        self._upload = ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._pending: deque[tuple[int, bytes, int, Future[Any], bool]] = deque()
        self._pending_bytes = 0
        self._max_inflight = max_inflight
        self._seen: set[bytes] = set()
        self._builders = {DATA: PackBuilder(), TREE: PackBuilder()}
        self._uploads: deque[Future[None]] = deque()
        self._unindexed: dict[str, list[PackEntry]] = {}
        self._lock = threading.Lock()
        self.written_packs: set[str] = set()
        self.written_index: set[str] = set()  # names ('index/<id>') of the index files written

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self.repo.index or blob_id in self._seen

    def add(self, type_: int, plain: bytes, blob_id: bytes | None = None) -> bytes:
        """The blob's id; the blob is queued for storage unless the repository has it."""
        bid = blob_id if blob_id is not None else self.repo.sealer.blob_id(plain)
        if self.has(bid):
            return bid
        self._seen.add(bid)
        fut = self._encode.submit(blobs.encode_blob, self.repo.sealer, bid, plain)
        self._pending.append((type_, bid, len(plain), fut, False))
        self._pending_bytes += len(plain)
        self._drain(block=self._pending_bytes > self._max_inflight)
        return bid

    def copy(self, type_: int, plain: bytes, blob_id: bytes) -> None:
        """Store a blob the index already has (prune moving it out of a garbage pack)."""
        if blob_id in self._seen:
            return
        self._seen.add(blob_id)
        fut = self._encode.submit(blobs.encode_blob, self.repo.sealer, blob_id, plain)
        self._pending.append((type_, blob_id, len(plain), fut, False))
        self._pending_bytes += len(plain)
        self._drain(block=self._pending_bytes > self._max_inflight)

    def add_async(self, plain: bytes) -> Future[list[Any]]:
        """Queue a data blob whose id a worker computes; the future's result()[0] is the id.

        For large chunks: hashing then runs beside compression instead of on the caller.
        """
        fut = self._encode.submit(self._hash_and_encode, plain)
        self._pending.append((DATA, b"", len(plain), fut, True))
        self._pending_bytes += len(plain)
        self._drain(block=self._pending_bytes > self._max_inflight)
        return fut

    def _hash_and_encode(self, plain: bytes) -> list[Any]:
        """[blob id, stored bytes or None when the repository has it already]."""
        bid = self.repo.sealer.blob_id(plain)
        if self.has(bid):  # a racy read is harmless: _drain decides for good
            return [bid, None]
        return [bid, blobs.encode_blob(self.repo.sealer, bid, plain)]

    def add_tree(self, nodes: list[Node]) -> str:
        return self.add(TREE, encode_tree(nodes)).hex()

    def _drain(self, block: bool, everything: bool = False) -> None:
        while self._pending and (everything or block or self._pending[0][3].done()):
            type_, bid, raw_len, fut, is_async = self._pending.popleft()
            result = fut.result()
            self._pending_bytes -= raw_len
            if is_async:
                bid, stored = result[0], result[1]
                # the caller keeps this future until its file ends: drop the bytes it holds
                result[1] = None
                if stored is None or self.has(bid):
                    continue
                self._seen.add(bid)
            else:
                stored = result
            b = self._builders[type_]
            b.add(type_, bid, stored, raw_len)
            self.stats.blobs_new += 1
            self.stats.data_added += raw_len
            if b.size >= self.repo.pack_size:
                self._write_pack(type_)
            block = block and self._pending_bytes > self._max_inflight // 2
        self._reap_uploads(block=len(self._uploads) > 2)

    def _write_pack(self, type_: int) -> None:
        b = self._builders[type_]
        if not len(b):
            return
        self._builders[type_] = PackBuilder()
        pid, data = b.finish(self.repo.sealer)
        self._uploads.append(self._upload.submit(self._store_pack, pid, data, b.entries))

    def _store_pack(self, pid: str, data: bytes, entries: list[PackEntry]) -> None:
        self.repo.write_named(pack_name(pid), data)
        with self._lock:
            self.written_packs.add(pid)
            self._unindexed[pid] = entries
            self.repo.index.add(pid, entries)
            self.stats.packs += 1
            self.stats.data_added_stored += len(data)

    def _reap_uploads(self, block: bool, everything: bool = False) -> None:
        while self._uploads and (everything or block or self._uploads[0].done()):
            self._uploads.popleft().result()
            block = block and len(self._uploads) > 2
        with self._lock:
            # an index every so often lets a re-run after a crash reuse what was uploaded
            if len(self._unindexed) >= 64:
                self._write_index()

    def flush(self) -> None:
        """Store everything queued, then the index covering it; afterwards it is referenceable."""
        self._drain(block=True, everything=True)
        for t in (DATA, TREE):
            self._write_pack(t)
        self._reap_uploads(block=True, everything=True)
        with self._lock:
            if self._unindexed:
                self._write_index()

    def _write_index(self) -> None:
        fid = self.repo.write_file("index", Index.serialize(self._unindexed))
        self.written_index.add(f"index/{fid}")
        self._unindexed = {}

    def flush_or_forget(self) -> None:
        """After a failure: what was uploaded is already in the in-memory index, where the
        next target would dedup against it, so index it for real or, if that fails too,
        forget it."""
        try:
            self.flush()
        except Exception:
            self.abandon()

    def abandon(self) -> None:
        """Forget blobs whose packs no index file names yet (after a failure), so nothing
        later in this process refers to them."""
        with self._lock:
            for entries in self._unindexed.values():
                for e in entries:
                    self.repo.index.blobs.pop(e.id, None)
            for pid in self._unindexed:
                self.repo.index.packs.pop(pid, None)
            self._unindexed = {}
        self._seen.clear()

    def close(self) -> None:
        self._encode.shutdown(wait=True, cancel_futures=True)
        self._upload.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
