"""One conformance suite for every target kind, as tests/storage/test_conformance.py is for
storage backends: every cell of `restorer.targets.KINDS` x `CAPABILITIES`.

Where the registry says a kind can, the cell runs the user's journey through the installed
CLI against the real service and checks what a user checks; where it says a kind cannot, the
cell checks the documented refusal, in the words the CLI prints. The kinds' setup lives in
tests/targets/kinds.py; a kind without a provider there fails every one of its cells.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from restorer.targets import CAPABILITIES, KINDS, TargetKind
from tests.conftest import run_cli
from tests.targets.kinds import PROVIDERS, TARGET, Provider, cli_env, provider_for


def _as_target(p: Provider) -> SimpleNamespace:
    """The target as `TargetKind.can` reads it (its attributes; via_ssh None when absent)."""
    return SimpleNamespace(**{"via_ssh": None, "all_databases": False, **p.target()})


def _backup(p: Provider, plan: Path, init: bool = False) -> dict[str, Any]:
    r = p.cli("backup", *(["--init"] if init else []), plan, "--json")
    assert r.rc == 0, r.text
    (res,) = json.loads(r.out)["targets"]
    assert res["target"] == TARGET and res["ok"] and res["complete"], res
    return res


def _snapshot_ids(p: Provider, plan: Path) -> list[str]:
    r = p.cli("snapshots", plan, "--json")
    assert r.rc == 0, r.text
    return [s["id"] for s in json.loads(r.out)]


# --- journeys: what a kind can do ------------------------------------------------------


def journey_backup(p: Provider, kind: TargetKind) -> None:
    plan = p.plan()
    res = _backup(p, plan, init=True)
    r = p.cli("snapshots", plan, "--json")
    assert r.rc == 0, r.text
    assert [(s["id"], s["target"], s["kind"], s["plan"]) for s in json.loads(r.out)] == \
        [(res["snapshot"], TARGET, kind.name, p.plan_name)]


def journey_restore(p: Provider, kind: TargetKind) -> None:
    plan = p.plan()
    at_backup = p.live()
    _backup(p, plan, init=True)
    p.change()  # what comes back is the snapshot's data, not today's
    assert p.live() != at_backup
    dest = p.restore_to()
    r = p.cli("restore", plan, "latest", "--to", dest)
    assert r.rc == 0, r.text
    assert p.restored(dest) == at_backup


def journey_verify(p: Provider, kind: TargetKind) -> None:
    plan = p.plan()
    res = _backup(p, plan, init=True)
    r = p.cli("verify", plan, "--json")
    assert r.rc == 0, r.text
    (v,) = json.loads(r.out)
    assert (v["target"], v["snapshot"]) == (TARGET, res["snapshot"])
    assert v["ok"] and v["passed"] and v["error"] is None and not v["kept"], v
    # the manifest check, then the target's own, each by its name ({"sql": {...}} is sql)
    assert [c["name"] for c in v["checks"]] == \
        ["manifest", *(next(iter(c)) for c in p.target().get("checks", []))], v["checks"]
    assert all(c["passed"] for c in v["checks"]), v["checks"]
    assert p.staging_left() == []


def journey_rollback(p: Provider, kind: TargetKind) -> None:
    plan = p.plan()
    at_backup = p.live()
    res = _backup(p, plan, init=True)
    r = p.cli("verify", plan)  # rollback goes to the newest verified snapshot
    assert r.rc == 0, r.text
    p.change()
    newer = p.live()
    r = p.cli("rollback", plan, "--yes", "--json")
    assert r.rc == 0, r.text
    out = json.loads(r.out)
    assert out["ok"], out
    assert [(t["target"], t["snapshot"]) for t in out["targets"]] == \
        [(TARGET, res["snapshot"])], out["targets"]
    p.assert_rolled_back(res, at_backup)
    r = p.cli("rollback", plan, "--undo", "--yes")
    assert r.rc == 0, r.text
    assert p.live() == newer


def journey_prune(p: Provider, kind: TargetKind) -> None:
    plan = p.plan(retention={"keep_last": 1})
    old = _backup(p, plan, init=True)
    p.change()
    newer = p.live()
    new = _backup(p, plan)
    r = p.cli("prune", plan, "--json")
    assert r.rc == 0, r.text
    decided = {d["snapshot"]: d["keep"] for d in json.loads(r.out)["targets"][TARGET]}
    assert decided == {old["snapshot"]: False, new["snapshot"]: True}
    assert _snapshot_ids(p, plan) == [new["snapshot"]]
    p.assert_pruned(old, new)
    if kind.can("restore", _as_target(p)).can:  # the newer one still restores whole
        dest = p.restore_to()
        r = p.cli("restore", plan, "latest", "--to", dest)
        assert r.rc == 0, r.text
        assert p.restored(dest) == newer


JOURNEYS: dict[str, Callable[[Provider, TargetKind], None]] = {
    "backup": journey_backup, "restore": journey_restore, "verify": journey_verify,
    "rollback": journey_rollback, "prune": journey_prune}


# --- refusals: what a kind cannot do ---------------------------------------------------


def _problem_line(plan: Path, err: str, key: str, message: str) -> str:
    """The line of plan that `validate` names for `key` with exactly `message`."""
    m = re.search(rf"^{re.escape(str(plan))}:(\d+): At '{re.escape(key)}': "
                  rf"{re.escape(message)}$", err, re.M)
    assert m, f"no problem at {key!r} saying {message!r} in:\n{err}"
    return plan.read_text().splitlines()[int(m.group(1)) - 1].strip()


def refuse_verify(p: Provider, kind: TargetKind, t: Any) -> None:
    refusal = kind.refusal("verify", t)
    assert refusal.endswith(kind.can("verify", t).how)
    # validate: a scheduled verify covers every target, so the plan asks the impossible
    plan = p.plan("scheduled.yaml", schedule={"verify": "30 4 * * 0"})
    r = p.cli("validate", plan)
    assert r.rc == 2, r.text
    line = _problem_line(plan, r.err, "schedule.verify",
                         f"the scheduled verify covers every target; {refusal} Hint: move "
                         f"target {TARGET} to a plan without schedule.verify, or drop "
                         "schedule.verify")
    assert line.startswith("verify:"), line
    # verify itself (it looks for a snapshot first): the target fails with the same words,
    # and nothing is staged
    plan = p.plan()
    res = _backup(p, plan, init=True)
    r = p.cli("verify", plan, "--json")
    assert r.rc == 1, r.text
    (v,) = json.loads(r.out)
    assert (v["target"], v["snapshot"]) == (TARGET, res["snapshot"])
    assert not v["ok"] and not v["passed"] and v["checks"] == [], v
    assert v["error"] == refusal
    assert p.staging_left() == []


def refuse_rollback(p: Provider, kind: TargetKind, t: Any) -> None:
    refusal = kind.refusal("rollback", t)
    assert refusal.endswith(kind.can("rollback", t).how)
    plan = p.plan("listed.yaml", rollback={"targets": [TARGET]})
    r = p.cli("validate", plan)
    assert r.rc == 2, r.text
    line = _problem_line(plan, r.err, "rollback.targets[0]",
                         f"{refusal} Hint: remove it from rollback.targets (`restorer kinds` "
                         "lists what each kind can do)")
    assert line == f"- {TARGET}", line
    # rollback itself refuses before it changes anything (it opens the repository first,
    # then decides on the targets before it reads a snapshot)
    plan = p.plan()
    r = p.cli("init", plan)
    assert r.rc == 0, r.text
    before = p.live()
    r = p.cli("rollback", plan, "--target", TARGET, "--yes")
    assert r.rc == 2, r.text
    assert r.err == (f"restorer: error: {refusal}\nHint: name the targets to roll back with "
                     "--target, or list them in rollback.targets (`restorer kinds` shows "
                     "which kinds can)\n")
    assert p.live() == before


def refuse_restore(p: Provider, kind: TargetKind, t: Any) -> None:
    """ebs, rds: the snapshot stays in AWS; restore says so and writes nothing."""
    plan = p.plan()
    res = _backup(p, plan, init=True)
    dest = p.restore_to()
    r = p.cli("restore", plan, "latest", "--to", dest)
    assert r.rc == 1, r.text
    where = ", ".join(f"{region} {ident}" for region, ident in
                      res["summary"]["snapshots"].items())
    assert r.err == (f"restorer: error: snapshot {res['snapshot'][:8]} is an {kind.name} "
                     f"snapshot kept in AWS ({where})\nHint: `restorer verify` restores it "
                     "into staging; `restorer rollback` puts it in place of the live volume "
                     "or instance\n")
    assert not Path(dest).exists()


REFUSALS: dict[str, Callable[[Provider, TargetKind, Any], None]] = {
    "verify": refuse_verify, "rollback": refuse_rollback, "restore": refuse_restore}


def _refuse(capability: str, p: Provider, kind: TargetKind, t: Any) -> None:
    check = REFUSALS.get(capability)
    if check is None:
        pytest.fail(f"kind {kind.name} cannot {capability}, and this suite has no refusal "
                    f"case for {capability} yet: write one", pytrace=False)
    check(p, kind, t)


# --- the matrix ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind_name", "capability"), [
    pytest.param(k, c, id=f"{k}-{c}") for k in KINDS for c in CAPABILITIES])
def test_kind_capability(kind_name: str, capability: str, request: pytest.FixtureRequest,
                         tmp_path: Path) -> None:
    kind = KINDS[kind_name]
    p = provider_for(kind_name, request, tmp_path)
    t = _as_target(p)
    if kind.can(capability, t).can:
        JOURNEYS[capability](p, kind)
    else:
        _refuse(capability, p, kind, t)


def _variant_cells() -> list[Any]:
    """Targets whose settings take a capability away from their kind (`TargetKind.can`)."""
    cells = []
    for k, cls in PROVIDERS.items():
        if k not in KINDS:
            continue
        for variant, shape in cls.variants.items():
            t = SimpleNamespace(name=TARGET, **shape)
            cells += [pytest.param(k, variant, c, id=f"{k}[{variant}]-{c}")
                      for c in CAPABILITIES if KINDS[k].can(c).can
                      and not KINDS[k].can(c, t).can]
    return cells


@pytest.mark.parametrize(("kind_name", "variant", "capability"), _variant_cells())
def test_variant_refusal(kind_name: str, variant: str, capability: str,
                         request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kind = KINDS[kind_name]
    p = provider_for(kind_name, request, tmp_path, variant)
    t = _as_target(p)
    assert not kind.can(capability, t).can, "the provider's target does not make the variant"
    _refuse(capability, p, kind, t)


def test_every_variant_takes_a_capability_away() -> None:
    """A declared variant that no longer changes what its kind can do needs journeys, not
    refusals: it shows up here."""
    for k, cls in PROVIDERS.items():
        for variant, shape in cls.variants.items() if k in KINDS else ():
            t = SimpleNamespace(name=TARGET, **shape)
            assert any(KINDS[k].can(c).can and not KINDS[k].can(c, t).can
                       for c in CAPABILITIES), f"{k}[{variant}] changes nothing"


def test_every_provider_is_a_kind() -> None:
    assert sorted(set(PROVIDERS) - set(KINDS)) == [], "providers for kinds restorer lacks"


def test_kinds_json_prints_the_registry() -> None:
    """The reasons the refusals above expect are the ones `restorer kinds` shows users."""
    r = run_cli("kinds", "--json", env=cli_env({}))
    assert r.rc == 0, r.text
    assert {row["kind"]: row["capabilities"] for row in json.loads(r.out)} == {
        k.name: {c: {"can": k.capabilities[c].can, "how": k.capabilities[c].how}
                 for c in CAPABILITIES} for k in KINDS.values()}
