"""Read exact offset ranges ``[start, end)`` of Kafka partitions into one Arrow table.

A range is read with assign + seek (no consumer group) and ``read_committed``, and a partition is done when the
consumer's *position* reaches ``end`` — never by counting records: compaction removes records and every
transaction leaves a marker offset that carries no record, so a range may hold fewer records than offsets, or
none at all (a range of markers only is valid and yields no rows). Records at or past ``end`` that arrive in the
same fetch belong to the next range and are dropped.

Broker loss: kafka-python reconnects silently, for ever, so a read whose broker died would only end at the
stall timeout. Instead, once no partition has moved for a few seconds the reader probes the bootstrap servers
(:func:`~rt_training.stream.client.check_reachable`); when none answers, :class:`ReadStalledError` says so at once
(a few seconds after the broker's death), and a broker that answers but refuses the credentials raises the
probe's authentication or TLS error. A live broker that sends nothing is a stall after ``stall_timeout_s``.

Data loss: a range that starts below the partition's earliest offset lost records to retention before they were
read. By default that raises :class:`DataLossError`; with ``on_data_loss="skip"`` the reader continues from the
earliest offset and returns the gap (:class:`DataGap`) for the caller to record in the commit.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from rt_training.lake.tables import BRONZE_SCHEMA, RECORD_SCHEMA
from rt_training.stream.client import (
    KafkaSettings,
    KafkaUnreachableError,
    check_reachable,
    make_consumer,
    translate_timeouts,
)
from rt_training.stream.offsets import OffsetBounds, read_bounds
from rt_training.stream.planner import OffsetRange

OnDataLoss = Literal["fail", "skip"]

CONSUMER_OPTIONS: Mapping[str, Any] = {
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_poll_records": 100_000,
    "fetch_max_wait_ms": 100,
    "receive_buffer_bytes": 4 * 1024 * 1024,
}
"""Large fetches: a range is read as fast as the broker sends it, few polls per range."""

_POLL_MS = 500
_MIN_POLL_RECORDS = 500
"""Floor of a poll's ``max_records`` (see :func:`_consume`)."""
DEFAULT_STALL_TIMEOUT_S = 12.0
"""No progress for this long, although a broker answers, is a stall."""
_PROBE_AFTER_S = 3.0
"""No progress for this long probes the bootstrap servers, and again this long after each probe that answered."""
_PROBE_TIMEOUT_S = 3.0
"""How long a probe waits for some bootstrap server to answer."""


class DataLossError(RuntimeError):
    """Records of a range were deleted (retention) before they were read."""

    def __init__(self, topic: str, partition: int, expected: int, earliest: int):
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.earliest = earliest
        super().__init__(
            f"data loss on topic {topic!r} partition {partition}: the next offset to read is {expected}, but the "
            f"partition now starts at {earliest}, so offsets [{expected}, {earliest}) were deleted (retention) "
            "before they were read. Raise the topic's retention (retention.ms / retention.bytes) so the pipeline "
            "keeps up; to accept the loss and continue from the earliest offset, set ingest.on_data_loss: skip in "
            "the pipeline spec (the gap is then recorded in the Delta commit's metadata)."
        )


class ReadStalledError(TimeoutError):
    """A partition's position stopped moving before it reached the range's end."""

    def __init__(
        self,
        topic: str,
        partition: int,
        position: int,
        end: int,
        waited_s: float,
        bootstrap: str,
        reachable: bool,
    ):
        self.topic = topic
        self.partition = partition
        self.position = position
        self.end = end
        self.waited_s = waited_s
        cause = (
            f"Kafka at {bootstrap} accepts connections, so the broker may be hung or overloaded, the partition's "
            "leader unavailable, or the range may end beyond the last stable offset (an open transaction)"
            if reachable
            else f"Kafka at {bootstrap} is unreachable (the broker stopped?)"
        )
        super().__init__(
            f"reading topic {topic!r} partition {partition} stalled at offset {position} before the range's end "
            f"{end}: no progress for {waited_s:.1f}s. {cause}. Nothing was committed; the run can be retried."
        )


