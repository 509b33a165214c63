"""Drift and retraining: the ``drift_report`` asset, the refresh job and schedule, the retraining sensor.

``refresh_schedule`` runs ``refresh_job`` every minute: ``drift_report`` compares recent silver with the data
the champion learned from (:mod:`rt_training.drift.reports`). ``retraining_sensor`` reads the newest report and
asks :func:`rt_training.drift.trigger.decide_retraining`, which holds a launch back during the cooldown and
while a retraining is in flight; each launch carries why it happened, the report it came from and the watermark
it launched at as run tags, and on dataset drift it shortens the sampler's recency half-life for that run
(``training_set`` run config). Times are event time: the cooldown counts on the pipeline's watermark
(:mod:`rt_training.eventtime`), and the sensor's cursor keeps the watermark of its last launch.

Adapting to drift: the report comes before the training-set update
-------------------------------------------------------------------
A drift-launched retraining can only shift the sample toward recent data through the rows it offers to the
sampler, and each silver row is offered once. When ``refresh_job`` also updated the training set (before the
report, as it used to), every row up to the cut was gone by the time the report found drift: the retraining
offered 0 rows and the drift half-life never acted. So when the spec can adapt to drift
(``drift.on_drift_recency_half_life_s`` with the ``weighted`` strategy), ``refresh_job`` is the drift report
alone: silver's new rows wait for the next training run, which decides their priorities from the newest report
(the drift half-life while it shows dataset drift). Nothing is lost by waiting: the reservoirs take each row once
whenever it is offered, the ``uniform`` and ``time_biased`` samples do not depend on how rows are batched, and a
retraining's training-set metadata (``adapted_for_drift``, ``recency_half_life_s``, ``rows_offered``) shows what
the drift changed. Without drift adaptation ``refresh_job`` keeps the training set up to date every run, as
before.
"""

import json
import os
from typing import Any

import dagster as dg

from rt_training.defs.ingest import IN_FLIGHT, PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.defs.training import DRIFT_REPORT_TAG, TRIGGER_TAG
from rt_training.spec import PipelineSpec
from rt_training.spec.durations import format_duration

REFRESH_CRON_ENV_VAR = "RT_TRAINING_REFRESH_CRON"
RETRAINING_JOB = "retraining_job"
MAX_TAG_CHARS = 1000
LAUNCH_WATERMARK_TAG = "rt_training/launch_watermark"
"""The pipeline's watermark (Unix seconds of event time) when a retraining was launched."""


def drift_run_config(spec: PipelineSpec, dataset_drift: bool) -> dict[str, Any]:
    """``training_set`` run config of a retraining: the drift half-life while the newest report shows drift."""
    half_life = spec.drift.on_drift_recency_half_life_s
    if not dataset_drift or not spec.adapts_on_drift or half_life is None:
        return {}
    return {"ops": {"training_set": {"config": {"recency_half_life_s": half_life}}}}


def report_metadata(report: Any) -> dict[str, Any]:
    """Materialization metadata of a :class:`~rt_training.drift.reports.DriftReport`."""
    result, reference, quality = report.result, report.reference, report.quality
    table = "| column | test | score | threshold | drifted |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {c.column} | {c.stattest_display_name} | {c.score:.4g} | {c.threshold:g} | "
        f"{'**yes**' if c.drifted else 'no'} |"
        for c in result.columns
    )
    metadata: dict[str, Any] = {
        "status": "compared",
        "report_id": report.report_id,
        "dataset_drift": result.dataset_drift,
        "drift_share": float(result.drift_share),
        "n_drifted": result.n_drifted,
        "n_columns": len(result.columns),
        "drifted_columns": ", ".join(result.drifted_columns) or "none",
        "summary": result.summary(),
        "columns": dg.MetadataValue.md(table),
        "champion_id": reference.champion_id,
        "reference_version": reference.training_set_version,
        "reference_silver_version": reference.silver_version,
        "reference_cut": reference.cut.isoformat(),
        "reference_rows": result.reference_rows,
        "current_rows": result.current_rows,
        "quality_rows": report.quality_rows,
        "watermark": report.watermark.isoformat(),
        "watermark_unix_s": report.watermark.timestamp(),
        "current_start": report.row["current_start"].isoformat(),
        "current_end": report.row["current_end"].isoformat(),
        "quality_after": reference.cut.isoformat(),
        # The numbers behind the text, list and vector verdicts (OOV rate, lengths, vector spread): they plot.
        **result.detail_numbers(),
    }
    if report.html_path:
        metadata["evidently_report"] = dg.MetadataValue.path(report.html_path)
        metadata["evidently_report_url"] = dg.MetadataValue.url(f"file://{report.html_path}")
    if quality is None:
        metadata["quality"] = (
            "not scored: no promotion metric or too few recent rows after the champion's cut"
        )
    else:
        metadata.update(
            quality=quality.reason(),
            quality_metric=quality.metric,
            quality_baseline=quality.baseline,
            quality_dropped=quality.dropped,
        )
        # nan has no metadata type (AUC of a one-class window): leave such values out.
        for key, value in (("quality_recent", quality.recent), ("quality_drop", quality.worsening)):
            if value == value:
                metadata[key] = value
    return metadata


