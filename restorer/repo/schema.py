"""Every record read from a repository is checked against its shape before anything uses it.

A repository is input like any other: damaged by a disk, or crafted by whoever can write to
it. A record of the wrong shape (a string where a number belongs, a list for a map, an id that
is not hex, a time past the year 2262, 3,000 levels of nesting) must end in an error that
names the record and the field, never in a TypeError deep inside a restore. Unknown keys are
allowed (a newer restorer may add some); known keys must have their type and range.

The checks are plain functions, not a schema library: tree listings of tens of thousands of
entries are checked on every backup, and a loop of isinstance tests costs microseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from restorer.errors import IntegrityError

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
U32 = 2**32 - 1
U64 = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong


def load_json(raw: bytes, what: str) -> Any:
    """Parse JSON from a repository file: IntegrityError for anything unparsable (bad bytes,
    bad syntax, nesting too deep for the parser), never a RecursionError."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # the stdlib reads what orjson refuses: lone surrogates of non-UTF-8 names
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:120]
        raise IntegrityError(f"{what}: not readable JSON ({why}) (damaged)") from None


def fail(what: str, field: str, problem: str) -> IntegrityError:
    return IntegrityError(f"{what}: {field} {problem} (damaged or crafted)",
                          hint="`restorer check PLAN` lists every damaged record and the "
                          "repair that mends what can be mended")


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        # bool is an int subclass; a JSON true is not a number of anything
        if type(v) is not int:
            return f"must be an integer, not {_show(v)}"
        if not lo <= v <= hi:
            return f"is out of range ({v} not in {lo}..{hi})"
        return None
    return check


def number(v: Any) -> str | None:
    if type(v) not in (int, float) or not math.isfinite(v) or abs(v) > 1e15:
        return f"must be a finite number, not {_show(v)}"
    return None


