"""Everything the metrics exporter exposes, read from the lake's Delta tables and from Kafka in one cheap pass.

:class:`PipelineSnapshot` is plain data; :class:`SnapshotGatherer` fills it and is the only place that knows
where each number lives. Prometheus scrapes every 15 s, so the gatherer keeps one Delta table handle per table,
refreshes it incrementally (only new commits are read), caches each derived value by table version, and reads
data files only for small column projections of files it has not seen yet.

A missing table leaves its fields empty (the series are absent, which is not an error). Kafka is optional:
when it cannot be reached the snapshot says so (``kafka_up=False``) and carries no end offsets. A table that
exists but cannot be read is recorded in ``errors`` and the other fields are still filled.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from rt_training.ingest.rebuild import REBUILD_KEY
from rt_training.lake.history import DATA_OPERATIONS
from rt_training.lake.tables import OFFSET_TABLES, open_table, table_uri
from rt_training.lake.tables import lake_root as resolve_lake_root
from rt_training.monitoring.run_events import RUN_EVENTS_TABLE, count_failures_by_job
from rt_training.training.metrics import HOLDOUT, VALIDATION, metric_split

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    import pyarrow as pa
    from deltalake import DeltaTable

    from rt_training.spec import PipelineSpec
    from rt_training.stream.client import KafkaSettings
    from rt_training.stream.offsets import OffsetBounds

log = logging.getLogger(__name__)

T = TypeVar("T")

DRIFT_TABLE = "drift_reports"
REGISTRY_TABLE = "model_registry"
FRESHNESS_TABLES = (*OFFSET_TABLES, "training_set", DRIFT_TABLE, REGISTRY_TABLE, RUN_EVENTS_TABLE)
LATENCY_QUANTILES = (0.5, 0.95)
KAFKA_TIMEOUT_S = 2.0
"""Upper bound on each Kafka request, so a slow cluster answers well inside a scrape timeout."""
KAFKA_PROBE_S = 0.5
"""How long a scrape keeps trying to connect before reporting Kafka down."""
_HISTORY_PAGE = 20


@dataclass(frozen=True)
class ColumnDrift:
    """One column's result in a drift report."""

    column: str
    stattest: str
    score: float
    threshold: float
    drifted: bool
    details: dict[str, float] = field(default_factory=dict)
    """The numbers behind a text, list or vector verdict (OOV rate, lengths, spread); empty for a column."""


@dataclass(frozen=True)
class DriftSummary:
    """The latest drift report of a pipeline."""

    report_id: str
    created_at: float
    """Epoch seconds."""
    drift_share: float
    n_drifted: int
    dataset_drift: bool
    columns: tuple[ColumnDrift, ...] = ()


