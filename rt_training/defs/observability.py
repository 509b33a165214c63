"""Run events for monitoring: every finished run of this code location, success or failure, in ``run_events``.

The Prometheus exporter does not read Dagster's run storage (it may run elsewhere and must not import Dagster), so
two run-status sensors append what they see to the pipeline's ``run_events`` Delta table
(:func:`rt_training.monitoring.run_events.append_run_event`); the exporter turns failures into
``rt_training_run_failures_total``. A sensor retried after a crash may append an event twice: readers count
distinct run ids.
"""

from datetime import UTC, datetime

import dagster as dg

from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec

MAX_MESSAGE_CHARS = 2000


def record_run_event(
    spec: PipelineSpec,
    context: dg.RunStatusSensorContext,
    status: dg.DagsterRunStatus,
    lake: LakeResource,
    message: str | None = None,
) -> None:
    """Append the run of ``context`` with ``status`` (its Dagster name), its end time and ``message``."""
    from rt_training.monitoring.run_events import RUN_EVENTS_TABLE, append_run_event

    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record is not None and record.end_time is not None else None
    location = lake.location()
    append_run_event(
        location.uri(spec.name, RUN_EVENTS_TABLE),
        run_id=run.run_id,
        job_name=run.job_name,
        status=status.value,
        message=message[:MAX_MESSAGE_CHARS] if message else None,
        timestamp=datetime.fromtimestamp(ended, UTC) if ended is not None else datetime.now(UTC),
        storage_options=location.storage_options,
    )


def build_run_event_sensors(spec: PipelineSpec) -> list[dg.SensorDefinition]:
    """``run_success_events_sensor`` and ``run_failure_events_sensor`` over every job of this code location."""

    @dg.run_status_sensor(
        name="run_success_events_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitor_all_code_locations=False,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Appends each successful run of this code location to the run_events table (monitoring).",
    )
    def run_success_events_sensor(context: dg.RunStatusSensorContext, lake: LakeResource) -> None:
        record_run_event(spec, context, dg.DagsterRunStatus.SUCCESS, lake)

    @dg.run_failure_sensor(
        name="run_failure_events_sensor",
        monitor_all_code_locations=False,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Appends each failed run of this code location to the run_events table (monitoring: "
        "rt_training_run_failures_total).",
    )
    def run_failure_events_sensor(context: dg.RunFailureSensorContext, lake: LakeResource) -> None:
        failure = context.failure_event
        record_run_event(
            spec, context, dg.DagsterRunStatus.FAILURE, lake, failure.message if failure else None
        )

    return [run_success_events_sensor, run_failure_events_sensor]


def definitions(spec: PipelineSpec) -> dg.Definitions:
    return dg.Definitions(sensors=build_run_event_sensors(spec))
