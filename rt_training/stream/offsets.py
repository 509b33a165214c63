"""Where each partition of a topic begins and ends, and how far the lake is behind.

The end offset comes from a ``read_committed`` consumer, so it is the last stable offset (LSO): records of open
transactions lie beyond it, and a range planned up to it can always be read to its end.
Partitions are listed from fresh cluster metadata on every call, so partitions added to a topic show up at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from rt_training.stream.client import KafkaSettings, make_consumer, translate_timeouts


class UnknownTopicError(LookupError):
    """The topic (or one of its partitions) does not exist on the cluster."""

    def __init__(self, topic: str, bootstrap_servers: str, partition: int | None = None):
        self.topic = topic
        self.partition = partition
        what = f"topic {topic!r}" if partition is None else f"partition {partition} of topic {topic!r}"
        super().__init__(
            f"{what} does not exist on the Kafka cluster at {bootstrap_servers}. Check the topic name in the "
            "pipeline spec (source.topic), or create it with `rt-training kafka create-topic`."
        )


class OffsetBounds(NamedTuple):
    """Offsets ``[earliest, end)`` a partition holds now; ``end`` is the last stable offset."""

    earliest: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.earliest


def list_partitions(consumer: Any, topic: str, settings: KafkaSettings) -> list[int]:
    """The topic's partition ids, from freshly fetched metadata (a reused consumer's cache may be minutes old)."""
    with translate_timeouts(settings):
        consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise UnknownTopicError(topic, settings.bootstrap_servers)
    return sorted(partitions)


def read_bounds(
    consumer: Any, topic: str, settings: KafkaSettings, partitions: Sequence[int] | None = None
) -> dict[int, OffsetBounds]:
    """Partition -> its bounds, through an open ``read_committed`` consumer (one request for all partitions).

    ``partitions`` defaults to all of the topic's; an unknown one raises :class:`UnknownTopicError`.
    """
    from kafka import TopicPartition

    known = list_partitions(consumer, topic, settings)
    wanted = known if partitions is None else sorted(partitions)
    for p in wanted:
        if p not in known:
            raise UnknownTopicError(topic, settings.bootstrap_servers, partition=p)
    tps = [TopicPartition(topic, p) for p in wanted]
    timeout_ms = int(settings.request_timeout_s * 1000)
    with translate_timeouts(settings):
        earliest = consumer.beginning_offsets(tps, timeout_ms=timeout_ms)
        end = consumer.end_offsets(tps, timeout_ms=timeout_ms)
    return {tp.partition: OffsetBounds(earliest[tp], end[tp]) for tp in tps}


def partition_offsets(settings: KafkaSettings, topic: str) -> dict[int, OffsetBounds]:
    """Partition -> ``(earliest, end)`` of every partition of ``topic``.

    Raises :class:`UnknownTopicError` naming the topic, and
    :class:`~rt_training.stream.client.KafkaUnreachableError` when no broker answers.
    """
    consumer = make_consumer(settings)
    try:
        return read_bounds(consumer, topic, settings)
    finally:
        consumer.close(autocommit=False)


def next_offsets(bounds: Mapping[int, OffsetBounds], committed: Mapping[int, int | None]) -> dict[int, int]:
    """Partition -> next offset to read: the committed one, or the earliest for a partition never committed."""
    out = {}
    for p, b in bounds.items():
        c = committed.get(p)
        out[p] = b.earliest if c is None else c
    return out


def lag(bounds: Mapping[int, OffsetBounds], committed: Mapping[int, int | None]) -> dict[int, int]:
    """Partition -> records in Kafka past the committed offset (never negative).

    A committed offset below the earliest (retention deleted unread records) counts from the earliest, since
    only those records can still be read; :func:`lost` reports the others.
    """
    nexts = next_offsets(bounds, committed)
    return {p: max(0, b.end - max(nexts[p], b.earliest)) for p, b in bounds.items()}


def lost(bounds: Mapping[int, OffsetBounds], committed: Mapping[int, int | None]) -> dict[int, int]:
    """Partition -> unread records already deleted by retention (committed offset below the earliest)."""
    out = {}
    for p, b in bounds.items():
        c = committed.get(p)
        if c is not None and c < b.earliest:
            out[p] = b.earliest - c
    return out
