"""Where each partition of a topic begins and ends, and how far the lake is behind.

The end offset comes from a ``read_committed`` consumer, so it is the last stable offset (LSO): records of open
transactions lie beyond it, and a range planned up to it can always be read to its end.
Partitions are listed from fresh cluster metadata on every call, so partitions added to a topic show up at once.

A consumer group may mirror the lake's offsets (:func:`commit_group_offsets`) so that the tools operators already
use (``kafka-consumer-groups.sh --describe``, Burrow, cloud consoles) show the pipeline's lag. Those offsets are a
copy for display only: the pipeline never reads them back, the Delta tables hold the offsets that count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from rt_training.stream.client import KafkaSettings, make_admin, make_consumer, translate_timeouts

T = TypeVar("T")


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


class GroupCommitError(RuntimeError):
    """The broker refused to commit some partitions' offsets to a consumer group."""


@dataclass(frozen=True)
class GroupCommit:
    """What :func:`commit_group_offsets` did to consumer group ``group_id``."""

    group_id: str
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> the offset committed now."""
    ahead: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> the group's offset, left as it was because it already stood at or beyond the one
    asked for (offsets never move backwards)."""
    error: str | None = None
    """Why nothing or not everything was committed (the caller recorded the failure instead of raising it)."""

    def metadata(self) -> dict[str, Any]:
        """Flat values for run metadata."""
        meta: dict[str, Any] = {
            "consumer_group": self.group_id,
            "consumer_group_committed": self.error is None,
            "consumer_group_partitions_committed": len(self.committed),
            "consumer_group_partitions_ahead": len(self.ahead),
        }
        if self.error is not None:
            meta["consumer_group_error"] = self.error
        return meta


def group_offsets(
    settings: KafkaSettings, group_id: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """(topic, partition) -> the offset consumer group ``group_id`` has committed (None: nothing committed)."""
    admin = make_admin(settings)
    try:
        with translate_timeouts(settings):
            return _retrying(settings, lambda: _group_offsets(admin, group_id, partitions))
    finally:
        admin.close()


def commit_group_offsets(
    settings: KafkaSettings,
    group_id: str,
    offsets: Mapping[tuple[str, int], int],
    metadata: str = "",
) -> GroupCommit:
    """Commit ``offsets`` ((topic, partition) -> next offset to read) to consumer group ``group_id``, forward only.

    The commit goes through the admin API (OffsetCommit as a group with no members, like
    ``kafka-consumer-groups.sh --reset-offsets``), so nothing joins or rebalances the group. A partition where
    the group already stands at or beyond the offset asked for is left as it is: a replayed or late batch never
    moves the group backwards. Reading and then committing is not atomic; two batches committing the same
    partition at the same moment can leave the lower offset until the next batch commits again (display only).

    Raises :class:`GroupCommitError` naming the partitions the broker refused and its error (for instance
    ``UNKNOWN_MEMBER_ID`` while a running consumer is a member of the group), and
    :class:`~rt_training.stream.client.KafkaUnreachableError` when no broker answers.
    """
    from kafka import TopicPartition
    from kafka.errors import NoError
    from kafka.structs import OffsetAndMetadata

    admin = make_admin(settings)
    try:
        with translate_timeouts(settings):
            current = _retrying(settings, lambda: _group_offsets(admin, group_id, list(offsets)))
            forward = {tp: o for tp, o in offsets.items() if current[tp] is None or current[tp] < o}
            ahead = {tp: c for tp, o in offsets.items() if (c := current[tp]) is not None and c >= o}
            if forward:
                request = {
                    TopicPartition(t, p): OffsetAndMetadata(o, metadata, -1) for (t, p), o in forward.items()
                }
                result = _retrying(settings, lambda: admin.alter_group_offsets(group_id, request))
                refused = {
                    f"{tp.topic}[{tp.partition}]": getattr(err, "message", err.__name__)
                    for tp, err in result.items()
                    if err is not NoError
                }
                if refused:
                    raise GroupCommitError(
                        f"consumer group {group_id!r} on {settings.bootstrap_servers} refused the offsets of "
                        f"{', '.join(f'{k} ({v})' for k, v in sorted(refused.items()))}. UNKNOWN_MEMBER_ID or "
                        "REBALANCE_IN_PROGRESS means a running consumer uses this group id: give the pipeline "
                        "a group of its own (ingest.commit_consumer_group)."
                    )
    finally:
        admin.close()
    return GroupCommit(group_id, forward, ahead)


def _retrying(settings: KafkaSettings, call: Callable[[], T]) -> T:
    """``call()``, again while it raises a retriable Kafka error, up to the request timeout. The first group
    request on a cluster makes the broker create its offsets topic, and until that is ready every group request
    answers ``COORDINATOR_NOT_AVAILABLE``; a coordinator that moves answers ``NOT_COORDINATOR``."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + settings.request_timeout_s
    while True:
        try:
            return call()
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def _group_offsets(
    admin: Any, group_id: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    from kafka import TopicPartition

    tps = [TopicPartition(t, p) for t, p in partitions]
    found = admin.list_group_offsets({group_id: tps}).get(group_id, {})
    out: dict[tuple[str, int], int | None] = {}
    for tp in tps:
        committed = found.get(tp)
        # OffsetFetch answers -1 for a partition the group never committed.
        out[(tp.topic, tp.partition)] = (
            committed.offset if committed is not None and committed.offset >= 0 else None
        )
    return out