class OffsetRangeError(ValueError):
    """A range cannot be read as asked (it ends beyond the partition's end)."""


@dataclass(frozen=True)
class DataGap:
    """Offsets ``[start, end)`` of a partition deleted by retention before they were read."""

    topic: str
    partition: int
    start: int
    end: int

    def to_dict(self) -> dict[str, int | str]:
        return {"topic": self.topic, "partition": self.partition, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class ReadResult:
    """The records of some ranges, ordered by (topic, partition, offset)."""

    table: pa.Table
    ranges: tuple[OffsetRange, ...]
    gaps: tuple[DataGap, ...]
    """Offsets skipped as lost (only with ``on_data_loss="skip"``)."""
    earliest: dict[tuple[str, int], int]
    """(topic, partition) -> the partition's earliest offset when the read started."""
    end_offsets: dict[tuple[str, int], int]
    """(topic, partition) -> the partition's last stable offset when the read started."""
    seconds: float
    decoded_past_end: int = 0
    """Records the client decoded beyond the ranges' ends and this read dropped (work wasted per read)."""

    @property
    def records(self) -> int:
        return self.table.num_rows


@dataclass
class _Partition:
    """Reading state of one range."""

    range: OffsetRange
    position: int
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)

    def add(self, records: list[Any]) -> int:
        """Keep the records before the range's end; returns how many were dropped past it."""
        end = self.range.end
        dropped = 0
        if records[-1].offset >= end:
            kept = bisect_left(records, end, key=lambda r: r.offset)
            dropped, records = len(records) - kept, records[:kept]
            if not records:
                return dropped
        self.offsets.extend([r.offset for r in records])
        self.timestamps.extend([r.timestamp for r in records])
        self.keys.extend([r.key for r in records])
        self.values.extend([r.value for r in records])
        return dropped

    def table(self) -> pa.Table:
        n = len(self.offsets)
        return pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(self.range.topic, pa.string()), n),
                pa.repeat(pa.scalar(self.range.partition, pa.int32()), n),
                pa.array(self.offsets, pa.int64()),
                pa.array(self.timestamps, pa.int64()).cast(RECORD_SCHEMA.field("timestamp").type),
                pa.array(self.keys, pa.binary()),
                pa.array(self.values, pa.binary()),
            ],
            schema=RECORD_SCHEMA,
        )


def read_range(
    settings: KafkaSettings,
    topic: str,
    partition: int,
    start: int,
    end: int,
    **options: Any,
) -> ReadResult:
    """The records of offsets ``[start, end)`` of one partition; options as for :func:`read_ranges`."""
    return read_ranges(settings, [OffsetRange(topic, partition, start, end)], **options)


def read_ranges(
    settings: KafkaSettings,
    ranges: Sequence[OffsetRange],
    *,
    on_data_loss: OnDataLoss = "fail",
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    run_id: str | None = None,
    ingested_at: datetime | None = None,
    consumer_options: Mapping[str, Any] | None = None,
) -> ReadResult:
    """Read every range with one consumer, all partitions fetched together.

    Parameters
    ----------
    ranges
        At most one range per (topic, partition); ``end`` at most the partition's last stable offset.
    on_data_loss
        ``"fail"``: a range starting below the partition's earliest offset raises :class:`DataLossError`.
        ``"skip"``: read from the earliest offset and report the lost offsets in ``ReadResult.gaps``.
    stall_timeout_s
        No partition's position moving for this long, although a broker answers, raises
        :class:`ReadStalledError`; when no broker answers (probed after a few seconds without progress) it is
        raised at once.
    run_id, ingested_at
        With ``run_id``, the table has bronze's columns (``ingested_at`` defaults to now); without, the six
        record columns only.

    Raises
    ------
    DataLossError, ReadStalledError, OffsetRangeError
        As above; OffsetRangeError when a range ends beyond the partition's end offset.
    KafkaAuthenticationError, KafkaTLSError, KafkaProtocolMismatchError
        Reading stopped and the probe's answer was a refusal (credentials revoked, certificate changed).
    UnknownTopicError
        The topic or partition does not exist.
    KafkaUnreachableError
        No broker answered.
    """
    checked = _validated(ranges)
    started = time.monotonic()
    opts = {**CONSUMER_OPTIONS, **(consumer_options or {})}
    consumer = make_consumer(settings, **opts)
    try:
        with translate_timeouts(settings):
            bounds = _bounds(consumer, checked, settings)
            parts, gaps = _plan(checked, bounds, on_data_loss)
            past_end = _consume(consumer, parts, settings, on_data_loss, gaps, stall_timeout_s)
    finally:
        consumer.close(autocommit=False)
    table = pa.concat_tables([parts[(r.topic, r.partition)].table() for r in checked])
    if run_id is not None:
        when = ingested_at or datetime.now(UTC)
        table = table.append_column(
            BRONZE_SCHEMA.field("ingested_at"),
            pa.repeat(pa.scalar(when, BRONZE_SCHEMA.field("ingested_at").type), len(table)),
        ).append_column(BRONZE_SCHEMA.field("run_id"), pa.repeat(pa.scalar(run_id, pa.string()), len(table)))
    return ReadResult(
        table=table,
        ranges=tuple(checked),
        gaps=tuple(gaps),
        earliest={tp: b.earliest for tp, b in bounds.items()},
        end_offsets={tp: b.end for tp, b in bounds.items()},
        seconds=time.monotonic() - started,
        decoded_past_end=past_end,
    )


