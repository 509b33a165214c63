"""Drift reports of a pipeline: recent silver against the data the champion learned from, and its quality.

Reference
    The silver rows the champion's training set was drawn from: silver at the version its training-set snapshot
    read, the ``drift.window_rows`` rows with the newest event times at or before that snapshot's cut. The champion's lineage names
    the snapshot (``training_set_uri``, ``training_set_version``) and the snapshot's commit names the silver
    version and the cut, so the reference is exact and can be read again by Delta time travel. Not the
    snapshot's own rows: the sampler balances classes, weights by recency and by the champion's loss and mixes
    in replay on purpose, so the sample's marginals differ from the stream's even when nothing drifts. Measured
    on the demo stream (20% positive labels): against fresh rows of the same stationary stream, a class-balanced
    sample flags the label and two numeric features as drifted; the silver rows it was drawn from flag none.
Current
    On event time, against the pipeline's watermark (:mod:`rt_training.eventtime`) at the newest silver version:
    every row with event time in ``(watermark - drift.window_s, watermark]`` when ``window_s`` is set, else the
    ``drift.window_rows`` rows with the newest event times at or before the watermark. Not by ingestion time: a
    backfill or a replay ingests a month of events in minutes, and its newest-ingested rows are not its newest
    events. The bounds (the watermark, the window's first and last event time) are stored with the report.
Columns
    The spec's numeric features and its categorical features (fixed or learned vocabulary, on string, int or
    bool fields), by their raw schema values; the label (categorical for a binary or multiclass label, numeric
    for regression; a language model's label is its text feature); the group field of ``sampling.mixture``
    (``by``), whose group shares are compared like a categorical column whether or not it is a feature; and
    the champion's prediction on each row (:data:`PREDICTION_COLUMN`: the probability for a binary label, the
    value otherwise). Text, list and vector features get two verdicts each (:mod:`rt_training.drift.fields`:
    token distribution and OOV rate, length and element distributions, mean shift and domain classifier).
    Hash-bucketed categoricals (user or item ids) are left out, and so are the elements of hash-bucketed lists
    (their lengths are compared): they are high-cardinality ids whose frequency tables always differ between
    two windows, so a chi-squared or Jensen-Shannon verdict on them says nothing. Evidently's HTML report
    shows the tabular columns (it has no test for the others; none when there is no tabular column).
Quality
    The champion's ``training.metric`` on the current rows whose event time is after its training set's cut
    (rows it never trained on; the report stores that cut as ``quality_after``) against the metric recorded when it was promoted, through
    :func:`rt_training.drift.quality.quality_drop` with ``drift.quality_drop``. With fewer than
    :data:`MIN_QUALITY_ROWS` such rows there is no quality signal (the metric would be mostly noise).

Each report is one row of the ``drift_reports`` Delta table (:data:`DRIFT_REPORTS_SCHEMA`, read by the Prometheus
exporter and the retraining sensor), with Evidently's HTML report in ``<lake>/<pipeline>/drift_reports_html/``
when the lake is a local folder. Torch and Evidently are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from rt_training.lake.tables import UTC_US, is_object_store, open_table
from rt_training.spec.durations import format_duration

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    from deltalake import DeltaTable

    from rt_training.drift.detector import DriftResult
    from rt_training.drift.quality import QualitySignal
    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec import PipelineSpec
    from rt_training.training.registry import LoadedChampion, RegistryEvent

DRIFT_REPORTS_TABLE = "drift_reports"
HTML_FOLDER = "drift_reports_html"
PREDICTION_COLUMN = "_prediction"
"""The champion's output on each row of both windows: one more numeric column to compare."""
DOMAIN_CLASSIFIER_SEED = 0
"""Seed of the vector fields' domain classifier, so a report is the same when made again."""
MIN_QUALITY_ROWS = 500
"""Fewest unseen labelled rows to score the champion on (AUC on 500 rows at a 20% base rate: about +-0.02)."""

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
        ("watermark", UTC_US),
        ("current_start", UTC_US),
        ("current_end", UTC_US),
        ("quality_after", UTC_US),
    ]
)
"""One row per drift report. ``reference_version`` is the champion's training-set version; ``columns_json``
lists ``{column, stattest, score, threshold, drifted, details}`` (``details``: the numbers behind a text, list
or vector verdict, empty for a tabular column; absent in rows written before it existed); ``quality_json`` is a
:meth:`~rt_training.drift.quality.QualitySignal.to_dict` or null. Event time: ``watermark`` is the pipeline's
watermark the report was made at, ``current_start``/``current_end`` the oldest and newest event time in the
current window, ``quality_after`` the champion's cut (quality is scored on current rows after it); these four
are null in rows written before they existed. ``created_at`` is the wall-clock time of the check."""


