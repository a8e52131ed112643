"""A small inline SVG chart: restore durations over the period against the RTO objective.
No script, no external asset: it prints and reads anywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 170, 52, 12, 12, 26


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def rto_chart(rto: dict[str, Any], period: dict[str, str], label: str) -> str:
    """Both axes fit the data: time from the first to the last test (padded), restore time
    from 0 to just above the slowest; an objective far above the data is named, not drawn
    (it would flatten every point onto the axis)."""
    from restorer.plan.durations import format_duration as fd

    series = rto["series"]
    times = [datetime.fromisoformat(s["time"]).timestamp() for s in series]
    values = [s["restore_s"] for s in series]
    if times:
        lo, hi = min(times), max(times)
        pad = max((hi - lo) * 0.05, 3600.0)
        start, end = lo - pad, hi + pad
    else:
        start = datetime.fromisoformat(period["from"]).timestamp()
        end = datetime.fromisoformat(period["to"]).timestamp()
    span = end - start
    objective = rto["objective_s"]
    top = (max(values) if values else objective or 1.0) * 1.25 or 1.0
    objective_drawn = objective is not None and objective <= top * 2
    if objective_drawn:
        top = max(top, objective * 1.1)  # type: ignore[operator]

    def x(t: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * ((t - start) / span if span else 0.5)

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - v / top)

    parts = [f'<svg class="rto-chart" role="img" aria-label="{escape(label)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
             f'height="{H - PAD_T - PAD_B}" fill="#f7f9fb" stroke="#c8d0d8"/>']
    for v in (top, top / 2, 0.0):
        parts.append(f'<text class="y-tick" x="{PAD_L - 4}" y="{y(v) + 3:.1f}" '
                     f'text-anchor="end" font-size="9">{escape(fd(v) if v else "0s")}</text>')
    parts += [f'<text class="x-tick" x="{PAD_L}" y="{H - 8}" font-size="9">'
              f'{escape(_ts(start))}</text>',
              f'<text class="x-tick" x="{W - PAD_R}" y="{H - 8}" text-anchor="end" '
              f'font-size="9">{escape(_ts(end))}</text>']
    if objective is not None and objective_drawn:
        yo = y(objective)
        parts.append(f'<line class="rto-objective" x1="{PAD_L}" x2="{W - PAD_R}" y1="{yo:.1f}" '
                     f'y2="{yo:.1f}" stroke="#c0392b" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{W - PAD_R - 4}" y="{yo - 4:.1f}" text-anchor="end" '
                     f'font-size="10" fill="#c0392b">RTO {escape(fd(objective))}</text>')
    elif objective is not None:
        parts.append(f'<text class="rto-objective-note" x="{W - PAD_R - 4}" y="{PAD_T + 11}" '
                     f'text-anchor="end" font-size="10" fill="#1e8449">RTO '
                     f'{escape(fd(objective))}: far above every restore</text>')
    pts = [(x(t), y(v)) for t, v in zip(times, values, strict=True)]
    if len(pts) > 1:
        parts.append('<polyline fill="none" stroke="#2c6fbb" stroke-width="1.5" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
    for (a, b), s in zip(pts, series, strict=True):
        over = objective is not None and s["restore_s"] > objective
        parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" '
                     f'fill="{"#c0392b" if over else "#2c6fbb"}"><title>{escape(s["time"])}: '
                     f'{s["restore_s"]:.3f}s</title></circle>')
    if not pts:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="12" '
                     'fill="#7f8c8d">no restore measured in the period</text>')
    parts.append("</svg>")
    return "".join(parts)
