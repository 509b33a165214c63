"""Schema validation: each reason with its exact detail, the precedence between reasons, type coercions, defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from clean_support import DROP, SENSOR_SPEC, bronze, event, reading

from rt_training.clean import PRECEDENCE, clean_batch
from rt_training.spec import load_spec, parse_spec
from rt_training.spec.models import TimePolicy

DEMO = load_spec()
DEMO_ANY_TIME = DEMO.model_copy(update={"time": TimePolicy(min_event_time=None, max_future_skew=None)})
SENSORS = parse_spec(SENSOR_SPEC)


def dead(values: list[bytes], spec: Any = DEMO) -> list[tuple[str, str]]:
    result = clean_batch(bronze(values), spec)
    assert result.silver_rows + result.dead_letter_rows == len(values)
    return [(r["reason"], r["detail"]) for r in result.dead_letters.select(["reason", "detail"]).to_pylist()]


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"price": DROP}, "missing_field", "required field 'price' is missing or null"),
        ({"price": None}, "missing_field", "required field 'price' is missing or null"),
        ({"event_id": DROP}, "missing_field", "required field 'event_id' is missing or null"),
        ({"event_time": None}, "missing_field", "required field 'event_time' is missing or null"),
        ({"price": "10"}, "wrong_type", "field 'price' expected a number, got string \"10\""),
        ({"price": True}, "wrong_type", "field 'price' expected a number, got boolean true"),
        ({"price": [1.0]}, "wrong_type", "field 'price' expected a number, got array [1.0]"),
        (
            {"position": 2.5},
            "wrong_type",
            "field 'position' expected an integer, got non-integral number 2.5",
        ),
        ({"position": True}, "wrong_type", "field 'position' expected an integer, got boolean true"),
        ({"position": "2"}, "wrong_type", "field 'position' expected an integer, got string \"2\""),
        ({"user_id": 5}, "wrong_type", "field 'user_id' expected a string, got number 5"),
        ({"user_id": {"id": 5}}, "wrong_type", "field 'user_id' expected a string, got object {\"id\": 5}"),
        (
            {"event_time": "yesterday"},
            "wrong_type",
            "field 'event_time' expected epoch milliseconds or an ISO-8601 date-time string, got string \"yesterday\"",
        ),
        (
            {"event_time": "2024-02-30T00:00:00Z"},
            "wrong_type",
            "field 'event_time' expected epoch milliseconds or an ISO-8601 date-time string, got string \"2024-02-30T00:00:00Z\"",
        ),
        (
            {"event_time": False},
            "wrong_type",
            "field 'event_time' expected epoch milliseconds or an ISO-8601 date-time string, got boolean false",
        ),
        ({"price": float("nan")}, "not_finite", "field 'price' is NaN, not a finite number"),
        ({"position": float("inf")}, "not_finite", "field 'position' is Infinity, not a finite number"),
        ({"event_time": float("-inf")}, "not_finite", "field 'event_time' is -Infinity, not a finite number"),
        ({"price": -0.5}, "out_of_range", "field 'price' value -0.5 is outside [0, 10000]"),
        ({"price": 10000.01}, "out_of_range", "field 'price' value 10000.01 is outside [0, 10000]"),
        ({"position": 101}, "out_of_range", "field 'position' value 101 is outside [0, 100]"),
        (
            {"position": 10**30},
            "out_of_range",
            "field 'position' value 1000000000000000000000000000000 is outside the int64 range",
        ),
        ({"position": 1e30}, "out_of_range", "field 'position' value 1e+30 is outside the int64 range"),
        ({"discount": 1.5}, "out_of_range", "field 'discount' value 1.5 is outside [0, 1]"),
        ({"event_time": 1e20}, "out_of_range", "field 'event_time' value 1e+20 is outside years 0001..9999"),
        (
            {"event_time": -62_135_596_800_001},
            "out_of_range",
            "field 'event_time' value -62135596800001 is outside years 0001..9999",
        ),
    ],
)
def test_demo_field_defect(changes: dict[str, Any], reason: str, detail: str) -> None:
    assert dead([event(**changes)]) == [(reason, detail)]


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        (
            {"site": "west"},
            "not_allowed",
            'field \'site\' value "west" is not one of ["north", "south", "east"]',
        ),
        ({"site": "northwest"}, "out_of_range", "field 'site' has 9 characters, more than max_length 5"),
        ({"serial": "é" * 13}, "out_of_range", "field 'serial' has 13 characters, more than max_length 12"),
        (
            {"is_weekend": 1},
            "wrong_type",
            "field 'is_weekend' expected a boolean (true or false), got number 1",
        ),
        (
            {"is_weekend": "true"},
            "wrong_type",
            "field 'is_weekend' expected a boolean (true or false), got string \"true\"",
        ),
        ({"reading_id": "7"}, "wrong_type", "field 'reading_id' expected an integer, got string \"7\""),
        ({"temperature": -60}, "out_of_range", "field 'temperature' value -60 is outside [-50, 60]"),
        ({"load": -1.0}, "out_of_range", "field 'load' value -1.0 must be > -1, the domain of log1p"),
    ],
)
def test_second_spec_field_defect(changes: dict[str, Any], reason: str, detail: str) -> None:
    assert dead([reading(**changes)], SENSORS) == [(reason, detail)]


def test_precedence_order_is_documented_order() -> None:
    assert [r.value for r in PRECEDENCE] == [
        "oversized",
        "not_utf8",
        "malformed_json",
        "not_an_object",
        "unparseable",
        "duplicate_key",
        "missing_field",
        "wrong_type",
        "wrong_dimension",
        "not_finite",
        "out_of_range",
        "not_allowed",
        "empty_id",
        "before_min_event_time",
        "future_event_time",
        "too_late",
        "duplicate_id",
    ]


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        # missing beats wrong type even when the wrong type is on an earlier field
        ({"price": "x", "country": DROP}, "missing_field", "required field 'country' is missing or null"),
        (
            {"price": float("nan"), "position": "2"},
            "wrong_type",
            "field 'position' expected an integer, got string \"2\"",
        ),
        (
            {"price": -1.0, "dwell_time_s": float("inf")},
            "not_finite",
            "field 'dwell_time_s' is Infinity, not a finite number",
        ),
        # same reason on two fields: the first in spec order
        ({"clicked": "1", "user_id": 3}, "wrong_type", "field 'user_id' expected a string, got number 3"),
        (
            {"position": 500, "price": 20000.0},
            "out_of_range",
            "field 'price' value 20000.0 is outside [0, 10000]",
        ),
    ],
)
def test_precedence_between_reasons(changes: dict[str, Any], reason: str, detail: str) -> None:
    assert dead([event(**changes)]) == [(reason, detail)]


def test_out_of_range_beats_not_allowed() -> None:
    assert dead([reading(site="toolong", temperature=99.0)], SENSORS) == [
        ("out_of_range", "field 'site' has 7 characters, more than max_length 5")
    ]
    assert dead([reading(site="west", temperature=99.0)], SENSORS) == [
        ("out_of_range", "field 'temperature' value 99.0 is outside [-50, 60]")
    ]


def test_schema_defect_beats_feature_domain() -> None:
    assert dead([reading(load=-5.0, is_weekend=None)], SENSORS) == [
        ("missing_field", "required field 'is_weekend' is missing or null")
    ]


def us(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_704_110_400_000, us("2024-01-01T12:00:00+00:00")),
        (1_704_110_400_000.0, us("2024-01-01T12:00:00+00:00")),
        (1_704_110_400_000.5, us("2024-01-01T12:00:00.000500+00:00")),
        (0, us("1970-01-01T00:00:00+00:00")),
        (-1000, us("1969-12-31T23:59:59+00:00")),
        ("2024-01-01T12:00:00Z", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01t12:00:00z", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01 12:00:00", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00Z", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T14:00:00.25+02:00", us("2024-01-01T12:00:00.250000+00:00")),
        ("2024-01-01T14:00:00+0200", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T09:00:00-03", us("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00:00.123456789Z", us("2024-01-01T12:00:00.123456+00:00")),
    ],
)
def test_timestamp_coercion(value: Any, expected: datetime) -> None:
    # 1970 and before parse like any other time; only the default time.min_event_time (off here) rejects them
    result = clean_batch(bronze([event(event_time=value)]), DEMO_ANY_TIME)
    assert result.dead_letter_rows == 0
    assert result.silver.column("event_time").to_pylist() == [expected]


def test_number_coercions_and_exact_big_ints() -> None:
    big = 2**53 + 1
    result = clean_batch(
        bronze([reading(reading_id=3.0, count=1e2, temperature=5), reading(reading_id=big, count=-(2**62))]),
        SENSORS,
    )
    assert result.dead_letter_rows == 0
    silver = result.silver.to_pydict()
    assert silver["reading_id"] == [3, big]
    assert silver["count"] == [100, -(2**62)]
    assert silver["temperature"] == [5.0, 20.5]
    assert result.silver.schema.field("temperature").type == "double"


def test_int_column_mixing_ints_floats_and_strings_stays_exact() -> None:
    big = 2**53 + 1
    values = [reading(reading_id=big), reading(reading_id=2, count=4.0), reading(reading_id=3, count="x")]
    result = clean_batch(bronze(values), SENSORS)
    assert result.silver.column("reading_id").to_pylist() == [big, 2]
    assert result.silver.column("count").to_pylist() == [2, 4]


def test_defaults_fill_absent_and_null_optional_fields() -> None:
    result = clean_batch(bronze([event(discount=DROP), event(event_id="e-2", discount=None)]), DEMO)
    assert result.silver.column("discount").to_pylist() == [0.0, 0.0]
    sensors = clean_batch(bronze([reading(load=DROP, serial=None, count=DROP)]), SENSORS)
    row = sensors.silver.to_pylist()[0]
    assert (row["load"], row["serial"], row["count"]) == (None, "unknown", 7)


def test_invalid_default_in_spec_is_a_clear_error() -> None:
    broken = {
        **SENSOR_SPEC,
        "schema": {**SENSOR_SPEC["schema"], "fields": {**SENSOR_SPEC["schema"]["fields"]}},
    }
    broken["schema"]["fields"]["count"] = {"type": "int", "required": False, "default": 2.5}
    with pytest.raises(ValueError, match=r"schema\.fields\.count\.default 2\.5 is not a valid int value"):
        clean_batch(bronze([reading(count=DROP)]), parse_spec(broken))