@dataclass
class PipelineSnapshot:
    """What the exporter exposes about one pipeline at one moment. Times are epoch seconds.

    Empty mappings and ``None`` mean "not known" (a table or a source is missing), never zero.
    """

    pipeline: str
    topic: str
    kafka_up: bool | None = None
    """``None`` when no Kafka cluster is configured, ``False`` when it did not answer."""
    end_offsets: dict[int, int] = field(default_factory=dict)
    """Partition -> offset after the last record in Kafka."""
    earliest_offsets: dict[int, int] = field(default_factory=dict)
    """Partition -> first offset Kafka still holds (where a fresh pipeline starts)."""
    committed_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    """Lake table -> partition -> next offset to read, as committed with the table's data."""
    ingested_events: int | None = None
    """Rows in bronze."""
    dead_letters: dict[str, int] | None = None
    """Reason code -> rows in the dead-letter table."""
    last_commit_time: dict[str, float] = field(default_factory=dict)
    """Table -> time of its last commit that changed data."""
    event_to_silver_latency: dict[float, float] = field(default_factory=dict)
    """Quantile -> seconds from event time to the silver commit that holds the event, over the last batch."""
    watermark: float | None = None
    """The pipeline's event-time watermark (silver's highest event time minus the allowed lateness)."""
    drift: DriftSummary | None = None
    model_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Role (``champion``, ``candidate``) -> split -> metric name -> value. Splits: ``validation`` (the training
    run's validation rows), ``holdout`` (the gate's held-out window), ``train`` (training loss), ``unknown``
    (a promotion recorded before the registry said where its metric came from)."""
    last_promotion_time: float | None = None
    training_samples_per_second: float | None = None
    """Throughput of the last training run."""
    run_failures: dict[str, int] | None = None
    """Job name -> distinct failed runs."""
    errors: list[str] = field(default_factory=list)
    """What could not be read this time (each entry names the table or source)."""

    def next_offsets(self) -> dict[int, int]:
        """Partition -> the slowest offset table's next offset (Kafka's earliest where a table has none).

        The same rule the ingest planner uses, so lag here is exactly what the next runs will read.
        """
        out: dict[int, int] = {}
        for partition, earliest in self.earliest_offsets.items():
            out[partition] = min(
                self.committed_offsets.get(table, {}).get(partition, earliest) for table in OFFSET_TABLES
            )
        return out

    def consumer_lag(self) -> dict[int, int]:
        """Partition -> records in Kafka not yet committed to every lake table (only while Kafka answers).

        Records already deleted by retention are not lag: they can no longer be read.
        """
        from rt_training.stream.offsets import OffsetBounds, lag

        bounds = {
            p: OffsetBounds(earliest, self.end_offsets[p])
            for p, earliest in self.earliest_offsets.items()
            if p in self.end_offsets
        }
        return lag(bounds, self.next_offsets())


class _TableHandle:
    """One Delta table kept open across scrapes, with values derived from it cached by table version."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None):
        self.uri = uri
        self._options = dict(storage_options) if storage_options else None
        self.dt: DeltaTable | None = None
        """The table as of the last :meth:`refresh`; ``None`` when it does not exist (yet)."""
        self._memo: dict[str, tuple[int, Any]] = {}

    def refresh(self) -> None:
        """Move to the latest version, reading only the commits since the last refresh."""
        if self.dt is not None:
            try:
                self.dt.update_incremental()
                return
            except Exception:
                log.warning(
                    "reloading Delta table %s after a failed incremental update", self.uri, exc_info=True
                )
                self.dt = None
                self._memo.clear()
        self.dt = open_table(self.uri, self._options)

    def at_version(self, version: int) -> DeltaTable:
        from deltalake import DeltaTable

        return DeltaTable(self.uri, version=version, storage_options=self._options)

    def read_files(self, dt: DeltaTable, paths: Collection[str], columns: list[str]) -> pa.Table:
        """Some columns of some data files of ``dt`` (paths relative to the table root, as in add actions).

        Opens just those files, through deltalake's storage layer (so object stores work with the table's
        storage options); ``to_pyarrow_dataset`` would first build a fragment for every file of the table.
        """
        import pyarrow as pa
        import pyarrow.dataset as pds
        import pyarrow.fs as pa_fs
        from deltalake.fs import DeltaStorageHandler

        if not paths:
            return pa.table({name: pa.array([], pa.null()) for name in columns})
        filesystem = pa_fs.PyFileSystem(DeltaStorageHandler(dt.table_uri, self._options))
        dataset = pds.dataset(
            sorted(paths), schema=pa.schema(dt.schema().to_arrow()), format="parquet", filesystem=filesystem
        )
        return dataset.to_table(columns=columns)

    def memo(self, key: str, version: int, compute: Callable[[], T]) -> T:
        """``compute()``, unless it already ran for this table version."""
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        self._memo[key] = (version, value)
        return value


def _add_paths(dt: DeltaTable) -> list[str]:
    import pyarrow as pa

    return pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()


def _last_data_commit(dt: DeltaTable) -> dict[str, Any] | None:
    """The newest commit whose operation changed data (history pages of 20, newest first).

    A rebuild of past days (``rt_training.rebuild`` in the commit) is not ingestion: it says nothing of freshness
    or latency, so it is passed over.
    """
    limit = _HISTORY_PAGE
    while True:
        commits = dt.history(limit)
        for commit in commits:
            if commit.get("operation") in DATA_OPERATIONS and REBUILD_KEY not in commit:
                return commit
        if len(commits) < limit:
            return None
        limit *= 4


class _KafkaOffsets:
    """Earliest and end offsets of a topic's partitions through one consumer kept across scrapes."""

    def __init__(self, settings: KafkaSettings):
        self._settings = replace(
            settings,
            connect_timeout_s=min(settings.connect_timeout_s, KAFKA_TIMEOUT_S),
            request_timeout_s=min(settings.request_timeout_s, 2 * KAFKA_TIMEOUT_S),
        )
        self._consumer: Any = None

    def read(self, topic: str) -> dict[int, OffsetBounds]:
        from rt_training.stream.client import check_reachable, make_consumer
        from rt_training.stream.offsets import read_bounds

        # A short probe: a down cluster costs each scrape half a second, and the next scrape tries again.
        check_reachable(self._settings, timeout_s=KAFKA_PROBE_S)
        if self._consumer is None:
            self._consumer = make_consumer(self._settings)
        return read_bounds(self._consumer, topic, self._settings)

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()


