"""A small, fully known lake for the monitoring tests: real Delta tables written in the shared schemas.

Two ingest batches of the demo pipeline (3 partitions):

- batch 1: partition 0 offsets 0-4 and partition 1 offsets 0-2; offset 4 of partition 0 is a dead letter
  (``malformed_json``);
- batch 2: partition 0 offsets 5-9; offsets 7 (``missing_field``) and 9 (``malformed_json``) are dead letters.

So bronze holds 13 rows, silver 10, dead letters 3; each table commits next offsets p0=10, p1=3 (p2 never
read). Silver's batch 2 rows have event times ``EVENT_BASE - 10 s, - 20 s, - 30 s``. Also: two drift reports
(the later one drifted), run events with one job failing twice (one failure appended twice), and a model
registry history (see :func:`write_registry`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from rt_training.drift.reports import DRIFT_REPORTS_SCHEMA
from rt_training.lake.exactly_once import append_exactly_once
from rt_training.lake.tables import BRONZE_SCHEMA, DEAD_LETTER_SCHEMA, silver_schema, table_uri
from rt_training.monitoring.run_events import append_run_event
from rt_training.spec import PipelineSpec
from rt_training.stream.planner import OffsetRange

EVENT_BASE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BATCH2_EVENT_AGES_S = (10.0, 20.0, 30.0)
TS_US = pa.timestamp("us", tz="UTC")


BATCHES = (
    {"ranges": {0: (0, 5), 1: (0, 3)}, "dead": {(0, 4): "malformed_json"}},
    {"ranges": {0: (5, 10)}, "dead": {(0, 7): "missing_field", (0, 9): "malformed_json"}},
)
LATEST_DRIFT_COLUMNS = [
    {"column": "price", "stattest": "K-S p_value", "score": 0.001, "threshold": 0.05, "drifted": True},
    {"column": "device", "stattest": "chi-square p_value", "score": 0.2, "threshold": 0.05, "drifted": False},
]


@dataclass(frozen=True)
class BuiltLake:
    root: Path
    silver_batch2_commit_s: float
    """Commit time of silver's batch 2 (what latency is measured to)."""


def _silver_row(spec: PipelineSpec, partition: int, offset: int, event_time: datetime) -> dict:
    fills = {"string": f"value-{offset}", "int": 0, "float": 1.0, "bool": False, "timestamp": event_time}
    row: dict = {
        "_topic": spec.source.topic,
        "_partition": partition,
        "_offset": offset,
        "_ingested_at": event_time,
    }
    row.update({name: fills[f.type] for name, f in spec.schema_.fields.items()})
    return row


def write_ingest_batches(spec: PipelineSpec, root: Path) -> BuiltLake:
    """Bronze, silver and dead letters of both batches, each batch one exactly-once commit per table."""
    silver = silver_schema(spec)
    for number, batch in enumerate(BATCHES, start=1):
        bronze, silver_rows, dead = [], [], []
        late_offsets = []
        for partition, (start, end) in batch["ranges"].items():
            for offset in range(start, end):
                record = {
                    "topic": spec.source.topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp": EVENT_BASE,
                    "key": None,
                    "value": b"{}",
                    "ingested_at": EVENT_BASE,
                    "run_id": f"run-{number}",
                }
                bronze.append(record)
                reason = batch["dead"].get((partition, offset))
                if reason:
                    dead.append({**record, "reason": reason, "detail": f"offset {offset}"})
                else:
                    late_offsets.append((partition, offset))
        ages = BATCH2_EVENT_AGES_S if number == 2 else (0.0,) * len(late_offsets)
        assert len(ages) == len(late_offsets)
        for (partition, offset), age in zip(late_offsets, ages, strict=True):
            silver_rows.append(_silver_row(spec, partition, offset, EVENT_BASE - timedelta(seconds=age)))
        ranges = [
            OffsetRange(spec.source.topic, p, start, end) for p, (start, end) in batch["ranges"].items()
        ]
        earliest = {(spec.source.topic, p): 0 for p in batch["ranges"]}
        for table, rows, schema in (
            ("bronze", bronze, BRONZE_SCHEMA),
            ("silver", silver_rows, silver),
            ("dead_letters", dead, DEAD_LETTER_SCHEMA),
        ):
            append_exactly_once(
                table_uri(spec.name, table, root),
                pa.Table.from_pylist(rows, schema),
                ranges,
                spec.name,
                earliest=earliest,
            )
    silver_commit = DeltaTable(table_uri(spec.name, "silver", root)).history(1)[0]["timestamp"] / 1000.0
    return BuiltLake(root=root, silver_batch2_commit_s=silver_commit)


