"""Earliest/end offsets per partition on a real broker, lag arithmetic, clear errors."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from rt_training.ops.kafka_local import free_port
from rt_training.stream.client import (
    KafkaSettings,
    KafkaUnreachableError,
    make_admin,
    make_consumer,
    make_producer,
)
from rt_training.stream.offsets import (
    OffsetBounds,
    UnknownTopicError,
    lag,
    list_partitions,
    lost,
    next_offsets,
    partition_offsets,
    read_bounds,
)


def produce(settings: KafkaSettings, topic: str, counts: dict[int, int]) -> None:
    producer = make_producer(settings, linger_ms=5)
    for partition, n in counts.items():
        for i in range(n):
            producer.send(topic, value=f"{partition}:{i}".encode(), partition=partition)
    producer.flush()
    producer.close()


def test_offsets_of_each_partition(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=3)
    assert partition_offsets(kafka_broker, topic) == {p: OffsetBounds(0, 0) for p in range(3)}
    produce(kafka_broker, topic, {0: 7, 1: 0, 2: 3})
    bounds = partition_offsets(kafka_broker, topic)
    assert bounds == {0: OffsetBounds(0, 7), 1: OffsetBounds(0, 0), 2: OffsetBounds(0, 3)}
    assert [b.size for b in bounds.values()] == [7, 0, 3]
    earliest, end = bounds[0]
    assert (earliest, end) == (0, 7)


def test_end_offset_is_the_last_stable_offset(kafka_broker: KafkaSettings, topic_factory) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_broker, topic, {0: 4})
    producer = make_producer(kafka_broker, transactional_id=f"open-{uuid.uuid4().hex}")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, value=b"uncommitted", partition=0)
    producer.flush()
    try:
        assert partition_offsets(kafka_broker, topic) == {0: OffsetBounds(0, 4)}
        uncommitted = make_consumer(kafka_broker, isolation_level="read_uncommitted")
        try:
            assert read_bounds(uncommitted, topic, kafka_broker) == {0: OffsetBounds(0, 5)}
        finally:
            uncommitted.close(autocommit=False)
        producer.commit_transaction()
        assert partition_offsets(kafka_broker, topic) == {0: OffsetBounds(0, 6)}  # record + commit marker
    finally:
        producer.close()


def test_new_partitions_appear_on_a_reused_consumer(kafka_broker: KafkaSettings, topic_factory) -> None:
    from kafka.admin import NewPartitions

    topic = topic_factory(partitions=2)
    consumer = make_consumer(kafka_broker)
    try:
        assert list_partitions(consumer, topic, kafka_broker) == [0, 1]
        admin = make_admin(kafka_broker)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=4)})
        finally:
            admin.close()
        assert list_partitions(consumer, topic, kafka_broker) == [0, 1, 2, 3]
        assert set(read_bounds(consumer, topic, kafka_broker)) == {0, 1, 2, 3}
    finally:
        consumer.close(autocommit=False)


def test_unknown_topic_and_partition_are_named(kafka_broker: KafkaSettings, topic_factory) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UnknownTopicError, match=f"topic '{missing}' does not exist") as err:
        partition_offsets(kafka_broker, missing)
    assert err.value.topic == missing
    topic = topic_factory(partitions=1)
    consumer = make_consumer(kafka_broker)
    try:
        with pytest.raises(UnknownTopicError, match=f"partition 3 of topic '{topic}'"):
            read_bounds(consumer, topic, kafka_broker, [0, 3])
    finally:
        consumer.close(autocommit=False)


def test_unreachable_cluster() -> None:
    settings = replace(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), connect_timeout_s=0.5)
    with pytest.raises(KafkaUnreachableError, match=r"Kafka is unreachable at 127\.0\.0\.1"):
        partition_offsets(settings, "anything")


def test_lag_next_and_lost() -> None:
    bounds = {
        0: OffsetBounds(0, 100),
        1: OffsetBounds(50, 80),
        2: OffsetBounds(10, 10),
        3: OffsetBounds(5, 9),
    }
    committed: dict[int, int | None] = {0: 40, 1: 20, 2: None}
    assert next_offsets(bounds, committed) == {0: 40, 1: 20, 2: 10, 3: 5}
    assert lag(bounds, committed) == {0: 60, 1: 30, 2: 0, 3: 4}
    assert lost(bounds, committed) == {1: 30}
