"""Spec-controlled plausibility through the real ``clean_batch``: event-time bounds (``time.min_event_time``,
``time.max_future_skew`` against the record's Kafka timestamp), non-empty ids and duplicated top-level keys."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clean_support import KAFKA_TS, SENSOR_SPEC, bronze, event, reading
from pydantic import ValidationError

from rt_training.clean import clean_batch
from rt_training.spec import load_spec, parse_spec
from rt_training.spec.loader import resolve_spec_path
from rt_training.spec.models import TimePolicy

DEMO = load_spec()
SENSORS = parse_spec(SENSOR_SPEC)
KAFKA_MS = int(KAFKA_TS.timestamp() * 1000)  # 2024-01-01T11:59:59Z, every record's Kafka timestamp
HOUR_MS = 3_600_000
Y2K_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


def with_time(**time: Any) -> Any:
    return DEMO.model_copy(update={"time": TimePolicy(**time)})


def dead(result: Any) -> list[tuple[int, str, str]]:
    return list(
        zip(
            result.dead_letters.column("offset").to_pylist(),
            result.dead_letters.column("reason").to_pylist(),
            result.dead_letters.column("detail").to_pylist(),
            strict=True,
        )
    )


# ---- the spec ---------------------------------------------------------------------------------------------------


def test_defaults_are_an_hour_of_skew_and_the_year_2000() -> None:
    assert TimePolicy().max_future_skew == 3600.0
    assert TimePolicy().min_event_time == datetime(2000, 1, 1, tzinfo=UTC)
    assert DEMO.time.max_future_skew == 3600.0 and DEMO.time.min_event_time == datetime(
        2000, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2015-06-01", datetime(2015, 6, 1, tzinfo=UTC)),
        (date(2015, 6, 1), datetime(2015, 6, 1, tzinfo=UTC)),  # an unquoted YAML date
        ("2015-06-01T02:30:00+02:00", datetime(2015, 6, 1, 0, 30, tzinfo=UTC)),
        ("2015-06-01T00:00:00Z", datetime(2015, 6, 1, tzinfo=UTC)),
        ("1960-01-01 00:00", datetime(1960, 1, 1, tzinfo=UTC)),  # no zone: UTC
        (None, None),
    ],
)
def test_min_event_time_forms(given: Any, expected: datetime | None) -> None:
    assert TimePolicy(min_event_time=given).min_event_time == expected


def test_settings_from_yaml(tmp_path: Path) -> None:
    demo = resolve_spec_path("clickstream").read_text()
    path = tmp_path / "spec.yaml"
    path.write_text(demo + "\ntime:\n  max_future_skew: 90s\n  min_event_time: 2015-06-01\n")
    spec = load_spec(str(path))
    assert spec.time.max_future_skew == 90.0
    assert spec.time.min_event_time == datetime(2015, 6, 1, tzinfo=UTC)
    path.write_text(demo + "\ntime:\n  max_future_skew: null\n  min_event_time: null\n")
    assert load_spec(str(path)).time.model_dump() == {
        "allowed_lateness": 0.0,
        "max_lateness": None,
        "max_future_skew": None,
        "min_event_time": None,
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"min_event_time": "yesterday"}, "'yesterday' is not an ISO-8601 date or date-time"),
        ({"min_event_time": "2015-13-01"}, "'2015-13-01' is not an ISO-8601 date or date-time"),
        ({"min_event_time": 946684800000}, "946684800000 is not a date"),
        ({"min_event_time": True}, "True is not a date"),
        ({"max_future_skew": "soon"}, "'soon' is not a duration"),
        ({"max_future_skew": -5}, "it must be finite and not negative"),
        ({"max_future_skew": "1h", "max_future_skew_s": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_spec_errors(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        TimePolicy(**setting)


# ---- each reason, exact counts and details ----------------------------------------------------------------------


def _seeded_batch(seed: int, bad: dict[str, list[bytes]], good: int) -> tuple[list[bytes], dict[int, str]]:
    """``good`` valid events and the ``bad`` records (by expected reason) shuffled with ``seed``: the values and the
    expected reason of each offset that must be dead-lettered."""
    items = [(None, event(event_id=f"ok-{i}", event_time=KAFKA_MS - i * 1000)) for i in range(good)]
    items += [(reason, value) for reason, values in bad.items() for value in values]
    random.Random(seed).shuffle(items)
    return [v for _, v in items], {i: r for i, (r, _) in enumerate(items) if r is not None}


BAD = {
    "before_min_event_time": [
        event(event_id="b-0", event_time=0),
        event(event_id="b-1", event_time=-5),
        event(event_id="b-2", event_time=1_704_110_400),  # epoch seconds sent as milliseconds: January 1970
        event(event_id="b-3", event_time="1999-12-31T23:59:59.999Z"),
        event(event_id="b-4", event_time=-62_135_596_800_000),  # 0001-01-01
    ],
    "future_event_time": [
        event(event_id="f-0", event_time=253_402_300_799_999),  # 9999-12-31
        event(event_id="f-1", event_time=KAFKA_MS + HOUR_MS + 1),
        event(event_id="f-2", event_time="2024-01-01T14:00:00+01:00"),  # 13:00Z: 1 h 1 s ahead
    ],
    "empty_id": [event(event_id=""), event(event_id="   "), event(event_id="\t\u00a0\n")],
    "duplicate_key": [
        b'{"event_id": "d-0", ' + event(event_id="d-0x")[1:],
        event(event_id="d-1")[:-1] + b', "price": 3.0}',
        event(event_id="d-2")[:-1] + b', "event_id" : "d-2"}',  # the same value twice, white space before ':'
        event(event_id="d-3")[:-1] + b', "event\\u005fid": "d-3x"}',  # the name spelled with an escape
    ],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_reason_with_exact_counts(seed: int) -> None:
    values, expected = _seeded_batch(seed, BAD, good=20)
    result = clean_batch(bronze(values), DEMO)
    assert {o: r for o, r, _ in dead(result)} == expected
    counts = {r: c for r, c in result.reason_counts.items() if c}
    assert counts == {"before_min_event_time": 5, "future_event_time": 3, "empty_id": 3, "duplicate_key": 4}
    assert result.silver_rows == 20
    assert sorted(result.silver.column("event_id").to_pylist()) == sorted(f"ok-{i}" for i in range(20))
    metadata = result.metadata()
    assert (metadata["dead_letters_duplicate_key"], metadata["dead_letters_empty_id"]) == (4, 3)
    assert (metadata["dead_letters_before_min_event_time"], metadata["dead_letters_future_event_time"]) == (
        5,
        3,
    )


def _detail_of(value: bytes, spec: Any = DEMO) -> tuple[str, str]:
    result = clean_batch(bronze([value]), spec)
    ((_, reason, detail),) = dead(result)
    return reason, detail


def test_details_name_the_value_the_bound_and_the_setting() -> None:
    assert _detail_of(event(event_time=1_704_110_400)) == (
        "before_min_event_time",
        "field 'event_time' value 1970-01-20T17:21:50.400000+00:00 is before time.min_event_time "
        "2000-01-01T00:00:00+00:00; if events this old are real, set time.min_event_time earlier (or null)",
    )
    assert _detail_of(event(event_time=KAFKA_MS + HOUR_MS + 1)) == (
        "future_event_time",
        "field 'event_time' value 2024-01-01T12:59:59.001000+00:00 is 3600.001s ahead of the record's Kafka "
        "timestamp 2024-01-01T11:59:59+00:00, more than time.max_future_skew 1h; fix the producer's clock or "
        "time zone, or raise time.max_future_skew",
    )
    assert _detail_of(event(event_id="")) == (
        "empty_id",
        "id field 'event_id' is an empty string; every record needs an id to be told apart",
    )
    assert _detail_of(event(event_id=" \u00a0")) == (
        "empty_id",
        "id field 'event_id' is only white space (\" \u00a0\"); every record needs an id to be told apart",
    )
    assert _detail_of(b'{"event_id": "a", ' + event(event_id="b")[1:]) == (
        "duplicate_key",
        "key 'event_id' appears 2 times at the top level of the record; which value is meant is unknown, so none "
        "is taken: send each field once",
    )


def test_bounds_are_inclusive_to_the_microsecond() -> None:
    at_bound = [
        event(event_id="min", event_time=Y2K_MS),
        event(event_id="skew", event_time=KAFKA_MS + HOUR_MS),
        event(event_id="skew-us", event_time=f"{(KAFKA_TS + timedelta(hours=1)).isoformat()}"),
    ]
    past = [
        event(event_id="min-1ms", event_time=Y2K_MS - 1),
        event(event_id="skew+1us", event_time=(KAFKA_TS + timedelta(hours=1, microseconds=1)).isoformat()),
    ]
    result = clean_batch(bronze(at_bound + past), DEMO)
    assert result.silver.column("event_id").to_pylist() == ["min", "skew", "skew-us"]
    assert [(o, r) for o, r, _ in dead(result)] == [(3, "before_min_event_time"), (4, "future_event_time")]


def test_ids_that_are_not_blank_are_kept() -> None:
    kept = ["\u200b", " x ", "0", "\ufeff"]  # a zero-width space and a BOM are no white space
    result = clean_batch(bronze([event(event_id=i) for i in kept]), DEMO)
    assert result.silver.column("event_id").to_pylist() == kept


def test_an_int_id_is_never_empty() -> None:
    result = clean_batch(bronze([reading(reading_id=0), reading(reading_id=-1)]), SENSORS)
    assert result.silver_rows == 2 and result.reason_counts["empty_id"] == 0


# ---- duplicated keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        event()[:-1] + b', "extra": 1, "extra": 2}',  # keys outside the schema are ignored, repeated or not
        event()[:-1] + b', "extra": {"event_id": 1, "event_id": 2}}',  # repeated only inside a nested object
        event(device="event_id", user_id="price:1"),  # values that look like keys
        event()[:-1] + b', "note": "\\"event_id\\": 2"}',  # a quoted name inside a string
        event()[:-1] + b', "url": "https://x/a:b:c"}',  # many colons, no key repeated
    ],
)
def test_what_is_not_a_repeated_schema_key_passes(value: bytes) -> None:
    result = clean_batch(bronze([value]), DEMO)
    assert result.silver.column("event_id").to_pylist() == ["e-1"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id": "a", "price": "x", "price": "y"}', "duplicate_key"),  # before missing and wrong type
        (b'{"event_id": "a", "event_id": "b"', "malformed_json"),  # not a document: malformed first
        (b'{"event_id": "", "event_id": ""}', "duplicate_key"),  # before empty_id
        (b'{"event_id": "a", "event_id": "a", "event_time": 0}', "duplicate_key"),  # before the time bounds
    ],
)
def test_duplicate_key_precedence(value: bytes, reason: str) -> None:
    assert _detail_of(value)[0] == reason


def test_a_repeated_key_of_a_typed_field_is_caught_on_the_loose_path() -> None:
    # a wrong kind first (the typed decode fails, the record is decoded untyped), then the event's own and one more
    value = b'{"price": "x", ' + event()[1:-1] + b', "price": 2.0}'
    assert _detail_of(value) == (
        "duplicate_key",
        "key 'price' appears 3 times at the top level of the record; which value is meant is unknown, so none "
        "is taken: send each field once",
    )


def test_a_duplicate_is_never_kept_and_never_shadows_a_later_id() -> None:
    # the second record's last 'event_id' is the id of the third: had it been taken, the third would be a
    # duplicate_id; rejected, it takes no id and the third is kept
    values = [event(event_id="a"), b'{"event_id": "x", ' + event(event_id="c")[1:], event(event_id="c")]
    result = clean_batch(bronze(values), DEMO)
    assert result.silver.column("event_id").to_pylist() == ["a", "c"]
    assert [(o, r) for o, r, _ in dead(result)] == [(1, "duplicate_key")]


# ---- retries, overrides and Kafka timestamps --------------------------------------------------------------------


def test_same_bronze_same_routing_whatever_the_wall_clock() -> None:
    values, _ = _seeded_batch(7, BAD, good=10)
    table = bronze(values)
    first = clean_batch(table, DEMO, now=datetime(2024, 1, 1, 12, tzinfo=UTC))
    for now in (datetime(2031, 5, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC)):
        retry = clean_batch(table, DEMO, now=now)
        assert retry.silver.equals(first.silver)
        assert retry.dead_letters.equals(first.dead_letters)


def test_settings_move_and_remove_the_bounds() -> None:
    values = [
        event(event_id="old", event_time=0),
        event(event_id="2010", event_time="2010-06-01T00:00:00Z"),
        event(event_id="ahead-2h", event_time=KAFKA_MS + 2 * HOUR_MS),
        event(event_id="ahead-2m", event_time=KAFKA_MS + 120_000),
    ]
    table = bronze(values)
    off = clean_batch(table, with_time(min_event_time=None, max_future_skew=None))
    assert off.silver.column("event_id").to_pylist() == ["old", "2010", "ahead-2h", "ahead-2m"]
    tight = clean_batch(table, with_time(min_event_time="2015-01-01", max_future_skew="90s"))
    assert tight.silver_rows == 0
    assert [r for _, r, _ in dead(tight)] == [
        "before_min_event_time",
        "before_min_event_time",
        "future_event_time",
        "future_event_time",
    ]
    assert "more than time.max_future_skew 1.5m" in dead(tight)[3][2]


def test_records_without_a_kafka_timestamp_are_not_judged_ahead() -> None:
    table = bronze([event(event_id=f"n-{i}", event_time=253_402_300_799_999) for i in range(3)])
    stamps = pa.array([None, -1, KAFKA_MS], pa.int64()).cast(table.schema.field("timestamp").type)
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", stamps)
    result = clean_batch(table, DEMO)
    assert result.silver.column("event_id").to_pylist() == ["n-0", "n-1"]
    assert [(o, r) for o, r, _ in dead(result)] == [(2, "future_event_time")]


def test_a_huge_kafka_timestamp_and_skew_do_not_overflow() -> None:
    table = bronze([event(event_id="late-kafka", event_time=KAFKA_MS)])
    stamps = pa.array([2**62], pa.int64()).cast(table.schema.field("timestamp").type)
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", stamps)
    assert clean_batch(table, DEMO).silver_rows == 1
    huge = clean_batch(
        bronze([event(event_time=253_402_300_799_999)]), with_time(max_future_skew="10000000w")
    )
    assert huge.silver_rows == 1


def test_the_value_a_decoder_would_keep_is_not_taken() -> None:
    value = event()[:-1] + b', "event_id": "z"}'
    assert json.loads(value)["event_id"] == "z"  # what msgspec or json.loads alone would have put in silver
    assert _detail_of(value)[0] == "duplicate_key"