def write_drift_reports(spec: PipelineSpec, root: Path) -> None:
    """Two reports, the later (newer ``created_at``) drifted; rows written newest first to test ordering."""
    rows = [
        {
            "report_id": "r2",
            "created_at": EVENT_BASE + timedelta(hours=1),
            "reference_version": 4,
            "current_rows": 500,
            "drift_share": 0.5,
            "n_drifted": 1,
            "dataset_drift": True,
            "columns_json": json.dumps(LATEST_DRIFT_COLUMNS),
            "html_path": "/reports/r2.html",
        },
        {
            "report_id": "r1",
            "created_at": EVENT_BASE,
            "reference_version": 4,
            "current_rows": 500,
            "drift_share": 0.0,
            "n_drifted": 0,
            "dataset_drift": False,
            "columns_json": "[]",
            "html_path": "/reports/r1.html",
        },
    ]
    write_deltalake(root / spec.name / "drift_reports", pa.Table.from_pylist(rows, DRIFT_REPORTS_SCHEMA))


def write_run_events(spec: PipelineSpec, root: Path) -> None:
    """``retraining_job`` fails twice (run ``b`` reported twice), ``ingest_job`` succeeds."""
    uri = str(root / spec.name / "run_events")
    for run_id, job, status in (
        ("a", "retraining_job", "FAILURE"),
        ("b", "retraining_job", "FAILURE"),
        ("b", "retraining_job", "FAILURE"),
        ("c", "ingest_job", "SUCCESS"),
        ("d", "retraining_job", "SUCCESS"),
    ):
        append_run_event(uri, run_id=run_id, job_name=job, status=status, message=f"{job} {status}")


def write_registry(spec: PipelineSpec, root: Path) -> None:
    """c1 promoted, c2 promoted, c3 rejected, then a rollback: c1 is champion again, c3 the last candidate."""
    from rt_training.training.registry import Candidate, ModelRegistry

    registry = ModelRegistry.for_pipeline(root, spec.name)

    def offer(checkpoint_id: str, auc: float, lineage_metrics: dict[str, float]) -> None:
        registry.register(
            Candidate(
                checkpoint_id, f"/ckpt/{checkpoint_id}.pt", "0" * 64, "auc", auc, {"metrics": lineage_metrics}
            )
        )

    offer("c1", 0.70, {"val_auc": 0.71, "val_loss": 0.5, "samples_per_s": 1000.0})
    registry.promote("c1", "first champion", metric_value=0.72)
    offer("c2", 0.75, {"val_auc": 0.76, "samples_per_s": 2000.0})
    registry.promote("c2", "better on holdout", metric_value=0.74, champion_metric_value=0.71)
    offer("c3", 0.60, {"val_auc": 0.61, "samples_per_s": 1500.0})
    registry.reject("c3", "worse on holdout", metric_value=0.58, champion_metric_value=0.73)
    registry.rollback("c2 misbehaves in production")


def build_lake(spec: PipelineSpec, root: Path) -> BuiltLake:
    built = write_ingest_batches(spec, root)
    write_drift_reports(spec, root)
    write_run_events(spec, root)
    write_registry(spec, root)
    return built
