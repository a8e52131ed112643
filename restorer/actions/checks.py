"""The plan's checks, run against a restored copy in staging.

Each check returns (passed, detail); the detail is what a person reads to see why: the
query's value, the command's first output lines, the HTTP status and body start.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restorer.errors import RestorerError
from restorer.ledger import RunRecorder
from restorer.plan import models
from restorer.targets.base import Stage


def run_checks(stage: Stage, specs: list[Any], *, manifest: bool, target: str,
               run: RunRecorder | None) -> list[CheckResult]:
    """The always-on manifest check (with `manifest`) and then the plan's checks against
    `stage`, each timed and, with `run`, a ledger phase. A broken check fails itself, never
    the others."""
    checks: list[tuple[str, Any]] = [("manifest", None)] if manifest else []
    checks += [(check_name(c), c) for c in specs if not isinstance(c, models.ManifestCheck)]
    out = []
    for name, spec in checks:
        c0 = time.monotonic()
        try:
            passed, detail = stage.manifest() if spec is None else run_check(spec, stage)
        except RestorerError as e:
            passed, detail = False, e.message
        except Exception as e:
            passed, detail = False, f"{type(e).__name__}: {e}"
        cr = CheckResult(name, passed, time.monotonic() - c0, stage.clean(detail))
        out.append(cr)
        if run:
            run.record_phase("check", cr.duration_s, target=target, check=name,
                             outcome="ok" if passed else "failed", detail=cr.detail)
    return out


def check_name(spec: Any) -> str:
    for k in ("files", "command", "sql", "http"):
        if hasattr(spec, k):
            return k
    return "manifest"


def run_check(spec: Any, stage: Stage) -> tuple[bool, str]:
    if isinstance(spec, models.FilesCheck):
        return _files(spec.files, stage)
    if isinstance(spec, models.CommandCheck):
        return _command(spec.command, stage)
    if isinstance(spec, models.SQLCheck):
        return _sql(spec.sql, stage)
    if isinstance(spec, models.HTTPCheck):
        return _http(spec.http, stage)
    raise TypeError(f"unknown check {spec!r}")


def _files(f: models.FilesCheckSpec, stage: Stage) -> tuple[bool, str]:
    missing = [p for p in f.exist if not stage.exists(p)]
    files = stage.files()
    size = sum(n for _, n in files)
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if f.min_count is not None and len(files) < f.min_count:
        problems.append(f"{len(files)} files, expected at least {f.min_count}")
    if f.min_bytes is not None and size < f.min_bytes:
        problems.append(f"{size} bytes, expected at least {f.min_bytes}")
    return (not problems, "; ".join(problems) or f"{len(files)} files, {size} bytes; "
            f"{len(f.exist)} required paths present")


def _command(c: models.CommandCheckSpec, stage: Stage) -> tuple[bool, str]:
    code, output = stage.run(c.run, c.timeout)
    if code is None:
        return False, f"`{c.run}` did not finish within {c.timeout:g}s"
    out = output.strip().splitlines()[:5]
    return code == 0, f"`{c.run}` exited {code}" + (": " + " | ".join(out) if out else "")


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _sql(s: models.SQLCheckSpec, stage: Stage) -> tuple[bool, str]:
    rows = stage.query(s.query, s.timeout)
    value = rows[0][0] if rows and rows[0] else None
    shown = "no rows" if value is None else repr(value) if len(rows) == 1 else \
        f"{value!r} (first of {len(rows)} rows)"
    problems = []
    if s.equals is not None and not _equal(value, s.equals):
        problems.append(f"expected {s.equals!r}")
    for bound, ok in (("min", lambda v, b: v >= b), ("max", lambda v, b: v <= b)):
        b = getattr(s, bound)
        if b is None:
            continue
        num = _number(value) if value is not None else None
        if num is None:
            problems.append(f"expected a number {'>=' if bound == 'min' else '<='} {b:g}")
        elif not ok(num, b):
            problems.append(f"expected {'>=' if bound == 'min' else '<='} {b:g}")
    if s.non_empty and (value is None or value == ""):
        problems.append("expected a non-empty result")
    return not problems, f"`{s.query}` returned {shown}" + (
        "; " + ", ".join(problems) if problems else "")


def _equal(value: str | None, expected: Any) -> bool:
    if value is None:
        return False
    if isinstance(expected, bool):
        return value.lower() in (("t", "true", "1") if expected else ("f", "false", "0"))
    if isinstance(expected, int | float):
        num = _number(value)
        return num is not None and num == expected
    return value == str(expected)


def _http(h: models.HTTPCheckSpec, stage: Stage) -> tuple[bool, str]:
    if not h.serve:
        return _get_until_answered(h, lambda: None)
    with stage.serve(h.serve) as exited:
        return _get_until_answered(h, exited)


def _get_until_answered(h: models.HTTPCheckSpec, exited: Callable[[], tuple[int, str] | None]
         ) -> tuple[bool, str]:
    """GET the URL, retrying while nothing answers yet (a server still starting)."""
    deadline = time.monotonic() + h.timeout
    last = "no answer"
    while True:
        gone = exited()
        if gone is not None:
            code, tail = gone
            return False, (f"`{h.serve}` exited {code} before {h.url} answered"
                           + (": " + tail if tail else ""))
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"GET {h.url}: {last} within {h.timeout:g}s"
        try:
            with urllib.request.urlopen(h.url, timeout=min(left, 10)) as r:
                status, body = r.status, r.read(1 << 20)
            break
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read(1 << 20)
            break
        except OSError as e:  # refused, reset, timed out: not serving yet
            last = f"no answer ({getattr(e, 'reason', e)})"
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    text = body.decode("utf-8", "replace")
    problems = []
    if status != h.status:
        problems.append(f"expected status {h.status}")
    if h.contains is not None and h.contains not in text:
        problems.append(f"body does not contain {h.contains!r}")
    start = " ".join(text.split())[:120]
    return not problems, f"GET {h.url} -> {status}" + (
        "; " + ", ".join(problems) if problems else "") + (f"; body: {start}" if start else "")


@dataclass
class CheckResult:
    name: str
    passed: bool
    duration_s: float
    detail: str