def build_drift_report_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name="drift_report",
        group_name="monitoring",
        deps=["training_set", "champion_model"],
        kinds={"evidently", "deltalake"},
        description=(
            "The newest silver rows by event time (up to the watermark) compared with the rows the champion's "
            "training set "
            "was drawn from (Evidently's DataDriftPreset verdicts, the champion's prediction included), and the "
            "champion's metric on recent rows it never trained on; one drift_reports row and an Evidently HTML "
            "report per materialization."
        ),
    )
    def drift_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from rt_training.drift.reports import NothingToCompare, run_drift_report

        try:
            report = run_drift_report(spec, lake.location())
        except NothingToCompare as exc:
            context.log.info(f"no drift report: {exc}")
            return dg.MaterializeResult(metadata={"status": str(exc)})
        quality = "" if report.quality is None else f"; {report.quality.reason()}"
        context.log.info(f"drift report {report.report_id}: {report.result.summary()}{quality}")
        return dg.MaterializeResult(metadata=report_metadata(report))

    return drift_report


def retraining_in_flight(context: dg.SensorEvaluationContext, spec: PipelineSpec) -> str | None:
    """The id of a queued or running ``retraining_job`` run of this pipeline, if there is one."""
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=RETRAINING_JOB, statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def build_retraining_sensor(spec: PipelineSpec) -> dg.SensorDefinition:
    @dg.sensor(
        name="retraining_sensor",
        job_name=RETRAINING_JOB,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Launches retraining_job on dataset drift or a quality drop in the newest drift report, at most once "
            f"per report, with a cooldown of {format_duration(spec.drift.cooldown_s)} of event time after its "
            "last launch and never while a retraining is in flight."
        ),
    )
    def retraining_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        from rt_training.drift.quality import QualitySignal
        from rt_training.drift.reports import DRIFT_REPORTS_TABLE, latest_report
        from rt_training.drift.trigger import decide_retraining
        from rt_training.eventtime.clock import read_event_clock

        state = json.loads(context.cursor) if context.cursor else {}
        location = lake.location()
        report = latest_report(location.uri(spec.name, DRIFT_REPORTS_TABLE), location.storage_options)
        if report is None:
            return dg.SkipReason("no drift report yet (no champion, or refresh_job has not run)")
        if report.report_id == state.get("last_report"):
            return dg.SkipReason(f"drift report {report.report_id} already considered")
        now = read_event_clock(spec, location).watermark_s
        if now is None:
            return dg.SkipReason(f"drift report {report.report_id}: silver has no rows, so no watermark yet")
        quality = (
            QualitySignal(**report.quality)
            if report.quality and report.quality.get("worsening") is not None
            else None
        )
        decision = decide_retraining(
            now=now,
            last_launch_at=state.get("last_launch_watermark"),
            in_flight=retraining_in_flight(context, spec) is not None,
            policy=spec.drift,
            drift=report,
            quality=quality,
        )
        if not decision.launch:
            held = decision.reasons[-1].startswith(("cooldown", "retraining already"))
            if not held:
                # Nothing to act on in this report; a held-back one is looked at again on the next tick.
                state["last_report"] = report.report_id
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(f"drift report {report.report_id}: {decision.reason}")
        state.update(last_report=report.report_id, last_launch_watermark=now)
        request = dg.RunRequest(
            run_key=f"retrain-{report.report_id}",
            run_config=drift_run_config(spec, report.dataset_drift),
            tags={
                TRIGGER_TAG: decision.reason[:MAX_TAG_CHARS],
                DRIFT_REPORT_TAG: report.report_id,
                LAUNCH_WATERMARK_TAG: f"{now:.6f}",
                PIPELINE_TAG: spec.name,
            },
        )
        context.log.info(f"launching {RETRAINING_JOB} for drift report {report.report_id}: {decision.reason}")
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(state))

    return retraining_sensor


def build_refresh(spec: PipelineSpec) -> tuple[Any, dg.ScheduleDefinition]:
    """``refresh_job`` and ``refresh_schedule`` launching it.

    ``refresh_job`` is the drift report alone when drift can adapt the training set's priorities (the training
    set then advances in training runs, after the report; see the module docstring), else the training set, then
    the drift report.
    """
    if spec.adapts_on_drift:
        selection = dg.AssetSelection.assets("drift_report")
        description = (
            "Compare recent data with the champion's; silver's new rows wait for the next training run, whose "
            "training set takes them with the priorities the newest drift report calls for."
        )
    else:
        selection = dg.AssetSelection.assets("training_set", "drift_report")
        description = (
            "Bring the training set up to date with silver, then compare recent data with the champion's."
        )
    refresh_job = dg.define_asset_job(
        "refresh_job",
        selection=selection,
        executor_def=dg.in_process_executor,
        tags={PIPELINE_TAG: spec.name},
        description=description,
    )
    cron = os.environ.get(REFRESH_CRON_ENV_VAR, "* * * * *")

    @dg.schedule(
        name="refresh_schedule",
        job=refresh_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"refresh_job on {cron!r} (${REFRESH_CRON_ENV_VAR}), skipped while the previous one runs.",
    )
    def refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        busy = context.instance.get_run_records(
            dg.RunsFilter(job_name=refresh_job.name, statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}),
            limit=1,
        )
        if busy:
            return dg.SkipReason(f"refresh run {busy[0].dagster_run.run_id} is still in flight")
        return dg.RunRequest()

    return refresh_job, refresh_schedule


def definitions(spec: PipelineSpec) -> dg.Definitions:
    refresh_job, refresh_schedule = build_refresh(spec)
    return dg.Definitions(
        assets=[build_drift_report_asset(spec)],
        jobs=[refresh_job],
        schedules=[refresh_schedule],
        sensors=[build_retraining_sensor(spec)],
    )
