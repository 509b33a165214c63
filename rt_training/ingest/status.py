"""Where ingestion stands: per partition, the offsets the lake tables committed against Kafka's end offsets.

A view of :class:`rt_training.monitoring.snapshot.PipelineSnapshot` (the numbers the metrics exporter serves),
so ``rt-training ingest status`` and the dashboards agree: the committed offset of a partition is the slowest
offset table's (where the ingest planner starts the next run), lag counts records Kafka still holds past it, and
a table's last commit is its last commit that changed rows. When Kafka cannot be reached the lake side is still
reported, and the status says Kafka is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import OFFSET_TABLES
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings

_INGEST_SECTIONS = tuple(f"{name}:" for name in (*OFFSET_TABLES, "committed offsets", "last commits"))
"""Snapshot errors that concern ingestion (the snapshot also reads drift, registry and run-event tables)."""


@dataclass(frozen=True)
class PartitionStatus:
    """One partition: each offset table's next offset, and Kafka's bounds when it answered."""

    partition: int
    committed: dict[str, int | None]
    """Offset table -> next offset to read (None: the table has committed nothing of this partition)."""
    next_offset: int | None
    """Where ingestion goes on: the slowest table's offset (Kafka's earliest for a table with none)."""
    end: int | None = None
    """Kafka's end offset (last stable offset); None when Kafka did not answer."""
    lag: int | None = None
    """Records Kafka holds past ``next_offset``; None when Kafka did not answer."""

    @property
    def in_step(self) -> bool:
        """Every offset table stands at the same offset."""
        return len(set(self.committed.values())) == 1


@dataclass(frozen=True)
class IngestStatus:
    """Ingestion of one pipeline's topic, from the lake and (when it answers) Kafka."""

    pipeline: str
    topic: str
    lake_root: str
    bootstrap_servers: str
    partitions: list[PartitionStatus]
    last_commit: dict[str, datetime | None]
    """Offset table -> time of its last commit that changed rows (None: no table or no such commit)."""
    bronze_rows: int | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Reason code -> dead letters with that reason (codes with none left out)."""
    kafka_problem: str | None = None
    """Why Kafka's side is missing: unreachable, or no such topic."""
    watermark: datetime | None = None
    """The pipeline's event-time watermark (None before the first silver row)."""
    errors: list[str] = field(default_factory=list)
    """What of the offset tables could not be read (each names the table or the section)."""

    @property
    def ok(self) -> bool:
        return self.kafka_problem is None and not self.errors

    @property
    def total_lag(self) -> int | None:
        lags = [p.lag for p in self.partitions if p.lag is not None]
        return sum(lags) if lags and len(lags) == len(self.partitions) else None


def ingest_status(spec: PipelineSpec, lake: LakeLocation, settings: KafkaSettings) -> IngestStatus:
    """Read the lake's committed offsets and last commits, and Kafka's offsets when it answers (probe 0.5 s)."""
    from rt_training.monitoring.snapshot import KAFKA_PROBE_S, gather_snapshot

    snap = gather_snapshot(spec, lake.root, settings, storage_options=lake.storage_options)
    problem = None
    if snap.kafka_up is False:
        problem = (
            f"Kafka is unreachable at {settings.bootstrap_servers} (no answer within {KAFKA_PROBE_S:g}s): end "
            "offsets and lag are unknown; the offsets shown are the lake's. Start the local broker with "
            "`rt-training kafka start`, or pass --bootstrap-servers / set KAFKA_BOOTSTRAP_SERVERS."
        )
    elif not snap.end_offsets:
        problem = (
            f"topic {spec.source.topic!r} does not exist on the Kafka cluster at {settings.bootstrap_servers}: "
            "end offsets and lag are unknown. Check source.topic in the pipeline spec."
        )
    committed = {t: snap.committed_offsets.get(t, {}) for t in OFFSET_TABLES}
    numbers = sorted(
        set(range(spec.source.partitions))
        | set(snap.end_offsets)
        | {p for c in committed.values() for p in c}
    )
    nexts, lags = snap.next_offsets(), snap.consumer_lag()
    partitions = []
    for p in numbers:
        offsets = {t: committed[t].get(p) for t in OFFSET_TABLES}
        known = [o for o in offsets.values() if o is not None]
        fallback = min(known) if len(known) == len(offsets) else None
        partitions.append(
            PartitionStatus(p, offsets, nexts.get(p, fallback), snap.end_offsets.get(p), lags.get(p))
        )
    return IngestStatus(
        pipeline=spec.name,
        topic=spec.source.topic,
        lake_root=lake.root,
        bootstrap_servers=settings.bootstrap_servers,
        partitions=partitions,
        last_commit={t: _utc(snap.last_commit_time.get(t)) for t in OFFSET_TABLES},
        bronze_rows=snap.ingested_events,
        dead_letters={r: n for r, n in (snap.dead_letters or {}).items() if n},
        kafka_problem=problem,
        errors=[e for e in snap.errors if e.startswith(_INGEST_SECTIONS)],
        watermark=_utc(snap.watermark),
    )


def format_status(status: IngestStatus, now: datetime | None = None) -> str:
    """The status as a table for a terminal."""
    now = now or datetime.now(UTC)
    lines = [f"pipeline {status.pipeline}, topic {status.topic}, lake {status.lake_root}"]
    lines.append(f"{'partition':>9}  {'committed':>12}  {'end':>12}  {'lag':>10}  tables")
    for p in status.partitions:
        if not p.in_step:
            tables = ", ".join(f"{t} {_show(o)}" for t, o in p.committed.items())
        else:
            tables = "nothing committed" if None in p.committed.values() else "in step"
        lines.append(
            f"{p.partition:>9}  {_show(p.next_offset):>12}  {_show(p.end):>12}  {_show(p.lag):>10}  {tables}"
        )
    if status.total_lag is not None:
        lines.append(f"{'total':>9}  {'':>12}  {'':>12}  {status.total_lag:>10}")
    lines.append("last commit: " + ", ".join(f"{t} {_ago(w, now)}" for t, w in status.last_commit.items()))
    if status.bronze_rows is not None:
        dead = sum(status.dead_letters.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(status.dead_letters.items()))
        lines.append(
            f"rows: bronze {status.bronze_rows}, dead letters {dead}" + (f" ({reasons})" if dead else "")
        )
    if status.watermark is not None:
        lines.append(
            f"event-time watermark: {status.watermark:%Y-%m-%d %H:%M:%S}Z "
            f"({_duration(max(0.0, (now - status.watermark).total_seconds()))} behind the wall clock)"
        )
    lines.extend(f"could not read {error}" for error in status.errors)
    if status.kafka_problem:
        lines.append(status.kafka_problem)
    return "\n".join(lines)


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = max(0.0, (now - when).total_seconds())
    return f"{when:%Y-%m-%d %H:%M:%S}Z ({_duration(seconds)} ago)"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _utc(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)
