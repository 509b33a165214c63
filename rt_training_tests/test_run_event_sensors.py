"""The run-event sensors: real refresh_job runs (one succeeds, one fails) recorded in run_events, as the exporter
counts them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from deltalake import DeltaTable

from rt_training.defs.factory import build_definitions
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.monitoring.snapshot import gather_snapshot
from rt_training.spec import load_spec
from rt_training.training.registry import Candidate, ModelRegistry


def test_successful_and_failed_runs_land_in_run_events(tmp_path: Path) -> None:
    spec = load_spec()
    resources = {
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
        "lake": LakeResource(root=str(tmp_path)),
    }
    defs = build_definitions(spec, resources)
    job = defs.resolve_job_def("refresh_job")
    instance = dg.DagsterInstance.ephemeral()

    def record(result: dg.ExecuteInProcessResult, sensor: str) -> None:
        run = instance.get_run_by_id(result.run_id)
        event = result.get_run_success_event() if result.success else result.get_run_failure_event()
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor,
            dagster_event=event,
            dagster_instance=instance,
            dagster_run=run,
            resources=resources,
        )
        sensor_def = defs.get_sensor_def(sensor)
        sensor_def(context.for_run_failure() if not result.success else context)

    # No silver and no champion: both steps have nothing to do, the run succeeds.
    ok = job.execute_in_process(instance=instance)
    assert ok.success
    record(ok, "run_success_events_sensor")
    # A champion whose checkpoint file is gone: drift_report cannot load it and the run fails.
    registry = ModelRegistry.for_pipeline(tmp_path, spec.name)
    registry.register(Candidate("gone", str(tmp_path / "gone.pt"), "0" * 64, "auc", 0.8, {}))
    registry.promote("gone", "by hand")
    failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    record(failed, "run_failure_events_sensor")

    rows = (
        DeltaTable(str(tmp_path / spec.name / "run_events"))
        .to_pyarrow_table()
        .sort_by("timestamp")
        .to_pylist()
    )
    assert [(r["run_id"], r["job_name"], r["status"]) for r in rows] == [
        (ok.run_id, "refresh_job", "SUCCESS"),
        (failed.run_id, "refresh_job", "FAILURE"),
    ]
    assert rows[0]["message"] is None and "drift_report" in rows[1]["message"]
    for row, result in zip(rows, (ok, failed), strict=True):
        ended = instance.get_run_record_by_id(result.run_id).end_time
        assert abs(row["timestamp"].timestamp() - ended) < 1e-3
    assert gather_snapshot(spec, str(tmp_path)).run_failures == {"refresh_job": 1}


def test_the_sensors_start_running() -> None:
    defs = build_definitions(load_spec())
    for name in ("run_success_events_sensor", "run_failure_events_sensor"):
        sensor = defs.get_sensor_def(name)
        assert isinstance(sensor, dg.RunStatusSensorDefinition)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
