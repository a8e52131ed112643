"""The HTML report: one self-contained file (no script, no external asset, a content policy
that forbids fetching any), laid out for A4 with a page break before each plan."""

from __future__ import annotations

from html import escape
from typing import Any

from restorer.plan.durations import format_duration
from restorer.report.charts import rto_chart

CSS = """
@page { size: A4; margin: 14mm; }
body { font: 10.5pt/1.4 "DejaVu Sans", Arial, sans-serif; color: #1d2731; margin: 0 auto;
       max-width: 190mm; }
h1 { font-size: 17pt; margin: 0 0 2mm; } h2 { font-size: 14pt; margin: 7mm 0 2mm; }
h3 { font-size: 11.5pt; margin: 5mm 0 1.5mm; }
table { border-collapse: collapse; width: 100%; margin: 1.5mm 0 3mm; font-size: 9pt; }
th, td { border: 1px solid #c8d0d8; padding: 1mm 1.5mm; text-align: left; vertical-align: top; }
th { background: #eef2f5; } tr, .target { break-inside: avoid; }
.plan { break-before: page; } .plan:first-of-type { break-before: auto; }
.findings { border: 2px solid #c0392b; background: #fdecea; padding: 2mm 4mm; }
.findings h2 { color: #c0392b; margin-top: 1mm; } .bad { color: #c0392b; font-weight: bold; }
.good { color: #1e8449; font-weight: bold; } .muted { color: #6c7a89; }
.evidence { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; word-break: break-all; }
.ts { white-space: nowrap; }
.controls td.verdict { white-space: nowrap; width: 12mm; } .na { color: #6c7a89; }
.controls ul { margin: 0.5mm 0 0 4mm; padding: 0; }
"""


def _when(iso: str | None) -> str:
    """A timestamp that never wraps inside itself: date and time on one line."""
    if not iso:
        return "-"
    return f'<span class="ts">{escape(iso.replace("T", " ").replace("+00:00", " UTC"))}</span>'



def _d(v: float | None) -> str:
    return "-" if v is None else format_duration(v)


def _ok(v: bool, yes: str = "pass", no: str = "FAIL") -> str:
    return f'<span class="{"good" if v else "bad"}">{yes if v else no}</span>'


