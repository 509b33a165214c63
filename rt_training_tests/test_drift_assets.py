"""drift_report and refresh_job on real Delta tables, a really trained champion and a real Dagster instance.

The lake: a seeded demo stream, cleaned into silver by the real cleaning step; the real sampler's training set
(class-balanced: half positives, while the stream has about 20%); a small model trained on it, checkpointed with
lineage pointing at that training-set version, registered and promoted. Timeline (event time, 100 events/s):

- rows 0-5999, ingested in three batches up to T0 + 60 s (event times up to T0 + 59.99 s);
- rows 6000-6999, ingested at T0 + 70 s: the watermark moves to T0 + 69.99 s and the training set's cut, a 10 s
  holdout before it, to T0 + 59.99 s; these rows are the champion's held-out rows, its metric at promotion;
- rows 7000-8999, ingested at T0 + 90 s: the current window (drifted from T0 + 70 s in the drift scenario).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from rt_training.clean.pipeline import clean_batch
from rt_training.defs.factory import build_definitions
from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.drift.reports import (
    DRIFT_REPORTS_SCHEMA,
    PREDICTION_COLUMN,
    NothingToCompare,
    compute_drift_report,
    drift_columns,
    latest_report,
    newest_rows,
)
from rt_training.features.state import fit_feature_state
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import BRONZE_SCHEMA, UTC_US, checkpoints_dir
from rt_training.monitoring.snapshot import gather_snapshot
from rt_training.sampling.training_set import update_training_set
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.synthetic import EventGenerator, SimulatedClock
from rt_training.training.checkpoints import Lineage, build_checkpoint, new_checkpoint_id, save_checkpoint
from rt_training.training.data import read_holdout, read_training_rows, tensors_from_arrow
from rt_training.training.loop import evaluate, train
from rt_training.training.registry import Candidate, LoadedChampion, ModelRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CUT = T0 + timedelta(seconds=59.99)
"""The first training set's cut: the watermark after the fourth batch (T0 + 69.99 s) minus the 10 s holdout."""
RATE = 100.0
SEED = 5


def drift_spec() -> PipelineSpec:
    spec = load_spec()
    return spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(update={"capacity": 3000}),
            "training": spec.training.model_copy(
                update={"epochs": 3, "batch_size": 256, "holdout_window_s": 10.0}
            ),
            "drift": spec.drift.model_copy(update={"window_rows": 2000}),
            "time": spec.time.model_copy(update={"allowed_lateness": 0.0}),
        }
    )


class Stream:
    """The seeded demo stream, cleaned into the pipeline's silver table batch by batch."""

    def __init__(self, spec: PipelineSpec, lake: LakeLocation, drift_at: float | None = None) -> None:
        clock = SimulatedClock(int(T0.timestamp() * 1000), rate=RATE)
        self.gen = EventGenerator(spec, SEED, clock=clock, drift_at=drift_at, drift_strength=2.0)
        self.spec, self.lake, self.offset = spec, lake, 0

    def ingest(self, rows: int, at_s: float) -> None:
        batch = self.gen.generate(rows)
        ingested = T0 + timedelta(seconds=at_s)
        bronze = pa.Table.from_pydict(
            {
                "topic": [self.spec.source.topic] * rows,
                "partition": [0] * rows,
                "offset": list(range(self.offset, self.offset + rows)),
                "timestamp": [ingested] * rows,
                "key": batch.keys,
                "value": batch.values,
                "ingested_at": [ingested] * rows,
                "run_id": [f"batch-{self.offset}"] * rows,
            },
            schema=BRONZE_SCHEMA,
        )
        self.offset += rows
        silver = clean_batch(bronze, self.spec, now=ingested).silver
        assert silver.num_rows == rows
        write_deltalake(self.lake.uri(self.spec.name, "silver"), silver, mode="append")


@dataclass(frozen=True)
class Built:
    spec: PipelineSpec
    lake: LakeLocation
    stream: Stream
    champion_id: str
    promotion_metric: float


