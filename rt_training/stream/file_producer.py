"""Send a user's own records (:mod:`rt_training.stream.file_source`) to a pipeline's topic.

The topic is created when missing, with the spec's partitions and replication factor. Records go in input order
through the idempotent producer (``acks=all``), keyed by a field, so each partition holds its keys' records in
file order. ``rate`` paces them with the synthetic producer's token bucket; 0 sends as fast as the client can.

Bad lines (:class:`~rt_training.stream.file_source.BadLine`) are handled per ``on_bad_line``:

``fail``
    Sending stops at the first bad line and :class:`BadLineError` names it. Every record before it has been
    handed to the client and flushed (delivered, or reported as a :class:`ProduceError`); nothing from that
    line on is sent. :func:`first_bad_line` lets a caller check a whole re-readable file first, so that a file
    with a bad line sends nothing at all.
``skip``
    Bad lines are counted and the first :data:`MAX_BAD_SHOWN` kept for the summary; every good record is sent.

Kafka record timestamps are the producer's clock by default. With ``event_time_timestamps`` each record carries
its event time instead (records without a usable one keep the producer's clock and are counted). A topic with
time-based retention then deletes records whose event time is older than ``retention.ms`` soon after they arrive,
which is why it is off by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

from rt_training.spec.models import PipelineSpec
from rt_training.stream.client import KafkaSettings, make_producer, translate_timeouts
from rt_training.stream.file_source import BadLine, SourceRecord, event_time_ms
from rt_training.stream.producer import (
    FLUSH_TIMEOUT_S,
    INTERRUPTED_FLUSH_S,
    Deliveries,
    TokenBucket,
    ensure_topic,
    largest_record_bytes,
)

OnBadLine = Literal["fail", "skip"]
MAX_BAD_SHOWN = 5
"""How many bad lines a summary keeps, in input order."""


class BadLineError(ValueError):
    """``on_bad_line="fail"`` met a bad line: the message names the input, the line, the reason and what was sent."""

    def __init__(self, source: str, bad: BadLine, sent: int, topic: str | None):
        self.source, self.bad, self.sent, self.topic = source, bad, sent, topic
        if topic is None:
            done = "nothing was sent (the whole file is checked before sending)"
        else:
            done = (
                f"the {sent:,} records before it were sent to topic {topic!r}, nothing from this line on; "
                "after fixing it, send only the lines from here on to avoid duplicates"
            )
        super().__init__(
            f"{source}, line {bad.line}: {bad.reason}; {done}. Fix the line, or pass --on-bad-line skip "
            "to send the good lines and report the bad ones."
        )


@dataclass(frozen=True)
class FileProgress:
    """Where a running send stands, handed to the progress callback every few seconds."""

    topic: str
    sent: int
    bad: int
    seconds: float
    recent_rate: float

    def line(self) -> str:
        return (
            f"produce {self.topic}: {self.sent:,} records sent in {self.seconds:.0f}s, "
            f"{self.recent_rate:,.0f} records/s now, {self.bad:,} bad lines"
        )


@dataclass
class FileProduceSummary:
    """What a finished send did. Every record counted in ``sent`` was acknowledged by the cluster, else
    :func:`send_records` raises :class:`ProduceError`."""

    source: str
    topic: str
    partitions: int
    sent: int = 0
    bad: int = 0
    first_bad: list[BadLine] = field(default_factory=list)
    untimed: int = 0
    """Records sent with the producer's clock although event-time timestamps were asked for (no usable time)."""
    seconds: float = 0.0
    interrupted: bool = False
    topic_created: bool = False

    @property
    def records_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        ended = " (interrupted)" if self.interrupted else ""
        untimed = (
            f"; {self.untimed:,} records had no usable event time and carry the producer's time"
            if self.untimed
            else ""
        )
        return (
            f"produced {self.sent:,} records from {self.source} to {self.topic} ({self.partitions} partitions) "
            f"in {self.seconds:.1f}s, {self.records_per_s:,.0f} records/s{ended}; bad lines skipped: "
            f"{self.bad:,}{untimed}"
        )


