"""retraining_sensor against real drift_reports tables and a real Dagster instance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from rt_training.defs.factory import build_definitions
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.drift.reports import DRIFT_REPORTS_SCHEMA, append_report, latest_report
from rt_training.ingest.batch import LakeLocation
from rt_training.spec import load_spec

T0 = datetime(2026, 11, 1, tzinfo=UTC)


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
    spec = spec.model_copy(update={"drift": spec.drift.model_copy(update={"cooldown_s": 3600})})
    resources = {
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
        "lake": LakeResource(root=str(tmp_path)),
    }
    defs = build_definitions(spec, resources)
    instance = dg.DagsterInstance.ephemeral()
    uri = LakeLocation(str(tmp_path)).uri(spec.name, "drift_reports")
    return spec, defs, instance, resources, uri


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
    assert isinstance(result, dg.SkipReason) and "cooldown: last retraining" in result.skip_message
    # The cooldown over (the last launch an hour and a second ago), the held-back report launches once.
    state = json.loads(cursor)
    assert state["last_report"] == "r2"
    cursor = json.dumps({**state, "last_launch_at": state["last_launch_at"] - 3601})
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SensorResult) and result.run_requests[0].run_key == "retrain-r3"
    result, cursor = tick(defs, instance, resources, cursor)
    assert isinstance(result, dg.SkipReason) and "r3 already considered" in result.skip_message


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
