"""The metrics snapshot read from real Delta tables (and a real broker), and the exporter's text format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from deltalake import DeltaTable, write_deltalake
from monitoring_lake import (
    BATCH2_EVENT_AGES_S,
    EVENT_BASE,
    LATEST_DRIFT_COLUMNS,
    build_lake,
    write_ingest_batches,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rt_training.clean.reasons import PRECEDENCE
from rt_training.monitoring.exporter import PipelineCollector, build_registry, start_exporter
from rt_training.monitoring.snapshot import ColumnDrift, DriftSummary, SnapshotGatherer, gather_snapshot
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.client import KafkaSettings

ALL_REASONS_ZERO = {reason.value: 0 for reason in PRECEDENCE}


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset({"pipeline": "clickstream", **labels}.items())


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_snapshot_reads_every_table_exactly(spec: PipelineSpec, tmp_path: Path) -> None:
    built = build_lake(spec, tmp_path)
    snap = gather_snapshot(spec, str(tmp_path))

    assert snap.errors == []
    assert snap.kafka_up is None and snap.end_offsets == {} and snap.consumer_lag() == {}
    offsets = {0: 10, 1: 3}
    assert snap.committed_offsets == {"bronze": offsets, "silver": offsets, "dead_letters": offsets}
    assert snap.ingested_events == 13
    assert snap.dead_letters == {**ALL_REASONS_ZERO, "malformed_json": 2, "missing_field": 1}

    base = tmp_path / spec.name
    expected_commits = {
        table: DeltaTable(base / table).history(1)[0]["timestamp"] / 1000.0
        for table in ("bronze", "silver", "dead_letters", "drift_reports", "run_events", "model_registry")
    }
    assert snap.last_commit_time == expected_commits

    # Batch 2's silver rows are 10, 20 and 30 s older than EVENT_BASE; latency is measured to the commit.
    to_base = built.silver_batch2_commit_s - EVENT_BASE.timestamp()
    assert sorted(BATCH2_EVENT_AGES_S) == [10.0, 20.0, 30.0]
    assert snap.event_to_silver_latency == pytest.approx(
        {0.5: to_base + 20.0, 0.95: to_base + 29.0}, abs=1e-6
    )

    silver_times = DeltaTable(base / "silver").to_pyarrow_table(columns=[spec.time_field]).column(0)
    newest = max(t.timestamp() for t in silver_times.to_pylist())
    assert snap.watermark == pytest.approx(newest - spec.time.allowed_lateness)

    assert snap.drift == DriftSummary(
        report_id="r2",
        created_at=EVENT_BASE.timestamp() + 3600.0,
        drift_share=0.5,
        n_drifted=1,
        dataset_drift=True,
        columns=tuple(ColumnDrift(**c) for c in LATEST_DRIFT_COLUMNS),
    )
    assert snap.run_failures == {"ingest_job": 0, "retraining_job": 2}


def test_model_metrics_follow_the_registry(spec: PipelineSpec, tmp_path: Path) -> None:
    from rt_training.training.registry import ModelRegistry

    build_lake(spec, tmp_path)
    snap = gather_snapshot(spec, str(tmp_path))
    registry = ModelRegistry.for_pipeline(tmp_path, spec.name)

    # c2 was promoted then rolled back: c1 (holdout auc 0.72 at its promotion) is champion again.
    assert registry.champion().checkpoint_id == "c1"
    # Each metric is labelled with where it was measured: the gate's held-out window or the validation split.
    assert snap.model_metrics == {
        "champion": {"holdout": {"auc": 0.72}, "validation": {"val_auc": 0.71, "val_loss": 0.5}},
        "candidate": {"holdout": {"auc": 0.58}, "validation": {"val_auc": 0.61}},
    }
    last_promoted = [e for e in registry.history() if e.event == "promoted"][-1]
    assert last_promoted.checkpoint_id == "c2"
    assert snap.last_promotion_time == last_promoted.timestamp.timestamp()
    assert snap.training_samples_per_second == 1500.0


def test_missing_tables_give_absent_series_not_errors(spec: PipelineSpec, tmp_path: Path) -> None:
    gatherer = SnapshotGatherer(spec, str(tmp_path / "no-lake-here"))
    snap = gatherer.gather()
    assert snap.errors == []
    assert snap.committed_offsets == {} and snap.ingested_events is None and snap.dead_letters is None
    assert snap.last_commit_time == {} and snap.drift is None and snap.model_metrics == {}

    names = {name for name, _ in _samples(generate_latest(build_registry(gatherer)).decode())}
    assert names == {"rt_training_exporter_errors_total", "rt_training_scrape_duration_seconds"}


def test_incremental_reads_follow_appends_and_ignore_compaction(spec: PipelineSpec, tmp_path: Path) -> None:
    built = write_ingest_batches(spec, tmp_path)
    gatherer = SnapshotGatherer(spec, str(tmp_path))
    first = gatherer.gather()
    assert first.dead_letters == {**ALL_REASONS_ZERO, "malformed_json": 2, "missing_field": 1}

    base = tmp_path / spec.name
    for table in ("silver", "dead_letters"):
        DeltaTable(base / table).optimize.compact()
    compacted = gatherer.gather()
    # Compaction rewrites files and commits, but changes no data: counts, latency and freshness stay.
    assert compacted.dead_letters == first.dead_letters
    assert compacted.event_to_silver_latency == first.event_to_silver_latency
    assert compacted.last_commit_time == first.last_commit_time
    assert built.silver_batch2_commit_s == first.last_commit_time["silver"]

    dead = DeltaTable(base / "dead_letters").to_pyarrow_table()
    write_deltalake(base / "dead_letters", dead.slice(0, 1), mode="append")
    appended = gatherer.gather()
    assert appended.dead_letters == {**ALL_REASONS_ZERO, "malformed_json": 2, "missing_field": 1} | {
        dead["reason"][0].as_py(): first.dead_letters[dead["reason"][0].as_py()] + 1
    }
    assert appended.last_commit_time["dead_letters"] > first.last_commit_time["dead_letters"]


def test_exporter_text_has_every_series(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path)
    gatherer = SnapshotGatherer(spec, str(tmp_path))
    samples = _samples(generate_latest(build_registry(gatherer)).decode())
    snap = gatherer.gather()

    for table in ("bronze", "silver", "dead_letters"):
        assert (
            samples[_key("rt_training_committed_offset", table=table, topic="clickstream", partition="0")]
            == 10
        )
        assert (
            samples[_key("rt_training_committed_offset", table=table, topic="clickstream", partition="1")]
            == 3
        )
    assert samples[_key("rt_training_ingested_events_total")] == 13
    assert samples[_key("rt_training_dead_letters_total", reason="malformed_json")] == 2
    assert samples[_key("rt_training_dead_letters_total", reason="missing_field")] == 1
    assert samples[_key("rt_training_dead_letters_total", reason="duplicate_id")] == 0
    for reason in ("duplicate_key", "empty_id", "before_min_event_time", "future_event_time"):
        assert samples[_key("rt_training_dead_letters_total", reason=reason)] == 0
    for table, ts in snap.last_commit_time.items():
        assert samples[_key("rt_training_last_commit_timestamp_seconds", table=table)] == ts
    for q, seconds in snap.event_to_silver_latency.items():
        assert samples[_key("rt_training_event_to_silver_latency_seconds", quantile=str(q))] == seconds
    assert samples[_key("rt_training_event_time_watermark_seconds")] == snap.watermark
    assert samples[_key("rt_training_drift_share")] == 0.5
    assert samples[_key("rt_training_drifted_columns")] == 1
    assert samples[_key("rt_training_dataset_drift")] == 1
    assert samples[_key("rt_training_drift_report_timestamp_seconds")] == EVENT_BASE.timestamp() + 3600
    assert samples[_key("rt_training_column_drift_score", column="price")] == 0.001
    assert samples[_key("rt_training_column_drift_score", column="device")] == 0.2
    assert samples[_key("rt_training_model_metric", role="champion", split="holdout", metric="auc")] == 0.72
    assert samples[_key("rt_training_model_metric", role="candidate", split="holdout", metric="auc")] == 0.58
    assert (
        samples[_key("rt_training_model_metric", role="candidate", split="validation", metric="val_auc")]
        == 0.61
    )
    assert samples[_key("rt_training_last_promotion_timestamp_seconds")] == snap.last_promotion_time
    assert samples[_key("rt_training_training_samples_per_second")] == 1500.0
    assert samples[_key("rt_training_run_failures_total", dagster_job="retraining_job")] == 2
    assert samples[_key("rt_training_run_failures_total", dagster_job="ingest_job")] == 0
    assert samples[_key("rt_training_exporter_errors_total")] == 0
    assert 0 < samples[_key("rt_training_scrape_duration_seconds")] < 5
    # No Kafka configured: no Kafka series at all.
    assert not any(name.startswith(("rt_training_kafka", "rt_training_consumer_lag")) for name, _ in samples)


def test_unreachable_kafka_is_a_series_not_a_failed_scrape(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path)
    gatherer = SnapshotGatherer(
        spec, str(tmp_path), KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    )
    started = time.monotonic()
    samples = _samples(generate_latest(build_registry(gatherer)).decode())
    assert time.monotonic() - started < 8
    assert samples[_key("rt_training_kafka_up")] == 0
    assert samples[_key("rt_training_exporter_errors_total")] == 0
    assert not any(
        name in ("rt_training_kafka_end_offset", "rt_training_consumer_lag_records") for name, _ in samples
    )
    assert samples[_key("rt_training_drift_share")] == 0.5


def test_unreadable_table_is_counted_and_the_rest_still_exported(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path)
    # A drift_reports table in some other layout (no columns_json): that section fails, nothing else does.
    drift = tmp_path / spec.name / "drift_reports"
    write_deltalake(
        drift,
        DeltaTable(drift).to_pyarrow_table().drop_columns(["columns_json"]),
        mode="overwrite",
        schema_mode="overwrite",
    )
    registry = build_registry(SnapshotGatherer(spec, str(tmp_path)))
    first = _samples(generate_latest(registry).decode())
    second = _samples(generate_latest(registry).decode())
    assert first[_key("rt_training_exporter_errors_total")] == 1
    assert second[_key("rt_training_exporter_errors_total")] == 2
    assert _key("rt_training_drift_share") not in second
    assert second[_key("rt_training_ingested_events_total")] == 13


def test_a_failing_gather_still_answers_the_scrape() -> None:
    def broken() -> None:
        raise OSError("lake mount is gone")

    collector = PipelineCollector("clickstream", broken)
    for _ in range(2):
        families = {f.name: f for f in collector.collect()}
    assert set(families) == {"rt_training_exporter_errors", "rt_training_scrape_duration_seconds"}
    assert families["rt_training_exporter_errors"].samples[0].value == 2


@pytest.mark.kafka
def test_lag_against_a_real_broker(
    spec: PipelineSpec, tmp_path: Path, kafka_broker: KafkaSettings, topic_factory
) -> None:
    from rt_training.stream.client import make_producer

    topic = topic_factory(partitions=3)
    producer = make_producer(kafka_broker)
    for partition, count in ((0, 12), (1, 3), (2, 2)):
        for i in range(count):
            producer.send(topic, value=json.dumps({"i": i}).encode(), partition=partition)
    producer.flush()
    producer.close()

    on_topic = spec.model_copy(update={"source": spec.source.model_copy(update={"topic": topic})})
    write_ingest_batches(on_topic, tmp_path)
    gatherer = SnapshotGatherer(on_topic, str(tmp_path), kafka_broker)
    try:
        snap = gatherer.gather()
        text = generate_latest(build_registry(gatherer)).decode()
    finally:
        gatherer.close()

    assert snap.kafka_up is True
    assert snap.end_offsets == {0: 12, 1: 3, 2: 2}
    assert snap.earliest_offsets == {0: 0, 1: 0, 2: 0}
    # Committed: p0 10, p1 3, p2 nothing (so its lag counts from Kafka's earliest offset).
    assert snap.consumer_lag() == {0: 2, 1: 0, 2: 2}
    samples = _samples(text)
    for partition, lag in ((0, 2), (1, 0), (2, 2)):
        assert samples[_key("rt_training_consumer_lag_records", topic=topic, partition=str(partition))] == lag
    assert samples[_key("rt_training_kafka_end_offset", topic=topic, partition="0")] == 12
    assert samples[_key("rt_training_kafka_up")] == 1


def test_a_missing_topic_leaves_kafka_up_without_offsets(
    spec: PipelineSpec, tmp_path: Path, kafka_broker: KafkaSettings
) -> None:
    missing = spec.model_copy(
        update={"source": spec.source.model_copy(update={"topic": f"absent-{uuid.uuid4().hex}"})}
    )
    gatherer = SnapshotGatherer(missing, str(tmp_path), kafka_broker)
    try:
        snap = gatherer.gather()
    finally:
        gatherer.close()
    assert snap.kafka_up is True
    assert snap.end_offsets == {} and snap.consumer_lag() == {}
    assert snap.errors == []


def test_cli_show_prints_the_metrics(spec: PipelineSpec, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rt_training.cli.main import cli

    build_lake(spec, tmp_path)
    result = CliRunner().invoke(cli, ["metrics", "show", "--lake", str(tmp_path), "--no-kafka"])
    assert result.exit_code == 0, result.output
    samples = _samples(result.output)
    assert samples[_key("rt_training_dead_letters_total", reason="malformed_json")] == 2
    assert samples[_key("rt_training_drift_share")] == 0.5


def test_cli_serve_answers_scrapes_and_stops_on_sigterm(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path)
    port = _closed_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from rt_training.cli.main import cli; cli()",
            "metrics",
            "serve",
            "--port",
            str(port),
            "--lake",
            str(tmp_path),
            "--no-kafka",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/metrics" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            samples = _samples(response.read().decode())
        assert samples[_key("rt_training_ingested_events_total")] == 13
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_start_exporter_on_a_free_port(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path)
    server, thread = start_exporter(SnapshotGatherer(spec, str(tmp_path)), port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = _samples(response.read().decode())
        assert samples[_key("rt_training_run_failures_total", dagster_job="retraining_job")] == 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
