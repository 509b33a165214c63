"""Retries and poison records through the real broker, Delta tables, sensor and job.

A micro-batch killed between its table commits is completed by the sensor's repair run much later, after other
batches moved the watermark and the duplicate window far ahead: it must route every record as the first attempt
did and stamp it as bronze did. A record the cleaning code raises on, or one whose event time is in year 1, must
never fail a run.
"""

from __future__ import annotations

import time
from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from clean_support import event

from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.tables import OFFSET_TABLES
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings, make_producer
from rt_training.stream.planner import OffsetRange
from rt_training_tests.ingest_support import read_table, spec_for
from rt_training_tests.test_ingest_e2e import assert_reconciled, make_daemon

NOON_MS = 1_551_441_600_000  # 2019-03-01T12:00:00Z
MINUTE_MS = 60_000
DAY_MS = 86_400_000
DEEP = b'{"event_id": "e-deep", "payload": ' + b"[" * 8000 + b"]" * 8000 + b"}"


class Killed(RuntimeError):
    """Stands for the run's process dying at a phase."""


def die_at(phase: str):
    def on_phase(name: str) -> None:
        if name == phase:
            raise Killed(name)

    return on_phase


def send(settings: KafkaSettings, topic: str, partition: int, values: list[bytes]) -> None:
    producer = make_producer(settings)
    for value in values:
        producer.send(topic, value=value, partition=partition)
    producer.flush()
    producer.close()


def rows_of(table: pa.Table, partition: int, prefix: str = "") -> pa.Table:
    return table.filter(pc.field(f"{prefix}partition") == partition).sort_by(f"{prefix}offset")


def stamps(table: pa.Table, column: str) -> set[object]:
    return set(table.column(column).to_pylist())


@pytest.fixture
def topic(topic_factory) -> str:
    return topic_factory(partitions=3)


