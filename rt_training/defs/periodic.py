"""Periodic retraining on event time: every ``training.retrain_every_s`` of event time or ``retrain_every_rows``
new silver rows.

``periodic_retraining_sensor`` counts from the last retraining launch (the ``rt_training/launch_watermark`` tag
every launch carries, drift-launched or periodic) or, before the first one, from the champion's training-set
cut, and launches ``retraining_job`` when :func:`rt_training.drift.trigger.periodic_due` says a period is over.
Event time, not the wall clock: "every 30d" retrains once per 30 days of the stream's own events, so a replay of
a year retrains about twelve times however fast it is ingested, and a stalled stream does not retrain on stale
data. The wall-clock ``training.schedule_cron`` stays as it is (``periodic_retraining_schedule``). While the
newest drift report of the current champion shows dataset drift, the launch carries the drift half-life, as a
drift-launched one does. The sensor exists only when the spec sets one of the two settings.
"""

from typing import Any

import dagster as dg

from rt_training.defs.drift import LAUNCH_WATERMARK_TAG, RETRAINING_JOB, drift_run_config
from rt_training.defs.ingest import IN_FLIGHT, PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.defs.training import TRIGGER_TAG
from rt_training.spec import PipelineSpec
from rt_training.spec.durations import format_duration


def _every(spec: PipelineSpec) -> str:
    parts = []
    if spec.training.retrain_every_s is not None:
        parts.append(f"{format_duration(spec.training.retrain_every_s)} of event time")
    if spec.training.retrain_every_rows is not None:
        parts.append(f"{spec.training.retrain_every_rows} new silver rows")
    return " or ".join(parts)


def build_periodic_retraining_sensor(spec: PipelineSpec) -> dg.SensorDefinition:
    @dg.sensor(
        name="periodic_retraining_sensor",
        job_name=RETRAINING_JOB,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launches retraining_job every {_every(spec)} since the last retraining launch (or the champion's "
            "cut), never while a retraining is in flight."
        ),
    )
    def periodic_retraining_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        from rt_training.drift.periodic import periodic_decision
        from rt_training.drift.reports import DRIFT_REPORTS_TABLE, latest_report
        from rt_training.eventtime import read_event_clock
        from rt_training.training.champion import registry_for

        location = lake.location()
        now = read_event_clock(spec, location).watermark_s
        if now is None:
            return dg.SkipReason("silver has no rows, so no watermark yet")
        records = context.instance.get_run_records(
            dg.RunsFilter(job_name=RETRAINING_JOB, tags={PIPELINE_TAG: spec.name}), limit=1
        )
        last = records[0].dagster_run if records else None
        decision = periodic_decision(
            spec,
            location,
            now=now,
            last_launch_at=None if last is None else _float(last.tags.get(LAUNCH_WATERMARK_TAG)),
            in_flight=last is not None and last.status in IN_FLIGHT,
        )
        assert decision is not None  # the sensor exists only when the spec sets a period
        if not decision.launch:
            return dg.SkipReason(decision.reason)
        champion = registry_for(spec, location).champion()
        report = latest_report(location.uri(spec.name, DRIFT_REPORTS_TABLE), location.storage_options)
        drifting = (
            report is not None
            and report.dataset_drift
            and champion is not None
            and report.champion_id == champion.checkpoint_id
        )
        request = dg.RunRequest(
            run_key=f"periodic-{now:.6f}",
            run_config=drift_run_config(spec, drifting),
            tags={
                TRIGGER_TAG: f"periodic: {decision.reason}",
                LAUNCH_WATERMARK_TAG: f"{now:.6f}",
                PIPELINE_TAG: spec.name,
            },
        )
        context.log.info(f"launching {RETRAINING_JOB}: {decision.reason}")
        return dg.SensorResult(run_requests=[request])

    return periodic_retraining_sensor


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def definitions(spec: PipelineSpec) -> dg.Definitions:
    if spec.training.retrain_every_s is None and spec.training.retrain_every_rows is None:
        return dg.Definitions()
    return dg.Definitions(sensors=[build_periodic_retraining_sensor(spec)])
