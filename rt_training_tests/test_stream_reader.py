"""Exact offset-range reads on a real broker: ranges across partitions, transactions, compaction, data loss."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from rt_training.lake.tables import BRONZE_SCHEMA, RECORD_SCHEMA
from rt_training.ops.kafka_local import free_port
from rt_training.stream.client import KafkaSettings, KafkaUnreachableError, make_admin, make_producer
from rt_training.stream.offsets import UnknownTopicError, partition_offsets
from rt_training.stream.planner import OffsetRange
from rt_training.stream.reader import DataGap, DataLossError, OffsetRangeError, read_range, read_ranges


def produce(settings: KafkaSettings, topic: str, partitions: int, n: int) -> int:
    """``n`` records per partition: value ``b"<partition>:<i>"``, key ``b"k<i>"`` (None for every 4th),
    timestamp ``base + i`` ms; returns ``base`` (now: a timestamp older than the topic's retention would let
    the broker delete the records at once)."""
    base = int(time.time() * 1000)
    producer = make_producer(settings, linger_ms=20, batch_size=64 * 1024)
    for i in range(n):
        for p in range(partitions):
            key = None if i % 4 == 0 else f"k{i}".encode()
            producer.send(topic, key=key, value=f"{p}:{i}".encode(), partition=p, timestamp_ms=base + i)
    producer.flush()
    producer.close()
    return base


def transactional_producer(settings: KafkaSettings):
    producer = make_producer(settings, transactional_id=f"test-{uuid.uuid4().hex}")
    producer.init_transactions()
    return producer


def send_transaction(producer, topic: str, values: list[bytes], *, commit: bool) -> None:
    producer.begin_transaction()
    for v in values:
        producer.send(topic, value=v, partition=0)
    producer.flush()
    if commit:
        producer.commit_transaction()
    else:
        producer.abort_transaction()


def rows(table: pa.Table) -> list[tuple[int, int, bytes]]:
    return list(
        zip(
            table.column("partition").to_pylist(),
            table.column("offset").to_pylist(),
            table.column("value").to_pylist(),
            strict=True,
        )
    )


def test_exact_ranges_across_three_partitions(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=3)
    base = produce(kafka_broker, topic, 3, 200)
    ranges = [OffsetRange(topic, 0, 10, 150), OffsetRange(topic, 1, 0, 200), OffsetRange(topic, 2, 199, 200)]
    result = read_ranges(kafka_broker, list(reversed(ranges)))
    table = result.table
    assert table.schema == RECORD_SCHEMA
    assert result.records == 140 + 200 + 1
    expected = [
        (r.partition, o, f"{r.partition}:{o}".encode()) for r in ranges for o in range(r.start, r.end)
    ]
    assert rows(table) == expected  # ordered by partition, then offset; nothing past an end
    assert set(table.column("topic").to_pylist()) == {topic}
    keys = table.column("key").to_pylist()
    assert keys[:2] == [b"k10", b"k11"] and keys[2] is None  # offset 12: every 4th record has no key
    assert table.column("timestamp")[0].as_py() == datetime.fromtimestamp((base + 10) / 1000, UTC)
    assert result.gaps == ()
    assert result.earliest == {(topic, p): 0 for p in range(3)}
    assert result.end_offsets == {(topic, p): 200 for p in range(3)}
    assert result.ranges == tuple(sorted(ranges))


def test_ranges_longer_than_a_poll_stop_at_their_ends(kafka_broker: KafkaSettings, topic_factory) -> None:
    # Polls take at most the nearest range's remaining records (floored at 500), so these ranges are read in
    # several polls of different sizes while records past each end are already fetched.
    topic = topic_factory(partitions=3)
    produce(kafka_broker, topic, 3, 3000)
    ranges = [
        OffsetRange(topic, 0, 100, 2600),
        OffsetRange(topic, 1, 0, 1210),
        OffsetRange(topic, 2, 2990, 2999),
    ]
    result = read_ranges(kafka_broker, ranges)
    expected = [
        (r.partition, o, f"{r.partition}:{o}".encode()) for r in ranges for o in range(r.start, r.end)
    ]
    assert rows(result.table) == expected
    # Records past the ends stay mostly undecoded: a poll takes no more than the nearest end's remainder, or
    # 500 when that is less, so each partition is overrun once by at most 499 records (partition 0 has only 400
    # past its end, partition 2 one) before it is paused. Polls without the bound decode all 2,191.
    assert result.decoded_past_end <= 400 + 499 + 1


def test_single_range_with_bronze_columns(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_broker, topic, 1, 20)
    when = datetime(2026, 3, 1, tzinfo=UTC)
    result = read_range(kafka_broker, topic, 0, 5, 8, run_id="run-9", ingested_at=when)
    assert result.table.schema == BRONZE_SCHEMA
    assert result.table.column("offset").to_pylist() == [5, 6, 7]
    assert set(result.table.column("run_id").to_pylist()) == {"run-9"}
    assert set(result.table.column("ingested_at").to_pylist()) == {when}
    assert read_range(kafka_broker, topic, 0, 20, 20).records == 0


def test_transactions_aborted_never_appear_and_markers_are_crossed(
    kafka_broker: KafkaSettings, topic_factory
) -> None:
    topic = topic_factory(partitions=1)
    producer = transactional_producer(kafka_broker)
    try:
        send_transaction(producer, topic, [b"c0", b"c1", b"c2"], commit=True)  # 0-2, commit marker 3
        send_transaction(producer, topic, [b"a0", b"a1", b"a2"], commit=False)  # 4-6, abort marker 7
        send_transaction(producer, topic, [b"c3", b"c4"], commit=True)  # 8-9, commit marker 10
    finally:
        producer.close()
    assert partition_offsets(kafka_broker, topic)[0].end == 11
    whole = read_range(kafka_broker, topic, 0, 0, 11).table
    assert rows(whole) == [(0, 0, b"c0"), (0, 1, b"c1"), (0, 2, b"c2"), (0, 8, b"c3"), (0, 9, b"c4")]
    # Ranges made only of markers and aborted records are valid and empty.
    assert read_range(kafka_broker, topic, 0, 10, 11).records == 0
    assert read_range(kafka_broker, topic, 0, 3, 8).records == 0
    assert read_range(kafka_broker, topic, 0, 7, 8).records == 0
    # A range ending inside the aborted transaction, and one starting on a marker.
    assert rows(read_range(kafka_broker, topic, 0, 1, 5).table) == [(0, 1, b"c1"), (0, 2, b"c2")]
    assert rows(read_range(kafka_broker, topic, 0, 3, 10).table) == [(0, 8, b"c3"), (0, 9, b"c4")]


def test_compacted_topic_offsets_still_reach_the_end(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(
        partitions=1,
        config={
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.001",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "0",
        },
    )
    producer = make_producer(kafka_broker, linger_ms=0)
    for i in range(200):
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode(), partition=0)
    producer.flush()
    end = 200
    deadline = time.monotonic() + 45
    result = read_range(kafka_broker, topic, 0, 0, end)
    while result.records == end and time.monotonic() < deadline:
        producer.send(
            topic, key=b"roll", value=b"x", partition=0
        )  # rolls the active segment so it can be cleaned
        producer.flush()
        time.sleep(1)
        result = read_range(kafka_broker, topic, 0, 0, end)
    producer.close()
    if result.records == end:
        pytest.skip("the broker's log cleaner did not compact the topic within 45 s")
    assert rows(result.table) == [(0, o, f"v{o}".encode()) for o in range(195, 200)]
    # A range whose records were all compacted away is valid and empty.
    assert read_range(kafka_broker, topic, 0, 0, 195).records == 0
    assert read_range(kafka_broker, topic, 0, 100, 197).table.column("offset").to_pylist() == [195, 196]


def test_retention_past_unread_offsets_is_data_loss(kafka_broker: KafkaSettings, topic_factory) -> None:
    from kafka import TopicPartition

    topic = topic_factory(partitions=2)
    produce(kafka_broker, topic, 2, 30)
    admin = make_admin(kafka_broker)
    try:
        admin.delete_records({TopicPartition(topic, 1): 12})
    finally:
        admin.close()
    with pytest.raises(DataLossError) as err:
        read_ranges(kafka_broker, [OffsetRange(topic, 0, 0, 30), OffsetRange(topic, 1, 5, 20)])
    e = err.value
    assert (e.topic, e.partition, e.expected, e.earliest) == (topic, 1, 5, 12)
    assert f"topic '{topic}' partition 1" in str(e) and "offsets [5, 12) were deleted" in str(e)
    assert "on_data_loss: skip" in str(e)

    result = read_ranges(
        kafka_broker, [OffsetRange(topic, 0, 0, 30), OffsetRange(topic, 1, 5, 20)], on_data_loss="skip"
    )
    assert result.gaps == (DataGap(topic, 1, 5, 12),)
    assert result.earliest[(topic, 1)] == 12
    assert rows(result.table) == [(0, o, f"0:{o}".encode()) for o in range(30)] + [
        (1, o, f"1:{o}".encode()) for o in range(12, 20)
    ]
    whole_range_lost = read_range(kafka_broker, topic, 1, 2, 9, on_data_loss="skip")
    assert whole_range_lost.records == 0 and whole_range_lost.gaps == (DataGap(topic, 1, 2, 9),)


def test_range_beyond_the_end_is_refused(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_broker, topic, 1, 5)
    with pytest.raises(OffsetRangeError, match=r"ends beyond the partition's last stable offset 5"):
        read_range(kafka_broker, topic, 0, 0, 6)


def test_invalid_and_unknown_ranges(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=1)
    with pytest.raises(OffsetRangeError, match=r"\[5, 2\)"):
        read_range(kafka_broker, topic, 0, 5, 2)
    with pytest.raises(OffsetRangeError, match="two ranges"):
        read_ranges(kafka_broker, [OffsetRange(topic, 0, 0, 1), OffsetRange(topic, 0, 1, 2)])
    with pytest.raises(UnknownTopicError, match=f"partition 4 of topic '{topic}'"):
        read_range(kafka_broker, topic, 4, 0, 1)


def test_unreachable_broker_is_a_clear_error() -> None:
    settings = replace(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(KafkaUnreachableError, match=r"Kafka is unreachable at 127\.0\.0\.1"):
        read_range(settings, "events", 0, 0, 10)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_retention_during_the_read_is_data_loss(
    kafka_broker: KafkaSettings, topic_factory, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """Records deleted after the reader checked the earliest offsets but before it fetched them."""
    from kafka import TopicPartition

    from rt_training.stream import reader

    topic = topic_factory(partitions=1)
    produce(kafka_broker, topic, 1, 40)
    real_plan = reader._plan

    def plan_then_delete(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        admin = make_admin(kafka_broker)
        try:
            admin.delete_records({TopicPartition(topic, 0): 25})
        finally:
            admin.close()
        return planned

    monkeypatch.setattr(reader, "_plan", plan_then_delete)
    if policy == "fail":
        with pytest.raises(DataLossError) as err:
            read_range(kafka_broker, topic, 0, 10, 30)
        assert (err.value.expected, err.value.earliest) == (10, 25)
        return
    result = read_range(kafka_broker, topic, 0, 10, 30, on_data_loss="skip")
    assert result.gaps == (DataGap(topic, 0, 10, 25),)
    assert result.table.column("offset").to_pylist() == list(range(25, 30))