def test_kill_after_silver_retry_much_later_routes_as_the_first_attempt_and_reconciles(
    kafka_broker, topic, tmp_path
) -> None:
    """Partition 0's batch dies after silver's commit, partition 2's after bronze's; partition 1 then commits a
    day of event time later (the watermark and the 10-minute duplicate window move far past both). The sensor
    plans the two repairs and the job completes them exactly as first attempts would have."""
    spec: PipelineSpec = spec_for(topic, min_records=1, dedup_history_s=600.0)
    lake = LakeLocation(str(tmp_path))
    a = [event(event_id=f"a-{i}", event_time=NOON_MS - i * MINUTE_MS) for i in range(3)]
    # Offsets 3..8: a-1 seen just before the batch, b-0 (to reappear a day later on partition 1), b-1 twice,
    # a malformed record, b-2.
    b = [
        event(event_id="a-1", event_time=NOON_MS + MINUTE_MS),
        event(event_id="b-0", event_time=NOON_MS + MINUTE_MS),
        event(event_id="b-1", event_time=NOON_MS + 2 * MINUTE_MS),
        event(event_id="b-1", event_time=NOON_MS + 3 * MINUTE_MS),
        b'{"event_id": ',
        event(event_id="b-2", event_time=NOON_MS + 4 * MINUTE_MS),
    ]
    send(kafka_broker, topic, 0, a + b)
    send(
        kafka_broker,
        topic,
        2,
        [event(event_id=f"d-{i}", event_time=NOON_MS + 5 * MINUTE_MS) for i in range(2)],
    )

    run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 0, 0, 3)], "run-a")
    with pytest.raises(Killed):
        run_micro_batch(
            kafka_broker,
            spec,
            lake,
            [OffsetRange(topic, 0, 3, 9)],
            "run-b",
            on_phase=die_at("commit dead_letters"),
        )
    with pytest.raises(Killed):
        run_micro_batch(
            kafka_broker, spec, lake, [OffsetRange(topic, 2, 0, 2)], "run-d", on_phase=die_at("commit silver")
        )
    first_silver = rows_of(read_table(lake, spec, "silver"), 0, "_")
    assert first_silver.column("event_id").to_pylist() == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    at = {t: committed_offsets(lake.uri(spec.name, t), spec.name, topic, [0, 2]) for t in OFFSET_TABLES}
    assert at == {"bronze": {0: 9, 2: 2}, "silver": {0: 9, 2: None}, "dead_letters": {0: 3, 2: None}}

    # A day later in event time, partition 1: c-0 moves the watermark; then b-0 again, now outside the window of
    # its batch (which starts 10 minutes before the next day's noon), so it lands in silver a second time.
    send(kafka_broker, topic, 1, [event(event_id="c-0", event_time=NOON_MS + DAY_MS)])
    run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 1, 0, 1)], "run-c1")
    send(
        kafka_broker,
        topic,
        1,
        [
            event(event_id="b-0", event_time=NOON_MS + DAY_MS),
            event(event_id="c-1", event_time=NOON_MS + DAY_MS),
        ],
    )
    later = run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 1, 1, 3)], "run-c2")
    assert later.clean is not None and later.clean.silver_rows == 2 and later.clean.duplicates == 0
    time.sleep(1.0)  # the repair runs on a later wall clock than every first attempt

    daemon = make_daemon(spec, kafka_broker, tmp_path)
    assert daemon.catch_up() == 2  # one repair run per partly committed partition, nothing else pending
    assert all(r.success for r in daemon.results)
    tables = assert_reconciled(kafka_broker, spec, lake)
    bronze, silver, dead = tables["bronze"], tables["silver"], tables["dead_letters"]

    # Partition 0: silver untouched, and dead letters hold exactly what the first attempt would have sent there.
    silver_0 = rows_of(silver, 0, "_")
    assert silver_0.column("event_id").to_pylist() == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    dead_0 = rows_of(dead, 0)
    assert list(
        zip(dead_0.column("offset").to_pylist(), dead_0.column("reason").to_pylist(), strict=True)
    ) == [
        (3, "duplicate_id"),
        (6, "duplicate_id"),
        (7, "malformed_json"),
    ]
    assert dead_0.column("detail").to_pylist()[:2] == [
        'event_id "a-1" is already in silver (recent history)',
        f'event_id "b-1" already appeared at {topic}/0/5 in this batch',
    ]
    assert Counter(silver.column("event_id").to_pylist())["b-0"] == 2  # partition 0's and partition 1's

    # Every table stamps a record as bronze did: the first attempt's time and run, not the repair's.
    bronze_0, bronze_2 = rows_of(bronze, 0).slice(3), rows_of(bronze, 2)
    assert stamps(bronze_0, "run_id") == {"run-b"} and stamps(bronze_2, "run_id") == {"run-d"}
    (b_time,) = stamps(bronze_0, "ingested_at")
    (d_time,) = stamps(bronze_2, "ingested_at")
    assert stamps(silver_0.slice(3), "_ingested_at") == {b_time}
    assert stamps(dead_0, "ingested_at") == {b_time} and stamps(dead_0, "run_id") == {"run-b"}
    silver_2 = rows_of(silver, 2, "_")
    assert silver_2.column("event_id").to_pylist() == ["d-0", "d-1"]
    assert stamps(silver_2, "_ingested_at") == {d_time}
    assert not rows_of(dead, 2).num_rows

    # The repair of partition 0 was judged against the first attempt's watermark, not the day-later one.
    repairs = {
        m.asset_key.to_user_string(): m.metadata
        for r in daemon.results
        for m in r.asset_materializations_for_node("ingest_micro_batch")
        if m.metadata["offset_ranges"].value == f"{topic}:p0:3-9"
    }
    assert repairs["dead_letters"]["watermark"].value == "2019-03-01T11:59:50+00:00"  # noon less 10 s
    assert repairs["dead_letters"]["committed"].value is True
    assert repairs["silver_events"]["committed"].value is False


def test_a_retry_that_loses_the_bronze_race_stamps_as_bronze(kafka_broker, topic, tmp_path) -> None:
    """Two attempts of one range: the first commits bronze only; the second read Kafka before it and stamps its
    silver and dead-letter rows with the time and run that bronze holds."""
    spec = spec_for(topic, min_records=1)
    lake = LakeLocation(str(tmp_path))
    send(kafka_broker, topic, 0, [event(event_id="x-0"), b"not json", event(event_id="x-1")])
    ranges = [OffsetRange(topic, 0, 0, 3)]

    def first_attempt_commits_bronze(name: str) -> None:
        if name == "commit bronze":
            with pytest.raises(Killed):
                run_micro_batch(kafka_broker, spec, lake, ranges, "run-1", on_phase=die_at("commit silver"))

    report = run_micro_batch(kafka_broker, spec, lake, ranges, "run-2", on_phase=first_attempt_commits_bronze)
    assert not report.outcomes["bronze"].committed and report.outcomes["silver"].committed
    bronze = read_table(lake, spec, "bronze")
    (when,) = stamps(bronze, "ingested_at")
    assert stamps(bronze, "run_id") == {"run-1"}
    silver, dead = read_table(lake, spec, "silver"), read_table(lake, spec, "dead_letters")
    assert silver.column("event_id").to_pylist() == ["x-0", "x-1"]
    assert stamps(silver, "_ingested_at") == {when}
    assert dead.column("reason").to_pylist() == ["malformed_json"]
    assert stamps(dead, "ingested_at") == {when} and stamps(dead, "run_id") == {"run-1"}


def assert_moved_on(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, ends: dict[int, int]
) -> None:
    for table in OFFSET_TABLES:
        assert committed_offsets(lake.uri(spec.name, table), spec.name, spec.source.topic, list(ends)) == ends


