"""How a fatal error is printed on stderr: `restorer: error: ...` and its hint, or one JSON
line under --log-format json."""

from __future__ import annotations

import click


def show_fatal(structured: bool, level: str, message: str, code: int,
               hint: str | None = None) -> None:
    if structured:
        from restorer.cli.logfmt import json_line

        click.echo(json_line(level, "exit", message, hint=hint, exit_code=code), err=True)
    else:
        click.echo(f"restorer: {'error: ' if level == 'error' else ''}{message}"
                   + (f"\nHint: {hint}" if hint else ""), err=True)
