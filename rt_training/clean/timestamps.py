"""Event times from JSON: epoch milliseconds (numbers) or ISO-8601 date-time strings, to microseconds UTC.

Accepted strings: ``YYYY-MM-DD`` then ``T`` or a space (either case), ``HH:MM[:SS[.fraction]]``, then an
optional zone ``Z``, ``+HH``, ``+HHMM`` or ``+HH:MM``. A string without a zone is taken as UTC. Fractions
beyond microseconds are truncated. Accepted instants lie in years 0001..9999 (what Parquet readers and Python's
``datetime`` represent). Arrow's ISO-8601 cast does the parsing in C++; a regex first picks the strings shaped
like a date-time, so one bad string does not fail the cast of the whole column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UTC_US = pa.timestamp("us", tz="UTC")
MIN_US = -62_135_596_800_000_000
"""0001-01-01T00:00:00Z in microseconds since the epoch."""
MAX_US = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z in microseconds since the epoch."""

_SHAPE = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?"
    r"(Z|[+-]\d{2}(:?\d{2})?)?$"
)
_ZONE = r"(Z|[+-]\d{2}(:?\d{2})?)$"


def parse_iso8601(strings: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since the epoch (int64) and a mask of the strings that parsed; nulls do not parse."""
    upper = pc.utf8_upper(strings)
    shaped = pc.match_substring_regex(upper, _SHAPE).fill_null(False)
    text = pc.replace_substring_regex(upper, r"(\.\d{6})\d+", r"\1")
    zoned = pc.match_substring_regex(text, _ZONE).fill_null(False)
    out = np.zeros(len(strings), dtype=np.int64)
    ok = np.zeros(len(strings), dtype=bool)
    for with_zone, target in ((True, UTC_US), (False, pa.timestamp("us"))):
        pick = pc.and_(shaped, zoned if with_zone else pc.invert(zoned))
        if not pc.any(pick).as_py():
            continue
        micros, parsed = _cast(pc.if_else(pick, text, pa.scalar(None, pa.string())), target)
        out[parsed] = micros[parsed]
        ok |= parsed
    return out, ok


def _cast(text: pa.StringArray, target: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Cast the non-null strings; if the batch cast fails (a calendar-impossible date such as Feb 30 passes
    the shape regex), cast them one by one to find which."""
    try:
        cast = pc.cast(text, target)
    except pa.ArrowInvalid:
        values: list[int | None] = []
        for s in text.to_pylist():
            try:
                values.append(None if s is None else pa.array([s]).cast(target).cast(pa.int64())[0].as_py())
            except pa.ArrowInvalid:
                values.append(None)
        cast = pa.array(values, type=pa.int64())
    micros = cast.cast(pa.int64())
    return micros.fill_null(0).to_numpy(zero_copy_only=False), micros.is_valid().to_numpy(
        zero_copy_only=False
    )