class SnapshotGatherer:
    """Reads :class:`PipelineSnapshot` values for one pipeline, keeping handles and caches between calls.

    Safe to call from several scrape threads: calls are serialized.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        lake_root: str,
        kafka_settings: KafkaSettings | None = None,
        *,
        storage_options: Mapping[str, str] | None = None,
    ):
        self.spec = spec
        self.lake_root = resolve_lake_root(lake_root)
        self._tables = {
            name: _TableHandle(table_uri(spec.name, name, self.lake_root), storage_options)
            for name in FRESHNESS_TABLES
        }
        self._kafka = _KafkaOffsets(kafka_settings) if kafka_settings is not None else None
        self._reason_counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def gather(self) -> PipelineSnapshot:
        """A fresh snapshot; a section that fails is logged and named in ``errors``, the rest still filled."""
        with self._lock:
            snap = PipelineSnapshot(pipeline=self.spec.name, topic=self.spec.source.topic)
            self._read_kafka(snap)
            for name, handle in self._tables.items():
                try:
                    handle.refresh()
                except Exception as exc:
                    log.exception("metrics: could not open Delta table %s", handle.uri)
                    snap.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            sections: list[tuple[str, Callable[[PipelineSnapshot], None]]] = [
                ("committed offsets", self._read_committed_offsets),
                ("bronze", self._read_bronze),
                ("dead_letters", self._read_dead_letters),
                ("last commits", self._read_last_commits),
                ("silver latency", self._read_latency),
                ("event-time watermark", self._read_watermark),
                (DRIFT_TABLE, self._read_drift),
                (REGISTRY_TABLE, self._read_registry),
                (RUN_EVENTS_TABLE, self._read_run_events),
            ]
            for name, read in sections:
                try:
                    read(snap)
                except Exception as exc:
                    log.exception(
                        "metrics: could not read %s of pipeline %s under %s",
                        name,
                        snap.pipeline,
                        self.lake_root,
                    )
                    snap.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return snap

    def close(self) -> None:
        """Close the Kafka consumer (Delta handles hold no connections)."""
        if self._kafka is not None:
            self._kafka.close()

    # -- sections ------------------------------------------------------------------------------------
    def _read_kafka(self, snap: PipelineSnapshot) -> None:
        if self._kafka is None:
            return
        from rt_training.stream.offsets import UnknownTopicError

        try:
            bounds = self._kafka.read(snap.topic)
        except UnknownTopicError as exc:
            log.warning("metrics: %s", exc)
            snap.kafka_up = True
        except Exception as exc:
            log.warning("metrics: Kafka offsets of topic %s unavailable: %s", snap.topic, exc)
            self._kafka.close()
            snap.kafka_up = False
        else:
            snap.kafka_up = True
            snap.earliest_offsets = {p: b.earliest for p, b in bounds.items()}
            snap.end_offsets = {p: b.end for p, b in bounds.items()}

    def _read_committed_offsets(self, snap: PipelineSnapshot) -> None:
        from rt_training.lake.exactly_once import read_offsets

        partitions = sorted(set(range(self.spec.source.partitions)) | set(snap.end_offsets))
        for name in OFFSET_TABLES:
            dt = self._tables[name].dt
            if dt is None:
                continue
            versions = read_offsets(dt, snap.pipeline, snap.topic, partitions)
            snap.committed_offsets[name] = {p: v for p, v in versions.items() if v is not None}

    def _read_bronze(self, snap: PipelineSnapshot) -> None:
        handle = self._tables["bronze"]
        dt = handle.dt
        if dt is not None:
            snap.ingested_events = handle.memo("count", dt.version(), dt.count)

    def _read_dead_letters(self, snap: PipelineSnapshot) -> None:
        """Counts for every known reason (zeros included, so a first increment is visible to ``rate()``)."""
        from rt_training.clean.reasons import PRECEDENCE

        handle = self._tables["dead_letters"]
        dt = handle.dt
        if dt is None:
            self._reason_counts.clear()
            if snap.ingested_events is not None:
                snap.dead_letters = {reason.value: 0 for reason in PRECEDENCE}
            return
        counts = handle.memo("reasons", dt.version(), lambda: self._count_reasons(dt))
        snap.dead_letters = {**{reason.value: 0 for reason in PRECEDENCE}, **counts}

    def _count_reasons(self, dt: DeltaTable) -> dict[str, int]:
        """Reason counts kept per data file, so each file is read once (compaction just brings new files)."""
        from collections import Counter

        paths = set(_add_paths(dt))
        for gone in set(self._reason_counts) - paths:
            del self._reason_counts[gone]
        for path in sorted(paths - set(self._reason_counts)):
            reasons = (
                self._tables["dead_letters"].read_files(dt, [path], ["reason"]).column("reason").to_pylist()
            )
            self._reason_counts[path] = dict(Counter(reasons))
        total: Counter[str] = Counter()
        for per_file in self._reason_counts.values():
            total.update(per_file)
        return dict(sorted(total.items()))

    def _read_last_commits(self, snap: PipelineSnapshot) -> None:
        for name, handle in self._tables.items():
            dt = handle.dt
            if dt is None:
                continue
            commit = handle.memo("last_data_commit", dt.version(), lambda dt=dt: _last_data_commit(dt))
            if commit is not None:
                snap.last_commit_time[name] = commit["timestamp"] / 1000.0

    def _read_latency(self, snap: PipelineSnapshot) -> None:
        """Latency over the rows the newest data commit added to silver, to that commit's time."""
        import numpy as np
        import pyarrow as pa

        handle = self._tables["silver"]
        dt = handle.dt
        if dt is None:
            return

        def compute() -> dict[float, float]:
            commit = _last_data_commit(dt)
            if commit is None:
                return {}
            version = int(commit["version"])
            at = dt if version == dt.version() else handle.at_version(version)
            added = set(_add_paths(at)) - (
                set(_add_paths(handle.at_version(version - 1))) if version else set()
            )
            if not added:
                return {}
            times = handle.read_files(at, added, [self.spec.time_field]).column(0).drop_null()
            event_us = times.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            latency = commit["timestamp"] / 1000.0 - np.asarray(event_us, dtype=np.float64) / 1e6
            if latency.size == 0:
                return {}
            return {q: float(np.quantile(latency, q)) for q in LATENCY_QUANTILES}

        snap.event_to_silver_latency = handle.memo("latency", dt.version(), compute)

    def _read_watermark(self, snap: PipelineSnapshot) -> None:
        from rt_training.eventtime import event_clock

        handle = self._tables["silver"]
        dt = handle.dt
        if dt is None:
            return
        clock = handle.memo("clock", dt.version(), lambda: event_clock(self.spec, dt))
        snap.watermark = clock.watermark_s

    def _read_drift(self, snap: PipelineSnapshot) -> None:
        handle = self._tables[DRIFT_TABLE]
        dt = handle.dt
        if dt is not None:
            snap.drift = handle.memo("latest", dt.version(), lambda: _latest_drift(dt))

    def _read_registry(self, snap: PipelineSnapshot) -> None:
        handle = self._tables[REGISTRY_TABLE]
        dt = handle.dt
        if dt is None:
            return
        view = handle.memo(
            "view", dt.version(), lambda: _registry_view(dt.to_pyarrow_table(columns=_REGISTRY_COLUMNS))
        )
        snap.model_metrics, snap.last_promotion_time, snap.training_samples_per_second = view

    def _read_run_events(self, snap: PipelineSnapshot) -> None:
        handle = self._tables[RUN_EVENTS_TABLE]
        dt = handle.dt
        if dt is not None:
            snap.run_failures = handle.memo(
                "failures",
                dt.version(),
                lambda: count_failures_by_job(dt.to_pyarrow_table(columns=["run_id", "job_name", "status"])),
            )