def test_the_poison_record_through_the_sensor_and_job_is_one_unparseable_dead_letter(
    kafka_broker, topic, tmp_path
) -> None:
    """Issue 12's record: 8,000 nested arrays, under max_record_bytes, among good records on every partition,
    beside odd but valid ones (a NUL and an emoji in the id, an event time in year 9999) that Delta must take
    when the spec turns the event-time bounds off."""
    base = spec_for(topic, min_records=1, max_records_per_run=1000)
    spec = base.model_copy(
        update={"time": base.time.model_copy(update={"max_future_skew": None, "min_event_time": None})}
    )
    assert len(DEEP) <= spec.schema_.max_record_bytes
    lake = LakeLocation(str(tmp_path))
    odd = [
        event(event_id="nul\u0000id"),
        event(event_id="emoji\U0001f600", event_time="9999-12-31T23:59:59Z"),
    ]
    good = {p: [event(event_id=f"g-{p}-{i}") for i in range(10)] for p in range(3)}
    send(kafka_broker, topic, 0, good[0])
    send(kafka_broker, topic, 1, [*good[1][:4], DEEP, *good[1][4:]])  # the poison record at offset 4
    send(kafka_broker, topic, 2, good[2] + odd)
    daemon = make_daemon(spec, kafka_broker, tmp_path)
    assert daemon.catch_up() == 1
    assert all(r.success for r in daemon.results)
    tables = assert_reconciled(kafka_broker, spec, lake)
    dead = tables["dead_letters"]
    assert list(
        zip(dead.column("partition").to_pylist(), dead.column("offset").to_pylist(), strict=True)
    ) == [(1, 4)]
    assert dead.column("reason").to_pylist() == ["unparseable"]
    assert dead.column("detail").to_pylist() == [
        "RecursionError: maximum recursion depth exceeded while deserializing an object"
    ]
    assert dead.column("value").to_pylist() == [DEEP]
    assert sorted(tables["silver"].column("event_id").to_pylist()) == sorted(
        [f"g-{p}-{i}" for p in range(3) for i in range(10)] + ["nul\u0000id", "emoji\U0001f600"]
    )
    assert_moved_on(kafka_broker, spec, lake, {0: 10, 1: 11, 2: 12})
    (result,) = daemon.results
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("ingest_micro_batch")
    }
    assert meta["dead_letters"]["dead_letters_unparseable"].value == 1
    # And the partitions keep moving: the next records are ingested by the next run.
    send(kafka_broker, topic, 1, [event(event_id="after")])
    assert daemon.catch_up() == 1 and daemon.results[-1].success
    assert_moved_on(kafka_broker, spec, lake, {0: 10, 1: 12, 2: 12})
    skip = daemon.tick()
    assert isinstance(skip, dg.SkipReason) and "no new records" in skip.skip_message


def test_silver_whose_newest_event_is_in_year_1_does_not_stop_later_batches(
    kafka_broker, topic, tmp_path
) -> None:
    """A first batch of one record from 0001-01-01: the next batch's duplicate window, lateness bound and
    watermark reach before year 1, which must clamp rather than fail every run from then on (with the spec's
    event-time bounds off: by default such a record is a dead letter, ``before_min_event_time``)."""
    base = spec_for(topic, min_records=1)
    spec = base.model_copy(
        update={
            "time": base.time.model_copy(
                update={
                    "allowed_lateness": 60.0,
                    "max_lateness": 600.0,
                    "max_future_skew": None,
                    "min_event_time": None,
                }
            )
        }
    )
    lake = LakeLocation(str(tmp_path))
    send(kafka_broker, topic, 0, [event(event_id="ancient", event_time="0001-01-01T00:00:30Z")])
    daemon = make_daemon(spec, kafka_broker, tmp_path)
    assert daemon.catch_up() == 1
    send(
        kafka_broker,
        topic,
        0,
        [
            event(event_id="ancient"),
            event(event_id="next", event_time="0001-01-01T00:00:10Z"),
            event(event_id="now"),
        ],
    )
    send(kafka_broker, topic, 1, [event(event_id="p-1")])
    send(kafka_broker, topic, 2, [event(event_id="p-2")])
    assert daemon.catch_up() == 1
    assert all(r.success for r in daemon.results)
    tables = assert_reconciled(kafka_broker, spec, lake)
    assert sorted(tables["silver"].column("event_id").to_pylist()) == ["ancient", "next", "now", "p-1", "p-2"]
    dead = tables["dead_letters"]
    assert dead.column("reason").to_pylist() == ["duplicate_id"]
    assert dead.column("offset").to_pylist() == [1]
    assert_moved_on(kafka_broker, spec, lake, {0: 4, 1: 1, 2: 1})
