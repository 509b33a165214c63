"""The lake's offsets mirrored to a Kafka consumer group (``ingest.commit_consumer_group``), against the real broker.

The group is a copy for lag tools: after each micro-batch it equals the offsets the Delta tables stand at, it
never moves backwards, a refused commit only warns, and with no group named nothing is committed at all.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.tables import OFFSET_TABLES
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings, make_admin, make_consumer
from rt_training.stream.offsets import group_offsets, partition_offsets
from rt_training.stream.planner import OffsetRange
from rt_training.stream.producer import produce
from rt_training_tests.ingest_support import Daemon, definitions, resources, spec_for

START_MS = (int(time.time()) - 3600) * 1000  # recent, or the broker's retention deletes the records


def lake_offsets(spec: PipelineSpec, lake: LakeLocation, partitions: list[int]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the lowest next offset over the offset tables."""
    topic = spec.source.topic
    per_table = [
        committed_offsets(lake.uri(spec.name, t), spec.name, topic, partitions) for t in OFFSET_TABLES
    ]
    out = {}
    for p in partitions:
        at = [offsets[p] for offsets in per_table]
        assert all(o is not None for o in at), f"partition {p} not committed in every table"
        out[(topic, p)] = min(o for o in at if o is not None)
    return out


def halves(settings: KafkaSettings, topic: str) -> tuple[list[OffsetRange], list[OffsetRange]]:
    """Each partition's offsets split in two consecutive ranges."""
    first, second = [], []
    for p, b in sorted(partition_offsets(settings, topic).items()):
        middle = (b.earliest + b.end) // 2
        first.append(OffsetRange(topic, p, b.earliest, middle))
        second.append(OffsetRange(topic, p, middle, b.end))
    return first, second


