"""before / after / on_error commands around a plan's run or a target's backup.

A failing `before` hook aborts what it guards (with the hook's own words); `after` hooks
always run, whether the work (or a `before` hook) succeeded or not, so a service a hook
stopped is started again; `on_error` hooks run, before `after`, when anything failed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from restorer.errors import RestorerError, SourceError
from restorer.sources.process import mask

log = logging.getLogger("restorer.hooks")


@dataclass
class HookOutcome:
    warnings: list[str] = field(default_factory=list)


@dataclass
class HookRun:
    """One hook as it ran, for the ledger and a summary (command and output masked)."""

    phase: str  # before | after | on_error
    command: str
    exit_code: int | None  # None: killed at its timeout, or not known (remote)
    duration_s: float
    output: str = ""  # the last lines of its stdout and stderr
    error: str | None = None


Runner = Callable[..., str | None]


def _tail(data: bytes, secrets: list[str | None], lines: int = 10) -> str:
    return mask("\n".join(data.decode("utf-8", "replace").strip().splitlines()[-lines:]),
                secrets)


def run_hook(cmd: str, *, phase: str, what: str, timeout: float, env: dict[str, str],
             secrets: list[str | None]) -> str:
    """Run one hook through the shell: its output's last lines (masked), or SourceError
    (with its stderr, masked, and `status`) if it fails."""
    log.info("%s: %s hook: %s", what, phase, cmd)
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, timeout=timeout,
                           env={**os.environ, **env, "RESTORER_PHASE": phase},
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: {phase} hook `{mask(cmd, secrets)}` did not finish within "
                          f"{timeout:g}s and was killed",
                          hint="make the hook faster or raise hooks.timeout in the plan") from None
    if p.returncode != 0:
        tail = _tail(p.stderr, secrets)
        detail = f":\n{tail}" if tail else ""
        err = SourceError(f"{what}: {phase} hook `{mask(cmd, secrets)}` exited with status "
                          f"{p.returncode}{detail}")
        err.status = p.returncode  # type: ignore[attr-defined]
        err.output = _tail(p.stdout + p.stderr, secrets)  # type: ignore[attr-defined]
        raise err
    return _tail(p.stdout + p.stderr, secrets)


def remote_runner(client: Any) -> Runner:
    """A hook runner that runs each command on the host `client` is connected to."""
    from restorer.sources.remote import q, remote_output

    def run(cmd: str, *, phase: str, what: str, timeout: float, env: dict[str, str],
            secrets: list[str | None]) -> str | None:
        log.info("%s: %s hook (remote): %s", what, phase, cmd)
        exports = " ".join(f"{k}={q(v)}" for k, v in {**env, "RESTORER_PHASE": phase}.items())
        try:
            with remote_output(client, f"export {exports}; {cmd}", what=f"{what}: {phase} "
                               f"hook `{mask(cmd, secrets)}`", secrets=secrets,
                               timeout=timeout) as out:
                return _tail(out.read(), secrets)
        except TimeoutError:
            raise SourceError(f"{what}: {phase} hook `{mask(cmd, secrets)}` did not finish "
                              f"within {timeout:g}s on the remote host") from None

    return run


@contextmanager
def hooks_around(before: list[str], after: list[str], on_error: list[str], *, what: str,
                 timeout: float, env: dict[str, str],
                 secrets: list[str | None] | None = None,
                 runner: Runner | None = None,
                 on_hook: Callable[[HookRun], None] | None = None) -> Iterator[HookOutcome]:
    """`on_hook` hears of every hook that ran: its command, exit code, time and output."""
    inner = runner or run_hook
    outcome = HookOutcome()
    secrets = secrets or []

    def run_hook_(cmd: str, *, phase: str, **kw: Any) -> None:
        t0 = time.monotonic()
        try:
            out = inner(cmd, phase=phase, **kw)
        except RestorerError as e:
            if on_hook:
                on_hook(HookRun(phase, mask(cmd, secrets), getattr(e, "status", None),
                                time.monotonic() - t0, getattr(e, "output", ""), e.message))
            raise
        if on_hook:
            on_hook(HookRun(phase, mask(cmd, secrets), 0, time.monotonic() - t0, out or ""))

    try:
        for cmd in before:
            run_hook_(cmd, phase="before", what=what, timeout=timeout, env=env, secrets=secrets)
        yield outcome
    except BaseException as e:
        for cmd in on_error:
            try:
                run_hook_(cmd, phase="on_error", what=what, timeout=timeout,
                         env={**env, "RESTORER_ERROR": mask(_msg(e), secrets)}, secrets=secrets)
            except RestorerError as he:
                log.error("%s", he.message)
        _after(run_hook_, after, what, timeout, env, secrets, outcome)
        raise
    _after(run_hook_, after, what, timeout, env, secrets, outcome)
    for w in outcome.warnings:
        log.warning("%s", w)


def _after(run: Runner, after: list[str], what: str, timeout: float, env: dict[str, str],
           secrets: list[str | None], outcome: HookOutcome) -> None:
    for cmd in after:
        try:
            run(cmd, phase="after", what=what, timeout=timeout, env=env, secrets=secrets)
        except RestorerError as e:
            outcome.warnings.append(e.message)
            log.error("%s", e.message)


def _msg(e: BaseException) -> str:
    return e.message if isinstance(e, RestorerError) else f"{type(e).__name__}: {e}"
