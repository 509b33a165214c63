"""Schema validation, a field at a time on whole columns, into typed Arrow columns.

Checks, in precedence order (a record failing several gets the first; within one reason, the first field in
spec order):

1. ``missing_field``: a required field is absent or ``null``.
2. ``wrong_type``: string and text fields take strings; int fields take integral numbers (``3.0`` is 3, ``2.5``
   is not, ``true`` is not an integer); float fields take numbers; bool fields take ``true``/``false``;
   timestamp fields take epoch milliseconds (a number; fractions of a millisecond are kept to the
   microsecond) or an ISO-8601 date-time string (see :mod:`rt_training.clean.timestamps`). List fields take a
   JSON array whose every element has the type ``items`` by the same rules (an int list takes ``3.0`` as 3; a
   ``null`` element is of no type); vector fields take an array of numbers. The detail of an element names its
   index: ``field 'tags' element 2 expected a string, got number 5``.
3. ``wrong_dimension``: a vector whose array does not have exactly ``dim`` elements.
4. ``not_finite``: NaN, Infinity, or a number beyond float range, in a numeric or timestamp field or an element
   of a numeric list or vector.
5. ``out_of_range``: below ``min`` / above ``max`` (for lists and vectors, any element); an integer beyond int64;
   a timestamp outside years 0001..9999; a string or text longer than ``max_length`` characters; a list with
   more than ``max_length`` elements; a vector element beyond float32's range.
6. ``not_allowed``: a string not in ``allowed``.

An optional field that is absent or ``null`` takes the spec's ``default`` (checked like a value), or stays null.
Output types (:func:`rt_training.lake.tables.field_type`): string and text→string, int→int64, float→float64,
bool→bool, timestamp→timestamp[us, UTC], list→list<string | int64 | float64>, vector→list<float32>.

Lists and vectors are checked like the other fields, on whole columns: the arrays of a batch are flattened into
one column of elements (:class:`rt_training.clean.values.ListColumn`), the scalar checks run on it, and each
failing element marks its row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    ListColumn,
    RawColumn,
    json_kind_name,
    show,
)
from rt_training.lake.tables import FIELD_TYPES, field_type
from rt_training.spec.durations import format_duration
from rt_training.spec.models import FieldSpec, SchemaSpec, TimePolicy

ARROW_TYPES = FIELD_TYPES
"""Silver column type of each spec field type but ``list`` (one definition, in the lake's table schemas; a list's
type depends on its items: :func:`rt_training.lake.tables.field_type`)."""

_EXPECTED = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "timestamp": "epoch milliseconds or an ISO-8601 date-time string",
    "text": "a string",
}
_EXPECTED_ITEMS = {"string": "strings", "int": "integers", "float": "numbers"}
_NUMERIC = (INT, FLOAT, BIGINT)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_BOUND = 2.0**63
_MAX_LISTED = 12


@dataclass(frozen=True)
class _Subject:
    """Who a detail is about: a field, or (with ``position``, per element row) an element of a list field."""

    name: str
    position: np.ndarray | None = None

    def __call__(self, row: int) -> str:
        if self.position is None:
            return f"field {self.name!r}"
        return f"field {self.name!r} element {self.position[row]}"


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


@dataclass(frozen=True)
class CheckedFields:
    """Every field of a batch checked (see :func:`check_fields`), before the failures are recorded as verdicts."""

    results: dict[str, FieldResult]
    present: np.ndarray
    """Per record, how many schema fields it gives a value (neither absent nor ``null``; a default fills none)."""

    def apply(self, verdicts: Verdicts) -> dict[str, pa.Array]:
        """Record the failures in ``verdicts`` by precedence, return the typed columns."""
        by_reason: dict[Reason, list[Check]] = {}
        for result in self.results.values():
            for check in result.checks:
                by_reason.setdefault(check.reason, []).append(check)
        for reason in Reason:
            for check in by_reason.get(reason, ()):
                verdicts.reject(check.mask, reason, check.describe)
        return {name: result.array for name, result in self.results.items()}


def check_fields(
    columns: dict[str, list[Any]], schema: SchemaSpec, loose: np.ndarray | None = None
) -> CheckedFields:
    """Check every field; ``loose`` as for :func:`validate_fields`."""
    results = {}
    present = np.zeros(len(columns[next(iter(schema.fields))]), dtype=np.int32)
    for name, spec in schema.fields.items():
        results[name], nulls = _check_field(name, spec, columns[name], loose)
        present += ~nulls
    return CheckedFields(results, present)


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
    return check_fields(columns, schema, loose).apply(verdicts)


def _check_field(
    name: str, spec: FieldSpec, values: list[Any], loose: np.ndarray | None
) -> tuple[FieldResult, np.ndarray]:
    """A field's typed column and failed checks, and the mask of its records that give no value."""
    result, nulls = _check_values(name, spec, values, loose)
    if not nulls.any():
        return result, nulls
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
        return FieldResult(result.array, checks), nulls
    if spec.default is None:
        return result, nulls
    return FieldResult(result.array.fill_null(default_value(name, spec)), checks), nulls


