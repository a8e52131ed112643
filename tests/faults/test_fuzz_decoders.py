"""Every decoder of repository content, fed damaged and crafted input by hypothesis: each input
either decodes to records of the right shape or raises a RestorerError that names the record;
never a TypeError, KeyError, RecursionError or any other exception a person cannot act on.

Each decoder gets arbitrary bytes, arbitrary JSON, and valid records with one value replaced by
arbitrary JSON (the mutations that reach furthest). `tests/bench/fuzz_decoders.py` runs the
same targets under atheris, coverage-guided, for as long as it is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults import decoder_targets as targets

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> bytes:
    path = draw(st.sampled_from(_paths(valid)))
    return json.dumps(_replace(valid, path, draw(json_values))).encode()


@st.composite
def flipped(draw: st.DrawFn, seed: bytes) -> bytes:
    """The valid bytes with a few bytes changed, cut short, or extended."""
    out = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(out) - 1))
        out[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(out)))
    return bytes(out[:cut] if draw(st.booleans()) else out)


def inputs(target: targets.Target) -> st.SearchStrategy[bytes]:
    choices = [
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        flipped(target.seed),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    ]
    if target.valid is not None:
        choices.append(mutated(target.valid))
    return st.one_of(*choices)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_decoder_raises_only_named_errors(name: str, tmp_path: Path) -> None:
    target = targets.TARGETS[name]
    workdir = tmp_path

    @SETTINGS
    @given(inputs(target))
    def run(raw: bytes) -> None:
        targets.run_one(target, raw, workdir)

    run()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_the_valid_record_decodes(name: str, tmp_path: Path) -> None:
    """The fuzzing starts from records the decoders accept: a mutation is a real change."""
    target = targets.TARGETS[name]
    assert target.decode(target.seed, tmp_path) is not None


FOUND_BY_ATHERIS = [
    # a chunker size FastCDC refuses was a ValueError from the chunker
    ("config", b'{"version": 1, "id": "x", "encrypted": false, "chunker": {"avg": 5519853, '
     b'"min": 524288, "max": 8388608, "seed": 3}}'),
    # an `id` key in a snapshot record was a TypeError (the id is the file's name)
    ("snapshot", b'{"time": "2026-12-01T00:00:00+00:00", "plan": "p", "target": "t", '
     b'"kind": "files", "hostname": "h", "username": "u", "paths": [], "id": 1}'),
]


@pytest.mark.parametrize(("name", "raw"), FOUND_BY_ATHERIS, ids=["chunker_range", "id_key"])
def test_atheris_findings_stay_fixed(name: str, raw: bytes, tmp_path: Path) -> None:
    targets.run_one(targets.TARGETS[name], raw, tmp_path)