class NothingToCompare(LookupError):
    """No drift report can be made yet (no champion, no reference rows, no recent rows); the message says why."""


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
    watermark: datetime | None = None
    """The event-time watermark the report was made at (``None`` in rows written before it was recorded)."""

    def summary(self) -> str:
        """The detector's one-line summary, as :meth:`DriftResult.summary` gave it."""
        return self.text


@dataclass(frozen=True)
class Reference:
    """Where the champion's data came from: its training-set snapshot and the silver rows it was drawn from."""

    champion_id: str
    training_set_uri: str
    training_set_version: int
    silver_version: int
    cut: datetime


@dataclass(frozen=True)
class DriftReport:
    """One comparison: the detector's verdicts, the quality signal, the windows compared and the table row."""

    report_id: str
    created_at: datetime
    reference: Reference
    result: DriftResult
    quality: QualitySignal | None
    quality_rows: int
    """Current rows after the champion's cut, the ones its quality was scored on."""
    watermark: datetime
    """The event-time watermark of silver the current window was cut against."""
    numeric_columns: list[str]
    categorical_columns: list[str]
    reference_rows: pa.Table
    current_rows: pa.Table
    row: dict[str, Any]
    """The ``drift_reports`` row (:data:`DRIFT_REPORTS_SCHEMA`)."""

    @property
    def html_path(self) -> str:
        """Where Evidently's report goes (empty when the lake is in an object store)."""
        return self.row["html_path"]


@dataclass(frozen=True)
class FieldColumns:
    """The text, list and vector fields compared (:mod:`rt_training.drift.fields`)."""

    text: list[str]
    lists: list[str]
    """Lists compared by length and elements."""
    list_lengths: list[str]
    """Hash-bucketed lists (ids): compared by length only."""
    vectors: list[str]

    @property
    def names(self) -> list[str]:
        """Every field, in the order of their verdicts."""
        return [*self.text, *self.lists, *self.list_lengths, *self.vectors]


def drift_columns(spec: PipelineSpec) -> tuple[list[str], list[str]]:
    """(numeric, categorical) raw columns compared: numeric features, categoricals that are not hash-bucketed,
    the label, the mixture's group field.

    The champion's prediction (:data:`PREDICTION_COLUMN`) is added to the numeric ones when both windows are
    scored.
    """
    if PREDICTION_COLUMN in spec.schema_.fields:
        raise ValueError(
            f"schema field {PREDICTION_COLUMN!r} of pipeline {spec.name!r} collides with the drift report's "
            "prediction column; rename the field"
        )
    numeric = list(spec.numeric_feature_names)
    categorical = [c.name for c in spec.features.categorical if c.hash_buckets is None]
    if spec.label.kind in ("binary", "multiclass"):
        categorical.append(spec.label.field)
    elif spec.label.kind == "regression":
        numeric.append(spec.label.field)
    mixture = spec.sampling.mixture
    if mixture is not None and mixture.by not in [*numeric, *categorical]:
        categorical.append(mixture.by)
    return numeric, categorical


def field_drift_columns(spec: PipelineSpec) -> FieldColumns:
    """The text, sequence and vector features, by their raw schema values."""
    sequences = spec.features.sequence
    return FieldColumns(
        text=[t.name for t in spec.features.text],
        lists=[s.name for s in sequences if s.hash_buckets is None],
        list_lengths=[s.name for s in sequences if s.hash_buckets is not None],
        vectors=[v.name for v in spec.features.vector],
    )


def compare_windows(
    spec: PipelineSpec, reference: pa.Table, current: pa.Table, numeric: list[str], categorical: list[str]
) -> DriftResult:
    """The detector's verdicts on two silver windows: the given tabular columns and the spec's other fields."""
    from rt_training.drift.detector import detect_drift

    fields = field_drift_columns(spec)
    return detect_drift(
        reference,
        current,
        numeric,
        categorical,
        spec.drift,
        text_columns=fields.text,
        list_columns=fields.lists,
        list_length_columns=fields.list_lengths,
        vector_columns=fields.vectors,
        seed=DOMAIN_CLASSIFIER_SEED,
    )


def columns_json(result: DriftResult) -> str:
    """The ``columns_json`` of a report row: one ``{column, stattest, score, threshold, drifted, details}`` each."""
    return json.dumps(
        [
            {
                "column": c.column,
                "stattest": c.stattest,
                "score": c.score,
                "threshold": c.threshold,
                "drifted": c.drifted,
                "details": c.details,
            }
            for c in result.columns
        ]
    )