def build_lake(root: Path, drift_at: float | None) -> Built:
    spec, lake = drift_spec(), LakeLocation(str(root))
    stream = Stream(spec, lake, drift_at)
    for at_s in (20, 40, 60):
        stream.ingest(2000, at_s)
    stream.ingest(1000, 70)
    update = update_training_set(spec, lake)
    info = update.current
    assert info is not None and info.cut == CUT and update.rows_offered == 6000
    assert update.stats.label_shares["1"] > 0.3  # class-balanced: the stream has about 20%

    rows = read_training_rows(info.uri, info.version, spec)
    state = fit_feature_state(spec, rows, None, cold_start=True, seed=spec.training.seed)
    fit, valid = tensors_from_arrow(rows, spec, state).split(0.2, spec.training.seed)
    result = train(spec, state, fit, valid, log_every=0)
    holdout = read_holdout(lake.uri(spec.name, "silver"), spec, after=info.cut)
    _, metric = evaluate(result.model, tensors_from_arrow(holdout, spec, state), spec)
    lineage = Lineage(training_set_uri=info.uri, training_set_version=info.version)
    payload = build_checkpoint(
        checkpoint_id=new_checkpoint_id(),
        model=result.model,
        optimizer_state=result.optimizer_state,
        spec=spec,
        state=state,
        step=result.total_steps,
        epoch=result.epochs,
        metrics=result.metrics,
        lineage=lineage,
    )
    saved = save_checkpoint(payload, checkpoints_dir(spec.name, root))
    registry = ModelRegistry.for_pipeline(root, spec.name)
    registry.register(Candidate.from_saved(saved, spec.training.metric, metric, lineage.to_dict()))
    registry.promote(saved.id, "first champion", metric_value=metric)

    stream.ingest(2000, 90)
    return Built(spec, lake, stream, saved.id, metric)


