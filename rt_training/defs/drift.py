"""Drift and retraining: the ``drift_report`` asset, the refresh schedule, the retraining sensor, run events.

The retraining sensor reads the newest drift report and quality signal and asks
:func:`rt_training.drift.trigger.decide_retraining`, which holds a launch back during the cooldown and while a
retraining is in flight; each launch carries why it happened and the report it came from as run tags.
"""

import json
import os
import time
from datetime import UTC, datetime

import dagster as dg

from rt_training.defs.ingest import IN_FLIGHT, PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec

TRIGGER_TAG = "rt_training/trigger_reason"
REPORT_TAG = "rt_training/drift_report"
REFRESH_CRON_ENV_VAR = "RT_TRAINING_REFRESH_CRON"


def build_drift_report_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name="drift_report",
        group_name="monitoring",
        deps=["training_set", "champion_model"],
        kinds={"evidently", "deltalake"},
        description=(
            "Recent silver rows compared with the champion's training set (Evidently's DataDriftPreset "
            "semantics), plus the champion's metric on recent labelled rows; the Evidently HTML report is linked."
        ),
    )
    def drift_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from rt_training.drift.reports import run_drift_report

        outcome = run_drift_report(spec, lake.location())
        if outcome is None:
            context.log.info("no champion or no recent silver rows yet: nothing to compare")
            return dg.MaterializeResult(metadata={"status": "no champion or no recent rows yet"})
        result = outcome.result
        table = "| column | test | score | threshold | drifted |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {c.column} | {c.stattest} | {c.score:.4g} | {c.threshold:g} | {'yes' if c.drifted else 'no'} |"
            for c in result.columns
        )
        metadata: dict = {
            "report_id": outcome.report_id,
            "dataset_drift": result.dataset_drift,
            "drift_share": float(result.drift_share),
            "n_drifted": result.n_drifted,
            "summary": result.summary(),
            "reference_version": outcome.reference_version,
            "reference_rows": result.reference_rows,
            "current_rows": result.current_rows,
            "champion_id": outcome.champion_id,
            "columns": dg.MetadataValue.md(table),
        }
        if outcome.html_path:
            metadata["evidently_report"] = dg.MetadataValue.path(outcome.html_path)
            metadata["evidently_report_url"] = dg.MetadataValue.url(f"file://{outcome.html_path}")
        if outcome.quality is not None:
            metadata["quality_metric"] = outcome.quality.metric
            metadata["quality_baseline"] = outcome.quality.baseline
            metadata["quality_recent"] = outcome.quality.recent
            metadata["quality_dropped"] = outcome.quality.dropped
        context.log.info(f"drift report {outcome.report_id}: {result.summary()}")
        return dg.MaterializeResult(metadata=metadata)

    return drift_report


def build_retraining_sensor(spec: PipelineSpec) -> dg.SensorDefinition:
    @dg.sensor(
        name="retraining_sensor",
        job_name="retraining_job",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Launches retraining_job on dataset drift or a quality drop in the newest drift report, with a "
            f"cooldown of {spec.drift.cooldown_s:g}s and at most one retraining in flight."
        ),
    )
    def retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        from rt_training.drift.quality import QualitySignal
        from rt_training.drift.reports import latest_report
        from rt_training.drift.trigger import decide_retraining

        state = json.loads(context.cursor) if context.cursor else {}
        location = lake.location()
        report = latest_report(location.uri(spec.name, "drift_reports"), location.storage_options)
        if report is None:
            return dg.SkipReason("no drift report yet")
        if report.report_id == state.get("last_report"):
            return dg.SkipReason(f"drift report {report.report_id} already considered")
        in_flight = bool(
            context.instance.get_run_records(
                dg.RunsFilter(job_name="retraining_job", statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}),
                limit=1,
            )
        )
        quality = (
            QualitySignal(**report.quality)
            if report.quality and report.quality.get("worsening") is not None
            else None
        )
        decision = decide_retraining(
            now=time.time(),
            last_launch_at=state.get("last_launch_at"),
            in_flight=in_flight,
            policy=spec.drift,
            drift=report,
            quality=quality,
        )
        if not decision.launch:
            # Held back by cooldown or a run in flight: look at this report again next tick.
            if not any(r.startswith(("cooldown", "retraining already")) for r in decision.reasons):
                state["last_report"] = report.report_id
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(decision.reason)
        state.update(last_report=report.report_id, last_launch_at=time.time())
        run_config = {}
        if report.dataset_drift and spec.drift.on_drift_recency_half_life_s is not None:
            run_config = {
                "ops": {
                    "training_set": {
                        "config": {"recency_half_life_s": spec.drift.on_drift_recency_half_life_s}
                    }
                }
            }
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"retrain-{report.report_id}",
                    run_config=run_config,
                    tags={
                        TRIGGER_TAG: decision.reason[:1000],
                        REPORT_TAG: report.report_id,
                        PIPELINE_TAG: spec.name,
                    },
                )
            ],
            cursor=json.dumps(state),
        )

    return retraining_sensor


def build_run_event_sensors(spec: PipelineSpec) -> list[dg.SensorDefinition]:
    """Record every finished run (success or failure) in ``run_events`` for the Prometheus exporter."""

    def record(context: dg.RunStatusSensorContext, status: str, lake: LakeResource) -> None:
        from rt_training.monitoring.run_events import append_run_event

        run = context.dagster_run
        message = None
        if status == "FAILURE" and context.failure_event is not None:
            message = (context.failure_event.message or "")[:2000]
        location = lake.location()
        append_run_event(
            location.uri(spec.name, "run_events"),
            run_id=run.run_id,
            job_name=run.job_name,
            status=status,
            message=message,
            timestamp=datetime.now(UTC),
            storage_options=location.storage_options,
        )

    @dg.run_status_sensor(
        name="run_success_events_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Appends successful runs to the run_events table (monitoring).",
    )
    def run_success_events_sensor(context: dg.RunStatusSensorContext, lake: LakeResource) -> None:
        record(context, "SUCCESS", lake)

    @dg.run_failure_sensor(
        name="run_failure_events_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Appends failed runs to the run_events table (monitoring: rt_training_run_failures_total).",
    )
    def run_failure_events_sensor(context: dg.RunFailureSensorContext, lake: LakeResource) -> None:
        record(context, "FAILURE", lake)

    return [run_success_events_sensor, run_failure_events_sensor]


def definitions(spec: PipelineSpec) -> dg.Definitions:
    refresh_job = dg.define_asset_job(
        "refresh_job",
        selection=dg.AssetSelection.assets("training_set", "drift_report"),
        executor_def=dg.in_process_executor,
        tags={PIPELINE_TAG: spec.name},
        description="Bring the training set up to date with silver, then compare recent data with the champion's.",
    )

    @dg.schedule(
        name="refresh_schedule",
        job=refresh_job,
        cron_schedule=os.environ.get(REFRESH_CRON_ENV_VAR, "* * * * *"),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every minute (RT_TRAINING_REFRESH_CRON): training set update and drift report.",
    )
    def refresh_schedule(context: dg.ScheduleEvaluationContext):
        busy = context.instance.get_run_records(
            dg.RunsFilter(job_name="refresh_job", statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}), limit=1
        )
        if busy:
            return dg.SkipReason("the previous refresh is still running")
        return dg.RunRequest()

    return dg.Definitions(
        assets=[build_drift_report_asset(spec)],
        jobs=[refresh_job],
        schedules=[refresh_schedule],
        sensors=[build_retraining_sensor(spec), *build_run_event_sensors(spec)],
    )