def newest_rows(
    table: DeltaTable,
    columns: list[str],
    *,
    by: str,
    count: int | None = None,
    upto: datetime | None = None,
    since: datetime | None = None,
) -> pa.Table:
    """Rows of ``table`` (at its loaded version) by the timestamp column ``by``: the newest ``count`` with ``by``
    at or before ``upto``, and/or all with ``by`` after ``since``; newest first.

    Only files whose statistics of ``by`` can hold such rows are read: the newest files that together hold
    ``count`` rows fix a lower bound on the answer's times, and the Delta dataset skips every file below it.
    A table without statistics is read whole.
    """
    where = pc.scalar(True)
    if upto is not None:
        where = where & (pc.field(by) <= pa.scalar(upto, UTC_US))
    if since is not None:
        where = where & (pc.field(by) > pa.scalar(since, UTC_US))
    if count is not None:
        bound = _lower_bound(table, by, count, upto)
        if bound is not None:
            where = where & (pc.field(by) >= pa.scalar(bound, UTC_US))
    rows = table.to_pyarrow_dataset().to_table(columns=list(dict.fromkeys([*columns, by])), filter=where)
    order = pc.sort_indices(rows, sort_keys=[(by, "descending")])
    return rows.take(order if count is None else order[:count])


def _lower_bound(table: DeltaTable, by: str, count: int, upto: datetime | None) -> datetime | None:
    """The oldest ``by`` among the newest files (entirely up to ``upto``) that hold ``count`` rows."""
    actions = pa.table(table.get_add_actions(flatten=True))
    low, high = f"min.{by}", f"max.{by}"
    if actions.num_rows == 0 or low not in actions.column_names or high not in actions.column_names:
        return None
    if actions.column(low).null_count or actions.column(high).null_count:
        return None
    files = actions.select([low, high, "num_records"]).to_pylist()
    if upto is not None:
        # Statistics keep milliseconds: a file whose max is within 1 ms of ``upto`` may straddle it.
        files = [f for f in files if f[high] + timedelta(milliseconds=1) <= upto]
    files.sort(key=lambda f: f[high], reverse=True)
    held = 0
    for i, f in enumerate(files):
        held += f["num_records"]
        if held >= count:
            return min(g[low] for g in files[: i + 1])
    return None


