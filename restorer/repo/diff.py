"""What changed between two snapshots' trees: added, removed, modified, metadata-only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from restorer.repo.repository import Repository
from restorer.repo.tree import DIR, Node

_META = ("mode", "uid", "gid", "mtime_ns", "target", "xattrs")


@dataclass(frozen=True)
class Change:
    status: str  # '+' added, '-' removed, 'M' content or type changed, 'U' metadata only
    path: str
    type: str

    def to_json(self) -> dict:
        return {"status": self.status, "path": self.path, "type": self.type}


def diff_trees(repo: Repository, a: str | None, b: str | None, path: str = "") -> Iterator[Change]:
    """Changes in path order. An explicit stack of directory steps, not recursion: the depth
    of a tree is the repository's to choose."""
    stack: list[Iterator[Change | tuple]] = [_compare(repo, a, b, path)]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
        elif isinstance(step, Change):
            yield step
        elif step[0] == "both":
            stack.append(_compare(repo, step[1], step[2], step[3]))
        else:
            stack.append(_all(repo, step[1], step[2], step[3]))


def _compare(repo: Repository, a: str | None, b: str | None,
             path: str) -> Iterator[Change | tuple]:
    if a == b:
        return
    na = {n["name"]: n for n in repo.load_tree(a)} if a else {}
    nb = {n["name"]: n for n in repo.load_tree(b)} if b else {}
    for name in sorted(set(na) | set(nb)):
        p = f"{path}/{name}"
        x, y = na.get(name), nb.get(name)
        if x is None:
            yield ("all", y, p, "+")
        elif y is None:
            yield ("all", x, p, "-")
        elif x["type"] != y["type"]:
            yield ("all", x, p, "-")
            yield ("all", y, p, "+")
        elif x["type"] == DIR:
            if any(x.get(k) != y.get(k) for k in _META):
                yield Change("U", p + "/", DIR)
            yield ("both", x.get("subtree"), y.get("subtree"), p)
        elif x.get("content") != y.get("content") or x.get("target") != y.get("target"):
            yield Change("M", p, y["type"])
        elif any(x.get(k) != y.get(k) for k in _META):
            yield Change("U", p, y["type"])


def _all(repo: Repository, n: Node, path: str, status: str) -> Iterator[Change | tuple]:
    if n["type"] != DIR:
        yield Change(status, path, n["type"])
        return
    yield Change(status, path + "/", DIR)
    if n.get("subtree"):
        for c in repo.load_tree(n["subtree"]):
            yield ("all", c, f"{path}/{c['name']}", status)
