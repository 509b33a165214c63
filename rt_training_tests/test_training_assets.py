"""Continual training through Dagster on a really ingested stream: the training set, candidates trained by the
real entry point in a Pipes subprocess, the gate and the champion check; the GPU jobs' tags against dagster.yaml;
the first-champion sensor on an ephemeral instance."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
import yaml
from deltalake import DeltaTable, write_deltalake

from rt_training.defs.factory import build_definitions
from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.defs.training import GPU_POOL_TAG
from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.lake.exactly_once import committed_offsets
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.offsets import partition_offsets
from rt_training.stream.planner import OffsetRange
from rt_training.stream.producer import produce
from rt_training.training.checkpoints import file_sha256
from rt_training.training.launch import min_rows_for_first_champion
from rt_training.training.registry import Candidate, ModelRegistry
from rt_training.training.teacher import LinearTeacher
from rt_training_tests.ingest_support import resources, spec_for

ROOT = Path(__file__).resolve().parents[1]


def training_spec(topic: str) -> PipelineSpec:
    spec = spec_for(topic)
    return spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(update={"capacity": 2000}),
            "training": spec.training.model_copy(update={"epochs": 2, "batch_size": 256}),
        }
    )


def ingest_pending(settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, run_id: str) -> None:
    """One micro-batch of everything Kafka holds beyond what silver committed."""
    topic = spec.source.topic
    bounds = partition_offsets(settings, topic)
    committed = committed_offsets(lake.uri(spec.name, "silver"), spec.name, topic, list(bounds))
    ranges = [
        OffsetRange(topic, p, committed[p] if committed[p] is not None else b.earliest, b.end)
        for p, b in sorted(bounds.items())
    ]
    report = run_micro_batch(settings, spec, lake, [r for r in ranges if r.size], run_id)
    assert not report.skipped


def silver(lake: LakeLocation, spec: PipelineSpec) -> pa.Table:
    return DeltaTable(lake.uri(spec.name, "silver")).to_pyarrow_table()


def meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (mat,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


def run_config(**training) -> dict:
    return {"ops": {"model_candidate": {"config": {"threads": 1, "log_every": 5, **training}}}}


HISTORY_MS = int(dt.datetime(2019, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
"""Stream A starts here: years before the test runs, as a backfill of a real topic would."""


@pytest.mark.slow
def test_training_set_candidates_and_gate_on_an_ingested_stream(
    kafka_broker, topic_factory, tmp_path
) -> None:
    topic = topic_factory(partitions=3)
    spec = training_spec(topic)
    lake = LakeLocation(str(tmp_path / "lake"))
    defs = build_definitions(spec, resources(kafka_broker, tmp_path / "lake"))
    instance = dg.DagsterInstance.ephemeral()

    def execute(job: str, config: dict, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job).execute_in_process(run_config=config, instance=instance, tags=tags)
        assert result.success
        return result

    # Stream A: 4 s of event time in 2019 (1,000 events/s), ingested now. Alone it is the newest event time
    # silver holds, so it is all held out: nothing to sample yet.
    holdout_ms = int(spec.training.holdout_window_s * 1000)
    produce(kafka_broker, spec, topic, count=4000, seed=11, start_ms=HISTORY_MS)
    ingest_pending(kafka_broker, spec, lake, "ingest-a")
    rows_a = silver(lake, spec).num_rows
    a_ends = {(p, o + 1) for p, o in _max_offsets(silver(lake, spec)).items()}
    alone = meta(execute("training_set_job", {}), "training_set")
    assert not alone["changed"] and "no silver rows with event time up to the cut" in alone["reason"]

    # Stream B: 2 s of events one holdout window and a minute after A: the watermark moves past A, B is held out.
    b_start = HISTORY_MS + 4000 + holdout_ms + 60_000
    produce(kafka_broker, spec, topic, count=2000, seed=12, start_ms=b_start)
    ingest_pending(kafka_broker, spec, lake, "ingest-b")
    rows_b = silver(lake, spec).num_rows - rows_a

    first = meta(execute("training_set_job", {}), "training_set")
    assert first["changed"] and first["rows_offered"] == rows_a == first["items_seen"]
    assert (
        first["training_set_version"] == 0 and first["size"] == 1600
    )  # recent part: replay fills on evictions
    assert first["label_share_0"] + first["label_share_1"] == pytest.approx(1.0)
    assert first["importance_weighted"] is False  # no champion yet
    assert first["cut_unix_s"] == pytest.approx(first["watermark_unix_s"] - spec.training.holdout_window_s)
    assert first["watermark_unix_s"] <= (b_start + 2000) / 1000
    again = meta(execute("training_set_job", {}), "training_set")
    assert not again["changed"] and again["training_set_version"] == 0
    assert DeltaTable(lake.uri(spec.name, "training_set")).version() == 0

    # The first champion: nothing new under the cut, so the candidate trains on snapshot 0.
    result = execute("training_job", run_config())
    candidate, gate = meta(result, "model_candidate"), meta(result, "champion_model")
    assert meta(result, "training_set")["rows_offered"] == 0
    assert candidate["training_set_version"] == 0 and candidate["holdout_after"] == first["cut_time"]
    assert candidate["warm_start_from"] == "none"
    assert candidate["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert candidate["steps"] > 0 and candidate["samples_per_s"] > 0
    assert file_sha256(candidate["checkpoint_path"]) == candidate["sha256"]
    assert {(r["partition"], r["end"]) for r in candidate["kafka_offsets"]} == a_ends
    assert gate["decision"] == "promoted" and gate["holdout_rows"] == rows_b
    assert gate["decided_by"] == "training run" and "no champion yet" in gate["reason"]
    assert gate["candidate_metric"] > 0.55  # the synthetic stream's labels carry signal
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "champion_loads_and_scores" and check.passed
    assert check.metadata["holdout_rows"].value == rows_b
    assert check.metadata["auc"].value == pytest.approx(gate["candidate_metric"], abs=1e-6)
    champion_1 = gate["champion_id"]
    # The held-out window was never trained on: its ids are not in the snapshot the candidate used.
    holdout_ids = pc.filter(
        silver(lake, spec)[spec.id_field],
        pc.greater(
            silver(lake, spec)[spec.time_field],
            pa.scalar(dt.datetime.fromisoformat(first["cut_time"]), pa.timestamp("us", tz="UTC")),
        ),
    )
    snapshot_ids = DeltaTable(lake.uri(spec.name, "training_set"), version=0).to_pyarrow_table()[
        spec.id_field
    ]
    assert len(holdout_ids) == rows_b and not pc.any(pc.is_in(holdout_ids, value_set=snapshot_ids)).as_py()

    # A retraining launched for a drift report, on two DDP ranks under torchrun: warm start, gated against the
    # champion by the training run.
    config = run_config(nproc_per_node=2)
    result = execute("retraining_job", config, tags={"rt_training/drift_report": "drift-42"})
    candidate, gate = meta(result, "model_candidate"), meta(result, "champion_model")
    assert candidate["warm_start_from"] == champion_1 and candidate["drift_report"] == "drift-42"
    assert candidate["world_size"] == 2 and candidate["nproc_per_node"] == 2
    assert gate["decided_by"] == "training run" and "vs champion" in gate["reason"]
    better = gate["candidate_metric"] >= gate["champion_metric"] - spec.training.promotion_tolerance
    assert gate["decision"] == ("promoted" if better else "rejected")
    registry = ModelRegistry(lake.uri(spec.name, "model_registry"))
    registered = registry.registered(candidate["checkpoint_id"])
    assert registered.lineage["drift_report"] == "drift-42"
    assert registered.lineage["parent_checkpoint_id"] == champion_1
    assert registered.lineage["metrics"]["samples_per_s"] == pytest.approx(candidate["samples_per_s"])
    champion_2 = registry.champion().checkpoint_id

    # A deliberately poor candidate (one step from scratch): the run had no champion to compare with, so the
    # gate scores it here against the champion, rejects it, and the champion stays.
    result = execute("training_job", run_config(warm_start=False, max_steps=1))
    gate = meta(result, "champion_model")
    assert gate["decision"] == "rejected" and gate["decided_by"] == "re-scored"
    assert gate["candidate_metric"] < gate["champion_metric"] and "worse by" in gate["reason"]
    assert registry.champion().checkpoint_id == champion_2 == gate["champion_id"]

    # Later events (stream C) move the watermark: B falls under the cut and is offered, once; the champion's
    # losses weigh it; drift shortens the half-life for this run.
    produce(kafka_broker, spec, topic, count=500, seed=13, start_ms=b_start + 2000 + holdout_ms + 60_000)
    ingest_pending(kafka_broker, spec, lake, "ingest-c")
    later = {"recency_half_life_s": 600.0}
    update = meta(execute("training_set_job", {"ops": {"training_set": {"config": later}}}), "training_set")
    assert update["changed"] and update["rows_offered"] == rows_b
    assert update["items_seen"] == rows_a + rows_b
    assert update["importance_weighted"] is True and update["adapted_for_drift"] is True
    assert update["recency_half_life_s"] == 600.0 and update["training_set_version"] == 1
    assert update["size"] == 2000 and update["replay_share"] == pytest.approx(0.2)
    snapshot = DeltaTable(lake.uri(spec.name, "training_set")).to_pyarrow_table()
    ids = snapshot[spec.id_field]
    assert pc.count_distinct(ids).as_py() == 2000
    assert pc.all(pc.is_in(ids, value_set=silver(lake, spec)[spec.id_field])).as_py()


def _max_offsets(rows: pa.Table) -> dict[int, int]:
    grouped = rows.group_by("_partition").aggregate([("_offset", "max")]).to_pylist()
    return {r["_partition"]: r["_offset_max"] for r in grouped}


def test_training_jobs_carry_the_gpu_tags_that_dagster_yaml_limits() -> None:
    from rt_training.definitions import defs

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    (pool,) = [entry for entry in limits if entry["key"] == GPU_POOL_TAG]
    assert pool["limit"] == 1 and pool["value"] == {"applyLimitPerUniqueValue": True}
    for name in ("training_job", "retraining_job"):
        tags = defs.resolve_job_def(name).tags
        assert tags[GPU_POOL_TAG] == "default"
        k8s = json.loads(tags["dagster-k8s/config"])
        assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert tags[PIPELINE_TAG] == "clickstream"
    job = defs.resolve_job_def("training_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "training_set",
        "model_candidate",
        "champion_model",
    }
    assert GPU_POOL_TAG not in defs.resolve_job_def("training_set_job").tags


def test_first_champion_sensor_launches_once_and_never_while_training(tmp_path) -> None:
    spec = spec_for("sensor-" + uuid.uuid4().hex[:8])
    lake = LakeLocation(str(tmp_path))
    res = {"lake": LakeResource(root=str(tmp_path))}
    defs = build_definitions(spec, {**res, "kafka": KafkaResource(bootstrap_servers="127.0.0.1:1")})
    sensor = defs.get_sensor_def("first_champion_sensor")
    instance = dg.DagsterInstance.ephemeral()
    cursor: list[str | None] = [None]

    def tick():
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor[0], definitions=defs, resources=res
        )
        result = sensor(context)
        cursor[0] = result.cursor if isinstance(result, dg.SensorResult) else context.cursor
        return result

    assert "no silver table" in tick().skip_message
    needed = min_rows_for_first_champion(spec)
    teacher = LinearTeacher(spec, seed=1)
    uri = lake.uri(spec.name, "silver")
    # Events a minute apart in 2017: the newest holdout window (2 min) of event time is held out, the rows up to
    # the cut count.
    start, minute = dt.datetime(2017, 1, 1, tzinfo=dt.UTC), dt.timedelta(minutes=1)
    held = math.ceil((spec.training.holdout_window_s + spec.time.allowed_lateness) / 60)
    write_deltalake(uri, teacher.table(needed - 1 + held, seed=1, start_time=start, interval=minute))
    assert (
        f"{needed - 1} silver rows with event time up to the holdout cut" in tick().skip_message
        and f"waiting for {needed}" in tick().skip_message
    )
    later = start + (needed - 1 + held) * minute
    write_deltalake(
        uri, teacher.table(1, seed=2, start_offset=needed + held, start_time=later), mode="append"
    )
    launched = tick()
    assert isinstance(launched, dg.SensorResult)
    (request,) = launched.run_requests
    assert (
        request.run_key == "first-champion-silver-1"
        and "no champion yet" in request.tags["rt_training/trigger_reason"]
    )
    assert "already requested for silver version 1" in tick().skip_message
    # The requested run is in flight: nothing new is launched, even for a new silver version.
    job = defs.resolve_job_def("training_job")
    run = instance.create_run_for_job(
        job, tags={**job.tags, **request.tags}, status=dg.DagsterRunStatus.NOT_STARTED
    )
    write_deltalake(uri, teacher.table(10, seed=3, start_offset=needed + 1), mode="append")
    assert f"training_job run {run.run_id} is in flight" in tick().skip_message
    # It ended without a champion (rejected, say): the next silver version gets one more try.
    instance.report_run_failed(run)
    retry = tick()
    assert [r.run_key for r in retry.run_requests] == ["first-champion-silver-2"]
    # Once a champion exists the sensor is done.
    registry = ModelRegistry(lake.uri(spec.name, "model_registry"))
    registry.register(Candidate("ckpt-a", str(tmp_path / "a.pt"), "0" * 64, "auc", 0.7))
    registry.promote("ckpt-a", "test")
    write_deltalake(uri, teacher.table(10, seed=4, start_offset=needed + 11), mode="append")
    assert "a champion exists" in tick().skip_message


def test_training_command_uses_torchrun_for_several_processes() -> None:
    from rt_training.training.launch import training_command

    assert training_command("job.json", 1, python="py") == [
        "py", "-m", "rt_training.training.entrypoint", "--config", "job.json",
    ]  # fmt: skip
    assert training_command("job.json", 4, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
        "-m", "rt_training.training.entrypoint", "--config", "job.json",
    ]  # fmt: skip


def test_model_candidate_without_a_training_set_says_what_to_do(tmp_path) -> None:
    from rt_training.defs.training import definitions

    spec = spec_for("none-" + uuid.uuid4().hex[:8])
    assets = [a for a in definitions(spec).assets if a.key.to_user_string() == "model_candidate"]
    result = dg.materialize(
        assets,
        resources={
            "lake": LakeResource(root=str(tmp_path)),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "has no training set yet: materialize training_set first" in message
