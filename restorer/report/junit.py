"""JUnit XML: one testsuite per plan, one testcase per target (its latest restore test in the
period), so CI dashboards show restore tests next to unit tests. A target whose latest test
failed is a failure (with each check's result); one never tested in the period is a failure
too (CI must go red on an untested target), or skipped with `--untested skip`. Times are
plain seconds."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr


def _secs(x: float | None) -> str:
    return f"{x or 0.0:.3f}"


def _case(plan: str, t: dict[str, Any], untested: str) -> tuple[str, bool, bool]:
    """(xml, failed, skipped)"""
    name = f'classname={quoteattr("restorer." + plan)} name={quoteattr(t["name"])}'
    if not t["tests"]:
        if untested == "skip":
            return (f"<testcase {name} time=\"0.000\"><skipped message=\"no restore test in "
                    "the period\"/></testcase>", False, True)
        return (f"<testcase {name} time=\"0.000\"><failure message=\"never restore-tested "
                "in the period\" type=\"NotTested\">target "
                f"{escape(t['name'])} has no restore test in the period; run `restorer verify`"
                "</failure></testcase>", True, False)
    latest = t["tests"][-1]
    time_s = latest["restore_s"] or 0.0
    lines = [f"{'pass' if c['passed'] else 'FAIL'} {c['name']} ({_secs(c['duration_s'])}s): "
             f"{c['detail'] or ''}" for c in latest["checks"]]
    props = (f'<system-out>{escape(chr(10).join(lines))}\nsnapshot {latest["snapshot"]} '
             f'restored in {_secs(latest["restore_s"])}s on {latest["host"]} at '
             f'{latest["time"]}</system-out>')
    if latest["passed"]:
        return f"<testcase {name} time=\"{time_s:.3f}\">{props}</testcase>", False, False
    failed = [c for c in latest["checks"] if not c["passed"]]
    message = latest["error"] or "; ".join(f"{c['name']}: {c['detail']}" for c in failed) \
        or "restore test failed"
    return (f"<testcase {name} time=\"{time_s:.3f}\"><failure message={quoteattr(message[:500])}"
            f" type=\"RestoreTestFailed\">{escape(chr(10).join(lines) or message)}</failure>"
            f"{props}</testcase>", True, False)


def render_junit(data: dict[str, Any], params: str) -> str:
    untested = (data.get("options") or {}).get("untested", "skip")
    suites, total, failures, skipped_all = [], 0, 0, 0
    for i, p in enumerate(data["plans"]):
        cases = [_case(p["name"], t, untested) for t in p["targets"]]
        n, f = len(cases), sum(c[1] for c in cases)
        s = sum(c[2] for c in cases)
        total, failures, skipped_all = total + n, failures + f, skipped_all + s
        secs = sum((t["tests"][-1]["restore_s"] or 0.0) for t in p["targets"] if t["tests"])
        props = ("<properties><property name=\"restorer-report-params\" value="
                 f"{quoteattr(params)}/></properties>" if i == 0 else "")
        suites.append(f"<testsuite name={quoteattr('restore tests of plan ' + p['name'])} "
                      f"tests=\"{n}\" failures=\"{f}\" errors=\"0\" skipped=\"{s}\" "
                      f"time=\"{secs:.3f}\" timestamp={quoteattr(data['period']['to'][:19])}>"
                      + props + "".join(c[0] for c in cases) + "</testsuite>")
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<testsuites name=\"restorer restore tests\" tests=\"{total}\" "
            f"failures=\"{failures}\" errors=\"0\" skipped=\"{skipped_all}\">\n"
            + "\n".join(suites) + "\n</testsuites>\n")
