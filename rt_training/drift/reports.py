"""Drift reports of a pipeline: compare recent silver with the champion's training set, store the verdicts.

Reference: the training set the champion was trained on, read at the Delta version its lineage records.
Current: the newest ``drift.window_rows`` silver rows by ingestion time (or the last ``drift.window_s`` seconds).
Columns: the spec's numeric features and the categorical features with a vocabulary, by their raw schema
values, plus the label. Hash-bucketed categoricals (user or item ids) are left out: they are high-cardinality
ids whose frequency tables always differ, so a chi-squared or Jensen-Shannon verdict on them says nothing.

Each report is one row of the ``drift_reports`` Delta table (read by the Prometheus exporter and the retraining
sensor), with the Evidently HTML report beside the lake.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rt_training.lake.tables import UTC_US, open_table

if TYPE_CHECKING:
    from rt_training.drift.detector import DriftResult
    from rt_training.drift.quality import QualitySignal
    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec import PipelineSpec

DRIFT_REPORTS_SCHEMA = pa.schema(
    [
        ("report_id", pa.string()),
        ("created_at", UTC_US),
        ("reference_version", pa.int64()),
        ("current_rows", pa.int64()),
        ("drift_share", pa.float64()),
        ("n_drifted", pa.int64()),
        ("dataset_drift", pa.bool_()),
        ("columns_json", pa.string()),
        ("html_path", pa.string()),
        ("summary", pa.string()),
        ("champion_id", pa.string()),
        ("quality_json", pa.string()),
    ]
)
"""One row per drift report; ``columns_json`` lists ``{column, stattest, score, threshold, drifted}``."""


@dataclass(frozen=True)
class StoredReport:
    """A drift report as read back from the table: what the retraining trigger needs."""

    report_id: str
    created_at: datetime
    dataset_drift: bool
    drift_share: float
    text: str
    champion_id: str | None
    quality: dict[str, Any] | None

    def summary(self) -> str:
        return self.text


def drift_columns(spec: PipelineSpec) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns compared: numeric features, vocabulary categoricals, the label."""
    numeric = list(spec.numeric_feature_names)
    categorical = [c.name for c in spec.features.categorical if c.vocabulary is not None]
    (categorical if spec.label.kind == "binary" else numeric).append(spec.label.field)
    return numeric, categorical


def current_window(spec: PipelineSpec, lake: LakeLocation, now: datetime) -> pa.Table:
    """The newest silver rows (by ``_ingested_at``) per the drift policy."""
    import pyarrow.compute as pc

    numeric, categorical = drift_columns(spec)
    dt = open_table(lake.uri(spec.name, "silver"), lake.storage_options)
    if dt is None:
        return pa.table({c: [] for c in [*numeric, *categorical]})
    dataset = dt.to_pyarrow_dataset()
    columns = [*numeric, *categorical, "_ingested_at"]
    policy = spec.drift
    if policy.window_s is not None:
        since = pa.scalar(now - timedelta(seconds=policy.window_s), UTC_US)
        return dataset.to_table(columns=columns, filter=pc.field("_ingested_at") >= since)
    table = dataset.to_table(columns=columns)
    if table.num_rows <= policy.window_rows:
        return table
    order = pc.sort_indices(table, sort_keys=[("_ingested_at", "descending")])
    return table.take(order[: policy.window_rows])


def champion_reference(spec: PipelineSpec, lake: LakeLocation) -> tuple[Any, pa.Table] | None:
    """(champion registry event, its training set rows) or None when there is no champion yet."""
    from rt_training.lake.history import read_version
    from rt_training.training.registry import ModelRegistry

    registry = ModelRegistry(lake.uri(spec.name, "model_registry"), dict(lake.storage_options or {}) or None)
    champion = registry.champion()
    if champion is None:
        return None
    lineage = champion.lineage
    version = lineage.get("training_set_version")
    uri = lineage.get("training_set_uri") or lake.uri(spec.name, "training_set")
    numeric, categorical = drift_columns(spec)
    rows = read_version(uri, version, columns=[*numeric, *categorical], storage_options=lake.storage_options)
    return champion, rows