def first_bad_line(items: Iterable[SourceRecord | BadLine]) -> BadLine | None:
    """The first bad line of an input, or ``None`` when every line is good (reads the whole input)."""
    return next((item for item in items if isinstance(item, BadLine)), None)


def send_records(
    settings: KafkaSettings,
    spec: PipelineSpec,
    topic: str | None,
    items: Iterable[SourceRecord | BadLine],
    *,
    source: str,
    on_bad_line: OnBadLine = "fail",
    rate: float = 0.0,
    partitions: int | None = None,
    event_time_timestamps: bool = False,
    progress: Callable[[FileProgress], None] | None = None,
    progress_every_s: float = 5.0,
    linger_ms: int = 20,
    batch_size: int = 256 * 1024,
) -> FileProduceSummary:
    """Send the records of ``items`` to ``topic`` in order and return what was sent.

    Parameters
    ----------
    settings
        The cluster.
    spec
        Gives the topic's default name, partitions and replication, and the largest record size.
    topic
        Default: the spec's source topic.
    items
        Records and bad lines, as :func:`~rt_training.stream.file_source.read_records` yields them. Its first
        item is read before the topic is touched, so an unreadable input changes nothing.
    source
        The input's name for messages (a path, or ``stdin``).
    on_bad_line
        ``fail`` or ``skip`` (see the module docstring).
    rate
        Records per second on average; 0 for no limit.
    partitions
        Partition count for a topic created here; an existing topic with another count is an error. ``None``:
        use an existing topic as it is, or create one with the spec's count.
    event_time_timestamps
        Stamp each Kafka record with its event time rather than the producer's clock.
    progress
        Called with a :class:`FileProgress` every ``progress_every_s`` seconds.

    Raises
    ------
    FileSourceError
        The input as a whole is unreadable (raised by ``items``).
    BadLineError
        ``on_bad_line="fail"`` and a bad line was met (after flushing the records before it).
    KafkaUnreachableError, TopicConflictError, ProduceError
        As for the synthetic producer: no broker, a topic of another shape, records not delivered.
    """
    topic = topic or spec.source.topic
    iterator = iter(items)
    first = next(iterator, None)
    remaining = iterator if first is None else chain([first], iterator)
    n_partitions, created = ensure_topic(settings, spec, topic, partitions)
    producer = make_producer(
        settings,
        linger_ms=linger_ms,
        batch_size=batch_size,
        max_request_size=max(1_048_576, largest_record_bytes(spec) + 65_536),
    )
    summary = FileProduceSummary(source=source, topic=topic, partitions=n_partitions, topic_created=created)
    bucket = TokenBucket(rate)
    deliveries = Deliveries()
    failed_at: BadLine | None = None
    started = time.monotonic()
    last_report, sent_at_report = started, 0
    try:
        with translate_timeouts(settings):
            for item in remaining:
                if isinstance(item, BadLine):
                    summary.bad += 1
                    if len(summary.first_bad) < MAX_BAD_SHOWN:
                        summary.first_bad.append(item)
                    if on_bad_line == "fail":
                        failed_at = item
                        break
                    continue
                timestamp = event_time_ms(item.event_time) if event_time_timestamps else None
                if event_time_timestamps and timestamp is None:
                    summary.untimed += 1
                bucket.take(1)
                producer.send(topic, value=item.value, key=item.key, timestamp_ms=timestamp).add_errback(
                    deliveries.on_error
                )
                summary.sent += 1
                now = time.monotonic()
                if progress is not None and now - last_report >= progress_every_s:
                    recent = (summary.sent - sent_at_report) / (now - last_report)
                    progress(FileProgress(topic, summary.sent, summary.bad, now - started, recent))
                    last_report, sent_at_report = now, summary.sent
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        producer.close(timeout=0)
        raise
    flush_s = INTERRUPTED_FLUSH_S if summary.interrupted else FLUSH_TIMEOUT_S
    deliveries.close(producer, settings, summary.sent, f"records from {source}", topic, flush_s)
    summary.seconds = time.monotonic() - started
    if failed_at is not None:
        raise BadLineError(source, failed_at, summary.sent, topic)
    return summary