@pytest.fixture(scope="module")
def stationary(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_lake(tmp_path_factory.mktemp("stationary"), drift_at=None)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_lake(tmp_path_factory.mktemp("drifted"), drift_at=70.0)


def definitions(spec: PipelineSpec, lake: LakeLocation) -> tuple[dg.Definitions, dict]:
    resources = {
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
        "lake": LakeResource(root=lake.root),
    }
    return build_definitions(spec, resources), resources


def meta(result: dg.ExecuteInProcessResult, node: str = "drift_report") -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def reports(built: Built) -> pa.Table:
    return DeltaTable(built.lake.uri(built.spec.name, "drift_reports")).to_pyarrow_table()


HISTORY = datetime(2011, 6, 1, tzinfo=UTC)


def seconds_after(rows: pa.Table, column: str = "event_time", start: datetime = HISTORY) -> list[float]:
    return [t.timestamp() - start.timestamp() for t in rows[column].to_pylist()]


def test_newest_rows_by_event_time_of_a_backfill_years_ago(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    # A 2011 backfill ingested today, out of order: the newest ingested file holds the oldest events.
    today = datetime.now(UTC)
    for i, stamps in enumerate(([30, 40, 40], [20, 30], [10] * 4, [0] * 4)):
        times = pa.array([HISTORY + timedelta(seconds=s) for s in stamps], UTC_US)
        ingested = pa.array([today + timedelta(seconds=i)] * len(stamps), UTC_US)
        write_deltalake(
            uri, pa.table({"x": stamps, "event_time": times, "_ingested_at": ingested}), mode="append"
        )
    table = DeltaTable(uri)
    assert seconds_after(newest_rows(table, ["x"], by="event_time", count=4)) == [40, 40, 30, 30]
    upto_35 = newest_rows(table, ["x"], by="event_time", count=4, upto=HISTORY + timedelta(seconds=35))
    assert seconds_after(upto_35) == [30, 30, 20, 10]
    upto_10 = newest_rows(table, ["x"], by="event_time", count=100, upto=HISTORY + timedelta(seconds=10))
    assert seconds_after(upto_10) == [10] * 4 + [0] * 4
    window = newest_rows(
        table,
        ["x"],
        by="event_time",
        since=HISTORY + timedelta(seconds=20),
        upto=HISTORY + timedelta(seconds=35),
    )
    assert seconds_after(window) == [30, 30]
    # By ingestion time the "newest" rows would be the oldest events.
    assert seconds_after(newest_rows(table, ["event_time"], by="_ingested_at", count=4)) == [0] * 4


def test_compared_columns_and_windows(stationary: Built) -> None:
    spec = stationary.spec
    numeric, categorical = drift_columns(spec)
    # The hash-bucketed ids (user_id, item_id) are left out; the label is categorical for a binary label.
    assert numeric == ["price", "dwell_time_s", "position", "user_tenure_days", "discount"]
    assert categorical == ["device", "category", "country", "clicked"]
    registry = ModelRegistry.for_pipeline(stationary.lake.root, spec.name)
    report = compute_drift_report(spec, stationary.lake, registry.load_champion(), T0 + timedelta(seconds=95))
    assert report.reference.training_set_version == 0
    assert report.reference.silver_version == 3 and report.reference.cut == CUT
    # Reference: the 2000 silver rows with the newest event times up to the cut; current: the 2000 newest
    # events up to the watermark (the last batch; event times 70-90 s after T0).
    assert report.result.reference_rows == 2000 and report.result.current_rows == 2000
    assert report.watermark == T0 + timedelta(seconds=89.99)
    assert report.row["current_end"] == report.watermark
    assert report.row["current_start"] == T0 + timedelta(seconds=70)
    assert report.row["quality_after"] == CUT
    assert [c.column for c in report.result.columns] == [*numeric, PREDICTION_COLUMN, *categorical]
    assert report.quality_rows == 2000  # every current row has an event time after the champion's cut
    assert report.quality is not None and report.quality.baseline == stationary.promotion_metric
    assert report.row["html_path"].endswith(f"clickstream/drift_reports_html/{report.report_id}.html")


def test_stationary_stream_refresh_job_reports_no_drift(stationary: Built) -> None:
    defs, _ = definitions(stationary.spec, stationary.lake)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("refresh_job").execute_in_process(instance=instance)
    assert result.success
    # The spec adapts to drift: the refresh leaves silver's new rows to the next training run.
    assert DeltaTable(stationary.lake.uri(stationary.spec.name, "training_set")).version() == 0
    m = meta(result)
    assert m["status"] == "compared" and m["dataset_drift"] is False
    # Against the class-balanced sample itself the label would drift; against its source rows nothing does.
    assert m["n_drifted"] <= 1 and m["drift_share"] == m["n_drifted"] / 10
    assert m["champion_id"] == stationary.champion_id and m["reference_version"] == 0
    assert m["current_rows"] == 2000 and m["reference_rows"] == 2000
    assert m["quality_dropped"] is False and abs(m["quality_drop"]) < stationary.spec.drift.quality_drop
    assert m["quality_metric"] == "auc" and m["quality_baseline"] == stationary.promotion_metric
    assert "| clicked |" in m["columns"]
    assert (m["watermark"], m["current_end"]) == ((T0 + timedelta(seconds=89.99)).isoformat(),) * 2
    assert m["current_start"] == (T0 + timedelta(seconds=70)).isoformat()
    (row,) = reports(stationary).to_pylist()
    assert row["report_id"] == m["report_id"] and row["dataset_drift"] is False
    assert Path(m["evidently_report"]).is_file() and row["html_path"] == m["evidently_report"]
    assert m["evidently_report_url"] == f"file://{m['evidently_report']}"


def test_drifted_window_writes_the_report_the_exporter_reads(drifted: Built) -> None:
    spec = drifted.spec
    defs, resources = definitions(spec, drifted.lake)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([defs.get_assets_def("drift_report")], resources=resources, instance=instance)
    assert result.success
    m = meta(result)
    assert m["dataset_drift"] is True and m["drift_share"] >= spec.drift.drift_share
    verdicts = {c["column"]: c["drifted"] for c in json.loads(reports(drifted)["columns_json"][0].as_py())}
    # Exactly the compared columns the generator moved are flagged, and the champion's output with them; the
    # label keeps its 20% base rate (the generator recalibrates it), the hash-bucketed ids are not compared.
    moved = {name for name in drifted.stream.gen.drifting if name in verdicts}
    assert moved == {"price", "position", "user_tenure_days", "country"}
    assert {name for name, flagged in verdicts.items() if flagged} == {*moved, PREDICTION_COLUMN}
    assert m["n_drifted"] == 5 and m["drift_share"] == 0.5
    # The label model turned by 90 degrees: the champion's AUC on recent rows falls well past the tolerance.
    assert m["quality_dropped"] is True and m["quality_drop"] > 0.1

    table = reports(drifted)
    assert table.schema.equals(DRIFT_REPORTS_SCHEMA, check_metadata=False)
    (row,) = table.to_pylist()
    snapshot = gather_snapshot(spec, drifted.lake.root)
    assert snapshot.drift is not None and snapshot.drift.report_id == row["report_id"]
    assert snapshot.drift.drift_share == pytest.approx(m["drift_share"])
    assert snapshot.drift.n_drifted == m["n_drifted"] and snapshot.drift.dataset_drift is True
    assert {c.column for c in snapshot.drift.columns if c.drifted} == {k for k, v in verdicts.items() if v}
    html = Path(row["html_path"])
    assert html.is_file() and html.stat().st_size > 100_000
    assert PREDICTION_COLUMN in html.read_text(errors="replace")

    # The retraining sensor acts on it: one launch, why, which report, and a shorter recency half-life.
    context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    launch = defs.get_sensor_def("retraining_sensor")(context)
    assert isinstance(launch, dg.SensorResult)
    (request,) = launch.run_requests
    assert request.tags["rt_training/drift_report"] == row["report_id"]
    assert request.tags["rt_training/trigger_reason"].startswith(f"dataset drift: {row['summary']}")
    assert "quality drop: auc" in request.tags["rt_training/trigger_reason"]
    assert request.tags[PIPELINE_TAG] == spec.name
    half_life = spec.drift.on_drift_recency_half_life_s
    assert request.run_config == {"ops": {"training_set": {"config": {"recency_half_life_s": half_life}}}}


def test_drift_triggered_retraining_takes_rows_with_the_adapted_priorities(drifted: Built) -> None:
    """The drift report comes first; the retraining's training set then offers silver's new rows with the drift
    half-life (before, the refresh had already taken them and the retraining offered 0)."""
    spec = drifted.spec
    defs, resources = definitions(spec, drifted.lake)
    instance = dg.DagsterInstance.ephemeral()
    refresh = defs.resolve_job_def("refresh_job").execute_in_process(instance=instance)
    assert refresh.success and meta(refresh)["dataset_drift"] is True
    assert (
        DeltaTable(drifted.lake.uri(spec.name, "training_set")).version() == 0
    )  # rows left for the retraining
    context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    (request,) = defs.get_sensor_def("retraining_sensor")(context).run_requests
    half_life = spec.drift.on_drift_recency_half_life_s
    assert half_life is not None and half_life < spec.sampling.recency_half_life_s
    # The retraining's first step, with the run config the sensor asked for.
    result = dg.materialize(
        [defs.get_assets_def("training_set")],
        resources=resources,
        instance=instance,
        run_config=request.run_config,
        tags=request.tags,
    )
    m = meta(result, "training_set")
    assert m["adapted_for_drift"] is True and m["recency_half_life_s"] == half_life
    # Every silver row between the champion's cut (T0 + 59.99 s) and the new one (the watermark T0 + 89.99 s less
    # the 10 s holdout): rows 6000-7999.
    assert m["rows_offered"] == 2000 and m["rows_added"] > 0 and m["changed"] is True


def test_no_champion_no_report_no_launch(tmp_path: Path) -> None:
    spec, lake = drift_spec(), LakeLocation(str(tmp_path))
    Stream(spec, lake).ingest(500, 10)
    defs, resources = definitions(spec, lake)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([defs.get_assets_def("drift_report")], resources=resources, instance=instance)
    assert result.success and meta(result) == {"status": "no champion yet"}
    assert latest_report(lake.uri(spec.name, "drift_reports")) is None
    assert not (tmp_path / spec.name / "drift_reports").exists()
    context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    skipped = defs.get_sensor_def("retraining_sensor")(context)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message.startswith("no drift report yet")


def test_champion_without_training_set_lineage_is_reported_not_failed(tmp_path: Path) -> None:
    spec, lake = drift_spec(), LakeLocation(str(tmp_path))
    registry = ModelRegistry.for_pipeline(tmp_path, spec.name)
    registry.register(Candidate("c1", "/nowhere/c1.pt", "0" * 64, "auc", 0.8, {}))
    registry.promote("c1", "by hand")
    with pytest.raises(NothingToCompare, match="champion c1 has no training set in its lineage"):
        compute_drift_report(spec, lake, LoadedChampion(registry.champion(), {}, False, []), T0)


def test_refresh_schedule_skips_while_a_refresh_runs(stationary: Built) -> None:
    defs, _ = definitions(stationary.spec, stationary.lake)
    schedule = defs.get_schedule_def("refresh_schedule")
    assert schedule.cron_schedule == "* * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("refresh_job")
    assert {n.name for n in job.nodes} == {"drift_report"}  # the demo spec adapts to drift
    plain = stationary.spec.model_copy(
        update={"drift": stationary.spec.drift.model_copy(update={"on_drift_recency_half_life_s": None})}
    )
    plain_job = definitions(plain, stationary.lake)[0].resolve_job_def("refresh_job")
    assert {n.name for n in plain_job.nodes} == {"training_set", "drift_report"}
    with dg.instance_for_test() as instance:
        assert isinstance(schedule(dg.build_schedule_context(instance=instance)), dg.RunRequest)
        run = instance.create_run_for_job(job, tags=job.tags, status=dg.DagsterRunStatus.STARTED)
        skipped = schedule(dg.build_schedule_context(instance=instance))
        assert isinstance(skipped, dg.SkipReason) and run.run_id in skipped.skip_message
        instance.report_run_failed(run)
        assert isinstance(schedule(dg.build_schedule_context(instance=instance)), dg.RunRequest)
