"""Anchors: each signed chain head written once into the plan's repository (`anchors/`),
under Object Lock where the repository has it, so rewriting the ledger also means deleting
objects the store may refuse to delete."""

from __future__ import annotations

from dataclasses import dataclass, field

from restorer.errors import RestorerError
from restorer.ledger.chain import Anchor
from restorer.storage import Backend

PREFIX = "anchors/"


def write_anchor(backend: Backend, anchor: Anchor) -> None:
    """RestorerError when the store does not take it."""
    if not backend.exists("config"):
        # never create a repository's folder (a mistyped path would become one)
        raise RestorerError(f"{backend.location}: no repository here yet (restorer init)")
    backend.write(anchor.name, anchor.to_bytes())


@dataclass
class Anchors:
    """The anchors found in a store, and the objects under anchors/ that are not anchors."""

    found: list[Anchor] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    # anchors someone deleted or overwrote, which the store kept (Object Lock)
    hidden: list[str] = field(default_factory=list)


def read_anchors(backend: Backend) -> Anchors:
    """Every anchor the store holds, also those a delete only hid."""
    out = Anchors()
    seen: set[bytes] = set()
    for name, hidden, raw in sorted(backend.every_version(PREFIX),
                                    key=lambda v: (v[0], v[1])):
        if raw is None:
            out.unreadable.append((name, "too large to be an anchor"))
            continue
        if raw in seen:
            continue
        seen.add(raw)
        try:
            out.found.append(Anchor.from_bytes(raw))
        except ValueError as e:
            if not hidden:
                out.unreadable.append((name, str(e)))
            continue
        if hidden:
            out.hidden.append(name)
    return out
