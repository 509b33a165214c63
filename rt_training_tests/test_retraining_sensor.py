"""retraining_sensor against real drift_reports and silver tables and a real Dagster instance.

The cooldown counts on event time: silver's events are from 2009, the wall clock says otherwise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from rt_training.defs.factory import build_definitions
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.drift.reports import DRIFT_REPORTS_SCHEMA, append_report, latest_report
from rt_training.ingest.batch import LakeLocation
from rt_training.spec import load_spec

T0 = datetime(2026, 11, 1, tzinfo=UTC)
EVENTS = datetime(2009, 1, 1, tzinfo=UTC)


def report(i: int, drift: bool, quality_dropped: bool | None = None) -> dict:
    quality = None
    if quality_dropped is not None:
        recent = 0.70 if quality_dropped else 0.84
        quality = {"metric": "auc", "baseline": 0.85, "recent": recent, "worsening": 0.85 - recent,
                   "max_drop": 0.05, "dropped": quality_dropped}  # fmt: skip
    return {
        "report_id": f"r{i}",
        "created_at": T0 + timedelta(minutes=i),
        "reference_version": 3,
        "current_rows": 5000,
        "drift_share": 0.8 if drift else 0.1,
        "n_drifted": 4 if drift else 0,
        "dataset_drift": drift,
        "columns_json": "[]",
        "html_path": "",
        "summary": f"{4 if drift else 0}/5 columns drifted (share {0.8 if drift else 0.1} {'>=' if drift else '<'} 0.5)",
        "champion_id": "ckpt-1",
        "quality_json": json.dumps(quality) if quality else None,
    }


@pytest.fixture
def setup(tmp_path: Path):
    spec = load_spec()
    spec = spec.model_copy(
        update={
            "drift": spec.drift.model_copy(update={"cooldown_s": 3600}),
            "time": spec.time.model_copy(update={"allowed_lateness": 0.0}),
        }
    )
    resources = {
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
        "lake": LakeResource(root=str(tmp_path)),
    }
    defs = build_definitions(spec, resources)
    instance = dg.DagsterInstance.ephemeral()
    lake = LakeLocation(str(tmp_path))
    events_at(lake, spec, 0)
    return spec, defs, instance, resources, lake.uri(spec.name, "drift_reports")


def events_at(lake: LakeLocation, spec, seconds: float) -> None:
    """Append one silver row whose event time is ``seconds`` after EVENTS (the watermark moves there)."""
    when = pa.array([EVENTS + timedelta(seconds=seconds)], pa.timestamp("us", tz="UTC"))
    write_deltalake(lake.uri(spec.name, "silver"), pa.table({spec.time_field: when}), mode="append")


def tick(defs, instance, resources, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    result = defs.get_sensor_def("retraining_sensor")(context)
    return result, (result.cursor if isinstance(result, dg.SensorResult) else context.cursor)


def test_report_row_schema_round_trip(setup) -> None:
    *_, uri = setup
    append_report(uri, report(5, True, quality_dropped=False))
    stored = latest_report(uri)
    assert stored is not None and stored.report_id == "r5" and stored.dataset_drift
    assert stored.summary() == "4/5 columns drifted (share 0.8 >= 0.5)" and stored.quality["recent"] == 0.84
    # An older report appended later is not the latest: created_at decides, not the write order.
    append_report(uri, report(0, False))
    assert latest_report(uri).report_id == "r5"
    assert set(DRIFT_REPORTS_SCHEMA.names) >= {"report_id", "drift_share", "columns_json", "html_path"}


def test_launches_on_drift_with_reason_then_cooldown_and_in_flight_hold(setup) -> None:
    _spec, defs, instance, resources, uri = setup
    assert defs.get_sensor_def("retraining_sensor").job_name == "retraining_job"
    result, cursor = tick(defs, instance, resources, None)
    assert isinstance(result, dg.SkipReason) and "no drift report yet" in result.skip_message
    append_report(uri, report(1, False))
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason) and "no dataset drift" in result.skip_message
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason) and "r1 already considered" in result.skip_message
    append_report(uri, report(2, True))
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["rt_training/drift_report"] == "r2"
    assert request.tags["rt_training/trigger_reason"].startswith("dataset drift: 4/5 columns drifted")
    assert request.run_key == "retrain-r2"
    # The launched run is in flight: a new drifted report is held back and says why.
    job = defs.resolve_job_def("retraining_job")
    instance.create_run_for_job(job, tags=request.tags, status=dg.DagsterRunStatus.NOT_STARTED)
    append_report(uri, report(3, True))
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason) and "retraining already in flight" in result.skip_message
    # Finished, but inside the cooldown: still held back.
    for record in instance.get_run_records():
        instance.delete_run(record.dagster_run.run_id)
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "cooldown: last retraining 0s of event time ago < 1h" in result.skip_message
    state = json.loads(cursor)
    assert state == {"last_report": "r2", "last_launch_watermark": EVENTS.timestamp()}
    assert request.tags["rt_training/launch_watermark"] == f"{EVENTS.timestamp():.6f}"
    # 59 minutes of events later (whatever the wall clock did), still cooling down.
    lake = LakeLocation(str(resources["lake"].root))
    events_at(lake, _spec, 3540)
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "cooldown: last retraining 59m of event time ago < 1h" in result.skip_message
    # An hour of event time after the launch, the held-back report launches once.
    events_at(lake, _spec, 3600)
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SensorResult) and result.run_requests[0].run_key == "retrain-r3"
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason) and "r3 already considered" in result.skip_message
    assert json.loads(cursor)["last_launch_watermark"] == EVENTS.timestamp() + 3600


def test_quality_drop_launches_without_data_drift(setup) -> None:
    _spec, defs, instance, resources, uri = setup
    append_report(uri, report(1, False, quality_dropped=True))
    result, _ = tick(defs, instance, resources, None)
    assert isinstance(result, dg.SensorResult)
    assert "quality drop: auc 0.85 -> 0.7" in result.run_requests[0].tags["rt_training/trigger_reason"]


def test_on_drift_the_training_set_shifts_toward_recent_data(setup) -> None:
    spec, defs, instance, resources, uri = setup
    half_life = spec.drift.on_drift_recency_half_life_s
    assert half_life is not None
    append_report(uri, report(1, True))
    result, _ = tick(defs, instance, resources, None)
    config = result.run_requests[0].run_config["ops"]["training_set"]["config"]
    assert config == {"recency_half_life_s": half_life}


def test_periodic_retraining_every_rows_or_day_of_event_time(tmp_path: Path) -> None:
    spec = load_spec()
    spec = spec.model_copy(
        update={
            "training": spec.training.model_copy(
                update={"retrain_every_s": 86400.0, "retrain_every_rows": 3}
            ),
            "time": spec.time.model_copy(update={"allowed_lateness": 0.0}),
        }
    )
    resources = {
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
        "lake": LakeResource(root=str(tmp_path)),
    }
    defs = build_definitions(spec, resources)
    instance = dg.DagsterInstance.ephemeral()
    lake = LakeLocation(str(tmp_path))

    def periodic() -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        return defs.get_sensor_def("periodic_retraining_sensor")(context)

    skipped = periodic()
    assert (
        isinstance(skipped, dg.SkipReason)
        and skipped.skip_message == "silver has no rows, so no watermark yet"
    )
    events_at(lake, spec, 0)
    skipped = periodic()
    assert skipped.skip_message == "not due: no champion and no retraining launched yet"
    job = defs.resolve_job_def("retraining_job")
    launched = {
        "rt_training/launch_watermark": f"{EVENTS.timestamp():.6f}",
        "rt_training/pipeline": spec.name,
    }
    instance.create_run_for_job(job, tags=launched, status=dg.DagsterRunStatus.SUCCESS)
    events_at(lake, spec, 3600)
    assert periodic().skip_message == "not due: 1h of event time < 1d, 1 new rows < 3"
    events_at(lake, spec, 7200)
    events_at(lake, spec, 10800)
    result = periodic()
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert (
        request.tags["rt_training/trigger_reason"]
        == "periodic: 3 new silver rows since the last retraining (>= 3)"
    )
    assert request.tags["rt_training/launch_watermark"] == f"{EVENTS.timestamp() + 10800:.6f}"
    assert request.run_key == f"periodic-{EVENTS.timestamp() + 10800:.6f}" and request.run_config == {}
    # That retraining in flight: a day of event time later the period is due but waits for it.
    instance.create_run_for_job(job, tags=request.tags, status=dg.DagsterRunStatus.STARTED)
    events_at(lake, spec, 10800 + 86400)
    assert periodic().skip_message == (
        "1d of event time since the last retraining (1d >= 1d); retraining already in flight"
    )