def _check_values(
    name: str, spec: FieldSpec, values: list[Any], loose: np.ndarray | None
) -> tuple[FieldResult, np.ndarray]:
    """The typed column and failed checks of one field's values, and the mask of its nulls."""
    if spec.type in ("list", "vector"):
        column = ListColumn(values, exact_ints=spec.items == "int")
        return _check_list(name, spec, column), column.is_null
    raw = RawColumn(values, exact_ints=spec.type in ("int", "timestamp"), loose=loose)
    return _CHECKERS[spec.type](_Subject(name), spec, raw), raw.kind == NULL


def default_value(name: str, spec: FieldSpec) -> pa.Scalar:
    """The spec's default of an optional field as a typed scalar; a spec error if it fails the field's checks."""
    result, _ = _check_values(name, spec, [spec.default], None)
    for check in result.checks:
        if check.mask[0]:
            detail = next(iter(check.describe(np.array([0]))))
            raise CleaningSetupError(
                f"schema.fields.{name}.default {spec.default!r} is not a valid {spec.type} value ({detail}); fix the spec"
            )
    return result.array[0]


def _repeat(text: str, rows: np.ndarray) -> list[str]:
    return [text] * len(rows)


def _wrong_type(at: _Subject, spec: FieldSpec, raw: RawColumn, mask: np.ndarray) -> Check:
    def describe(rows: np.ndarray) -> list[str]:
        out = []
        for row in rows.tolist():
            value = raw.values[row]
            kind = json_kind_name(value)
            if spec.type == "int" and kind == "number":
                kind = "non-integral number"
            got = "null" if value is None else f"{kind} {show(value)}"
            out.append(f"{at(row)} expected {_EXPECTED[spec.type]}, got {got}")
        return out

    return Check(Reason.WRONG_TYPE, mask, describe)


def _not_finite(at: _Subject, raw: RawColumn, mask: np.ndarray) -> Check:
    return Check(
        Reason.NOT_FINITE,
        mask,
        lambda rows: [f"{at(r)} is {show(raw.values[r])}, not a finite number" for r in rows.tolist()],
    )


def _bounds(spec: FieldSpec) -> str:
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    return f"[{low}, {high}]"


def _range_checks(
    at: _Subject, spec: FieldSpec, raw: RawColumn, number: np.ndarray, candidates: np.ndarray
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
            lambda rows: [f"{at(r)} value {show(raw.values[r])} is outside {bounds}" for r in rows.tolist()],
        )
    ]


def _longer_than(lengths: np.ndarray, limit: int, subject: Callable[[int], str], unit: str) -> Check:
    """``out_of_range`` for the rows whose length (in ``unit``, characters or elements) exceeds ``max_length``."""
    return Check(
        Reason.OUT_OF_RANGE,
        lengths > limit,
        lambda rows: [
            f"{subject(r)} has {lengths[r]} {unit}, more than max_length {limit}" for r in rows.tolist()
        ],
    )


def _check_string(at: _Subject, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    strings = raw.strings()
    checks = [_wrong_type(at, spec, raw, ~raw.mask(NULL, STRING))]
    if spec.max_length is not None:
        lengths = pc.utf8_length(strings).fill_null(0).to_numpy(zero_copy_only=False)
        checks.append(_longer_than(lengths, spec.max_length, at, "characters"))
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
                    f"{at(r)} value {show(raw.values[r])} is not one of [{listed}]" for r in rows.tolist()
                ],
            )
        )
    return FieldResult(strings, checks)


