"""Ingest end to end against the real broker, real Delta tables and a real Dagster instance.

The sensor plans, the job runs (in process, as the daemon's run worker would), and the lake is reconciled
exactly against Kafka: every offset once in bronze, silver + dead letters = bronze, each bad record with its
reason. Faults: SIGKILL at every phase of a micro-batch, racing runs, a broker stopped mid-run, retention.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rt_training.defs.ingest import earlier_batch_in_flight, ranges_of, run_request_for
from rt_training.ingest.batch import LakeLocation, TurnTimeoutError, run_micro_batch
from rt_training.lake.exactly_once import OffsetMismatchError, committed_offsets
from rt_training.lake.history import recorded_data_loss
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings, make_producer
from rt_training.stream.offsets import partition_offsets
from rt_training.stream.planner import OffsetRange, PartitionState, plan_runs
from rt_training.stream.producer import produce
from rt_training.stream.reader import read_range
from rt_training_tests.ingest_support import Daemon, definitions, read_table, resources, spec_for

START_MS = (int(time.time()) - 3600) * 1000  # a simulated clock; recent, or the broker's retention deletes it


def make_daemon(spec: PipelineSpec, settings: KafkaSettings, lake: Path) -> Daemon:
    return Daemon(
        definitions(spec, settings, lake), dg.DagsterInstance.ephemeral(), resources(settings, lake)
    )


def kafka_offsets(settings: KafkaSettings, topic: str) -> dict[int, tuple[int, int]]:
    return {p: (b.earliest, b.end) for p, b in partition_offsets(settings, topic).items()}


def coords(table: pa.Table, prefix: str = "") -> list[tuple[int, int]]:
    parts = table.column(f"{prefix}partition").to_pylist()
    offs = table.column(f"{prefix}offset").to_pylist()
    return list(zip(parts, offs, strict=True))


def assert_reconciled(settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation) -> dict[str, pa.Table]:
    """Bronze holds every Kafka offset exactly once; silver and dead letters partition bronze exactly."""
    bronze = read_table(lake, spec, "bronze")
    silver = read_table(lake, spec, "silver")
    dead = read_table(lake, spec, "dead_letters")
    expected = {
        (p, o) for p, (lo, hi) in kafka_offsets(settings, spec.source.topic).items() for o in range(lo, hi)
    }
    bronze_coords = coords(bronze)
    assert len(bronze_coords) == len(set(bronze_coords)), "duplicated offsets in bronze"
    assert set(bronze_coords) == expected, "bronze does not hold exactly Kafka's offsets"
    silver_coords, dead_coords = coords(silver, "_"), coords(dead)
    assert len(silver_coords) == len(set(silver_coords)), "duplicated offsets in silver"
    assert len(dead_coords) == len(set(dead_coords)), "duplicated offsets in dead letters"
    assert not set(silver_coords) & set(dead_coords)
    assert set(silver_coords) | set(dead_coords) == expected
    committed = committed_offsets(lake.uri(spec.name, "silver"), spec.name, spec.source.topic, [0, 1, 2])
    assert committed == {p: hi for p, (_, hi) in kafka_offsets(settings, spec.source.topic).items()}
    return {"bronze": bronze, "silver": silver, "dead_letters": dead}


@pytest.fixture
def topic(topic_factory) -> str:
    return topic_factory(partitions=3)


def test_sensor_and_job_ingest_exactly_once_with_bad_records(kafka_broker, topic, tmp_path) -> None:
    spec = spec_for(topic, min_records=1, max_records_per_run=4000)
    sent = produce(kafka_broker, spec, topic, count=10_000, bad_ratio=0.08, seed=5, start_ms=START_MS)
    assert sent.sent == 10_000 and sum(sent.bad.values()) > 0
    daemon = make_daemon(spec, kafka_broker, tmp_path)
    runs = daemon.catch_up()
    assert runs >= 3  # a 10,000-record backlog at 4,000 a run
    assert all(r.success for r in daemon.results)
    tables = assert_reconciled(kafka_broker, spec, LakeLocation(str(tmp_path)))
    # Every injected defect is in dead letters with its own reason, and nothing else is.
    reasons = Counter(tables["dead_letters"].column("reason").to_pylist())
    assert reasons == Counter(dict(sent.bad))
    assert tables["silver"].num_rows == 10_000 - sum(sent.bad.values())
    # The asset checks ran and passed for every batch; metadata carries plottable numbers.
    for result in daemon.results:
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {"counts_reconcile", "no_offset_gaps"}
        assert all(e.passed for e in evaluations)
        by_key = {
            m.asset_key.to_user_string(): m.metadata
            for m in result.asset_materializations_for_node("ingest_micro_batch")
        }
        assert {
            "records_in",
            "rows_written",
            "event_lag_p95_s",
            "dead_letters_malformed_json",
            "duration_s",
        } <= set(by_key["silver_events"])
        assert by_key["bronze_events"]["rows_written"].value == by_key["bronze_events"]["records_in"].value
    # Nothing new: the sensor skips with a reason.
    skip = daemon.tick()
    assert isinstance(skip, dg.SkipReason) and "no new records" in skip.skip_message


def test_sensor_policy_thresholds_backlog_and_new_partition(kafka_broker, topic, tmp_path) -> None:
    from kafka.admin import NewPartitions

    from rt_training.stream.client import make_admin

    spec = spec_for(topic, min_records=500, max_wait_s=3600, max_records_per_run=400)
    daemon = make_daemon(spec, kafka_broker, tmp_path)
    produce(kafka_broker, spec, topic, count=300, seed=1, start_ms=START_MS)
    below = daemon.tick()
    assert isinstance(below, dg.SkipReason)
    assert "300 pending records < min_records 500" in below.skip_message
    produce(kafka_broker, spec, topic, count=900, seed=2, start_ms=START_MS)
    due = daemon.tick()
    assert isinstance(due, dg.SensorResult)
    sizes = [
        sum(r["end"] - r["start"] for r in rr.run_config["ops"]["ingest_micro_batch"]["config"]["ranges"])
        for rr in due.run_requests
    ]
    assert sum(sizes) == 1200 and max(sizes) <= 400 and len(sizes) == 3
    keys = [rr.run_key for rr in due.run_requests]
    assert len(set(keys)) == 3
    # Runs in flight: the next tick plans nothing twice.
    again = daemon.tick()
    assert isinstance(again, dg.SkipReason)
    for rr in due.run_requests:
        daemon.run(rr)
    # A new partition is read from its earliest offset.
    admin = make_admin(kafka_broker)
    admin.create_partitions({topic: NewPartitions(total_count=4)})
    admin.close()
    spec4 = spec_for(topic, partitions=4, min_records=1, max_records_per_run=10_000)
    daemon4 = make_daemon(spec4, kafka_broker, tmp_path)
    produce(kafka_broker, spec4, topic, count=400, seed=3, start_ms=START_MS)
    result = daemon4.tick()
    assert isinstance(result, dg.SensorResult)
    planned = result.run_requests[0].run_config["ops"]["ingest_micro_batch"]["config"]["ranges"]
    assert any(r["partition"] == 3 and r["start"] == 0 for r in planned)
    daemon4.run(result.run_requests[0])
    offsets = kafka_offsets(kafka_broker, topic)
    assert committed_offsets(str(tmp_path / spec.name / "bronze"), spec.name, topic, [0, 1, 2, 3]) == {
        p: hi for p, (_, hi) in offsets.items()
    }


def test_a_micro_batch_waits_only_for_in_flight_runs_of_earlier_offsets(tmp_path) -> None:
    spec = spec_for("orders")
    defs = definitions(spec, KafkaSettings(bootstrap_servers="127.0.0.1:9"), tmp_path)
    job = defs.resolve_job_def("ingest_job")
    instance = dg.DagsterInstance.ephemeral()

    def create(ranges: list[OffsetRange], status: dg.DagsterRunStatus) -> str:
        request = run_request_for(spec, ranges, 0)
        run = instance.create_run_for_job(
            job, run_config=request.run_config, tags=request.tags, status=status
        )
        return run.run_id

    first = [OffsetRange("orders", 0, 0, 100), OffsetRange("orders", 1, 0, 50)]
    running = create(first, dg.DagsterRunStatus.STARTED)
    queued = create([OffsetRange("orders", 0, 100, 200)], dg.DagsterRunStatus.NOT_STARTED)
    create([OffsetRange("orders", 2, 0, 10)], dg.DagsterRunStatus.FAILURE)
    assert ranges_of(instance.get_run_by_id(running).run_config) == first
    awaited = earlier_batch_in_flight(instance, spec, queued, [OffsetRange("orders", 0, 100, 200)])
    assert awaited is not None and running in awaited and "orders[0] up to 100" in awaited
    assert earlier_batch_in_flight(instance, spec, running, first) is None  # the queued run comes after it
    assert (
        earlier_batch_in_flight(instance, spec, "new", [OffsetRange("orders", 2, 10, 20)]) is None
    )  # failed


def test_unreachable_kafka_fails_the_tick_fast_with_the_address(tmp_path) -> None:
    from rt_training.ops.kafka_local import free_port

    address = f"127.0.0.1:{free_port()}"
    settings = KafkaSettings(bootstrap_servers=address)
    spec = spec_for("nowhere")
    daemon = make_daemon(spec, settings, tmp_path)
    started = time.monotonic()
    with pytest.raises(dg.Failure) as info:
        daemon.tick()
    assert time.monotonic() - started < 15
    assert address in str(info.value.description)


def test_replayed_and_racing_runs_write_once(kafka_broker, topic, tmp_path) -> None:
    spec = spec_for(topic)
    produce(kafka_broker, spec, topic, count=3000, seed=9, start_ms=START_MS, bad_ratio=0.05)
    lake = LakeLocation(str(tmp_path))
    ranges = [OffsetRange(topic, p, 0, hi) for p, (_, hi) in kafka_offsets(kafka_broker, topic).items()]
    reports: list = []
    errors: list = []
    barrier = threading.Barrier(2)

    def race(run_id: str) -> None:
        barrier.wait()
        try:
            reports.append(run_micro_batch(kafka_broker, spec, lake, ranges, run_id))
        except Exception as exc:  # the test asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    written = {
        table: sum(r.outcomes[table].rows for r in reports) for table in ("bronze", "silver", "dead_letters")
    }
    assert written["bronze"] == 3000
    assert written["silver"] + written["dead_letters"] == 3000
    for table in ("bronze", "silver", "dead_letters"):
        assert sum(r.outcomes[table].committed for r in reports) == 1, table
    replay = run_micro_batch(kafka_broker, spec, lake, ranges, "run-replay")
    assert replay.skipped and replay.records == 0  # not even read from Kafka
    assert_reconciled(kafka_broker, spec, lake)


def dead_letter_reasons(table: pa.Table) -> set[tuple[int, int, str]]:
    return set(zip(*(table.column(c).to_pylist() for c in ("partition", "offset", "reason")), strict=True))


def test_overlapping_batches_commit_in_order_and_dedupe_across_them(kafka_broker, topic, tmp_path) -> None:
    spec = spec_for(topic)
    produce(kafka_broker, spec, topic, count=3000, seed=5, start_ms=START_MS, bad_ratio=0.05)
    # The first record of partition 0 sent again: its copy lands in the second batch, its original in the first.
    first = read_range(kafka_broker, topic, 0, 0, 1).table.column("value")[0].as_py()
    producer = make_producer(kafka_broker)
    producer.send(topic, value=first, partition=0)
    producer.flush()
    producer.close()
    ends = {p: hi for p, (_, hi) in kafka_offsets(kafka_broker, topic).items()}
    batch_a = [OffsetRange(topic, p, 0, hi // 2) for p, hi in ends.items()]
    batch_b = [OffsetRange(topic, p, hi // 2, hi) for p, hi in ends.items()]

    lake = LakeLocation(str(tmp_path / "overlapped"))
    a_done, b_read = threading.Event(), threading.Event()
    awaited: list[str] = []
    phases_b: list[str] = []
    outcome: dict = {}

    def phase_b(name: str) -> None:
        phases_b.append(name)
        if name == "wait":
            b_read.set()

    def second_batch() -> None:
        try:
            outcome["b"] = run_micro_batch(
                kafka_broker,
                spec,
                lake,
                batch_b,
                "run-b",
                on_phase=phase_b,
                wait_for_turn=lambda: None if a_done.is_set() else "batch a",
                on_wait=lambda what, behind: awaited.append(what),
            )
        except Exception as exc:  # the test asserts there is none
            outcome["error"] = exc

    thread = threading.Thread(target=second_batch)
    thread.start()
    assert b_read.wait(60), "the second batch did not read and start waiting"
    report_a = run_micro_batch(kafka_broker, spec, lake, batch_a, "run-a")
    a_done.set()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    report_b = outcome["b"]
    assert awaited == ["batch a"] and report_b.waited_s > 0
    # It parsed and validated while it waited; only the duplicate check and the commits came after.
    assert phases_b[:3] == ["read", "clean", "wait"] and phases_b[3] == "commit bronze"
    for table in ("bronze", "silver", "dead_letters"):
        assert report_b.outcomes[table].version > report_a.outcomes[table].version, table
    tables = assert_reconciled(kafka_broker, spec, lake)
    copy = (0, ends[0] - 1, "duplicate_id")
    assert copy in dead_letter_reasons(tables["dead_letters"])

    # The same batches one after another route every record the same way.
    serial = LakeLocation(str(tmp_path / "serial"))
    for ranges, run_id in ((batch_a, "serial-a"), (batch_b, "serial-b")):
        run_micro_batch(kafka_broker, spec, serial, ranges, run_id)
    assert dead_letter_reasons(read_table(serial, spec, "dead_letters")) == dead_letter_reasons(
        tables["dead_letters"]
    )
    assert sorted(coords(read_table(serial, spec, "silver"), "_")) == sorted(coords(tables["silver"], "_"))


def test_a_batch_ahead_of_the_tables_waits_only_for_a_running_batch(kafka_broker, topic, tmp_path) -> None:
    spec = spec_for(topic)
    produce(kafka_broker, spec, topic, count=600, seed=6, start_ms=START_MS)
    lake = LakeLocation(str(tmp_path))
    run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 0, 0, 100)], "run-first")
    ahead = [OffsetRange(topic, 0, 150, 200)]
    # Nothing earlier is running: no wait, and the commit refuses the range that would skip [100, 150).
    with pytest.raises(OffsetMismatchError, match="would skip"):
        run_micro_batch(kafka_broker, spec, lake, ahead, "run-ahead", wait_for_turn=lambda: None)
    # Something earlier runs but never commits: a clear error after the allowed wait.
    with pytest.raises(TurnTimeoutError, match="run-stuck"):
        run_micro_batch(
            kafka_broker,
            spec,
            lake,
            ahead,
            "run-ahead",
            wait_for_turn=lambda: "run-stuck",
            turn_timeout_s=0.5,
        )
    assert committed_offsets(lake.uri(spec.name, "bronze"), spec.name, topic, [0]) == {0: 100}
    assert read_table(lake, spec, "bronze").num_rows == 100


PHASES = ["read", "clean", "commit bronze", "committed bronze", "commit silver", "committed silver",
          "commit dead_letters", "committed dead_letters"]  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_every_phase_then_rerun_reconciles_exactly(kafka_broker, topic, tmp_path) -> None:
    """24 micro-batches, each killed with SIGKILL right at (or a few ms after) a phase, cycling through the
    phases; the sensor then plans from the tables and the runs complete what the killed ones left."""
    spec = spec_for(topic, min_records=1, max_records_per_run=600)
    produce(kafka_broker, spec, topic, count=6000, seed=13, bad_ratio=0.05, start_ms=START_MS)
    lake = LakeLocation(str(tmp_path))
    rng = random.Random(1234)
    spec_json = spec.model_dump(mode="json", by_alias=True)
    root = Path(__file__).resolve().parents[1]
    killed_at: Counter[str] = Counter()
    for i in range(24):
        states = [
            PartitionState(topic, p, lo, hi, {
                t: committed_offsets(lake.uri(spec.name, t), spec.name, topic, [p])[p]
                for t in ("bronze", "silver", "dead_letters")
            })
            for p, (lo, hi) in kafka_offsets(kafka_broker, topic).items()
        ]  # fmt: skip
        plan = plan_runs(
            states,
            planned_until={},
            min_records=1,
            max_wait_s=0,
            max_records_per_run=600,
            waited_s=None,
            max_runs=1,
        )
        if not plan.runs:
            break
        target = PHASES[i % len(PHASES)]
        job = {
            "bootstrap": kafka_broker.bootstrap_servers,
            "lake": str(tmp_path),
            "spec": spec_json,
            "ranges": [r.to_dict() for r in plan.runs[0]],
            "run_id": f"killed-{i}",
        }
        child = subprocess.Popen(
            [sys.executable, str(root / "rt_training_tests" / "fault_child.py"), json.dumps(job)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == target:
                time.sleep(rng.uniform(0, 0.05))
                os.kill(child.pid, signal.SIGKILL)
                killed_at[target] += 1
                break
        child.wait(timeout=120)
    assert sum(killed_at.values()) >= 20, killed_at
    assert set(killed_at) == set(PHASES), killed_at
    daemon = make_daemon(spec, kafka_broker, tmp_path)
    daemon.catch_up()
    assert all(r.success for r in daemon.results)
    tables = assert_reconciled(kafka_broker, spec, lake)
    assert pc.sum(pc.equal(tables["dead_letters"].column("reason"), "duplicate_id")).as_py() >= 1


def test_broker_stopped_mid_run_fails_clearly_then_resumes_exactly_once(tmp_path) -> None:
    from rt_training.ops.kafka_local import LocalKafkaConfig, free_port, start_broker, stop_broker
    from rt_training.stream.admin import create_topic

    config = LocalKafkaConfig(data_dir=tmp_path / "kafka", port=free_port())
    settings = start_broker(config).settings()
    try:
        topic = f"mid-run-{uuid.uuid4().hex[:8]}"
        create_topic(settings, topic, 3)
        spec = spec_for(topic, min_records=1)
        produce(settings, spec, topic, count=2000, seed=4, start_ms=START_MS)
        daemon = make_daemon(spec, settings, tmp_path / "lake")
        planned = daemon.tick()
        assert isinstance(planned, dg.SensorResult)
        stop_broker(config)
        started = time.monotonic()
        failed = daemon.run(planned.run_requests[0], raise_on_error=False)
        assert not failed.success
        assert time.monotonic() - started < 30
        message = str(failed.all_events[-1].event_specific_data)
        assert "unreachable" in message.lower() or "Kafka" in message
        start_broker(config)
        daemon.catch_up()
        assert_reconciled(settings, spec, LakeLocation(str(tmp_path / "lake")))
    finally:
        stop_broker(config)


def test_retention_past_unread_offsets_fails_or_records_the_skip(kafka_broker, topic, tmp_path) -> None:
    from kafka.structs import TopicPartition

    from rt_training.stream.client import make_admin

    spec = spec_for(topic, min_records=1)
    produce(kafka_broker, spec, topic, count=900, seed=6, start_ms=START_MS)
    admin = make_admin(kafka_broker)
    admin.delete_records({TopicPartition(topic, 0): 100})
    admin.close()
    # A table that stands at offset 0 meets a partition whose earliest offset is now 100.
    lake = LakeLocation(str(tmp_path / "fail"))
    ranges = [OffsetRange(topic, 0, 0, kafka_offsets(kafka_broker, topic)[0][1])]
    from rt_training.stream.reader import DataLossError

    with pytest.raises(DataLossError) as info:
        run_micro_batch(kafka_broker, spec, lake, ranges, "lossy")
    assert topic in str(info.value) and "partition 0" in str(info.value) and "100" in str(info.value)
    assert committed_offsets(lake.uri(spec.name, "bronze"), spec.name, topic, [0]) == {0: None}
    skipping = spec_for(topic, min_records=1, on_data_loss="skip")
    lake_skip = LakeLocation(str(tmp_path / "skip"))
    report = run_micro_batch(kafka_broker, skipping, lake_skip, ranges, "skip")
    assert report.gaps == [{"topic": topic, "partition": 0, "start": 0, "end": 100}]
    gaps = recorded_data_loss(lake_skip.uri(skipping.name, "bronze"))
    assert [(g["start"], g["end"]) for g in gaps] == [(0, 100)]


class Killed(RuntimeError):
    """Stands for the run's process dying at a phase."""


