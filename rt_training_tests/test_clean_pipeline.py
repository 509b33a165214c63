"""clean_batch end to end: exact output schemas, every row accounted for, lag stats, other specs and parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from clean_support import INGESTED_AT, KAFKA_TS, SENSOR_SPEC, TINY_SPEC, bronze, event, reading

from rt_training.clean import DEAD_LETTER_SCHEMA, ParsedBatch, Reason, clean_batch, silver_schema
from rt_training.clean.pipeline import without_rows
from rt_training.spec import load_spec, parse_spec

DEMO = load_spec()
SENSORS = parse_spec(SENSOR_SPEC)
TS_US = pa.timestamp("us", tz="UTC")


def test_silver_schema_exact_for_demo_spec() -> None:
    result = clean_batch(bronze([event()]), DEMO)
    assert result.silver.schema == silver_schema(DEMO)
    assert [(f.name, str(f.type)) for f in result.silver.schema] == [
        ("_topic", "string"),
        ("_partition", "int32"),
        ("_offset", "int64"),
        ("_ingested_at", "timestamp[us, tz=UTC]"),
        ("event_id", "string"),
        ("event_time", "timestamp[us, tz=UTC]"),
        ("user_id", "string"),
        ("item_id", "string"),
        ("price", "double"),
        ("dwell_time_s", "double"),
        ("position", "int64"),
        ("user_tenure_days", "double"),
        ("discount", "double"),
        ("device", "string"),
        ("category", "string"),
        ("country", "string"),
        ("clicked", "int64"),
    ]
    row = result.silver.to_pylist()[0]
    assert (row["_topic"], row["_partition"], row["_offset"], row["_ingested_at"]) == (
        "clickstream",
        0,
        0,
        INGESTED_AT,
    )
    assert (row["event_id"], row["position"], row["clicked"], row["device"]) == ("e-1", 2, 1, "mobile")


def test_dead_letter_schema_and_columns_copied_from_bronze() -> None:
    result = clean_batch(
        bronze([event(), b"{", event(price=-1.0)], partitions=[2, 2, 2], offsets=[40, 41, 42]), DEMO
    )
    assert result.dead_letters.schema == DEAD_LETTER_SCHEMA
    assert DEAD_LETTER_SCHEMA.names == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "value",
        "reason",
        "detail",
        "ingested_at",
        "run_id",
    ]
    rows = result.dead_letters.to_pylist()
    assert rows[0] == {
        "topic": "clickstream",
        "partition": 2,
        "offset": 41,
        "timestamp": KAFKA_TS,
        "key": b"k1",
        "value": b"{",
        "reason": "malformed_json",
        "detail": "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        "ingested_at": INGESTED_AT,
        "run_id": "run-1",
    }
    assert [r["offset"] for r in rows] == [41, 42]


def test_every_row_lands_once_and_counts_reconcile() -> None:
    values = [event(event_id=f"e-{i}") for i in range(20)]
    values[3] = b"nope"
    values[5] = event(event_id="e-5", price="x")
    values[8] = event(event_id="e-1")
    values[13] = b"[]"
    result = clean_batch(bronze(values), DEMO)
    assert result.rows_in == 20
    assert (result.silver_rows, result.dead_letter_rows, result.duplicates) == (16, 4, 1)
    offsets = result.silver.column("_offset").to_pylist() + result.dead_letters.column("offset").to_pylist()
    assert sorted(offsets) == list(range(20))
    assert result.silver.column("_offset").to_pylist() == [i for i in range(20) if i not in (3, 5, 8, 13)]
    assert result.reason_counts == {r.value: 0 for r in Reason} | {
        "malformed_json": 1,
        "wrong_type": 1,
        "duplicate_id": 1,
        "not_an_object": 1,
    }
    meta = result.metadata()
    assert meta["rows_in"] == 20 and meta["dead_letter_share"] == 0.2 and meta["dead_letters_wrong_type"] == 1


def test_empty_and_all_bad_batches() -> None:
    empty = clean_batch(bronze([]), DEMO)
    assert (empty.silver.num_rows, empty.dead_letters.num_rows) == (0, 0)
    assert empty.silver.schema == silver_schema(DEMO) and empty.dead_letters.schema == DEAD_LETTER_SCHEMA
    assert empty.lag.p50_s is None
    all_bad = clean_batch(bronze([b"x", b"[]", None]), DEMO)
    assert (all_bad.silver_rows, all_bad.dead_letter_rows) == (0, 3)
    assert all_bad.silver.schema == silver_schema(DEMO)


def test_lag_stats_are_ingested_at_minus_event_time() -> None:
    base_ms = int(INGESTED_AT.timestamp() * 1000)
    lags = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    values = [event(event_id=f"e-{i}", event_time=base_ms - lag * 1000) for i, lag in enumerate(lags)]
    result = clean_batch(bronze(values), DEMO, now=INGESTED_AT + timedelta(seconds=5))
    assert (result.lag.p50_s, result.lag.p95_s, result.lag.max_s) == (50.0, 95.0, 100.0)
    assert result.lag.freshness_s == 5.0


def test_bronze_without_required_columns_is_a_clear_error() -> None:
    table = bronze([event()]).drop_columns(["run_id"])
    with pytest.raises(ValueError, match=r"bronze batch lacks columns \['run_id'\]"):
        clean_batch(table, DEMO)


def test_bronze_with_chunks_extra_columns_and_large_binary() -> None:
    table = pa.concat_tables([bronze([event(event_id="a")]), bronze([event(event_id="b")], offsets=[1])])
    table = table.append_column("extra", pa.array([1, 2])).set_column(
        5, "value", table.column("value").cast(pa.large_binary())
    )
    result = clean_batch(table, DEMO)
    assert result.silver.column("event_id").to_pylist() == ["a", "b"]


def test_second_spec_runs_with_no_code_change() -> None:
    values = [
        reading(reading_id=1),
        reading(reading_id=2, is_weekend=False, site="south", serial=None, load=None),
        reading(reading_id=3, site="east", ts=1_704_110_400_000),
        reading(reading_id=4, is_weekend=0),
    ]
    result = clean_batch(bronze(values, topic="readings"), SENSORS)
    assert result.silver.schema == silver_schema(SENSORS)
    assert result.silver.schema.names == [
        "_topic", "_partition", "_offset", "_ingested_at",
        "reading_id", "ts", "site", "temperature", "is_weekend", "load", "serial", "count", "kwh",
    ]  # fmt: skip
    silver = result.silver.to_pydict()
    assert silver["reading_id"] == [1, 2, 3]
    assert silver["is_weekend"] == [True, False, True]
    assert silver["ts"] == [datetime(2024, 1, 1, 12, tzinfo=UTC)] * 3
    assert silver["site"] == ["north", "south", "east"]
    assert silver["serial"] == ["SN-1", "unknown", "SN-1"]
    assert result.dead_letters.select(["reason", "detail"]).to_pylist() == [
        {
            "reason": "wrong_type",
            "detail": "field 'is_weekend' expected a boolean (true or false), got number 0",
        }
    ]


class SemicolonParser:
    """A second wire format, ``id;time_ms`` text, to show the parser is pluggable."""

    def parse(self, values: pa.BinaryArray) -> ParsedBatch:
        ids: list[object] = []
        times: list[object] = []
        errors = {}
        for row, raw in enumerate(values.to_pylist()):
            parts = raw.decode().split(";")
            if len(parts) != 2:
                errors[row] = (Reason.MALFORMED_JSON, f"expected 2 fields separated by ';', got {len(parts)}")
                parts = [None, None]
            ids.append(parts[0])
            times.append(int(parts[1]) if parts[1] is not None else None)
        return ParsedBatch(columns={"id": ids, "t": times}, errors=errors)


def test_pluggable_parser() -> None:
    spec = TINY_SPEC
    result = clean_batch(bronze([b"x;1000", b"bad", b"x;2000"], topic="tiny"), spec, parser=SemicolonParser())
    assert result.silver.to_pydict()["t"] == [datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)]
    assert result.dead_letters.column("reason").to_pylist() == ["malformed_json", "duplicate_id"]


@pytest.mark.parametrize("spec", [DEMO, SENSORS], ids=["clickstream", "sensors"])
def test_generated_bad_records_get_the_reason_of_their_kind(spec) -> None:
    from rt_training.stream.synthetic import EventGenerator

    generator = EventGenerator(spec, seed=3, bad_ratio=0.2)
    batch = generator.generate(3000)
    n = len(batch)
    result = clean_batch(bronze(batch.values, topic=spec.source.topic), spec)
    got = dict(
        zip(
            result.dead_letters.column("offset").to_pylist(),
            result.dead_letters.column("reason").to_pylist(),
            strict=True,
        )
    )
    expected = {i: kind for i, kind in enumerate(batch.kinds) if kind is not None}
    assert set(expected.values()) == set(generator.bad_kinds)
    assert got == expected
    assert result.silver_rows == n - len(expected)


@pytest.mark.parametrize("spec", [DEMO, SENSORS], ids=["clickstream", "sensors"])
def test_the_parsers_loose_row_hint_changes_nothing_in_the_output(spec) -> None:
    from rt_training.clean import JsonParser
    from rt_training.stream.synthetic import EventGenerator

    batch = EventGenerator(spec, seed=5, bad_ratio=0.05).generate(4000)
    table = bronze(batch.values, topic=spec.source.topic)
    hinted = clean_batch(table, spec)  # the default parser knows the field types
    unhinted = clean_batch(table, spec, parser=JsonParser(list(spec.schema_.fields)))
    assert hinted.silver.equals(unhinted.silver)
    assert hinted.dead_letters.equals(unhinted.dead_letters)
    assert hinted.reason_counts == unhinted.reason_counts and hinted.reason_counts["wrong_type"] > 0


def test_oversized_rows_are_never_parsed_even_in_a_sliced_batch_with_nulls() -> None:
    limit = DEMO.schema_.max_record_bytes
    big = event(event_id="big")[:-1] + b" " * limit + b"}"
    table = bronze([event(event_id="cut"), None, big, event(event_id="a"), big]).slice(1)
    values = table.column("value").chunk(0)
    blanked = without_rows(values, np.array([False, True, False, True]))
    assert blanked.to_pylist() == [None, None, event(event_id="a"), None]
    result = clean_batch(table, DEMO)
    assert result.dead_letters.select(["offset", "reason"]).to_pylist() == [
        {"offset": 1, "reason": "malformed_json"},
        {"offset": 2, "reason": "oversized"},
        {"offset": 4, "reason": "oversized"},
    ]
    assert result.silver.column("event_id").to_pylist() == ["a"]


class ShortParser:
    def parse(self, values: pa.BinaryArray) -> ParsedBatch:
        return ParsedBatch(columns={"event_id": ["x"]})


def test_parser_breaking_the_contract_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"parser ShortParser returned 1 values for field 'event_id' of a batch of 2 records"
    ):
        clean_batch(bronze([event(), event()]), DEMO, parser=ShortParser())


REFERENCE = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def lateness_batch(seed: int = 11) -> tuple[pa.Table, np.ndarray]:
    """40 valid events whose event times are spread from 2 h before to 1 h after ``REFERENCE`` (seconds)."""
    rng = np.random.default_rng(seed)
    offsets_s = rng.integers(-7200, 3600, size=40)
    offsets_s[:3] = [-1, 0, -3600]  # just late, exactly on the watermark (not late), exactly max_lateness
    ms = int(REFERENCE.timestamp() * 1000)
    values = [event(event_id=f"e-{i}", event_time=ms + int(s) * 1000) for i, s in enumerate(offsets_s)]
    return bronze(values), offsets_s


def test_late_rows_are_kept_and_counted_against_the_reference() -> None:
    table, offsets_s = lateness_batch()
    result = clean_batch(table, DEMO, reference=REFERENCE)
    behind = -offsets_s[offsets_s < 0].astype(float)
    assert result.silver_rows == 40 and result.dead_letter_rows == 0
    assert result.lateness.late_rows == int((offsets_s < 0).sum())
    assert result.lateness.late_by_max_s == pytest.approx(behind.max())
    assert result.lateness.late_by_p95_s == pytest.approx(np.percentile(behind, 95))
    meta = result.metadata()
    assert meta["late_rows"] == result.lateness.late_rows
    assert meta["late_share"] == pytest.approx(result.lateness.late_rows / 40)
    assert meta["dead_letters_too_late"] == 0
    # Without a reference (nothing in silver yet) nothing is late.
    assert clean_batch(table, DEMO).lateness.late_rows == 0


def test_too_late_only_with_max_lateness_and_exact_detail() -> None:
    table, offsets_s = lateness_batch()
    assert clean_batch(table, DEMO, reference=REFERENCE).reason_counts["too_late"] == 0
    strict = DEMO.model_copy(update={"time": DEMO.time.model_copy(update={"max_lateness": 3600.0})})
    result = clean_batch(table, strict, reference=REFERENCE)
    too_late = offsets_s < -3600
    assert result.reason_counts["too_late"] == int(too_late.sum()) > 0
    assert sorted(result.dead_letters.column("offset").to_pylist()) == np.flatnonzero(too_late).tolist()
    kept = set(result.silver.column("_offset").to_pylist())
    assert 2 in kept  # exactly max_lateness below the watermark is still accepted
    assert result.lateness.late_rows == int(((offsets_s < 0) & ~too_late).sum())
    first = int(np.flatnonzero(too_late)[0])
    when = REFERENCE + timedelta(seconds=int(offsets_s[first]))
    row = result.dead_letters.filter(pc.equal(result.dead_letters.column("offset"), first))
    assert row.column("reason").to_pylist() == ["too_late"]
    assert row.column("detail").to_pylist() == [
        f"event time {when.isoformat()} is {-offsets_s[first]:.3f}s below the watermark "
        f"{REFERENCE.isoformat()}, more than max_lateness 3600s"
    ]


def test_a_too_late_record_never_counts_as_the_first_occurrence_of_an_id() -> None:
    strict = DEMO.model_copy(update={"time": DEMO.time.model_copy(update={"max_lateness": 60.0})})
    ms = int(REFERENCE.timestamp() * 1000)
    values = [event(event_id="a", event_time=ms - 3_600_000), event(event_id="a", event_time=ms)]
    result = clean_batch(bronze(values), strict, reference=REFERENCE)
    assert result.dead_letters.column("reason").to_pylist() == ["too_late"]
    assert result.silver.column("_offset").to_pylist() == [1]