def _target(plan: dict[str, Any], t: dict[str, Any], period: dict[str, str]) -> str:
    rt, rp = t["restore_tests"], t["rpo"]
    out = [f'<section class="target" id="target-{escape(plan["name"])}-{escape(t["name"])}">',
           f'<h3>{escape(t["name"])} <span class="muted">({escape(t["kind"])})</span> — '
           f'{_ok(t["covered"], "restore-tested", "NOT restore-tested")}</h3>',
           f'<p>{rt["total"]} restore test(s): {rt["passed"]} passed, {rt["failed"]} failed.</p>']
    r = t["rto"]
    out.append("<p>RTO: objective " + _d(r["objective_s"]) + f"; worst {_d(r['worst_s'])}, "
               f"median {_d(r['median_s'])}, latest {_d(r['latest_s'])}; "
               + (f'<span class="bad">{r["breaches"]} over the objective</span>'
                  if r["breaches"] else "none over the objective") + ".</p>")
    out.append(rto_chart(r, period, f"restore time of {t['name']} over the period"))
    out.append("<p>RPO: objective " + _d(rp["objective_s"]) + "; age of the newest verified "
               f"snapshot at the end of the period {_d(rp['age_at_end_s'])}, worst "
               f"{_d(rp['worst_age_s'])}.</p>")
    if rp["breaches"]:
        out.append("<table><tr><th>RPO breached from</th><th>until</th><th>for</th></tr>")
        for b in rp["breaches"]:
            out.append(f"<tr><td>{_when(b['start'])}</td><td>"
                       f"{'ongoing at the end' if b['ongoing'] else _when(b['end'])}</td>"
                       f"<td class=\"bad\">{_d(b['duration_s'])}</td></tr>")
        out.append("</table>")
    if t["tests"]:
        out.append("<table><tr><th>restore test</th><th>snapshot (age)</th><th>by</th>"
                   "<th>restore</th><th>checks</th><th>staging</th></tr>")
        for x in t["tests"]:
            checks = "<br>".join(
                f'{_ok(c["passed"])} {escape(str(c["name"]))} ({_d(c["duration_s"])}): '
                f'{escape(c["detail"] or "")}' for c in x["checks"]) or escape(x["error"] or "")
            out.append(
                f"<tr><td>{_when(x['time'])}<br>{_ok(x['passed'])}</td>"
                f"<td>{escape((x['snapshot'] or '-')[:8])} ({_d(x['snapshot_age_s'])})</td>"
                f"<td>{escape(x['user'])}@{escape(x['host'])}<br>restorer "
                f"{escape(x['version'])}<br><span class=\"muted\">plan "
                f"{escape(x['plan_digest'][:12])}</span></td>"
                f"<td>{_d(x['restore_s'])}</td><td>{checks}</td>"
                f"<td>{escape(x['teardown'])}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


_VERDICT = {"pass": '<span class="good">pass</span>', "fail": '<span class="bad">FAIL</span>',
            "n/a": '<span class="na">n/a</span>'}


def _controls(p: dict[str, Any]) -> str:
    """Every target's controls in one table, the failing ones first."""
    rows = sorted(((t["name"], c) for t in p["targets"] for c in t.get("controls", [])),
                  key=lambda x: ({"fail": 0, "n/a": 1, "pass": 2}[x[1]["verdict"]], x[0]))
    if not rows:
        return ""
    out = [f'<section class="controls" id="controls-{escape(p["name"])}"><h3>Controls</h3>',
           "<table><tr><th>target</th><th>control</th><th>verdict</th><th>evidence</th></tr>"]
    for target, c in rows:
        found = "".join(f"<li>{escape(f)}</li>" for f in c["findings"])
        more = c["findings_total"] - len(c["findings"])
        if more > 0:
            found += f"<li>… and {more} more</li>"
        runs = ", ".join(escape(r[:8]) for r in c["evidence"][:8])
        if c["evidence_total"] > 8:
            runs += f" and {c['evidence_total'] - 8} more"
        out.append(f"<tr><td>{escape(target)}</td><td>{escape(c['name'])}</td>"
                   f'<td class="verdict">{_VERDICT[c["verdict"]]}</td>'
                   f"<td>{escape(c['detail'])}" + (f"<ul>{found}</ul>" if found else "")
                   + (f'<br><span class="muted evidence">runs {runs}</span>' if runs else "")
                   + "</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def _plan(p: dict[str, Any], period: dict[str, str]) -> str:
    out = [f'<section class="plan" id="plan-{escape(p["name"])}">',
           f"<h2>Plan {escape(p['name'])}</h2>",
           f'<p class="muted">{escape(p["file"])} — plan digest {escape(p["digest"][:16])}</p>']
    c = p.get("controls")
    if c:
        out.append(f'<p class="summary">Controls: {c["passed"]} of {c["total"]} pass, '
                   f'{c["failed"]} fail, {c["not_applicable"]} not applicable.</p>')
    out.append(_controls(p))
    out += [_target(p, t, period) for t in sorted(p["targets"], key=lambda t: t["covered"])]
    out.append("<h3>Rollbacks</h3>")
    if p["rollbacks"]:
        out.append("<table><tr><th>when</th><th>command</th><th>targets (snapshot)</th>"
                   "<th>by</th><th>outcome</th><th>took</th><th>steps</th></tr>")
        for r in p["rollbacks"]:
            steps = ", ".join(f"{escape(k)} {_d(v)}" for k, v in r["steps"].items())
            targets = "<br>".join(f"{escape(x['target'])} ({escape((x['snapshot'] or '-')[:8])})"
                                  for x in r.get("targets", [])) or "-"
            outcome = _ok(r["outcome"] == "ok", "ok", escape(r["outcome"])) + (
                f"<br>{escape(r['error'])}" if r.get("error") else "")
            out.append(f"<tr><td>{_when(r['time'])}</td><td>{escape(r['command'])}</td>"
                       f"<td>{targets}</td><td>{escape(r['user'])}@{escape(r['host'])}</td>"
                       f"<td>{outcome}</td><td>{_d(r['duration_s'])}</td><td>{steps}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class=\"muted\">none in the period</p>")
    out.append("<h3>Failures and time to recover</h3>")
    if p["failures"]:
        out.append("<table><tr><th>when</th><th>command</th><th>error</th>"
                   "<th>recovered</th></tr>")
        for f in p["failures"]:
            rec = (f"{_when(f['recovered_at'])} (after {_d(f['time_to_recover_s'])})"
                   if f["recovered_at"] else '<span class="bad">not yet</span>')
            out.append(f"<tr><td>{_when(f['time'])}</td><td>{escape(f['command'])}</td>"
                       f"<td>{escape(f['error'] or f['outcome'])}</td><td>{rec}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class=\"muted\">none in the period</p>")
    out.append("</section>")
    return "\n".join(out)


# what the ledger's state lets the report claim, and no more
_EVIDENCE_STATE = {"signed": "signed and anchored",
                   "unanchored": "signed (anchors not checked)",
                   "unchecked": "signed, key not checked",
                   "unsigned": "unsigned (hash chain intact)", "broken": "LEDGER BROKEN"}


def render_html(data: dict[str, Any], params: str) -> str:
    period = data["period"]
    findings = data["findings"]
    head = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>Restore-test report {escape(period['from'][:10])} to "
        f"{escape(period['to'][:10])}</title><style>{CSS}</style>"
        f'<script type="application/json" id="restorer-report-params">{escape(params)}'
        "</script></head><body>")
    covered = sum(t["covered"] for p in data["plans"] for t in p["targets"])
    total = sum(len(p["targets"]) for p in data["plans"])
    out = [head, "<h1>Restore-test report</h1>",
           f"<p>Period {escape(period['from'])} to {escape(period['to'])}; generated "
           f"{escape(data['generated_at'])} by restorer {escape(data['tool_version'])}. "
           f"{covered} of {total} target(s) had a passing restore test in the period.</p>"]
    out.append('<section id="summary"><h2>Controls by plan</h2><table><tr><th>plan</th>'
               "<th>controls passing</th><th>failing</th></tr>")
    for p in data["plans"]:
        c = p.get("controls") or {"passed": 0, "total": 0, "failing": []}
        failing = "<br>".join(escape(f) for f in c["failing"]) or "none"
        out.append(f"<tr><td>{escape(p['name'])}</td><td>{c['passed']} of {c['total']}</td>"
                   f'<td class="{"bad" if c["failing"] else "good"}">{failing}</td></tr>')
    out.append("</table></section>")
    out.append('<section class="findings" id="findings"><h2>Findings</h2>')
    if findings:
        out.append("<ul>" + "".join(
            f"<li><b>{escape(f['plan'])} / {escape(f['target'])}</b>: {escape(f['finding'])}"
            "</li>" for f in findings) + "</ul>")
    else:
        out.append("<p>None: every target had a passing restore test in the period.</p>")
    out.append("</section>")
    out += [_plan(p, period) for p in data["plans"]]
    out.append('<section id="evidence"><h2>Evidence integrity</h2>')
    for led in data["evidence"]["ledgers"]:
        state = _ok(led["chain_intact"], _EVIDENCE_STATE[led.get("status", "unsigned")],
                    "LEDGER BROKEN")
        out.append(f"<p>Plan {escape(led['plan'])}: ledger {escape(led['ledger'])}, "
                   f"{led['rows']} rows to the period's end, {state}"
                   + (f" ({escape(led['problem'])})" if led["problem"] else
                      f" ({escape(led['summary'])})" if led.get("summary") else "")
                   + f'. Last row in the period: {led["last_seq"]}, SHA-256 <span '
                   f'class="evidence">{escape(led["last_hash"] or "-")}</span>.</p>')
    out.append(f'<p>Report data digest <span class="evidence">'
               f'{escape(data["evidence"]["data_digest"])}</span>. Check this file against '
               "the ledger with <code>restorer report --verify FILE</code>.</p></section>")
    out.append("</body></html>\n")
    return "\n".join(out)