def champion_reference(spec: PipelineSpec, lake: LakeLocation, entry: RegistryEvent) -> Reference:
    """The training-set snapshot of the champion ``entry`` (from its lineage), its silver version and cut."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    from rt_training.sampling.training_set import COMMIT_KEY

    lineage = entry.lineage
    uri, version = lineage.get("training_set_uri"), lineage.get("training_set_version")
    if uri is None or version is None:
        raise NothingToCompare(
            f"champion {entry.checkpoint_id} has no training set in its lineage (training_set_uri, "
            "training_set_version), so there is no reference to compare with; train a champion with "
            "training_job or retraining_job"
        )
    options = dict(lake.storage_options) if lake.storage_options else None
    version = int(version)
    try:
        table = DeltaTable(uri, storage_options=options)
        # Read from the latest version: deltalake's history of a time-travelled table mislabels versions.
        commits = table.history(table.version() - version + 1) if version <= table.version() else []
    except DeltaError as exc:
        raise NothingToCompare(
            f"training set {uri} (champion {entry.checkpoint_id}'s) cannot be read: {exc}; retrain to get a "
            "champion with a readable lineage"
        ) from exc
    info = next((c.get(COMMIT_KEY) for c in commits if int(c["version"]) == version), None)
    if info is None:
        raise NothingToCompare(
            f"version {version} of training set {uri} (champion {entry.checkpoint_id}'s) is not in the table's "
            f"history or its commit carries no {COMMIT_KEY!r} metadata, so the silver rows it was drawn from are "
            "unknown; retrain to get a champion whose training set is still in the log"
        )
    cut = datetime.fromisoformat(info["cut"]).astimezone(UTC)
    return Reference(entry.checkpoint_id, str(uri), version, int(info["silver_version"]), cut)


def report_html_path(spec: PipelineSpec, lake: LakeLocation, report_id: str) -> str:
    """``<lake>/<pipeline>/drift_reports_html/<report_id>.html``, or ``""`` for an object-store lake."""
    folder = lake.uri(spec.name, HTML_FOLDER)
    if is_object_store(folder):
        return ""
    return str(Path(folder.removeprefix("file://")) / f"{report_id}.html")


@dataclass(frozen=True)
class Windows:
    """The two silver windows a report compares and the watermark the current one was cut against."""

    reference: pa.Table
    """The ``drift.window_rows`` newest rows up to the champion's cut, in silver at its training set's version."""
    current: pa.Table
    """The current window (see the module docstring), newest first."""
    watermark: datetime


def read_windows(spec: PipelineSpec, lake: LakeLocation, reference: Reference, columns: list[str]) -> Windows:
    """Read ``columns`` of the reference and current silver windows (see the module docstring).

    Raises
    ------
    NothingToCompare
        Silver at the reference's version cannot be loaded, or either window is empty.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    from rt_training.eventtime.clock import event_clock

    options = dict(lake.storage_options) if lake.storage_options else None
    silver_uri = lake.uri(spec.name, "silver")
    try:
        at_training = DeltaTable(silver_uri, version=reference.silver_version, storage_options=options)
    except DeltaError as exc:
        raise NothingToCompare(
            f"silver {silver_uri} version {reference.silver_version} (read by champion "
            f"{reference.champion_id}'s training set) cannot be loaded: {exc}"
        ) from exc
    by = spec.time_field
    ref = newest_rows(at_training, columns, by=by, count=spec.drift.window_rows, upto=reference.cut)
    if ref.num_rows == 0:
        raise NothingToCompare(
            f"silver {silver_uri} version {reference.silver_version} has no rows with event time up to "
            f"{reference.cut.isoformat()} (champion {reference.champion_id}'s training-set cut)"
        )
    latest = open_table(silver_uri, options)
    clock = event_clock(spec, latest)
    watermark = clock.watermark
    if latest is None or watermark is None:
        raise NothingToCompare(f"no silver rows at {silver_uri}")
    window = spec.drift.window_s
    if window is None:
        cur = newest_rows(latest, columns, by=by, count=spec.drift.window_rows, upto=watermark)
    else:
        cur = newest_rows(latest, columns, by=by, upto=watermark, since=watermark - timedelta(seconds=window))
    if cur.num_rows == 0:
        span = (
            f"with event time up to the watermark {watermark.isoformat()}"
            if window is None
            else f"with event time in the {format_duration(window)} (drift.window_s) before the watermark "
            f"{watermark.isoformat()}"
        )
        raise NothingToCompare(f"silver {silver_uri} has no rows {span}")
    return Windows(ref, cur, watermark)


def compute_drift_report(
    spec: PipelineSpec, lake: LakeLocation, champion: LoadedChampion, now: datetime
) -> DriftReport:
    """Compare the current silver window with the champion's reference rows and score its quality.

    Reads only; :func:`store_report` writes the HTML and the row.

    Raises
    ------
    NothingToCompare
        The champion's lineage names no readable training set, or either window is empty.
    """
    from rt_training.drift.quality import quality_drop
    from rt_training.training.checkpoints import restore_model
    from rt_training.training.data import columns_needed, tensors_from_arrow
    from rt_training.training.loop import evaluate

    reference = champion_reference(spec, lake, champion.entry)
    numeric, categorical = drift_columns(spec)
    fields = field_drift_columns(spec).names
    read = list(dict.fromkeys([*numeric, *categorical, *fields, *columns_needed(spec), spec.time_field]))
    windows = read_windows(spec, lake, reference, read)
    ref, cur, watermark, by = windows.reference, windows.current, windows.watermark, spec.time_field
    times = cur.column(by)

    restored = restore_model(champion.checkpoint, spec)
    ref = ref.append_column(PREDICTION_COLUMN, pa.array(_predictions(restored, ref, spec)))
    cur = cur.append_column(PREDICTION_COLUMN, pa.array(_predictions(restored, cur, spec)))
    numeric = [*numeric, PREDICTION_COLUMN]
    result = compare_windows(spec, ref, cur, numeric, categorical)

    unseen = cur.filter(pc.field(by) > pa.scalar(reference.cut, cur.schema.field(by).type))
    quality = None
    baseline = champion.entry.metric_value
    if baseline is not None and unseen.num_rows >= MIN_QUALITY_ROWS:
        recent_rows = tensors_from_arrow(unseen, spec, restored.state, where="recent silver rows")
        _, recent = evaluate(restored.model, recent_rows, spec)
        quality = quality_drop(spec.training.metric, baseline, recent, spec.drift.quality_drop)

    report_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    kept = [*numeric, *categorical]
    row = {
        "report_id": report_id,
        "created_at": now,
        "reference_version": reference.training_set_version,
        "current_rows": cur.num_rows,
        "drift_share": float(result.drift_share),
        "n_drifted": int(result.n_drifted),
        "dataset_drift": bool(result.dataset_drift),
        "columns_json": columns_json(result),
        "html_path": report_html_path(spec, lake, report_id),
        "summary": result.summary(),
        "champion_id": reference.champion_id,
        "quality_json": None if quality is None else json.dumps(quality.to_dict()),
        "watermark": watermark,
        "current_start": _as_utc(pc.min(times).as_py()),
        "current_end": _as_utc(pc.max(times).as_py()),
        "quality_after": reference.cut,
    }
    return DriftReport(
        report_id=report_id,
        created_at=now,
        reference=reference,
        result=result,
        quality=quality,
        quality_rows=unseen.num_rows,
        watermark=watermark,
        numeric_columns=numeric,
        categorical_columns=categorical,
        reference_rows=ref.select(kept),
        current_rows=cur.select(kept),
        row=row,
    )


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _predictions(restored: Any, rows: pa.Table, spec: PipelineSpec) -> np.ndarray:
    """One number per row for the model's output (see :func:`~rt_training.training.loop.prediction_summary`)."""
    from rt_training.training.data import tensors_from_arrow
    from rt_training.training.loop import prediction_summary

    data = tensors_from_arrow(rows, spec, restored.state, where="drift window")
    return prediction_summary(restored.model, data, spec)


