"""Prometheus exporter: turns a :class:`PipelineSnapshot` into metric families at each scrape.

A custom collector (not module-level gauges updated by a loop) so every scrape sees the lake as it is now and
an exporter with no traffic does no work. Every series carries a ``pipeline`` label. Ages are left to PromQL
(``time() - rt_training_last_commit_timestamp_seconds``), the Prometheus convention, so a stuck exporter
cannot make stale data look fresh.

Run it with ``rt-training metrics serve`` (default http://127.0.0.1:9108/metrics).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from rt_training.monitoring.snapshot import PipelineSnapshot, SnapshotGatherer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from wsgiref.simple_server import WSGIServer

    from rt_training.spec import PipelineSpec
    from rt_training.stream.client import KafkaSettings

log = logging.getLogger(__name__)

PREFIX = "rt_training_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=["pipeline", *labels])


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=["pipeline", *labels])


def snapshot_metrics(snap: PipelineSnapshot) -> list[Metric]:
    """The metric families of one snapshot; a family with nothing known is left out entirely."""
    p = snap.pipeline
    families: list[Metric] = []

    def add(family: Metric) -> None:
        if family.samples:
            families.append(family)

    if snap.kafka_up is not None:
        up = _gauge("kafka_up", "1 when Kafka answered the offset queries of this scrape, else 0.", [])
        up.add_metric([p], 1.0 if snap.kafka_up else 0.0)
        add(up)

    end = _gauge(
        "kafka_end_offset",
        "Offset after the last record of each topic partition in Kafka.",
        ["topic", "partition"],
    )
    for partition, offset in sorted(snap.end_offsets.items()):
        end.add_metric([p, snap.topic, str(partition)], offset)
    add(end)

    committed = _gauge(
        "committed_offset",
        "Next offset to read per partition, committed atomically with each lake table's data.",
        ["table", "topic", "partition"],
    )
    for table, offsets in sorted(snap.committed_offsets.items()):
        for partition, offset in sorted(offsets.items()):
            committed.add_metric([p, table, snap.topic, str(partition)], offset)
    add(committed)

    lag = _gauge(
        "consumer_lag_records",
        "Records in Kafka not yet committed to every lake table (end offset minus the slowest table's).",
        ["topic", "partition"],
    )
    for partition, records in sorted(snap.consumer_lag().items()):
        lag.add_metric([p, snap.topic, str(partition)], records)
    add(lag)

    if snap.ingested_events is not None:
        ingested = _counter("ingested_events", "Records landed in the bronze table.", [])
        ingested.add_metric([p], snap.ingested_events)
        add(ingested)

    dead = _counter("dead_letters", "Records routed to the dead-letter table, by reason code.", ["reason"])
    for reason, count in sorted((snap.dead_letters or {}).items()):
        dead.add_metric([p, reason], count)
    add(dead)

    commit = _gauge(
        "last_commit_timestamp_seconds", "Time of the last commit that changed each table's data.", ["table"]
    )
    for table, ts in sorted(snap.last_commit_time.items()):
        commit.add_metric([p, table], ts)
    add(commit)

    latency = _gauge(
        "event_to_silver_latency_seconds",
        "Event time to the silver commit holding the event, quantiles over the last silver batch.",
        ["quantile"],
    )
    for q, seconds in sorted(snap.event_to_silver_latency.items()):
        latency.add_metric([p, str(q)], seconds)
    add(latency)

    if snap.watermark is not None:
        watermark = _gauge(
            "event_time_watermark_seconds",
            "The event-time watermark every window counts from: silver's highest event time minus the allowed "
            "lateness. time() minus it is how far event time trails the wall clock.",
            [],
        )
        watermark.add_metric([p], snap.watermark)
        add(watermark)

    families.extend(_drift_metrics(snap))
    families.extend(_model_metrics(snap))

    # Not `job`: Prometheus gives every scraped series the scrape job's `job` label, and would rename ours.
    failures = _counter("run_failures", "Distinct failed orchestrator runs, by Dagster job.", ["dagster_job"])
    for job, count in sorted((snap.run_failures or {}).items()):
        failures.add_metric([p, job], count)
    add(failures)
    return families


def _drift_metrics(snap: PipelineSnapshot) -> Iterator[Metric]:
    drift = snap.drift
    if drift is None:
        return
    p = snap.pipeline
    for name, doc, value in (
        ("drift_share", "Share of feature columns drifted in the latest drift report.", drift.drift_share),
        ("drifted_columns", "Number of drifted columns in the latest drift report.", drift.n_drifted),
        (
            "dataset_drift",
            "1 when the latest drift report found dataset drift, else 0.",
            float(drift.dataset_drift),
        ),
        ("drift_report_timestamp_seconds", "Creation time of the latest drift report.", drift.created_at),
    ):
        family = _gauge(name, doc, [])
        family.add_metric([p], value)
        yield family
    if drift.columns:
        score = _gauge(
            "column_drift_score",
            "Per-column statistic of the latest drift report (see its stattest).",
            ["column"],
        )
        for col in drift.columns:
            score.add_metric([p, col.column], col.score)
        yield score
    if any(col.details for col in drift.columns):
        detail = _gauge(
            "column_drift_detail",
            "Numbers behind the text, list and vector verdicts of the latest drift report (OOV rate, list "
            "lengths, vector spread), by verdict and name.",
            ["column", "name"],
        )
        for col in drift.columns:
            for name, value in sorted(col.details.items()):
                detail.add_metric([p, col.column, name], value)
        yield detail


def _model_metrics(snap: PipelineSnapshot) -> Iterator[Metric]:
    p = snap.pipeline
    if snap.model_metrics:
        family = _gauge(
            "model_metric",
            "Metrics of the champion and of the last candidate; split says where they were measured: "
            "validation (the training run's validation rows), holdout (the gate's held-out window), train.",
            ["role", "split", "metric"],
        )
        for role, splits in sorted(snap.model_metrics.items()):
            for split, metrics in sorted(splits.items()):
                for metric, value in sorted(metrics.items()):
                    family.add_metric([p, role, split, metric], value)
        yield family
    if snap.last_promotion_time is not None:
        family = _gauge("last_promotion_timestamp_seconds", "Time the current champion was promoted.", [])
        family.add_metric([p], snap.last_promotion_time)
        yield family
    if snap.training_samples_per_second is not None:
        family = _gauge("training_samples_per_second", "Training throughput of the last training run.", [])
        family.add_metric([p], snap.training_samples_per_second)
        yield family


class PipelineCollector(Collector):
    """Calls ``gather`` at each scrape and yields its metrics, plus the exporter's own health series.

    A failing ``gather`` never fails the scrape: it is logged and counted in ``rt_training_exporter_errors_total``
    (as is each section a snapshot reports it could not read).
    """

    def __init__(self, pipeline: str, gather: Callable[[], PipelineSnapshot]):
        self.pipeline = pipeline
        self._gather = gather
        self._errors = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families: list[Metric] = []
        try:
            snap = self._gather()
            families = snapshot_metrics(snap)
            failed = len(snap.errors)
        except Exception:
            log.exception("metrics: gathering the snapshot of pipeline %s failed", self.pipeline)
            failed = 1
        with self._lock:
            self._errors += failed
            errors_total = self._errors
        yield from families
        errors = _counter("exporter_errors", "Snapshot reads that failed (see the exporter's log).", [])
        errors.add_metric([self.pipeline], errors_total)
        yield errors
        duration = _gauge("scrape_duration_seconds", "Time the exporter took to gather this scrape.", [])
        duration.add_metric([self.pipeline], time.perf_counter() - started)
        yield duration


def build_registry(gatherer: SnapshotGatherer) -> CollectorRegistry:
    """A registry holding only this pipeline's collector (no process metrics from the default registry)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(gatherer.spec.name, gatherer.gather))
    return registry


def start_exporter(
    gatherer: SnapshotGatherer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from a background thread; ``port=0`` picks a free port (``server.server_port``)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=build_registry(gatherer))


def serve(
    host: str,
    port: int,
    spec: PipelineSpec,
    lake_root: str,
    kafka_settings: KafkaSettings | None,
    *,
    storage_options: Mapping[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the pipeline's metrics until SIGINT or SIGTERM; ``ready`` receives the URL once listening."""
    gatherer = SnapshotGatherer(spec, lake_root, kafka_settings, storage_options=storage_options)
    server, thread = start_exporter(gatherer, host, port)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if ready is not None:
            ready(f"http://{host}:{server.server_port}/metrics")
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        gatherer.close()
