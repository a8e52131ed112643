"""A small inline SVG chart: restore durations over the period against the RTO objective.
No script, no external asset: it prints and reads anywhere."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 170, 52, 12, 12, 26


def _x(t: datetime, start: float, span: float) -> float:
    return PAD_L + (W - PAD_L - PAD_R) * ((t.timestamp() - start) / span if span else 0.5)


def rto_chart(rto: dict[str, Any], period: dict[str, str], label: str) -> str:
    start = datetime.fromisoformat(period["from"]).timestamp()
    span = datetime.fromisoformat(period["to"]).timestamp() - start
    values = [s["restore_s"] for s in rto["series"]]
    top = max(values + ([rto["objective_s"]] if rto["objective_s"] else []) or [1.0]) * 1.15
    top = top or 1.0

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - v / top)

    parts = [f'<svg class="rto-chart" role="img" aria-label="{escape(label)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
             f'height="{H - PAD_T - PAD_B}" fill="#f7f9fb" stroke="#c8d0d8"/>',
             f'<text x="{PAD_L - 4}" y="{PAD_T + 10}" text-anchor="end" font-size="10">'
             f'{top:.3g}s</text>',
             f'<text x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end" font-size="10">0s</text>',
             f'<text x="{PAD_L}" y="{H - 8}" font-size="10">{escape(period["from"][:10])}'
             '</text>',
             f'<text x="{W - PAD_R}" y="{H - 8}" text-anchor="end" font-size="10">'
             f'{escape(period["to"][:10])}</text>']
    if rto["objective_s"]:
        yo = y(rto["objective_s"])
        parts.append(f'<line class="rto-objective" x1="{PAD_L}" x2="{W - PAD_R}" y1="{yo:.1f}" '
                     f'y2="{yo:.1f}" stroke="#c0392b" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{W - PAD_R - 4}" y="{yo - 4:.1f}" text-anchor="end" '
                     f'font-size="10" fill="#c0392b">RTO {rto["objective_s"]:g}s</text>')
    pts = [(_x(datetime.fromisoformat(s["time"]), start, span), y(s["restore_s"]))
           for s in rto["series"]]
    if len(pts) > 1:
        parts.append('<polyline fill="none" stroke="#2c6fbb" stroke-width="1.5" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
    for (a, b), s in zip(pts, rto["series"], strict=True):
        over = rto["objective_s"] is not None and s["restore_s"] > rto["objective_s"]
        parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" '
                     f'fill="{"#c0392b" if over else "#2c6fbb"}"><title>{escape(s["time"])}: '
                     f'{s["restore_s"]:.3f}s</title></circle>')
    if not pts:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="12" '
                     'fill="#7f8c8d">no restore measured in the period</text>')
    parts.append("</svg>")
    return "".join(parts)
