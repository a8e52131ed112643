"""What `validate`, `schema` and `kinds` print: every problem of each plan (on stderr),
the JSON Schema of plan files, and the capability matrix of the target kinds."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from restorer.cli.render import emit_json, table
from restorer.errors import RestorerError

if TYPE_CHECKING:
    from restorer.plan.problems import Problem


def show_validate(outcomes: Iterable[tuple[str, list[Problem] | RestorerError]],
                  as_json: bool) -> None:
    """Per plan file, in the order given: its problems, or the error that stopped reading
    it, or `ok`."""
    report: list[dict] = []
    for p, found in outcomes:
        if isinstance(found, RestorerError):
            report.append({"plan": p, "ok": False, "problems": [{"message": str(found)}]})
            if not as_json:
                click.echo(str(found), err=True)
            continue
        problems = found
        report.append({"plan": p, "ok": not problems, "problems": [
            {"file": x.file, "line": x.line, "key": x.key, "message": x.message, "hint": x.hint}
            for x in problems]})
        if not as_json:
            if problems:
                for x in problems:
                    click.echo(str(x), err=True)
            else:
                click.echo(f"{p}: ok")
    if as_json:
        emit_json(report)


def show_schema(schema: dict[str, Any]) -> None:
    click.echo(json.dumps(schema, indent=2))


def show_kinds(as_json: bool) -> None:
    """The registry's capability matrix: a table and every gap with its reason."""
    from restorer.targets import CAPABILITIES, KINDS, VERBS, matrix

    if as_json:
        emit_json(matrix())
        return
    rows = [[k.name] + ["yes" if k.capabilities[c].can else "no" for c in CAPABILITIES]
            for k in KINDS.values()]
    table(["kind", *CAPABILITIES], rows)
    click.echo()
    for k in KINDS.values():
        for c in CAPABILITIES:
            cap = k.capabilities[c]
            if not cap.can:
                click.echo(f"{k.name} cannot {VERBS[c]}: {cap.how}")
    click.echo("postgres and mysql targets reached over via_ssh cannot roll back either, and "
               "postgres targets with all_databases can neither verify nor roll back")