def _validated(ranges: Sequence[OffsetRange]) -> list[OffsetRange]:
    if not ranges:
        raise ValueError("no offset ranges to read")
    seen: set[tuple[str, int]] = set()
    for r in ranges:
        if r.start < 0 or r.end < r.start:
            raise OffsetRangeError(
                f"invalid offset range of topic {r.topic!r} partition {r.partition}: [{r.start}, {r.end})"
            )
        if (r.topic, r.partition) in seen:
            raise OffsetRangeError(
                f"two ranges for topic {r.topic!r} partition {r.partition}; give one range per partition"
            )
        seen.add((r.topic, r.partition))
    return sorted(ranges)


def _bounds(
    consumer: Any, ranges: list[OffsetRange], settings: KafkaSettings
) -> dict[tuple[str, int], OffsetBounds]:
    out: dict[tuple[str, int], OffsetBounds] = {}
    for topic in sorted({r.topic for r in ranges}):
        partitions = [r.partition for r in ranges if r.topic == topic]
        for p, b in read_bounds(consumer, topic, settings, partitions).items():
            out[(topic, p)] = b
    return out


def _plan(
    ranges: list[OffsetRange], bounds: Mapping[tuple[str, int], OffsetBounds], on_data_loss: OnDataLoss
) -> tuple[dict[tuple[str, int], _Partition], list[DataGap]]:
    """Where each partition's reading starts; lost offsets below the earliest raise or become gaps."""
    parts: dict[tuple[str, int], _Partition] = {}
    gaps: list[DataGap] = []
    for r in ranges:
        b = bounds[(r.topic, r.partition)]
        if r.end > b.end:
            raise OffsetRangeError(
                f"range [{r.start}, {r.end}) of topic {r.topic!r} partition {r.partition} ends beyond the partition's "
                f"last stable offset {b.end}. Was the topic deleted and created again (offsets restart at 0), or the "
                "range planned from a read_uncommitted end offset? Plan ranges from the offsets in the lake tables and "
                "Kafka's read_committed end offsets."
            )
        start = r.start
        if start < b.earliest:
            if on_data_loss != "skip":
                raise DataLossError(r.topic, r.partition, start, b.earliest)
            start = min(b.earliest, r.end)
            gaps.append(DataGap(r.topic, r.partition, r.start, start))
        parts[(r.topic, r.partition)] = _Partition(r, start)
    return parts, gaps


