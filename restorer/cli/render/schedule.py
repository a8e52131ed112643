"""What `schedule` prints: the crontab block, the systemd units written, or what
installing or removing the block did to the crontab; and a warning per `${env:X}` that
cron's environment would not resolve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from pathlib import Path


def _whose(user: str | None) -> str:
    return f"crontab {'of ' + user + ' ' if user else ''}updated"


def show_uninstalled(before: str, after: str, user: str | None) -> None:
    click.echo("no restorer block in the crontab" if before == after
               else f"{_whose(user)}: block removed")


def warn_unresolved(missing: list[str]) -> None:
    for m in missing:
        click.echo(f"restorer: warning: {m} (pass --env-file FILE)", err=True)


def show_units(written: list[Path]) -> None:
    for p in written:
        click.echo(f"wrote {p}")
    click.echo("enable with: systemctl daemon-reload && systemctl enable --now "
               "restorer-run.timer")


def show_block(block: str) -> None:
    click.echo(block, nl=False)


def show_installed(before: str, after: str, user: str | None) -> None:
    click.echo("crontab unchanged (already installed)" if before == after else _whose(user))