_REGISTRY_COLUMNS = ["seq", "event", "checkpoint_id", "metric_name", "metric_value", "timestamp", "lineage"]
SAMPLES_PER_S_KEY = "samples_per_s"
"""Key of the training throughput in a registered checkpoint's ``lineage["metrics"]``."""


def _lineage_metrics(event: Mapping[str, Any]) -> dict[str, float]:
    metrics = json.loads(event["lineage"] or "{}").get("metrics") or {}
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _split_name(key: str) -> tuple[str, str]:
    """``(split, metric)`` of a training run's metric key: ``holdout_auc``, ``validation_loss``, ``auc``..."""
    if key.startswith("holdout_"):
        return HOLDOUT, key.removeprefix("holdout_")
    if key.startswith("validation_"):
        return VALIDATION, key.removeprefix("validation_")
    if key.startswith("train_"):
        return "train", key.removeprefix("train_")
    return VALIDATION, key


def _role_metrics(event: Mapping[str, Any], primary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Numeric lineage metrics of a checkpoint by split, plus ``primary``'s metric under the split it was
    measured on (:func:`~rt_training.training.metrics.metric_split`)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in _lineage_metrics(event).items():
        if key != SAMPLES_PER_S_KEY:
            split, name = _split_name(key)
            out.setdefault(split, {})[name] = value
    value = primary["metric_value"]
    if primary["metric_name"] and value is not None and math.isfinite(value):
        split = metric_split(primary["event"], json.loads(primary["lineage"] or "{}")) or "unknown"
        out.setdefault(split, {})[str(primary["metric_name"])] = float(value)
    return out


def _registry_view(
    events_table: pa.Table,
) -> tuple[dict[str, dict[str, dict[str, float]]], float | None, float | None]:
    """Champion and last-candidate metrics, last promotion time and training throughput from registry events.

    The champion is replayed as the registry defines it (:mod:`rt_training.training.registry`): ``promoted``
    pushes, ``rolled_back`` pops. The last candidate is the newest ``registered`` checkpoint, scored by its
    gate decision (``promoted``/``rejected``, measured on the held-out window) when it has one.
    """
    events = sorted(events_table.to_pylist(), key=lambda e: e["seq"])
    stack: list[dict[str, Any]] = []
    for event in events:
        if event["event"] == "promoted":
            stack.append(event)
        elif event["event"] == "rolled_back" and stack:
            stack.pop()
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    if stack:
        metrics["champion"] = _role_metrics(stack[-1], stack[-1])
    registered = [e for e in events if e["event"] == "registered"]
    samples_per_s = None
    if registered:
        candidate = registered[-1]
        decisions = [
            e
            for e in events
            if e["event"] in ("promoted", "rejected") and e["checkpoint_id"] == candidate["checkpoint_id"]
        ]
        scored = decisions[-1] if decisions and decisions[-1]["metric_value"] is not None else candidate
        metrics["candidate"] = _role_metrics(candidate, scored)
        samples_per_s = _lineage_metrics(candidate).get(SAMPLES_PER_S_KEY)
    promotions = [e["timestamp"] for e in events if e["event"] == "promoted"]
    last_promotion = max(promotions).timestamp() if promotions else None
    return {role: m for role, m in metrics.items() if m}, last_promotion, samples_per_s


def _latest_drift(dt: DeltaTable) -> DriftSummary | None:
    import pyarrow.compute as pc

    reports = dt.to_pyarrow_table()
    if reports.num_rows == 0:
        return None
    row = reports.slice(int(pc.index(reports["created_at"], pc.max(reports["created_at"])).as_py()), 1)
    latest = row.to_pylist()[0]
    columns = tuple(
        ColumnDrift(
            column=str(c["column"]),
            stattest=str(c["stattest"]),
            score=float(c["score"]),
            threshold=float(c["threshold"]),
            drifted=bool(c["drifted"]),
            details={str(k): float(v) for k, v in (c.get("details") or {}).items()},
        )
        for c in json.loads(latest["columns_json"] or "[]")
    )
    return DriftSummary(
        report_id=str(latest["report_id"]),
        created_at=latest["created_at"].timestamp(),
        drift_share=float(latest["drift_share"]),
        n_drifted=int(latest["n_drifted"]),
        dataset_drift=bool(latest["dataset_drift"]),
        columns=columns,
    )


def gather_snapshot(
    spec: PipelineSpec,
    lake_root: str,
    kafka_settings: KafkaSettings | None = None,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> PipelineSnapshot:
    """One snapshot, read from scratch (a long-running exporter keeps a :class:`SnapshotGatherer` instead)."""
    gatherer = SnapshotGatherer(spec, lake_root, kafka_settings, storage_options=storage_options)
    try:
        return gatherer.gather()
    finally:
        gatherer.close()