def _consume(
    consumer: Any,
    parts: dict[tuple[str, int], _Partition],
    settings: KafkaSettings,
    on_data_loss: OnDataLoss,
    gaps: list[DataGap],
    stall_timeout_s: float,
) -> int:
    """Poll until every partition's position reaches its end (positions are checked after each poll).

    Returns the number of records polled beyond the ranges' ends (decoded, then dropped).
    """
    from kafka import TopicPartition
    from kafka.errors import OffsetOutOfRangeError

    tps = {TopicPartition(*key): part for key, part in parts.items()}
    active = {tp for tp, part in tps.items() if part.position < part.range.end}
    if not active:
        return 0
    past_end = 0
    consumer.assign(sorted(active))
    for tp in active:
        consumer.seek(tp, tps[tp].position)
    last_progress = last_probe = time.monotonic()
    position_timeout_ms = int(settings.request_timeout_s * 1000)
    while active:
        # A fetch returns up to max_partition_fetch_bytes per partition, often far past a range's end (a live
        # topic keeps growing; a backlog is read in several ranges). kafka-python decodes records lazily, as a
        # poll takes them, so asking for no more than the nearest range end leaves the records past it undecoded
        # (measured: decoding them had doubled a range's read time).
        nearest = min(tps[tp].range.end - tps[tp].position for tp in active)
        try:
            batches = consumer.poll(timeout_ms=_POLL_MS, max_records=max(nearest, _MIN_POLL_RECORDS))
        except OffsetOutOfRangeError as exc:
            _recover_out_of_range(consumer, exc, tps, active, on_data_loss, gaps, settings)
            last_progress = time.monotonic()
            continue
        for tp, records in batches.items():
            if tp in active and records:
                past_end += tps[tp].add(records)
            else:
                past_end += len(records)
        progressed = False
        for tp in sorted(active):
            position = consumer.position(tp, timeout_ms=position_timeout_ms)
            part = tps[tp]
            if position is not None and position != part.position:
                part.position = position
                progressed = True
            if part.position >= part.range.end:
                active.discard(tp)
                consumer.pause(tp)
        now = time.monotonic()
        if progressed:
            last_progress = now
            continue
        if not active:
            break
        stalled = now - last_progress > stall_timeout_s
        if stalled or min(now - last_progress, now - last_probe) >= _PROBE_AFTER_S:
            reachable = _answers(settings)
            last_probe = time.monotonic()
            if stalled or not reachable:
                tp = min(active)
                part = tps[tp]
                raise ReadStalledError(
                    tp.topic,
                    tp.partition,
                    part.position,
                    part.range.end,
                    last_probe - last_progress,
                    settings.bootstrap_servers,
                    reachable,
                )
    return past_end


def _answers(settings: KafkaSettings) -> bool:
    """Whether some bootstrap server completes a connection within a few seconds.

    A refusal (authentication, TLS, protocol) raises its own error: retrying cannot make progress.
    """
    try:
        check_reachable(settings, timeout_s=_PROBE_TIMEOUT_S)
    except KafkaUnreachableError:
        return False
    return True


def _recover_out_of_range(
    consumer: Any,
    exc: Exception,
    tps: Mapping[Any, _Partition],
    active: set[Any],
    on_data_loss: OnDataLoss,
    gaps: list[DataGap],
    settings: KafkaSettings,
) -> None:
    """A fetch position fell below the partition's earliest offset while reading (retention ran mid-read)."""
    positions: Mapping[Any, int] = exc.args[0] if exc.args and isinstance(exc.args[0], Mapping) else {}
    if not positions:
        raise exc
    timeout_ms = int(settings.request_timeout_s * 1000)
    earliest = consumer.beginning_offsets(list(positions), timeout_ms=timeout_ms)
    for tp, position in positions.items():
        part = tps[tp]
        first = earliest[tp]
        if position >= first:
            raise OffsetRangeError(
                f"offset {position} of topic {tp.topic!r} partition {tp.partition} is out of range although the "
                f"partition starts at {first}: the log was truncated (leader change with data loss?)"
            ) from exc
        if on_data_loss != "skip":
            raise DataLossError(tp.topic, tp.partition, position, first) from exc
        resume = min(first, part.range.end)
        gaps.append(DataGap(tp.topic, tp.partition, position, resume))
        part.position = resume
        if resume >= part.range.end:
            active.discard(tp)
            consumer.pause(tp)
        else:
            consumer.seek(tp, resume)
