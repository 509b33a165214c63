"""Schema validation, a field at a time on whole columns, into typed Arrow columns.

Checks, in precedence order (a record failing several gets the first; within one reason, the first field in
spec order):

1. ``missing_field``: a required field is absent or ``null``.
2. ``wrong_type``: string fields take strings; int fields take integral numbers (``3.0`` is 3, ``2.5`` is
   not, ``true`` is not an integer); float fields take numbers; bool fields take ``true``/``false``;
   timestamp fields take epoch milliseconds (a number; fractions of a millisecond are kept to the
   microsecond) or an ISO-8601 date-time string (see :mod:`rt_training.clean.timestamps`).
3. ``not_finite``: NaN, Infinity, or a number beyond float range, in a numeric or timestamp field.
4. ``out_of_range``: below ``min`` / above ``max``; an integer beyond int64; a timestamp outside years
   0001..9999; a string longer than ``max_length`` characters.
5. ``not_allowed``: a string not in ``allowed``.

An optional field that is absent or ``null`` takes the spec's ``default`` (checked like a value), or stays null.
Output types: string→string, int→int64, float→float64, bool→bool, timestamp→timestamp[us, UTC].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.clean.reasons import CleaningSetupError, Reason, Verdicts
from rt_training.clean.timestamps import MAX_US, MIN_US, UTC_US, parse_iso8601
from rt_training.clean.values import (
    BIGINT,
    BOOL,
    FLOAT,
    INT,
    NULL,
    OTHER,
    STRING,
    RawColumn,
    json_kind_name,
    show,
)
from rt_training.lake.tables import FIELD_TYPES
from rt_training.spec.models import FieldSpec, SchemaSpec

ARROW_TYPES = FIELD_TYPES
"""Silver column type of each spec field type (one definition, in the lake's table schemas)."""

_EXPECTED = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "timestamp": "epoch milliseconds or an ISO-8601 date-time string",
}
_NUMERIC = (INT, FLOAT, BIGINT)
_INT64_BOUND = 2.0**63
_MAX_LISTED = 12


@dataclass(frozen=True)
class Check:
    """Rows of one field failing one check, and how to describe each of them."""

    reason: Reason
    mask: np.ndarray
    describe: Callable[[np.ndarray], Iterable[str]]


@dataclass(frozen=True)
class FieldResult:
    array: pa.Array
    checks: list[Check]


def validate_fields(
    columns: dict[str, list[Any]],
    schema: SchemaSpec,
    verdicts: Verdicts,
    loose: np.ndarray | None = None,
) -> dict[str, pa.Array]:
    """Check every field, record rejections in ``verdicts`` by precedence, return the typed columns.

    The returned columns have one entry per record; entries of rejected rows are meaningless (often null).
    ``loose`` is the parser's hint of the rows whose types it did not check (see
    :class:`rt_training.clean.parse.ParsedBatch`); it changes how fast, never what, validation finds.
    """
    results = {name: _check_field(name, spec, columns[name], loose) for name, spec in schema.fields.items()}
    by_reason: dict[Reason, list[Check]] = {}
    for result in results.values():
        for check in result.checks:
            by_reason.setdefault(check.reason, []).append(check)
    for reason in Reason:
        for check in by_reason.get(reason, ()):
            verdicts.reject(check.mask, reason, check.describe)
    return {name: result.array for name, result in results.items()}


def _check_field(name: str, spec: FieldSpec, values: list[Any], loose: np.ndarray | None) -> FieldResult:
    raw = RawColumn(values, exact_ints=spec.type in ("int", "timestamp"), loose=loose)
    result = _CHECKERS[spec.type](name, spec, raw)
    nulls = raw.kind == NULL
    if not nulls.any():
        return result
    checks = list(result.checks)
    if spec.required:
        checks.insert(
            0,
            Check(
                Reason.MISSING_FIELD,
                nulls,
                lambda rows: _repeat(f"required field {name!r} is missing or null", rows),
            ),
        )
        return FieldResult(result.array, checks)
    if spec.default is None:
        return result
    return FieldResult(result.array.fill_null(default_value(name, spec)), checks)


def default_value(name: str, spec: FieldSpec) -> pa.Scalar:
    """The spec's default of an optional field as a typed scalar; a spec error if it fails the field's checks."""
    result = _CHECKERS[spec.type](
        name, spec, RawColumn([spec.default], exact_ints=spec.type in ("int", "timestamp"))
    )
    for check in result.checks:
        if check.mask[0]:
            detail = next(iter(check.describe(np.array([0]))))
            raise CleaningSetupError(
                f"schema.fields.{name}.default {spec.default!r} is not a valid {spec.type} value ({detail}); fix the spec"
            )
    return result.array[0]


def _repeat(text: str, rows: np.ndarray) -> list[str]:
    return [text] * len(rows)


def _wrong_type(name: str, spec: FieldSpec, raw: RawColumn, mask: np.ndarray) -> Check:
    def describe(rows: np.ndarray) -> list[str]:
        out = []
        for row in rows.tolist():
            value = raw.values[row]
            kind = json_kind_name(value)
            if spec.type == "int" and kind == "number":
                kind = "non-integral number"
            out.append(f"field {name!r} expected {_EXPECTED[spec.type]}, got {kind} {show(value)}")
        return out

    return Check(Reason.WRONG_TYPE, mask, describe)


def _not_finite(name: str, raw: RawColumn, mask: np.ndarray) -> Check:
    return Check(
        Reason.NOT_FINITE,
        mask,
        lambda rows: [f"field {name!r} is {show(raw.values[r])}, not a finite number" for r in rows.tolist()],
    )