def report_row(
    report_id: str,
    now: datetime,
    reference_version: int,
    result: DriftResult,
    html_path: str,
    champion_id: str,
    quality: QualitySignal | None,
) -> dict[str, Any]:
    columns = [
        {
            "column": c.column,
            "stattest": c.stattest,
            "score": c.score,
            "threshold": c.threshold,
            "drifted": c.drifted,
        }
        for c in result.columns
    ]
    return {
        "report_id": report_id,
        "created_at": now,
        "reference_version": int(reference_version),
        "current_rows": int(result.current_rows),
        "drift_share": float(result.drift_share),
        "n_drifted": int(result.n_drifted),
        "dataset_drift": bool(result.dataset_drift),
        "columns_json": json.dumps(columns),
        "html_path": html_path,
        "summary": result.summary(),
        "champion_id": champion_id,
        "quality_json": json.dumps(quality.to_dict()) if quality is not None else None,
    }


def append_report(uri: str, row: dict[str, Any], storage_options=None) -> int:
    """Append one report row (creating the table); return the table version."""
    from deltalake import write_deltalake

    from rt_training.lake.tables import ensure_table

    dt = ensure_table(uri, DRIFT_REPORTS_SCHEMA, storage_options)
    write_deltalake(dt, pa.Table.from_pylist([row], DRIFT_REPORTS_SCHEMA), mode="append")
    return dt.version()


def latest_report(uri: str, storage_options=None) -> StoredReport | None:
    """The newest report, or None."""
    import pyarrow.compute as pc

    dt = open_table(uri, storage_options)
    if dt is None:
        return None
    table = dt.to_pyarrow_table()
    if table.num_rows == 0:
        return None
    row = table.take([pc.index(table.column("created_at"), pc.max(table.column("created_at"))).as_py()])
    r = row.to_pylist()[0]
    return StoredReport(
        report_id=r["report_id"],
        created_at=r["created_at"],
        dataset_drift=bool(r["dataset_drift"]),
        drift_share=float(r["drift_share"]),
        text=r.get("summary") or "",
        champion_id=r.get("champion_id"),
        quality=json.loads(r["quality_json"]) if r.get("quality_json") else None,
    )


@dataclass
class DriftOutcome:
    report_id: str
    result: DriftResult
    quality: QualitySignal | None
    champion_id: str
    reference_version: int
    html_path: str
    table_version: int


def run_drift_report(
    spec: PipelineSpec, lake: LakeLocation, now: datetime | None = None, html: bool = True
) -> DriftOutcome | None:
    """Compare recent silver with the champion's training set, score quality, store the report.

    Returns None when there is no champion (nothing to compare with) or no recent silver rows.
    """
    from rt_training.drift.detector import detect_drift
    from rt_training.drift.quality import quality_drop
    from rt_training.drift.report import evidently_report_html
    from rt_training.training.champion import score_champion

    now = now or datetime.now(UTC)
    found = champion_reference(spec, lake)
    if found is None:
        return None
    champion, reference = found
    current = current_window(spec, lake, now)
    if current.num_rows == 0 or reference.num_rows == 0:
        return None
    numeric, categorical = drift_columns(spec)
    result = detect_drift(reference, current, numeric, categorical, spec.drift)
    quality = None
    baseline = champion.metric_value
    if baseline is not None:
        score = score_champion(spec, lake)
        if score.holdout_rows:
            quality = quality_drop(spec.training.metric, baseline, score.metric, spec.drift.quality_drop)
    report_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    html_path = ""
    if html:
        folder = Path(lake.uri(spec.name, "drift_reports_html"))
        html_path = str(
            evidently_report_html(
                reference.to_pandas(), current.select([*numeric, *categorical]).to_pandas(), numeric, categorical,
                folder / f"{report_id}.html", spec.drift,
            )
        )  # fmt: skip
    version = lineage_version(champion.lineage)
    row = report_row(report_id, now, version, result, html_path, champion.checkpoint_id, quality)
    table_version = append_report(lake.uri(spec.name, "drift_reports"), row, lake.storage_options)
    return DriftOutcome(report_id, result, quality, champion.checkpoint_id, version, html_path, table_version)


def lineage_version(lineage: dict[str, Any]) -> int:
    version = lineage.get("training_set_version")
    return -1 if version is None else int(version)