def group_ids(settings: KafkaSettings) -> set[str]:
    admin = make_admin(settings)
    try:
        return {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()


@pytest.mark.parametrize("group", ["lag-view", "team.fraud_ingest-2", "x" * 255, "billing:v2"])
def test_a_consumer_group_id_is_accepted(group: str) -> None:
    assert spec_for("orders", commit_consumer_group=group).ingest.commit_consumer_group == group


@pytest.mark.parametrize("group", ["", " lag", "lag view", "lag\n", "tab\tbed", "x" * 256])
def test_a_malformed_consumer_group_id_is_refused(group: str) -> None:
    spec = spec_for("orders")
    data = spec.model_dump(mode="json", by_alias=True)
    data["ingest"]["commit_consumer_group"] = group
    with pytest.raises(ValidationError, match="consumer group id is 1 to 255 characters"):
        PipelineSpec.model_validate(data)


def test_no_consumer_group_by_default() -> None:
    assert spec_for("orders").ingest.commit_consumer_group is None


def test_the_group_follows_the_lake_forward_only(kafka_broker, topic_factory, tmp_path) -> None:
    topic = topic_factory(partitions=3)
    group = f"rt-lag-{uuid.uuid4().hex[:8]}"
    spec = spec_for(topic, commit_consumer_group=group)
    produce(kafka_broker, spec, topic, count=900, bad_ratio=0.1, seed=11, start_ms=START_MS)
    lake = LakeLocation(str(tmp_path))
    first, second = halves(kafka_broker, topic)
    tps = [(topic, p) for p in range(3)]
    assert group_offsets(kafka_broker, group, tps) == dict.fromkeys(tps)

    report = run_micro_batch(kafka_broker, spec, lake, first, "run-1")
    assert report.consumer_group is not None and report.consumer_group.error is None
    expected = {(topic, r.partition): r.end for r in first}
    assert lake_offsets(spec, lake, [0, 1, 2]) == expected
    assert group_offsets(kafka_broker, group, tps) == expected
    meta = report.table_metadata("bronze")
    assert meta["consumer_group"] == group and meta["consumer_group_committed"] is True
    assert meta["consumer_group_partitions_committed"] == 3 and meta["consumer_group_partitions_ahead"] == 0

    report = run_micro_batch(kafka_broker, spec, lake, second, "run-2")
    assert report.consumer_group is not None and report.consumer_group.error is None
    ends = {(topic, p): b.end for p, b in partition_offsets(kafka_broker, topic).items()}
    assert lake_offsets(spec, lake, [0, 1, 2]) == ends
    assert group_offsets(kafka_broker, group, tps) == ends
    assert sum(ends.values()) == 900

    # A replay of the last batch writes nothing and leaves the group where the lake stands.
    replay = run_micro_batch(kafka_broker, spec, lake, second, "run-2-again")
    assert replay.skipped and replay.consumer_group is not None
    assert replay.consumer_group.error is None
    assert replay.consumer_group.committed == {} and replay.consumer_group.ahead == ends
    assert group_offsets(kafka_broker, group, tps) == ends
    assert replay.table_metadata("bronze")["consumer_group_partitions_ahead"] == 3
    # A lake behind the group (here a second lake fed the first half again) does not move the group back.
    behind = run_micro_batch(kafka_broker, spec, LakeLocation(str(tmp_path / "behind")), first, "run-behind")
    assert behind.outcomes["bronze"].committed and behind.consumer_group is not None
    assert behind.consumer_group.error is None and behind.consumer_group.ahead == ends
    assert group_offsets(kafka_broker, group, tps) == ends
    # Lag as kafka-consumer-groups.sh --describe computes it (log end offset - committed offset) is zero.
    assert {tp: ends[tp] - o for tp, o in group_offsets(kafka_broker, group, tps).items()} == dict.fromkeys(
        tps, 0
    )


def test_no_group_named_commits_nothing(kafka_broker, topic_factory, tmp_path) -> None:
    topic = topic_factory(partitions=3)
    spec = spec_for(topic)
    produce(kafka_broker, spec, topic, count=300, seed=12, start_ms=START_MS)
    before = group_ids(kafka_broker)
    first, second = halves(kafka_broker, topic)
    lake = LakeLocation(str(tmp_path))
    for ranges, run_id in ((first, "run-1"), (second, "run-2")):
        report = run_micro_batch(kafka_broker, spec, lake, ranges, run_id)
        assert report.consumer_group is None
        assert not any(k.startswith("consumer_group") for k in report.table_metadata("bronze"))
    assert group_ids(kafka_broker) == before


def test_a_refused_group_commit_warns_and_the_batch_succeeds(
    kafka_broker, topic_factory, tmp_path, caplog
) -> None:
    topic = topic_factory(partitions=3)
    group = f"rt-busy-{uuid.uuid4().hex[:8]}"
    spec = spec_for(topic, commit_consumer_group=group)
    produce(kafka_broker, spec, topic, count=300, seed=13, start_ms=START_MS)
    first, _ = halves(kafka_broker, topic)
    tps = [(topic, p) for p in range(3)]
    # A running consumer is a member of the group: the broker refuses commits from outside the group.
    member = make_consumer(kafka_broker, group_id=group, auto_offset_reset="earliest")
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(timeout_ms=200, max_records=1)
        assert member.assignment(), "the consumer did not join its group"
        lake = LakeLocation(str(tmp_path))
        with caplog.at_level(logging.WARNING, logger="rt_training.ingest.batch"):
            report = run_micro_batch(kafka_broker, spec, lake, first, "run-1")
    finally:
        member.close(autocommit=False)
    assert report.outcomes["bronze"].committed and report.outcomes["silver"].committed
    assert lake_offsets(spec, lake, [0, 1, 2]) == {(topic, r.partition): r.end for r in first}
    assert report.consumer_group is not None and report.consumer_group.error is not None
    assert "GroupCommitError" in report.consumer_group.error and group in report.consumer_group.error
    meta = report.table_metadata("bronze")
    assert (
        meta["consumer_group_committed"] is False
        and meta["consumer_group_error"] == report.consumer_group.error
    )
    assert any("not to consumer group" in r.getMessage() and group in r.getMessage() for r in caplog.records)
    assert group_offsets(kafka_broker, group, tps) == dict.fromkeys(tps)


def test_the_dagster_run_reports_the_group_commit(kafka_broker, topic_factory, tmp_path: Path) -> None:
    topic = topic_factory(partitions=3)
    group = f"rt-dagster-{uuid.uuid4().hex[:8]}"
    spec = spec_for(topic, min_records=1, commit_consumer_group=group)
    produce(kafka_broker, spec, topic, count=300, seed=14, start_ms=START_MS)
    daemon = Daemon(
        definitions(spec, kafka_broker, tmp_path),
        dg.DagsterInstance.ephemeral(),
        resources(kafka_broker, tmp_path),
    )
    assert daemon.catch_up() >= 1
    ends = {(topic, p): b.end for p, b in partition_offsets(kafka_broker, topic).items()}
    assert group_offsets(kafka_broker, group, list(ends)) == ends
    for result in daemon.results:
        bronze = {
            m.asset_key.to_user_string(): m.metadata
            for m in result.asset_materializations_for_node("ingest_micro_batch")
        }["bronze_events"]
        assert bronze["consumer_group"].value == group
        assert bronze["consumer_group_committed"].value is True


def consumer_groups_describe(settings: KafkaSettings, group: str) -> list[dict[str, str]]:
    """``kafka-consumer-groups.sh --describe --group GROUP`` through the broker's own jars: one dict per row, keyed
    by the header. Skips when those jars lack the tools (the Maven-resolved broker has none; a Kafka
    distribution named by ``KAFKA_HOME`` has them)."""
    from rt_training.ops.kafka_local import find_java, resolve_libs

    java = find_java()
    libs = resolve_libs(java)
    if not any(libs.glob("kafka-tools-[0-9]*.jar")):
        pytest.skip(f"no kafka-tools jar in {libs}: set KAFKA_HOME to a Kafka distribution to run the tool")
    cmd = [
        java,
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        settings.bootstrap_servers,
        "--describe",
        "--group",
        group,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
    header_at = next(i for i, cols in enumerate(lines) if cols[:2] == ["GROUP", "TOPIC"])
    header = lines[header_at]
    return [dict(zip(header, cols, strict=False)) for cols in lines[header_at + 1 :]]


def test_kafka_consumer_groups_describe_shows_no_lag_after_a_full_ingest(
    kafka_broker, topic_factory, tmp_path
) -> None:
    topic = topic_factory(partitions=3)
    group = f"rt-tool-{uuid.uuid4().hex[:8]}"
    spec = spec_for(topic, commit_consumer_group=group)
    produce(kafka_broker, spec, topic, count=300, seed=15, start_ms=START_MS)
    first, second = halves(kafka_broker, topic)
    lake = LakeLocation(str(tmp_path))
    run_micro_batch(kafka_broker, spec, lake, first, "run-1")
    rows = consumer_groups_describe(kafka_broker, group)
    assert {(r["TOPIC"], int(r["PARTITION"])): int(r["LAG"]) for r in rows} == {
        (topic, r.partition): r.size for r in second
    }
    run_micro_batch(kafka_broker, spec, lake, second, "run-2")
    rows = consumer_groups_describe(kafka_broker, group)
    ends = {(topic, p): b.end for p, b in partition_offsets(kafka_broker, topic).items()}
    assert {(r["TOPIC"], int(r["PARTITION"])): int(r["CURRENT-OFFSET"]) for r in rows} == ends
    assert {r["LAG"] for r in rows} == {"0"}
