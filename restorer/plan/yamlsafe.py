"""Reading a plan's YAML without letting the file decide how much memory, time or stack it
takes: a size limit, a nesting limit, an expansion budget for aliases (billion laughs), no
recursive aliases, and no key given twice in one mapping (the last would silently win)."""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # plans are a few KiB; a MiB is generous
MAX_DEPTH = 64
MAX_NODES = 100_000  # after aliases are expanded


class PlanShapeError(ValueError):
    """The YAML is well-formed but refused; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _Composer(yaml.SafeLoader):
    """compose_node with a depth count: deep nesting is refused before Python's stack is."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise PlanShapeError(f"the plan is nested deeper than {MAX_DEPTH} levels",
                                     mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str) -> yaml.Node | None:
    """The node tree of `text`, checked; yaml.YAMLError or PlanShapeError when refused."""
    if len(text.encode()) > MAX_BYTES:
        raise PlanShapeError(f"the plan is larger than {MAX_BYTES // 1024} KiB; plans are "
                             f"limited to {MAX_BYTES // 1024} KiB")
    loader = _Composer(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _check(node)
    return node


def _check(root: yaml.Node) -> None:
    """Expanded size within budget, no node inside itself, no duplicate keys; iterative."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children = _children(node)
        if done:
            on_path.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[nid] > MAX_NODES:
                raise PlanShapeError(
                    f"the plan expands to more than {MAX_NODES} values (aliases referring to "
                    "aliases: a 'billion laughs' file)", node.start_mark.line + 1)
            continue
        if nid in sizes:
            continue  # an alias to a node already measured
        if nid in on_path:
            raise PlanShapeError("an alias refers to the node that contains it (a recursive "
                                 "alias)", node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, _v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        raise PlanShapeError(
                            f"key '{k.value}' is given twice in one mapping (lines "
                            f"{seen[k.value]} and {k.start_mark.line + 1}); the second "
                            "would silently replace the first", k.start_mark.line + 1)
                    seen[k.value] = k.start_mark.line + 1
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def construct(node: yaml.Node | None) -> Any:
    """Python data from a checked node tree (no second parse of the text)."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()
