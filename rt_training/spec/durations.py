"""Durations in a spec: ``90s``, ``10m``, ``6h``, ``30d``, ``2w``, or a bare number of seconds.

Every time policy of a spec is a span of *event time* (see :mod:`rt_training.eventtime`), and real streams
have spans from seconds (allowed lateness) to months (a retraining period), so the spec takes them in the unit a
user thinks in. A bare number keeps meaning seconds, as before.

Examples
--------
>>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(90), parse_duration("30d")
(600.0, 5400.0, 90.0, 2592000.0)
>>> format_duration(5400.0), format_duration(2592000.0), format_duration(0.25)
('1.5h', '30d', '0.25s')
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number (seconds) or a string such as ``"90s"``, ``"10m"``, ``"6h"``, ``"30d"``.

    Raises ``ValueError`` with the accepted forms for anything else (negative, NaN, unknown unit, a bool).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write seconds (90) or a unit (90s, 10m, 6h, 30d, 2w)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; write seconds (90) or a number with one unit: "
                f"{', '.join(UNITS)} (e.g. 90s, 10m, 6h, 30d)"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration; write seconds (90) or a unit (90s, 10m, 6h, 30d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration: it must be finite and not negative")
    return seconds


def _parse_optional(value: Any) -> Any:
    return None if value is None else parse_duration(value)


def format_duration(seconds: float) -> str:
    """The shortest exact form in the largest unit that fits (``600 -> '10m'``), for messages and metadata."""
    for unit in ("w", "d", "h", "m"):
        size = UNITS[unit]
        if seconds >= size:
            amount = seconds / size
            if abs(amount - round(amount, 2)) < 1e-9:
                return f"{round(amount, 2):g}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(_parse_optional)]
"""A spec field in seconds that also accepts ``"10m"``-style strings (``None`` passes through for optional
fields; the field's own bounds, e.g. ``gt=0``, still apply to the seconds)."""