def _bounds(spec: FieldSpec) -> str:
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    return f"[{low}, {high}]"


def _range_checks(
    name: str, spec: FieldSpec, raw: RawColumn, number: np.ndarray, candidates: np.ndarray
) -> list[Check]:
    outside = np.zeros(len(number), dtype=bool)
    if spec.min is not None:
        outside |= candidates & (number < spec.min)
    if spec.max is not None:
        outside |= candidates & (number > spec.max)
    if not outside.any():
        return []
    bounds = _bounds(spec)
    return [
        Check(
            Reason.OUT_OF_RANGE,
            outside,
            lambda rows: [
                f"field {name!r} value {show(raw.values[r])} is outside {bounds}" for r in rows.tolist()
            ],
        )
    ]


def _check_string(name: str, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    strings = raw.strings()
    checks = [_wrong_type(name, spec, raw, ~raw.mask(NULL, STRING))]
    if spec.max_length is not None:
        lengths = pc.utf8_length(strings).fill_null(0).to_numpy(zero_copy_only=False)
        limit = spec.max_length
        checks.append(
            Check(
                Reason.OUT_OF_RANGE,
                lengths > limit,
                lambda rows: [
                    f"field {name!r} has {lengths[r]} characters, more than max_length {limit}"
                    for r in rows.tolist()
                ],
            )
        )
    if spec.allowed is not None:
        allowed = spec.allowed
        listed = ", ".join(show(a) for a in allowed[:_MAX_LISTED]) + (
            ", ..." if len(allowed) > _MAX_LISTED else ""
        )
        unknown = ~pc.is_in(strings, value_set=pa.array(allowed, pa.string())).to_numpy(zero_copy_only=False)
        checks.append(
            Check(
                Reason.NOT_ALLOWED,
                unknown & (raw.kind == STRING),
                lambda rows: [
                    f"field {name!r} value {show(raw.values[r])} is not one of [{listed}]"
                    for r in rows.tolist()
                ],
            )
        )
    return FieldResult(strings, checks)


def _check_int(name: str, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    number = raw.number()
    integer = raw.integer().copy()
    finite = np.isfinite(number)
    floats = raw.kind == FLOAT
    integral = floats & finite & (number == np.floor(number))
    fits = integral & (np.abs(number) < _INT64_BOUND)
    integer[fits] = number[fits].astype(np.int64)
    too_big = (raw.kind == BIGINT) | (integral & ~fits)
    checks = [
        _wrong_type(name, spec, raw, raw.mask(BOOL, STRING, OTHER) | (floats & finite & ~integral)),
        _not_finite(name, raw, floats & ~finite),
        Check(
            Reason.OUT_OF_RANGE,
            too_big,
            lambda rows: [
                f"field {name!r} value {show(raw.values[r])} is outside the int64 range"
                for r in rows.tolist()
            ],
        ),
        *_range_checks(name, spec, raw, number, raw.mask(INT) | fits),
    ]
    valid = raw.mask(INT) | fits
    return FieldResult(pa.array(integer, type=pa.int64(), mask=~valid), checks)


def _check_float(name: str, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    number = raw.number()
    numeric = raw.mask(*_NUMERIC)
    finite = numeric & np.isfinite(number)
    checks = [
        _wrong_type(name, spec, raw, raw.mask(BOOL, STRING, OTHER)),
        _not_finite(name, raw, numeric & ~finite),
        *_range_checks(name, spec, raw, number, finite),
    ]
    return FieldResult(pa.array(number, type=pa.float64(), mask=~numeric), checks)


def _check_bool(name: str, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    is_bool = raw.kind == BOOL
    checks = [_wrong_type(name, spec, raw, ~raw.mask(NULL, BOOL))]
    return FieldResult(pa.array(raw.boolean(), type=pa.bool_(), mask=~is_bool), checks)


def _check_timestamp(name: str, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    number = raw.number()
    numeric = raw.mask(INT, FLOAT)
    finite = numeric & np.isfinite(number)
    micros = np.zeros(len(number), dtype=np.int64)
    # Range first in milliseconds, so nothing overflows when scaling to microseconds.
    in_range = finite & (number >= MIN_US / 1000) & (number <= MAX_US / 1000)
    ints = in_range & (raw.kind == INT)
    micros[ints] = raw.integer()[ints] * 1000
    floats = in_range & (raw.kind != INT)
    micros[floats] = np.round(number[floats] * 1000).astype(np.int64)
    strings = raw.kind == STRING
    parsed_us, parsed = (
        parse_iso8601(raw.strings()) if strings.any() else (micros, np.zeros(len(number), bool))
    )
    micros[parsed] = parsed_us[parsed]
    strings_in_range = parsed & (parsed_us >= MIN_US) & (parsed_us <= MAX_US)
    out_of_range = (finite & ~in_range) | (raw.kind == BIGINT) | (parsed & ~strings_in_range)
    checks = [
        _wrong_type(name, spec, raw, raw.mask(BOOL, OTHER) | (strings & ~parsed)),
        _not_finite(name, raw, numeric & ~finite),
        Check(
            Reason.OUT_OF_RANGE,
            out_of_range,
            lambda rows: [
                f"field {name!r} value {show(raw.values[r])} is outside years 0001..9999"
                for r in rows.tolist()
            ],
        ),
    ]
    valid = in_range | strings_in_range
    return FieldResult(pa.array(micros, type=pa.int64(), mask=~valid).view(UTC_US), checks)


_CHECKERS: dict[str, Callable[[str, FieldSpec, RawColumn], FieldResult]] = {
    "string": _check_string,
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "timestamp": _check_timestamp,
}
