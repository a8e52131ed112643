"""What `report` prints besides the report itself: where it was written, and whether a
report file still matches the ledger (`report --verify FILE`)."""

from __future__ import annotations

import click


def show_report(text: str, output: str | None) -> None:
    """The rendered report on stdout, or (written to `output`) a line saying where."""
    if output:
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def show_report_check(path: str, problems: list[str]) -> None:
    for p in problems:
        click.echo(f"{path}: {p}", err=True)
    if not problems:
        click.echo(f"{path}: matches the ledger; its hash chain is intact")
