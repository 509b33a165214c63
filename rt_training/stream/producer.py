"""Send the synthetic stream of a pipeline spec to Kafka at a steady rate.

The topic is created when missing (the spec's partition count unless told otherwise). Messages are batched by the
client (``linger_ms``, ``batch_size``) and sent by the idempotent producer with ``acks=all``, so a retry never
duplicates an event. A token bucket holds the average rate: a late start catches up by at most one second's
worth of events, so a stall never turns into a burst.

Ctrl-C (``KeyboardInterrupt``; ``rt-training produce`` turns SIGTERM into one too) ends an open-ended run: what
was handed to the client is flushed within :data:`INTERRUPTED_FLUSH_S` and the summary says ``interrupted``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rt_training.spec.models import PipelineSpec
from rt_training.stream.admin import create_topic, partition_count
from rt_training.stream.bad_records import OVERSIZE_SPREAD
from rt_training.stream.client import KafkaSettings, make_producer, translate_timeouts
from rt_training.stream.synthetic import EventGenerator, SimulatedClock, WallClock

if TYPE_CHECKING:
    from kafka import KafkaProducer

# Brokers accept about 1 MB per message unless a topic says otherwise (message.max.bytes = 1048588).
BROKER_DEFAULT_MAX_MESSAGE = 1_000_000
MAX_CHUNK = 2000
CHUNKS_PER_S = 50
BURST_S = 1.0
FLUSH_TIMEOUT_S = 60.0
# An interrupted run is being asked to stop: a reachable broker acknowledges a linger's worth of events in well
# under a second, and one that does not is reported rather than waited for.
INTERRUPTED_FLUSH_S = 5.0


class ProduceError(RuntimeError):
    """Some events were not delivered; the message names the topic, how many, and the first error."""


@dataclass(frozen=True)
class ProduceProgress:
    """Where a running producer stands, handed to the progress callback every few seconds."""

    topic: str
    sent: int
    bad: int
    seconds: float
    recent_rate: float
    drifting: bool = False

    def line(self) -> str:
        return (
            f"produce {self.topic}: {self.sent:,} sent in {self.seconds:.0f}s, {self.recent_rate:,.0f} events/s now, "
            f"{self.bad:,} bad" + (", after the drift point" if self.drifting else "")
        )


@dataclass
class ProduceSummary:
    """What a finished run sent: counts by bad kind, the time it took (flush included) and whether Ctrl-C ended
    it. Every event counted in ``sent`` was acknowledged by the cluster, else :func:`produce` raises."""

    topic: str
    partitions: int
    sent: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False
    topic_created: bool = False

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.bad.items())) or "none"
        ended = " (interrupted)" if self.interrupted else ""
        return (
            f"produced {self.sent:,} events to {self.topic} ({self.partitions} partitions) in {self.seconds:.1f}s, "
            f"{self.events_per_s:,.0f} events/s{ended}; bad records: {sum(self.bad.values()):,} ({kinds})"
        )


class TokenBucket:
    """Paces a sender to ``rate`` events/s on average, with at most ``burst_s`` seconds of saved-up credit.

    Each ``take(n)`` books the next ``n / rate`` seconds of a schedule and sleeps until that slot starts; a sender
    that fell behind goes at once, but never claims slots more than ``burst_s`` in the past. A rate of 0 means
    no limit.
    """

    def __init__(
        self,
        rate: float,
        burst_s: float = BURST_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = rate
        self.burst_s = burst_s
        self._clock = clock
        self._sleep = sleep
        self._due = clock()

    def take(self, n: int) -> float:
        """Wait until ``n`` events may go; returns the seconds slept."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        slot = max(self._due, now - self.burst_s)
        self._due = slot + n / self.rate
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0


