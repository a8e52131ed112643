"""The RTO chart fits its axes to the data: five quick restores over 90 days, far under a
30-minute objective, are five points an auditor can tell apart, on an axis in their range."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from restorer.plan.durations import parse_duration
from restorer.report.charts import rto_chart

START = datetime(2026, 6, 1, tzinfo=UTC)


def _chart(values: list[float], days: list[int], objective: float | None) -> str:
    series = [{"time": (START + timedelta(days=d, hours=4)).isoformat(), "restore_s": v}
              for d, v in zip(days, values, strict=True)]
    period = {"from": START.isoformat(), "to": (START + timedelta(days=90)).isoformat()}
    return rto_chart({"series": series, "objective_s": objective}, period, "restore time")


def _points(svg: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"',
                                                        svg)]


def test_five_quick_restores_are_distinguishable_under_a_far_objective() -> None:
    svg = _chart([0.30, 0.31, 0.29, 0.33, 0.30], [3, 20, 41, 60, 88], 1800.0)
    pts = _points(svg)
    assert len(pts) == 5
    assert all(abs(a[0] - b[0]) > 8 or abs(a[1] - b[1]) > 8
               for i, a in enumerate(pts) for b in pts[i + 1:])
    ys = [b for _a, b in pts]
    assert max(ys) - min(ys) > 5  # the values differ visibly, not flattened onto the axis
    ticks = re.findall(r'class="y-tick"[^>]*>([^<]*)<', svg)
    assert 0.33 < parse_duration(ticks[0]) < 1.0, ticks  # the axis is in the data's range
    assert "far above every restore" in svg and "rto-objective\"" not in svg


def test_objective_near_the_data_is_drawn() -> None:
    svg = _chart([0.30, 0.35], [1, 2], 0.4)
    assert 'class="rto-objective"' in svg
    assert len(_points(svg)) == 2


def test_tests_on_one_day_spread_over_the_width() -> None:
    svg = _chart([1.0, 1.2, 0.9], [10, 10, 10], None)
    xs = sorted(a for a, _b in _points(svg))
    assert xs[0] == xs[1] == xs[2]  # same instant of the same day: same x
    svg = _chart([1.0, 1.2], [10, 11], None)
    xs = sorted(a for a, _b in _points(svg))
    assert xs[1] - xs[0] > 300  # a day apart on an axis fitted to them: far apart
