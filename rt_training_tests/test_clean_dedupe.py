"""Duplicate ids: first occurrence in offset order wins within a batch; ids in recent silver history are dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from clean_support import INGESTED_AT, SENSOR_SPEC, bronze, event, reading

from rt_training.clean import clean_batch, recent_ids, silver_schema
from rt_training.spec import load_spec, parse_spec

DEMO = load_spec()
SENSORS = parse_spec(SENSOR_SPEC)


def outcome(table: pa.Table) -> list[tuple[int, int, str, str]]:
    rows = table.select(["partition", "offset", "reason", "detail"]).to_pylist()
    return sorted((r["partition"], r["offset"], r["reason"], r["detail"]) for r in rows)


def test_first_occurrence_by_offset_wins_whatever_the_row_order() -> None:
    values = [event(event_id="a"), event(event_id="b"), event(event_id="a"), event(event_id="a")]
    partitions = [1, 0, 0, 1]
    offsets = [7, 3, 9, 2]
    # order is (topic, partition, offset): partition 0 offset 9 comes before partition 1 offset 2
    expected = [
        (1, 2, "duplicate_id", 'event_id "a" already appeared at clickstream/0/9 in this batch'),
        (1, 7, "duplicate_id", 'event_id "a" already appeared at clickstream/0/9 in this batch'),
    ]
    result = clean_batch(bronze(values, partitions=partitions, offsets=offsets), DEMO)
    assert outcome(result.dead_letters) == expected
    assert sorted(
        zip(
            result.silver.column("_partition").to_pylist(),
            result.silver.column("_offset").to_pylist(),
            strict=True,
        )
    ) == [(0, 3), (0, 9)]
    assert result.duplicates == 2
    reordered = [3, 0, 2, 1]
    again = clean_batch(
        bronze(
            [values[i] for i in reordered],
            partitions=[partitions[i] for i in reordered],
            offsets=[offsets[i] for i in reordered],
        ),
        DEMO,
    )
    assert outcome(again.dead_letters) == expected


def test_an_invalid_first_occurrence_does_not_block_the_valid_one() -> None:
    result = clean_batch(bronze([event(event_id="a", price="x"), event(event_id="a")]), DEMO)
    assert result.silver.column("_offset").to_pylist() == [1]
    assert result.reason_counts["wrong_type"] == 1 and result.reason_counts["duplicate_id"] == 0


@pytest.mark.parametrize("as_arrow", [False, True])
def test_ids_in_history_are_duplicates(as_arrow: bool) -> None:
    seen = {"a", "zzz"}
    seen_ids = pa.array(sorted(seen)) if as_arrow else seen
    values = [event(event_id="a"), event(event_id="b"), event(event_id="a")]
    result = clean_batch(bronze(values), DEMO, seen_ids=seen_ids)
    assert result.silver.column("event_id").to_pylist() == ["b"]
    assert outcome(result.dead_letters) == [
        (0, 0, "duplicate_id", 'event_id "a" is already in silver (recent history)'),
        (0, 2, "duplicate_id", 'event_id "a" is already in silver (recent history)'),
    ]


def test_int_ids_and_history_given_as_other_int_type() -> None:
    values = [reading(reading_id=5), reading(reading_id=6), reading(reading_id=6)]
    result = clean_batch(bronze(values, topic="readings"), SENSORS, seen_ids=pa.array([5], pa.int32()))
    assert result.silver.column("reading_id").to_pylist() == [6]
    assert outcome(result.dead_letters) == [
        (0, 0, "duplicate_id", "reading_id 5 is already in silver (recent history)"),
        (0, 2, "duplicate_id", "reading_id 6 already appeared at readings/0/1 in this batch"),
    ]


def test_history_of_wrong_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="seen ids of type string cannot be compared with ids of type int64"):
        clean_batch(bronze([reading()]), SENSORS, seen_ids=["not-a-number"])


EVENT_MS = 1_704_110_400_000  # 2024-01-01T12:00:00Z, the event time of clean_support's events


def test_recent_ids_reads_only_the_event_time_window_from_a_delta_table(tmp_path) -> None:
    from deltalake import write_deltalake

    uri = str(tmp_path / "silver")
    noon = datetime.fromtimestamp(EVENT_MS / 1000, UTC)
    assert recent_ids(uri, DEMO, noon).to_pylist() == []
    # Ingested now, all of them: only event time tells old from new.
    old = clean_batch(
        bronze([event(event_id="old", event_time=EVENT_MS - 7_200_000)], ingested_at=INGESTED_AT), DEMO
    ).silver
    new = clean_batch(
        bronze([event(event_id="new-1"), event(event_id="new-2")], ingested_at=INGESTED_AT), DEMO
    ).silver
    write_deltalake(uri, old)
    write_deltalake(uri, new, mode="append")
    assert sorted(recent_ids(uri, DEMO, noon - timedelta(hours=1)).to_pylist()) == ["new-1", "new-2"]
    assert sorted(recent_ids(uri, DEMO, noon - timedelta(hours=3)).to_pylist()) == ["new-1", "new-2", "old"]
    seen = recent_ids(uri, DEMO, noon - timedelta(hours=1))
    again = clean_batch(bronze([event(event_id="old"), event(event_id="new-1")]), DEMO, seen_ids=seen)
    assert again.silver.column("event_id").to_pylist() == ["old"]
    assert old.schema == silver_schema(DEMO)


def test_recent_ids_default_window_is_the_watermark_and_naive_time_fails(tmp_path) -> None:
    from deltalake import write_deltalake

    uri = str(tmp_path / "silver")
    hour_ms = 3_600_000
    rows = [event(event_id=f"e-{h}", event_time=EVENT_MS - h * hour_ms) for h in range(4)]
    write_deltalake(uri, clean_batch(bronze(rows), DEMO).silver)
    # Watermark = noon (allowed_lateness 0), history 1 h: noon and 11:00 are in it.
    assert DEMO.ingest.dedup_history_s == 3600 and DEMO.time.allowed_lateness == 0
    assert sorted(recent_ids(uri, DEMO).to_pylist()) == ["e-0", "e-1"]
    lagging = DEMO.model_copy(update={"time": DEMO.time.model_copy(update={"allowed_lateness": 3600.0})})
    # Watermark 11:00: the window starts at 10:00 and has no upper end.
    assert sorted(recent_ids(uri, lagging).to_pylist()) == ["e-0", "e-1", "e-2"]
    with pytest.raises(ValueError, match="has no time zone"):
        recent_ids(uri, DEMO, datetime(2024, 1, 1))


def test_find_duplicates_ignores_null_ids() -> None:
    from rt_training.clean import find_duplicates

    ids = pa.array(["a", None, "a", None])
    coords = pa.table(
        {"topic": ["t"] * 4, "partition": pa.array([0] * 4, pa.int32()), "offset": [0, 1, 2, 3]}
    )
    found = find_duplicates(ids, coords, id_field="id")
    assert found.rows.tolist() == [2]
    assert found.details == ['id "a" already appeared at t/0/0 in this batch']


def test_micro_batch_history_on_event_time_years_back_and_pruned_by_statistics(tmp_path) -> None:
    """A replay of 2019 ingested today dedupes against 2019's rows; files before the window are not read."""
    from deltalake import DeltaTable, write_deltalake

    from rt_training.ingest.batch import LakeLocation, seen_ids_outside
    from rt_training.stream.planner import OffsetRange

    lake = LakeLocation(str(tmp_path))
    uri = lake.uri(DEMO.name, "silver")
    base = datetime(2019, 3, 1, 12, tzinfo=UTC)
    ms = int(base.timestamp() * 1000)
    now = datetime.now(UTC)
    # Two files: events from 2019-03-01 10:00-10:03 (offsets 0-3), then 11:57-12:00 (offsets 4-7).
    early = [event(event_id=f"early-{i}", event_time=ms - 7_200_000 + i * 60_000) for i in range(4)]
    late = [event(event_id=f"late-{i}", event_time=ms - 180_000 + i * 60_000) for i in range(4)]
    for offsets, values in ((range(4), early), (range(4, 8), late)):
        batch = bronze(values, topic=DEMO.source.topic, offsets=list(offsets), ingested_at=now)
        write_deltalake(uri, clean_batch(batch, DEMO).silver, mode="append")
    ranges = [OffsetRange(DEMO.source.topic, 0, 8, 10)]
    # Reference 12:00, history 1 h: the late file only, though every row was ingested moments ago.
    assert sorted(seen_ids_outside(DEMO, lake, ranges, base).to_pylist()) == [f"late-{i}" for i in range(4)]
    since = base - timedelta(seconds=DEMO.ingest.dedup_history_s)
    where = pc.field("event_time") >= pa.scalar(since, pa.timestamp("us", "UTC"))
    dataset = DeltaTable(uri).to_pyarrow_dataset()
    assert len(list(dataset.get_fragments())) == 2
    assert len(list(dataset.get_fragments(filter=where))) == 1
    # An earlier reference (11:01, window from 10:01) reaches into the early file; the batch's own ranges stay out.
    earlier = seen_ids_outside(DEMO, lake, ranges, base - timedelta(minutes=59))
    assert sorted(earlier.to_pylist()) == [f"early-{i}" for i in (1, 2, 3)] + [f"late-{i}" for i in range(4)]
    assert sorted(
        seen_ids_outside(DEMO, lake, [OffsetRange(DEMO.source.topic, 0, 4, 8)], None).to_pylist()
    ) == [f"early-{i}" for i in range(4)]
    # The batch: a replayed 2019 event is a duplicate, a new one is kept.
    seen = seen_ids_outside(DEMO, lake, ranges, base)
    again = clean_batch(
        bronze([event(event_id="late-1", event_time=ms), event(event_id="fresh", event_time=ms)]),
        DEMO,
        seen_ids=seen,
        reference=base,
    )
    assert again.silver.column("event_id").to_pylist() == ["fresh"]
    assert again.dead_letters.column("reason").to_pylist() == ["duplicate_id"]