class Deliveries:
    """Counts failed deliveries reported by the client's callbacks, keeping the first error."""

    def __init__(self) -> None:
        self.failed = 0
        self.first: BaseException | None = None

    def on_error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first is None:
            self.first = exc

    def close(
        self,
        producer: KafkaProducer,
        settings: KafkaSettings,
        sent: int,
        what: str,
        topic: str,
        timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        """Flush and close ``producer`` within ``timeout_s`` each, then raise :class:`ProduceError` if any of the
        ``sent`` records (named ``what``, e.g. "events") was not delivered to ``topic``."""
        with translate_timeouts(settings):
            producer.flush(timeout=timeout_s)
            producer.close(timeout=timeout_s)
        if self.failed:
            raise ProduceError(
                f"{self.failed:,} of {sent:,} {what} were not delivered to topic {topic!r} on "
                f"{settings.bootstrap_servers}: first error {self.first!r}. Check the broker's log and the "
                "topic's max.message.bytes."
            )


def ensure_topic(
    settings: KafkaSettings, spec: PipelineSpec, topic: str, partitions: int | None
) -> tuple[int, bool]:
    """The topic's partition count, creating it when missing; returns ``(partitions, created)``.

    With ``partitions=None`` an existing topic is used as it is, and a new one gets the spec's partition count.
    A topic made here accepts the spec's largest records (oversized ones included) when they exceed the broker's
    default message size.
    """
    if partitions is None:
        existing = partition_count(settings, topic)
        if existing is not None:
            return existing, False
        partitions = spec.source.partitions
    config = {}
    largest = largest_record_bytes(spec)
    if largest > BROKER_DEFAULT_MAX_MESSAGE:
        config["max.message.bytes"] = str(largest + 65_536)
    created = create_topic(
        settings, topic, partitions, config, replication_factor=spec.source.replication_factor
    )
    return partitions, created


def largest_record_bytes(spec: PipelineSpec) -> int:
    """The largest record a topic of ``spec`` must take: the synthetic stream's oversized records included."""
    return spec.schema_.max_record_bytes + 1 + OVERSIZE_SPREAD


def produce(
    settings: KafkaSettings,
    spec: PipelineSpec,
    topic: str | None = None,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    rate: float = 0.0,
    seed: int = 0,
    drift_at: float | None = None,
    drift_strength: float = 1.0,
    bad_ratio: float = 0.0,
    partitions: int | None = None,
    start_ms: int | None = None,
    progress: Callable[[ProduceProgress], None] | None = None,
    progress_every_s: float = 5.0,
    linger_ms: int = 20,
    batch_size: int = 256 * 1024,
) -> ProduceSummary:
    """Send the synthetic stream of ``spec`` to ``topic`` and return what was sent.

    Parameters
    ----------
    settings
        The cluster.
    spec
        The pipeline spec whose events are generated (see :class:`~rt_training.stream.synthetic.EventGenerator`).
    topic
        Default: the spec's source topic.
    count, duration_s
        Stop after this many events, or after this many seconds, whichever comes first; ``None`` or 0 for no
        limit (then only Ctrl-C ends the run).
    rate
        Events per second on average; 0 sends as fast as the client can.
    seed, drift_at, drift_strength, bad_ratio
        Passed to the generator; ``drift_at`` is seconds of event time after the first event.
    partitions
        Partition count for a topic created here; an existing topic with another count is an error.
        ``None``: use an existing topic as it is, or create one with the spec's count.
    start_ms
        Event times from a simulated clock starting here at ``rate`` (1000/s when ``rate`` is 0), for
        reproducible streams; ``None`` stamps events with the wall clock.
    progress
        Called with a :class:`ProduceProgress` every ``progress_every_s`` seconds.

    Raises
    ------
    KafkaUnreachableError
        No broker answered (before or while sending).
    TopicConflictError
        ``partitions`` was given and the topic exists with another count.
    ProduceError
        The client reported events it could not deliver.
    """
    topic = topic or spec.source.topic
    limit = count or None
    deadline_s = duration_s or None
    clock = WallClock() if start_ms is None else SimulatedClock(start_ms, rate or 1000.0)
    generator = EventGenerator(
        spec, seed, clock=clock, drift_at=drift_at, drift_strength=drift_strength, bad_ratio=bad_ratio
    )
    n_partitions, created = ensure_topic(settings, spec, topic, partitions)
    producer = make_producer(
        settings,
        linger_ms=linger_ms,
        batch_size=batch_size,
        max_request_size=max(1_048_576, largest_record_bytes(spec) + 65_536),
    )
    summary = ProduceSummary(topic=topic, partitions=n_partitions, topic_created=created)
    chunk = MAX_CHUNK if rate <= 0 else max(1, min(MAX_CHUNK, int(rate / CHUNKS_PER_S)))
    bucket = TokenBucket(rate)
    deliveries = Deliveries()
    started = time.monotonic()
    last_report, sent_at_report = started, 0
    try:
        with translate_timeouts(settings):
            while limit is None or summary.sent < limit:
                if deadline_s is not None and time.monotonic() - started >= deadline_s:
                    break
                n = chunk if limit is None else min(chunk, limit - summary.sent)
                bucket.take(n)
                batch = generator.generate(n)
                for key, value, kind in batch:
                    producer.send(topic, value=value, key=key).add_errback(deliveries.on_error)
                    summary.sent += 1
                    if kind is not None:
                        summary.bad[kind] += 1
                now = time.monotonic()
                if progress is not None and now - last_report >= progress_every_s:
                    recent = (summary.sent - sent_at_report) / (now - last_report)
                    bad = sum(summary.bad.values())
                    progress(
                        ProduceProgress(
                            topic, summary.sent, bad, now - started, recent, bool(batch.drifted[-1])
                        )
                    )
                    last_report, sent_at_report = now, summary.sent
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        producer.close(timeout=0)
        raise
    flush_s = INTERRUPTED_FLUSH_S if summary.interrupted else FLUSH_TIMEOUT_S
    deliveries.close(producer, settings, summary.sent, "events", topic, flush_s)
    summary.seconds = time.monotonic() - started
    return summary