def text(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, not {_show(v)}"


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {_show(v)}"


def hex_id(v: Any) -> str | None:
    if isinstance(v, str) and _HEX64.match(v):
        return None
    return f"must be a 64-digit lowercase hex id, not {_show(v)}"


def optional(check: Check) -> Check:
    def opt(v: Any) -> str | None:
        return None if v is None else check(v)
    return opt


def list_of(check: Check) -> Check:
    def each(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"must be a list, not {_show(v)}"
        for i, x in enumerate(v):
            problem = check(x)
            if problem:
                return f"[{i}] {problem}"
        return None
    return each


def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be a map, not {_show(v)}"


def iso_time(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be an ISO 8601 time, not {_show(v)}"
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return f"must be an ISO 8601 time, not {_show(v)}"
    if t.tzinfo is None or not 1970 <= t.year <= 2262:
        return f"must be a time with a UTC offset between 1970 and 2262, not {_show(v)}"
    return None


def fields(d: Any, spec: Mapping[str, tuple[Check, bool]], what: str) -> dict[str, Any]:
    """`d` as a dict whose known keys pass their checks (spec: key -> (check, required))."""
    if not isinstance(d, dict):
        raise fail(what, "the record", f"must be a map, not {_show(d)}")
    for key, (check, required) in spec.items():
        if key not in d:
            if required:
                raise fail(what, key, "is missing")
            continue
        problem = check(d[key])
        if problem:
            raise fail(what, key, problem)
    return d


# --- trees ----------------------------------------------------------------------------------

def _xattrs(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"must be a map, not {_show(v)}"
    for k, x in v.items():
        if not isinstance(x, str):
            return f"[{_show(k)}] must be base64 text, not {_show(x)}"
        try:
            base64.b64decode(x, validate=True)
        except (binascii.Error, ValueError):
            return f"[{_show(k)}] is not valid base64"
    return None


NODE: dict[str, tuple[Check, bool]] = {
    "mode": (integer(0, 0o7777), False),
    # an SFTP server may send no owner: ssh-files entries then hold null
    "uid": (optional(integer(0, U32)), False),
    "gid": (optional(integer(0, U32)), False),
    "user": (optional(text), False),
    "group": (optional(text), False),
    # os.utime takes nanoseconds as a C int64: beyond that is OverflowError, not a time
    "mtime_ns": (integer(I64_MIN, I64_MAX), False),
    "ctime_ns": (integer(I64_MIN, I64_MAX), False),
    "inode": (integer(0, U64), False),
    "dev": (integer(0, U64), False),
    "nlink": (integer(0, U64), False),
    "size": (integer(0, I64_MAX), False),
    "content": (list_of(hex_id), False),
    "subtree": (optional(hex_id), False),
    "target": (text, False),
    "rdev": (integer(0, U64), False),
    "xattrs": (optional(_xattrs), False),
}
# the fast path of tree_nodes: plain integer ranges inline, the rest through NODE's checks
_NODE_INTS = {"mode": (0, 0o7777),
              "mtime_ns": (I64_MIN, I64_MAX), "ctime_ns": (I64_MIN, I64_MAX),
              "inode": (0, U64), "dev": (0, U64), "nlink": (0, U64), "size": (0, I64_MAX),
              "rdev": (0, U64)}
_NODE_OTHER = {k: c for k, (c, _req) in NODE.items() if k not in _NODE_INTS and k != "content"}


def tree_nodes(doc: Any, where: str) -> list[dict[str, Any]]:
    """The node list of a decoded tree, every node's known fields checked (names and types
    are checked by the caller, which knows the path). Written for speed: a no-change backup
    checks every listing of the tree it compares against."""
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        raise fail(where, "the tree", "must be a map holding a list 'nodes'")
    ints, other, hexmatch = _NODE_INTS, _NODE_OTHER, _HEX64.match
    for i, n in enumerate(nodes):
        if type(n) is not dict:
            raise fail(where, f"entry {i}", f"must be a map, not {_show(n)}")
        for key, v in n.items():
            r = ints.get(key)
            if r is not None:
                if type(v) is int and r[0] <= v <= r[1]:
                    continue
            elif key == "content":
                if type(v) is list and all(type(c) is str and hexmatch(c) for c in v):
                    continue
            elif key not in other or other[key](v) is None:
                continue
            problem = NODE[key][0](v)  # the slow path, for the message
            raise fail(where, f"entry {_show(n.get('name'))}: {key}", problem or "is invalid")
    return nodes


# --- snapshots, index, config, locks, keys --------------------------------------------------

# the summary's figures that commands compute with; other keys are free
SUMMARY: dict[str, tuple[Check, bool]] = {
    k: (optional(integer(0, I64_MAX)), False)
    for k in ("total_bytes", "total_files", "data_added", "bytes_read", "retries")}
CLOUD: dict[str, tuple[Check, bool]] = {
    "resource": (text, True),
    "snapshots": (mapping, True),
}


def _summary(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"must be a map, not {_show(v)}"
    for k, (check, _req) in SUMMARY.items():
        problem = check(v.get(k))
        if problem:
            return f"[{k!r}] {problem}"
    return None


def _cloud(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"must be a map, not {_show(v)}"
    for k, (check, _req) in CLOUD.items():
        problem = check(v[k]) if k in v else "is missing"
        if problem:
            return f"[{k!r}] {problem}"
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in v["snapshots"].items()):
        return "['snapshots'] must map regions to snapshot ids"
    return None


SNAPSHOT: dict[str, tuple[Check, bool]] = {
    "time": (iso_time, True),
    "plan": (text, True),
    "target": (text, True),
    "kind": (text, True),
    "hostname": (text, True),
    "username": (text, True),
    "paths": (list_of(text), True),
    "tree": (optional(hex_id), False),
    "parent": (optional(hex_id), False),
    "tags": (list_of(text), False),
    "summary": (_summary, False),
    "warnings": (list_of(text), False),
    "program_version": (text, False),
    "uid": (optional(integer(0, U32)), False),
    "gid": (optional(integer(0, U32)), False),
    "cloud": (optional(_cloud), False),
}

_PACK_ROW = (integer(0, 1), hex_id, integer(0, I64_MAX), integer(1, U32), integer(0, U32))


def index_packs(doc: Any, what: str) -> dict[str, list[list]]:
    """pack id -> rows [type, hex blob id, offset, stored length, plaintext length]."""
    packs = doc.get("packs") if isinstance(doc, dict) else None
    if not isinstance(packs, list):
        raise fail(what, "the index", "must be a map holding a list 'packs'")
    out: dict[str, list[list]] = {}
    for i, p in enumerate(packs):
        if not isinstance(p, dict) or hex_id(p.get("id")) or not isinstance(p.get("blobs"), list):
            raise fail(what, f"packs[{i}]", "must be a map with a hex 'id' and a list 'blobs'")
        for j, row in enumerate(p["blobs"]):
            if not isinstance(row, list) or len(row) != 5:
                raise fail(what, f"packs[{i}].blobs[{j}]", "must be a list of 5 values")
            for check, v in zip(_PACK_ROW, row, strict=True):
                problem = check(v)
                if problem:
                    raise fail(what, f"packs[{i}].blobs[{j}]", problem)
        out.setdefault(p["id"], []).extend(p["blobs"])
    return out


# FastCDC's own bounds (pyfastcdc refuses sizes outside them)
CHUNKER: dict[str, tuple[Check, bool]] = {
    "avg": (integer(256, 4 << 20), True),
    "min": (integer(64, 1 << 20), True),
    "max": (integer(1024, 16 << 20), True),
    "seed": (integer(0, I64_MAX), False),
}
CONFIG: dict[str, tuple[Check, bool]] = {
    "version": (integer(0, U32), True),
    "id": (text, True),
    "encrypted": (flag, True),
    "chunker": (mapping, True),
    "pack_size": (integer(1 << 10, 1 << 32), False),
}


def config(doc: Any, what: str) -> dict[str, Any]:
    d = fields(doc, CONFIG, what)
    ch = fields(d["chunker"], CHUNKER, f"{what} chunker")
    if not ch["min"] <= ch["avg"] <= ch["max"]:
        raise fail(what, "chunker", "sizes must satisfy min <= avg <= max")
    if not d["encrypted"] and "seed" not in ch:
        raise fail(what, "chunker.seed", "is missing")
    return d


LOCK: dict[str, tuple[Check, bool]] = {
    "host": (text, True),
    "pid": (integer(0, 1 << 32), True),
    "exclusive": (flag, True),
    "time": (number, True),
    "command": (text, False),
}

# scrypt's memory is 128 * n * r bytes: a crafted key file must not make opening cost gigabytes
KEY_FILE: dict[str, tuple[Check, bool]] = {
    "kdf": (text, True),
    "n": (integer(2, 1 << 20), True),
    "r": (integer(1, 32), True),
    "p": (integer(1, 16), True),
    "salt": (text, True),
    "data": (text, True),
}
MASTER_KEY: dict[str, tuple[Check, bool]] = {
    "enc": (text, True),
    "id": (text, True),
    "seed": (integer(0, I64_MAX), True),
}


def b64(v: str, what: str, field: str, size: int | None = None) -> bytes:
    try:
        out = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise fail(what, field, "is not valid base64") from None
    if size is not None and len(out) != size:
        raise fail(what, field, f"must hold {size} bytes, not {len(out)}")
    return out
