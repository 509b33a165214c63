"""rebuild_silver_job: one day's silver and dead letters re-derived from bronze, in one commit each."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.history import commits, read_version
from rt_training.stream.producer import produce
from rt_training_tests.ingest_support import Daemon, definitions, read_table, resources, spec_for

START_MS = (int(time.time()) - 3600) * 1000


def test_rebuild_replaces_the_day_keeps_offsets_history_and_later_ingest(
    kafka_broker, topic_factory, tmp_path
):
    topic = topic_factory(partitions=3)
    spec = spec_for(topic, min_records=1)
    produce(kafka_broker, spec, topic, count=2000, seed=12, start_ms=START_MS, bad_ratio=0.03)
    daemon = Daemon(
        definitions(spec, kafka_broker, tmp_path),
        dg.DagsterInstance.ephemeral(),
        resources(kafka_broker, tmp_path),
    )
    daemon.catch_up()
    lake = LakeLocation(str(tmp_path))
    silver_uri = lake.uri(spec.name, "silver")
    offsets = {
        t: committed_offsets(lake.uri(spec.name, t), spec.name, topic, [0, 1, 2])
        for t in ("silver", "dead_letters")
    }
    before = read_table(lake, spec, "silver")
    version_before = commits(silver_uri, limit=1)[0].version
    # A stricter cleaning rule: the price range shrinks, so more records become dead letters on rebuild.
    fields = dict(spec.schema_.fields)
    fields["price"] = fields["price"].model_copy(update={"max": 50.0})
    strict = spec.model_copy(update={"schema_": spec.schema_.model_copy(update={"fields": fields})})
    job = definitions(strict, kafka_broker, tmp_path).resolve_job_def("rebuild_silver_job")
    today = datetime.now(UTC).date().isoformat()
    first = job.execute_in_process(
        partition_key=today, instance=daemon.instance, resources=resources(kafka_broker, tmp_path)
    )
    assert first.success
    rebuilt = read_table(lake, spec, "silver")
    dead = read_table(lake, spec, "dead_letters")
    assert rebuilt.num_rows < before.num_rows
    assert rebuilt.num_rows + dead.num_rows == 2000
    assert max(rebuilt.column("price").to_pylist()) <= 50.0
    assert "out_of_range" in dead.column("reason").to_pylist()
    # One commit per table, offsets untouched, the old day still readable by time travel.
    assert commits(silver_uri, limit=1)[0].version == version_before + 1
    for table, expected in offsets.items():
        assert committed_offsets(lake.uri(spec.name, table), spec.name, topic, [0, 1, 2]) == expected
    assert read_version(silver_uri, version_before).num_rows == before.num_rows
    # Idempotent: the same rebuild gives the same rows.
    job.execute_in_process(
        partition_key=today, instance=daemon.instance, resources=resources(kafka_broker, tmp_path)
    )
    again = read_table(lake, spec, "silver").sort_by("_offset").sort_by("_partition")
    assert again.equals(rebuilt.sort_by("_offset").sort_by("_partition"))
    # Ingestion goes on exactly once after a rebuild.
    produce(kafka_broker, spec, topic, count=500, seed=13, start_ms=START_MS + 3_000_000)
    daemon.catch_up()
    assert read_table(lake, spec, "bronze").num_rows == 2500
    assert read_table(lake, spec, "silver").num_rows + read_table(lake, spec, "dead_letters").num_rows == 2500
