"""Where ingestion stands: per partition, the offsets the lake tables hold against Kafka's end offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.history import last_commit_time
from rt_training.lake.tables import OFFSET_TABLES
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings, KafkaUnreachableError


@dataclass
class PartitionStatus:
    partition: int
    committed: dict[str, int | None]
    """Next offset per table (None: nothing committed yet)."""
    end: int | None = None
    """Kafka's end offset (None when Kafka is unreachable)."""

    @property
    def slowest(self) -> int | None:
        values = [v for v in self.committed.values() if v is not None]
        return min(values) if len(values) == len(self.committed) else None

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return self.end - (self.slowest or 0)


@dataclass
class IngestStatus:
    topic: str
    partitions: list[PartitionStatus]
    last_commit: dict[str, datetime | None] = field(default_factory=dict)
    kafka_error: str | None = None


def ingest_status(spec: PipelineSpec, lake: LakeLocation, settings: KafkaSettings) -> IngestStatus:
    """Read the lake's committed offsets and, when Kafka answers, its end offsets."""
    from rt_training.stream.offsets import partition_offsets

    topic = spec.source.topic
    error = None
    ends: dict[int, int] = {}
    try:
        ends = {p: b.end for p, b in partition_offsets(settings, topic).items()}
    except (KafkaUnreachableError, LookupError) as exc:
        error = str(exc)
    partitions = sorted(set(ends) | set(range(spec.source.partitions)))
    committed = {
        t: committed_offsets(lake.uri(spec.name, t), spec.name, topic, partitions, lake.storage_options)
        for t in OFFSET_TABLES
    }
    rows = [PartitionStatus(p, {t: committed[t][p] for t in OFFSET_TABLES}, ends.get(p)) for p in partitions]
    last = {
        t: last_commit_time(lake.uri(spec.name, t), lake.storage_options, data_only=True)
        for t in OFFSET_TABLES
    }
    return IngestStatus(topic, rows, last, error)


def format_status(status: IngestStatus) -> str:
    lines = [f"topic {status.topic}"]
    lines.append(f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}  tables")
    for p in status.partitions:
        tables = ", ".join(f"{t} {'-' if v is None else v}" for t, v in p.committed.items())
        same = len(set(p.committed.values())) == 1
        lines.append(
            f"{p.partition:>9} {'-' if p.slowest is None else p.slowest:>10} {'-' if p.end is None else p.end:>10} "
            f"{'-' if p.lag is None else p.lag:>8}  {'in step' if same else tables}"
        )
    for table, when in status.last_commit.items():
        lines.append(f"last commit {table}: {when.isoformat(timespec='seconds') if when else 'never'}")
    if status.kafka_error:
        lines.append(f"Kafka: {status.kafka_error}")
    return "\n".join(lines)
