"""Durations read from plans and shown to people."""

from __future__ import annotations

import pytest

from restorer.plan.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("7d", 604800.0), ("20ms", 0.02),
    ("2w", 1209600.0), (45, 45.0)])
def test_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.0002, "<1ms"), (0.004, "4ms"), (0.0426, "43ms"), (0.42, "0.42s"), (12.34, "12.3s"),
    (245, "4m05s"), (7800, "2h10m"), (3 * 86400 + 4 * 3600, "3d04h")])
def test_format(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_bad_duration_names_the_forms() -> None:
    with pytest.raises(ValueError, match="'5 parsecs' is not a duration"):
        parse_duration("5 parsecs")
