"""Operations on an ingested lake: ``maintenance_job`` compacts every table and keeps the offsets;
``rt-training ingest status`` reports committed offsets, Kafka's end offsets and lag, or that Kafka is down."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

from rt_training.cli.main import cli
from rt_training.defs.maintenance import MAINTENANCE_CRON_ENV_VAR
from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.maintenance import file_stats
from rt_training.lake.tables import OFFSET_TABLES, TABLES, open_table
from rt_training.ops.kafka_local import free_port
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.offsets import partition_offsets
from rt_training.stream.planner import OffsetRange
from rt_training.stream.producer import produce
from rt_training_tests.ingest_support import Daemon, definitions, resources, spec_for

START_MS = (int(time.time()) - 3600) * 1000
PARTITIONS = [0, 1, 2]


def offsets_of(lake: LakeLocation, spec: PipelineSpec) -> dict[str, dict[int, int | None]]:
    return {
        t: committed_offsets(lake.uri(spec.name, t), spec.name, spec.source.topic, PARTITIONS)
        for t in OFFSET_TABLES
    }


def status(spec_file: Path, lake: Path, bootstrap: str) -> tuple[int, str, float]:
    started = time.monotonic()
    out = CliRunner().invoke(
        cli,
        ["ingest", "status", "--spec", str(spec_file), "--lake", str(lake), "--bootstrap-servers", bootstrap],
        catch_exceptions=False,
    )
    return out.exit_code, out.output, time.monotonic() - started


def row(partition: int, committed: object, end: object, lag: object, tables: str) -> str:
    return f"{partition:>9}  {committed!s:>12}  {end!s:>12}  {lag!s:>10}  {tables}"


@pytest.mark.kafka
def test_maintenance_job_and_ingest_status_on_an_ingested_lake(kafka_broker, topic_factory, tmp_path) -> None:
    topic = topic_factory(partitions=3)
    spec = spec_for(topic, min_records=1, max_records_per_run=1000)
    produce(kafka_broker, spec, topic, count=3000, seed=8, start_ms=START_MS, bad_ratio=0.02)
    lake_root = tmp_path / "lake"
    defs = definitions(spec, kafka_broker, lake_root)
    daemon = Daemon(defs, dg.DagsterInstance.ephemeral(), resources(kafka_broker, lake_root))
    assert daemon.catch_up() >= 3  # one small file per micro-batch in each table
    lake = LakeLocation(str(lake_root))
    offsets = offsets_of(lake, spec)
    ends = {p: b.end for p, b in partition_offsets(kafka_broker, topic).items()}
    assert offsets == dict.fromkeys(OFFSET_TABLES, ends)
    files = {t: file_stats(open_table(lake.uri(spec.name, t))) for t in OFFSET_TABLES}
    assert all(f.files >= 3 for f in files.values())

    result = defs.resolve_job_def("maintenance_job").execute_in_process(
        instance=daemon.instance, resources=resources(kafka_broker, lake_root)
    )
    assert result.success
    assert offsets_of(lake, spec) == offsets  # the Delta app transactions survive compaction and checkpoints
    meta = {
        e.step_key.removeprefix("maintain_"): e.step_output_data.metadata
        for e in result.all_node_events
        if e.event_type_value == "STEP_OUTPUT"
    }
    assert set(meta) == set(TABLES)
    for table in OFFSET_TABLES:
        after = file_stats(open_table(lake.uri(spec.name, table)))
        assert after.files == 1 < files[table].files, table
        assert after.rows == files[table].rows
        assert meta[table]["files_before"].value == files[table].files
        assert meta[table]["files_after"].value == 1
        assert meta[table]["bytes_after"].value == after.bytes
        assert meta[table]["vacuumed_files"].value == 0  # replaced files are younger than the 7-day retention
    for table in set(TABLES) - set(OFFSET_TABLES):
        assert meta[table]["exists"].value is False

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    code, output, _ = status(spec_file, lake_root, kafka_broker.bootstrap_servers)
    assert code == 0, output
    for p, end in ends.items():
        assert row(p, end, end, 0, "in step") in output
    assert f"{'total':>9}  {'':>12}  {'':>12}  {0:>10}" in output
    assert "rows: bronze 3000, dead letters" in output
    assert "last commit: bronze 20" in output and "never" not in output
    silver = DeltaTable(str(Path(lake_root) / spec.name / "silver")).to_pyarrow_table()
    newest = max(silver[spec.time_field].to_pylist())
    watermark = newest - dt.timedelta(seconds=spec.time.allowed_lateness)
    assert f"event-time watermark: {watermark:%Y-%m-%d %H:%M:%S}Z (" in output

    # New records not yet ingested are lag; a micro-batch stopped after its bronze commit puts bronze ahead.
    produce(kafka_broker, spec, topic, count=90, seed=9, start_ms=START_MS + 60_000)
    new_ends = {p: b.end for p, b in partition_offsets(kafka_broker, topic).items()}

    class Stopped(Exception):
        pass

    def stop_after_bronze(phase: str) -> None:
        if phase == "committed bronze":
            raise Stopped

    ranges = [OffsetRange(topic, 0, ends[0], new_ends[0])]
    with pytest.raises(Stopped):
        run_micro_batch(kafka_broker, spec, lake, ranges, "stopped", on_phase=stop_after_bronze)
    code, output, _ = status(spec_file, lake_root, kafka_broker.bootstrap_servers)
    assert code == 0, output
    tables = f"bronze {new_ends[0]}, silver {ends[0]}, dead_letters {ends[0]}"
    assert row(0, ends[0], new_ends[0], new_ends[0] - ends[0], tables) in output
    for p in (1, 2):
        assert row(p, ends[p], new_ends[p], new_ends[p] - ends[p], "in step") in output
    assert f"{'total':>9}  {'':>12}  {'':>12}  {90:>10}" in output

    # Kafka down: the lake side is still reported, fast, with a clear message and exit code 1.
    nowhere = f"127.0.0.1:{free_port()}"
    code, output, seconds = status(spec_file, lake_root, nowhere)
    assert code == 1
    assert seconds < 10
    assert f"Kafka is unreachable at {nowhere}" in output
    assert row(0, ends[0], "-", "-", tables) in output
    assert row(1, ends[1], "-", "-", "in step") in output


def test_ingest_status_of_an_empty_lake_with_kafka_down(tmp_path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec_for("nowhere").model_dump(mode="json", by_alias=True)))
    nowhere = f"127.0.0.1:{free_port()}"
    code, output, seconds = status(spec_file, tmp_path / "lake", nowhere)
    assert code == 1 and seconds < 10
    assert row(0, "-", "-", "-", "nothing committed") in output
    assert "last commit: bronze never, silver never, dead_letters never" in output
    assert "event-time watermark" not in output
    assert f"Kafka is unreachable at {nowhere}" in output


def test_maintenance_schedule_is_daily_and_running_with_a_cron_from_the_environment(monkeypatch) -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    schedule = definitions(spec_for("t"), settings, Path("lake")).get_schedule_def("maintenance_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "maintenance_job"
    monkeypatch.setenv(MAINTENANCE_CRON_ENV_VAR, "30 1 * * 0")
    schedule = definitions(spec_for("t"), settings, Path("lake")).get_schedule_def("maintenance_schedule")
    assert schedule.cron_schedule == "30 1 * * 0"
