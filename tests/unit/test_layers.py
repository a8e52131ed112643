"""The architecture, checked: the layers of shared/DESIGN.md import only downwards, nothing
imports in a circle, and no code outside the kinds knows which kinds there are.

Read from the source (ast), so a change that breaks a rule fails here with the file and
line, not somewhere later at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from restorer.targets import KINDS

ROOT = Path(__file__).resolve().parents[2] / "restorer"

# top to bottom; a module may import its own layer and any layer below it. `ledger` and
# `report` sit beside the stack: actions and cli use them, they use only what is below.
LAYERS = ["cli", "actions", "targets", "plan", "sources", "repo", "storage"]
SIDE = {"ledger": {"plan", "sources", "repo", "storage"}, "report": {"plan"}}
# what everything may use: errors, clock, process ids, folders, env files, progress, outcomes
COMMON = {"errors", "clock", "pids", "fsutil", "statedir", "envfile", "progress", "outcome",
          "__init__", "__main__"}
# where kind-specific code may live
KIND_HOMES = ("targets/", "sources/", "plan/models.py")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import at module level (not inside functions: those are
    deliberate late imports, and cannot make an import circle)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) \
                else []:
            if isinstance(n, ast.Import):
                out += [(a.name, n.lineno) for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                out.append((n.module, n.lineno))
                out += [(f"{n.module}.{a.name}", n.lineno) for a in n.names]
    return [(m, line) for m, line in out if m.startswith("restorer")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_import_only_downwards() -> None:
    mods = _modules()
    wrong = []
    for name, path in mods.items():
        mine = _layer(name)
        for target, line in _imports(path):
            if target not in mods:
                continue  # `from pkg import name` of a function, not a module
            theirs = _layer(target)
            if theirs == mine or theirs in COMMON:
                continue
            if mine in SIDE:
                ok = theirs in SIDE[mine]
            elif theirs in SIDE:
                ok = mine in ("cli", "actions")
            elif mine in LAYERS and theirs in LAYERS:
                ok = LAYERS.index(theirs) > LAYERS.index(mine)
            else:
                ok = mine not in LAYERS or theirs in COMMON
            if not ok:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({mine}) imports "
                             f"{target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    mods = _modules()
    graph = {name: sorted({t for t, _ in _imports(p) if t in mods and t != name})
             for name, p in mods.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                circles.append([*stack[stack.index(n):], n] if n in stack else [m, n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def _kind_problems(path: Path) -> list[str]:
    """Lines that branch on a kind: isinstance on (or import of) a kind's plan model, a
    kind's name compared, `via_ssh` probed."""
    names = set(KINDS)
    models = {k.model.__name__ for k in KINDS.values()}
    tree = ast.parse(path.read_text())
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and (n.attr in models or n.attr == "via_ssh"):
            out.append(f"{n.lineno}: {ast.unparse(n)}")
        elif isinstance(n, ast.ImportFrom) and any(a.name in models for a in n.names):
            out.append(f"{n.lineno}: imports {', '.join(a.name for a in n.names)}")
        elif isinstance(n, ast.Compare):
            for side in [n.left, *n.comparators]:
                for c in ast.walk(side):
                    if isinstance(c, ast.Constant) and c.value in names:
                        out.append(f"{n.lineno}: compares with {c.value!r}")
        elif isinstance(n, ast.Constant) and n.value == "via_ssh":
            out.append(f"{n.lineno}: 'via_ssh'")
    return out


def test_no_kind_specific_code_outside_the_kinds() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(KIND_HOMES):
            continue
        found += [f"restorer/{rel}:{p}" for p in _kind_problems(path)]
    assert not found, "kind-specific code outside targets/, sources/, plan/models.py:\n" + \
        "\n".join(found)


def test_the_grep_finds_what_it_looks_for(tmp_path: Path) -> None:
    # the check above must be able to fail: each way of branching on a kind is caught
    src = tmp_path / "x.py"
    src.write_text("from restorer.plan.models import EBSTarget\n"
                   "if isinstance(t, models.FilesTarget): pass\n"
                   "if t.kind in ('ebs', 'rds'): pass\n"
                   "if snap.kind == 'postgres': pass\n"
                   "host = getattr(t, 'via_ssh', None)\n"
                   "if t.via_ssh: pass\n")
    lines = {int(p.split(":")[0]) for p in _kind_problems(src)}
    assert lines == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_is_one_module_with_its_model(name: str) -> None:
    kind = KINDS[name]
    module = type(kind).__module__
    assert module.startswith("restorer.targets."), module
    assert kind.model.model_fields["kind"].annotation.__args__ == (name,)


def test_commands_never_exit_themselves() -> None:
    # a command returns its result's outcome mapped by restorer.outcome; only main() (and
    # its _fail) ends the process, so the ledger never has to catch SystemExit
    tree = ast.parse((ROOT / "cli" / "main.py").read_text())
    exits = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name not in ("main", "_fail"):
            exits += [f"{fn.name}:{n.lineno}" for n in ast.walk(fn)
                      if isinstance(n, ast.Call) and ast.unparse(n.func) == "sys.exit"]
    assert not exits, exits


def test_every_outcome_has_one_exit_code_and_errors_follow_it() -> None:
    from restorer import errors
    from restorer.outcome import EXIT_CODES, Outcome, exit_code

    assert set(EXIT_CODES) == set(Outcome)
    assert {exit_code(o) for o in Outcome} == {0, 1, 2, 3, 4}  # the README's codes
    assert errors.UsageError("x").exit_code == exit_code(Outcome.USAGE) == 2
    assert errors.PlanError("x").exit_code == 2
    assert errors.LockError("x").exit_code == exit_code(Outcome.LOCKED) == 4
    assert errors.PartialError("x").exit_code == exit_code(Outcome.PARTIAL) == 3
    assert errors.SourceError("x").exit_code == exit_code(Outcome.FAILED) == 1
    assert exit_code(Outcome.DECLINED) == 0  # a "no" at the prompt is not a failure


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("restorer"):
                found += [f"{path.relative_to(ROOT.parent)}:{n.lineno} {n.module}.{a.name}"
                          for a in n.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found