def _check_int(at: _Subject, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    number = raw.number()
    integer = raw.integer().copy()
    finite = np.isfinite(number)
    floats = raw.kind == FLOAT
    integral = floats & finite & (number == np.floor(number))
    fits = integral & (np.abs(number) < _INT64_BOUND)
    integer[fits] = number[fits].astype(np.int64)
    too_big = (raw.kind == BIGINT) | (integral & ~fits)
    checks = [
        _wrong_type(at, spec, raw, raw.mask(BOOL, STRING, OTHER) | (floats & finite & ~integral)),
        _not_finite(at, raw, floats & ~finite),
        Check(
            Reason.OUT_OF_RANGE,
            too_big,
            lambda rows: [
                f"{at(r)} value {show(raw.values[r])} is outside the int64 range" for r in rows.tolist()
            ],
        ),
        *_range_checks(at, spec, raw, number, raw.mask(INT) | fits),
    ]
    valid = raw.mask(INT) | fits
    return FieldResult(pa.array(integer, type=pa.int64(), mask=~valid), checks)


def _check_float(at: _Subject, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    number = raw.number()
    numeric = raw.mask(*_NUMERIC)
    finite = numeric & np.isfinite(number)
    checks = [
        _wrong_type(at, spec, raw, raw.mask(BOOL, STRING, OTHER)),
        _not_finite(at, raw, numeric & ~finite),
        *_range_checks(at, spec, raw, number, finite),
    ]
    return FieldResult(pa.array(number, type=pa.float64(), mask=~numeric), checks)


def _check_bool(at: _Subject, spec: FieldSpec, raw: RawColumn) -> FieldResult:
    is_bool = raw.kind == BOOL
    checks = [_wrong_type(at, spec, raw, ~raw.mask(NULL, BOOL))]
    return FieldResult(pa.array(raw.boolean(), type=pa.bool_(), mask=~is_bool), checks)


def _check_timestamp(at: _Subject, spec: FieldSpec, raw: RawColumn) -> FieldResult:
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
        _wrong_type(at, spec, raw, raw.mask(BOOL, OTHER) | (strings & ~parsed)),
        _not_finite(at, raw, numeric & ~finite),
        Check(
            Reason.OUT_OF_RANGE,
            out_of_range,
            lambda rows: [
                f"{at(r)} value {show(raw.values[r])} is outside years 0001..9999" for r in rows.tolist()
            ],
        ),
    ]
    valid = in_range | strings_in_range
    return FieldResult(pa.array(micros, type=pa.int64(), mask=~valid).view(UTC_US), checks)


def _check_list(name: str, spec: FieldSpec, column: ListColumn) -> FieldResult:
    """A list or vector field: each value a JSON array; its elements checked as one column of the item type
    (``float`` for vectors) with the field's ``min``/``max``, each failure reported on the array's row, naming
    the first failing element of that row."""
    vector = spec.type == "vector"
    item = FieldSpec(type="float" if vector else spec.items or "string", min=spec.min, max=spec.max)
    elements = column.elements
    element_at = _Subject(name, column.position)
    element_result = _CHECKERS[item.type](element_at, item, elements)
    element_checks = [*element_result.checks, _wrong_type(element_at, item, elements, elements.kind == NULL)]
    values = element_result.array
    if vector:
        number = elements.number()
        too_big = np.isfinite(number) & (np.abs(number) > _FLOAT32_MAX)
        element_checks.append(
            Check(
                Reason.OUT_OF_RANGE,
                too_big,
                lambda rows: [
                    f"{element_at(r)} value {show(elements.values[r])} is beyond float32's largest magnitude "
                    f"{_FLOAT32_MAX:g}"
                    for r in rows.tolist()
                ],
            )
        )
        values = pc.cast(values, pa.float32(), safe=False)
    shape = f"{spec.dim} numbers" if vector else _EXPECTED_ITEMS[item.type]
    checks = [
        Check(
            Reason.WRONG_TYPE,
            ~(column.is_null | column.is_array),
            lambda rows: [
                f"field {name!r} expected an array of {shape}, got {json_kind_name(column.values[r])} "
                f"{show(column.values[r])}"
                for r in rows.tolist()
            ],
        )
    ]
    lengths = column.lengths
    if vector:
        dim = spec.dim
        checks.append(
            Check(
                Reason.WRONG_DIMENSION,
                column.is_array & (lengths != dim),
                lambda rows: [
                    f"field {name!r} has {lengths[r]} elements, expected dim {dim}" for r in rows.tolist()
                ],
            )
        )
    if spec.max_length is not None:
        checks.append(_longer_than(lengths, spec.max_length, lambda _: f"field {name!r}", "elements"))
    checks += _per_row(element_checks, column)
    offsets = pa.array(column.offsets, type=pa.int32())
    array = pa.ListArray.from_arrays(offsets, values, type=field_type(spec), mask=pa.array(~column.is_array))
    return FieldResult(array, checks)


def _per_row(element_checks: list[Check], column: ListColumn) -> list[Check]:
    """Element checks as checks of the rows holding the elements, one per reason: a row fails when any of its
    elements does, and its detail is that of its first failing element."""
    by_reason: dict[Reason, list[Check]] = {}
    for check in element_checks:
        if check.mask.any():
            by_reason.setdefault(check.reason, []).append(check)
    out = []
    for reason, checks in by_reason.items():
        failing = np.flatnonzero(np.logical_or.reduce([c.mask for c in checks]))
        rows, first = np.unique(column.row_of[failing], return_index=True)
        first_element = np.full(len(column.values), -1, dtype=np.int64)
        first_element[rows] = failing[first]
        mask = first_element >= 0

        def describe(
            rows: np.ndarray, checks: list[Check] = checks, first_element: np.ndarray = first_element
        ) -> list[str]:
            out = []
            for element in first_element[rows].tolist():
                check = next(c for c in checks if c.mask[element])
                out.extend(check.describe(np.array([element])))
            return out

        out.append(Check(reason, mask, describe))
    return out


_CHECKERS: dict[str, Callable[[_Subject, FieldSpec, RawColumn], FieldResult]] = {
    "string": _check_string,
    "text": _check_string,
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "timestamp": _check_timestamp,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SKEW_US = MAX_US - MIN_US
"""A larger skew rejects nothing (no event time is further ahead of any instant); clipping keeps sums in int64."""


def check_plausibility(
    columns: dict[str, pa.Array],
    kafka_time: pa.Array | pa.ChunkedArray,
    schema: SchemaSpec,
    time: TimePolicy,
    verdicts: Verdicts,
) -> None:
    """Reject, among the records still good, ``empty_id``, ``before_min_event_time`` and ``future_event_time``.

    ``columns`` are the typed columns of :func:`validate_fields`; ``kafka_time`` is bronze's ``timestamp`` column.
    An id is empty when it is a string with no character but white space (what Python's ``str.isspace`` counts,
    so also a no-break space; not a zero-width space, which is no white space). The time bounds are
    ``time.min_event_time`` and ``time.max_future_skew`` (see :class:`rt_training.spec.models.TimePolicy`): both
    depend only on the record, so a retry judges it the same.
    """
    id_name = schema.id_field
    if schema.fields[id_name].type in ("string", "text"):
        ids = columns[id_name]
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0).fill_null(False)
        verdicts.reject(
            blank.to_numpy(zero_copy_only=False),
            Reason.EMPTY_ID,
            lambda rows: [_empty_id_detail(id_name, ids[int(r)].as_py()) for r in rows],
        )
    times = columns[schema.time_field]
    valid = times.is_valid().to_numpy(zero_copy_only=False)
    event_us = pc.cast(times, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    at = f"field {schema.time_field!r}"
    if time.min_event_time is not None:
        bound = time.min_event_time
        bound_us = (bound - _EPOCH) // timedelta(microseconds=1)
        verdicts.reject(
            valid & (event_us < bound_us),
            Reason.BEFORE_MIN_EVENT_TIME,
            lambda rows: [
                f"{at} value {_iso(event_us[r])} is before time.min_event_time {bound.isoformat()}; if events "
                "this old are real, set time.min_event_time earlier (or null)"
                for r in rows
            ],
        )
    if time.max_future_skew is not None:
        skew_s = time.max_future_skew
        kafka_ms = pc.cast(kafka_time, pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        judged = valid & (kafka_ms >= 0)
        kafka_us = np.minimum(kafka_ms, MAX_US // 1000) * 1000
        skew_us = min(round(skew_s * 1e6), _MAX_SKEW_US)
        verdicts.reject(
            judged & (event_us - kafka_us > skew_us),
            Reason.FUTURE_EVENT_TIME,
            lambda rows: [
                f"{at} value {_iso(event_us[r])} is {(event_us[r] - kafka_us[r]) / 1e6:.3f}s ahead of the "
                f"record's Kafka timestamp {_iso(kafka_us[r])}, more than time.max_future_skew "
                f"{format_duration(skew_s)}; fix the producer's clock or time zone, or raise time.max_future_skew"
                for r in rows
            ],
        )


def _empty_id_detail(name: str, value: str) -> str:
    if value == "":
        return f"id field {name!r} is an empty string; every record needs an id to be told apart"
    return f"id field {name!r} is only white space ({show(value)}); every record needs an id to be told apart"


def _iso(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=int(micros))).isoformat()
