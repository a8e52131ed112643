"""Trees: one directory listing per blob (name, type, metadata, content ids), canonical JSON.

Names are checked when a tree is read back: a name that is empty, '.', '..', holds '/' or NUL,
or appears twice is refused, because a restore joins names under its destination.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from restorer.errors import RestoreError
from restorer.repo import schema

FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET = (
    "file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket",
)
NODE_TYPES = {FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET}

Node = dict[str, Any]
"""A node is a plain dict (fast to build for 20k files) with these keys:
name, type, mode, uid, gid, user, group, mtime_ns, ctime_ns, inode, dev, nlink, size,
content (list of hex blob ids, files), subtree (hex id, dirs), target (symlinks),
rdev (devices), xattrs ({name: base64}).
"""


def encode_tree(nodes: list[Node]) -> bytes:
    """Canonical bytes of a listing: the same listing always gives the same bytes (and id)."""
    nodes.sort(key=lambda n: n["name"])
    try:
        return orjson.dumps({"nodes": nodes}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # names that are not valid UTF-8 arrive as surrogate escapes, which orjson refuses;
        # the stdlib writes them as \udcXX escapes and reads them back exactly
        return json.dumps({"nodes": nodes}, separators=(",", ":"), sort_keys=True).encode()


def check_name(name: Any, where: str) -> str:
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\x00" in name
    ):
        raise RestoreError(
            f"{where}: the snapshot holds the entry name {name!r}, which is not a plain file "
            "name; refusing to restore it (the snapshot was crafted or damaged)",
            hint="run `restorer check --read-data`; restore other snapshots or use --include",
        )
    return name


def decode_tree(data: bytes, where: str) -> list[Node]:
    """The checked nodes of a stored listing (IntegrityError or RestoreError naming the entry
    when it is damaged or crafted)."""
    nodes = schema.tree_nodes(schema.load_json(data, where), where)
    seen: set[str] = set()
    for n in nodes:
        name = check_name(n.get("name"), where)
        if name in seen:
            raise RestoreError(
                f"{where}: the snapshot lists '{name}' twice in one directory; refusing to "
                "restore it (the snapshot was crafted or damaged)"
            )
        seen.add(name)
        t = n.get("type")
        if not isinstance(t, str) or t not in NODE_TYPES:
            raise RestoreError(f"{where}/{name}: unknown entry type {t!r}")
    return nodes
