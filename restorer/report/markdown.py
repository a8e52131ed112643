"""Markdown, for tickets and wikis: the same sections as the HTML report, as tables."""

from __future__ import annotations

from typing import Any

from restorer.plan.durations import format_duration


def _d(v: float | None) -> str:
    return "-" if v is None else format_duration(v)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict[str, Any], params: str) -> str:
    per = data["period"]
    out = [f"<!-- restorer-report-params: {params} -->", "",
           f"# Restore-test report {per['from'][:10]} to {per['to'][:10]}", "",
           f"Generated {data['generated_at']} by restorer {data['tool_version']}.", "",
           "## Controls by plan", "", "| plan | passing | failing |", "|---|---|---|"]
    for p in data["plans"]:
        c = p.get("controls") or {"passed": 0, "total": 0, "failing": []}
        out.append(f"| {_cell(p['name'])} | {c['passed']} of {c['total']} | "
                   f"{_cell('; '.join(c['failing']) or 'none')} |")
    out += ["", "## Findings", ""]
    out += [f"- **{f['plan']} / {f['target']}**: {f['finding']}" for f in data["findings"]] \
        or ["None: every target had a passing restore test in the period."]
    for p in data["plans"]:
        out += ["", f"## Plan {p['name']}", "",
                "| target | kind | tests | passed | failed | RTO objective | worst | median | "
                "latest | RPO objective | RPO breaches |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in p["targets"]:
            rt, r, rp = t["restore_tests"], t["rto"], t["rpo"]
            out.append(f"| {_cell(t['name'])} | {t['kind']} | {rt['total']} | {rt['passed']} | "
                       f"{rt['failed']} | {_d(r['objective_s'])} | {_d(r['worst_s'])} | "
                       f"{_d(r['median_s'])} | {_d(r['latest_s'])} | {_d(rp['objective_s'])} | "
                       f"{len(rp['breaches'])} |")
        controls = sorted(((t["name"], c) for t in p["targets"] for c in t.get("controls", [])),
                          key=lambda x: ({"fail": 0, "n/a": 1, "pass": 2}[x[1]["verdict"]],
                                         x[0]))
        if controls:
            out += ["", "| target | control | verdict | evidence |", "|---|---|---|---|"]
            out += [f"| {_cell(name)} | {c['name']} | {c['verdict'].upper()} | "
                    f"{_cell('; '.join([c['detail'], *c['findings'][:5]]))} |"
                    for name, c in controls]
        tests = [(t["name"], x) for t in p["targets"] for x in t["tests"]]
        if tests:
            out += ["", "| time | target | snapshot | restore | result | checks | by |",
                    "|---|---|---|---|---|---|---|"]
            for name, x in sorted(tests, key=lambda nx: nx[1]["time"]):
                checks = "; ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}"
                                   for c in x["checks"]) or _cell(x["error"] or "")
                out.append(f"| {x['time']} | {_cell(name)} | {(x['snapshot'] or '-')[:8]} | "
                           f"{_d(x['restore_s'])} | {'pass' if x['passed'] else 'FAIL'} | "
                           f"{_cell(checks)} | {_cell(x['user'] + '@' + x['host'])} |")
        if p["rollbacks"]:
            out += ["", "| rollback | command | targets (snapshot) | by | outcome | took |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {r['time']} | {r['command']} | "
                    + _cell(", ".join(f"{x['target']} ({(x['snapshot'] or '-')[:8]})"
                                      for x in r.get("targets", [])) or "-")
                    + f" | {_cell(r['user'] + '@' + r['host'])} | {r['outcome']} | "
                    f"{_d(r['duration_s'])} |" for r in p["rollbacks"]]
        if p["failures"]:
            out += ["", "| failure | command | error | recovered after |", "|---|---|---|---|"]
            out += [f"| {f['time']} | {f['command']} | {_cell(f['error'] or f['outcome'])} | "
                    f"{_d(f['time_to_recover_s']) if f['recovered_at'] else 'not yet'} |"
                    for f in p["failures"]]
    out += ["", "## Evidence integrity", ""]
    for led in data["evidence"]["ledgers"]:
        state = led.get("summary") if led["chain_intact"] else f"BROKEN: {led['problem']}"
        out.append(f"- plan {led['plan']}: ledger {led['ledger']}, {led['rows']} rows to the "
                   f"period's end: {_cell(str(state))}; last row in the period "
                   f"{led['last_seq']}: `{led['last_hash']}`")
    out += [f"- report data digest `{data['evidence']['data_digest']}`; check with "
            "`restorer report --verify FILE`", ""]
    return "\n".join(out)