def store_report(spec: PipelineSpec, lake: LakeLocation, report: DriftReport) -> int:
    """Write Evidently's HTML report (local lakes), then append the row; return the table's new version.

    The HTML goes first, so a row never names a report file that is not there.
    """
    from rt_training.drift.report import evidently_report_html

    if report.html_path:
        evidently_report_html(
            report.reference_rows,
            report.current_rows,
            report.numeric_columns,
            report.categorical_columns,
            report.html_path,
            spec.drift,
        )
    return append_report(lake.uri(spec.name, DRIFT_REPORTS_TABLE), report.row, lake.storage_options)


def run_drift_report(spec: PipelineSpec, lake: LakeLocation, now: datetime | None = None) -> DriftReport:
    """Load the champion, compare, store: one drift check.

    Raises
    ------
    NothingToCompare
        No champion yet, or nothing to compare (see :func:`compute_drift_report`).
    """
    from rt_training.training.champion import registry_for

    loaded = registry_for(spec, lake).load_champion()
    if loaded is None:
        raise NothingToCompare("no champion yet")
    report = compute_drift_report(spec, lake, loaded, now or datetime.now(UTC))
    store_report(spec, lake, report)
    return report


def append_report(uri: str, row: dict[str, Any], storage_options: Mapping[str, str] | None = None) -> int:
    """Append one report row (creating the table); return the table version.

    A table written before the event-time columns existed gains them with this append (older rows read null).
    """
    from deltalake import write_deltalake

    from rt_training.lake.tables import ensure_table, table_schema

    rows = pa.Table.from_pylist([row], DRIFT_REPORTS_SCHEMA)
    dt = open_table(uri, storage_options)
    if dt is not None and set(table_schema(dt).names) < set(DRIFT_REPORTS_SCHEMA.names):
        write_deltalake(dt, rows, mode="append", schema_mode="merge")
        return dt.version()
    dt = ensure_table(uri, DRIFT_REPORTS_SCHEMA, storage_options)
    write_deltalake(dt, rows, mode="append")
    return dt.version()


def latest_report(uri: str, storage_options: Mapping[str, str] | None = None) -> StoredReport | None:
    """The report with the newest ``created_at``, or None; reads only the files that can hold it."""
    dt = open_table(uri, storage_options)
    if dt is None:
        return None
    actions = pa.table(dt.get_add_actions(flatten=True))
    where = None
    if "max.created_at" in actions.column_names and not actions.column("max.created_at").null_count:
        newest = pc.max(actions.column("max.created_at"))
        if newest.is_valid:
            where = pc.field("created_at") >= pa.scalar(newest.as_py(), UTC_US)
    table = dt.to_pyarrow_dataset().to_table(filter=where)
    if table.num_rows == 0:
        return None
    index = pc.index(table.column("created_at"), pc.max(table.column("created_at"))).as_py()
    r = table.slice(index, 1).to_pylist()[0]
    return StoredReport(
        report_id=r["report_id"],
        created_at=r["created_at"],
        dataset_drift=bool(r["dataset_drift"]),
        drift_share=float(r["drift_share"]),
        text=r.get("summary") or "",
        champion_id=r.get("champion_id"),
        quality=json.loads(r["quality_json"]) if r.get("quality_json") else None,
        watermark=r.get("watermark"),
    )