def test_a_retry_after_silver_committed_routes_by_the_first_attempts_watermark(
    kafka_broker, topic, tmp_path
) -> None:
    """Event time from 2019: late rows are kept and counted, too_late ones dead-lettered, and a retry that finds
    silver committed (while the watermark moved on) completes dead letters exactly as the first attempt would."""
    from deltalake import write_deltalake

    from rt_training.ingest.reference import REFERENCE_KEY
    from rt_training.lake.history import commits
    from rt_training_tests.clean_support import event

    base = spec_for(topic)
    spec = base.model_copy(update={"time": base.time.model_copy(update={"max_lateness": 600.0})})
    noon_ms = 1_551_441_600_000  # 2019-03-01T12:00:00Z
    minute = 60_000
    first = [event(event_id=f"a-{i}", event_time=noon_ms - i * minute) for i in range(3)]
    # Offsets 3..8: too late (1 h, 2 h below noon), late (5 min, 10 min exactly at the limit), on time.
    second_times = [-60 * minute, -5 * minute, -120 * minute, 2 * minute, -10 * minute, 0]
    second = [event(event_id=f"b-{i}", event_time=noon_ms + d) for i, d in enumerate(second_times)]
    producer = make_producer(kafka_broker)
    for value in first + second:
        producer.send(topic, value=value, partition=0)
    producer.flush()
    producer.close()
    lake = LakeLocation(str(tmp_path))
    run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 0, 0, 3)], "run-a")
    ranges = [OffsetRange(topic, 0, 3, 9)]

    def die_before_dead_letters(name: str) -> None:
        if name == "commit dead_letters":
            raise Killed(name)

    with pytest.raises(Killed):
        run_micro_batch(kafka_broker, spec, lake, ranges, "run-b", on_phase=die_before_dead_letters)
    silver = read_table(lake, spec, "silver")
    assert sorted(silver.column("_offset").to_pylist()) == [0, 1, 2, 4, 6, 7, 8]
    # The watermark moves on before the retry (a later event lands in silver outside this batch's ranges).
    moved = silver.slice(0, 1).set_column(
        silver.schema.get_field_index("event_time"),
        "event_time",
        pa.array(
            [silver.column("event_time")[0].as_py().replace(year=2020)],
            silver.schema.field("event_time").type,
        ),
    )
    moved = moved.set_column(
        moved.schema.get_field_index("_partition"), "_partition", pa.array([1], pa.int32())
    )
    moved = moved.set_column(moved.schema.get_field_index("event_id"), "event_id", pa.array(["c-0"]))
    write_deltalake(lake.uri(spec.name, "silver"), moved, mode="append")

    retry = run_micro_batch(kafka_broker, spec, lake, ranges, "run-b-retry")
    assert not retry.outcomes["silver"].committed and retry.outcomes["dead_letters"].committed
    assert retry.reference is not None and retry.reference.watermark_s == noon_ms / 1000
    dead = read_table(lake, spec, "dead_letters")
    assert sorted(zip(dead.column("offset").to_pylist(), dead.column("reason").to_pylist(), strict=True)) == [
        (3, "too_late"),
        (5, "too_late"),
    ]
    detail = dead.filter(pc.equal(dead.column("offset"), 3)).column("detail")[0].as_py()
    assert detail == (
        "event time 2019-03-01T11:00:00+00:00 is 3600.000s below the watermark 2019-03-01T12:00:00+00:00, "
        "more than max_lateness 600s"
    )
    silver_b = read_table(lake, spec, "silver").filter(pc.field("_partition") == 0)
    assert sorted(silver_b.column("_offset").to_pylist()) == [0, 1, 2, 4, 6, 7, 8]
    assert retry.clean is not None and retry.clean.lateness.late_rows == 2  # 5 and 10 minutes below noon
    meta = retry.table_metadata("dead_letters")
    assert meta["late_rows"] == 2 and meta["dead_letters_too_late"] == 2
    assert meta["watermark"] == "2019-03-01T12:00:00+00:00"
    (last,) = commits(lake.uri(spec.name, "dead_letters"), limit=1)
    assert last.custom[REFERENCE_KEY]["ranges"] == f"{topic}:p0:3-9"

    # Without max_lateness nothing is dropped: the same records all land in silver, three of them late.
    relaxed = LakeLocation(str(tmp_path / "relaxed"))
    run_micro_batch(kafka_broker, base, relaxed, [OffsetRange(topic, 0, 0, 3)], "relaxed-a")
    report = run_micro_batch(kafka_broker, base, relaxed, ranges, "relaxed-b")
    assert report.clean is not None and report.clean.dead_letter_rows == 0
    assert report.clean.lateness.late_rows == 4
    assert report.table_metadata("silver")["late_rows"] == 4
