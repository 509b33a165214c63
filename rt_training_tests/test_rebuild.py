"""Rebuilding days of silver and dead letters from bronze: ``rebuild_day`` and ``rebuild_silver_job``.

Most tests land micro-batches with chosen ingestion times the way a run does (bronze, then silver and dead
letters, each exactly once with its offset ranges) on real Delta tables, so several days exist without waiting
for them; the last one ingests from the real broker under Dagster and goes on ingesting after a rebuild.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rt_training.clean.pipeline import clean_batch
from rt_training.eventtime.clock import read_event_clock
from rt_training.ingest.batch import LakeLocation, seen_ids_outside
from rt_training.ingest.rebuild import REBUILD_KEY, RebuildError, day_bounds, rebuild_day
from rt_training.lake.exactly_once import append_exactly_once, committed_offsets
from rt_training.lake.history import commits, read_version
from rt_training.lake.tables import BRONZE_SCHEMA, DEAD_LETTER_SCHEMA, OFFSET_TABLES, silver_schema
from rt_training.spec import PipelineSpec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.planner import OffsetRange
from rt_training.stream.synthetic import EventGenerator, SimulatedClock
from rt_training_tests.ingest_support import Daemon, definitions, read_table, resources, spec_for

TOPIC = "rebuild-events"
PARTITIONS = (0, 1, 2)
TODAY = datetime.now(UTC).date()
DAY_A = TODAY - timedelta(days=2)
DAY_B = TODAY - timedelta(days=1)
PRICE_MAX = 50.0


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return day_bounds(day)[0] + timedelta(hours=hour, minutes=minute, seconds=second)


def narrower_price(spec: PipelineSpec, maximum: float = PRICE_MAX) -> PipelineSpec:
    """A cleaning change: prices above ``maximum`` become ``out_of_range``."""
    fields = dict(spec.schema_.fields)
    fields["price"] = fields["price"].model_copy(update={"max": maximum})
    return spec.model_copy(update={"schema_": spec.schema_.model_copy(update={"fields": fields})})


class Lake:
    """A pipeline's lake filled by :meth:`land`, one micro-batch at a time, with chosen ingestion times."""

    def __init__(self, root: Path, spec: PipelineSpec, seed: int = 3):
        self.spec = spec
        self.location = LakeLocation(str(root))
        start_ms = int(day_bounds(DAY_A)[0].timestamp() * 1000)
        self.events = EventGenerator(spec, seed, bad_ratio=0.06, clock=SimulatedClock(start_ms, rate=50))
        self.next = dict.fromkeys(PARTITIONS, 0)

    def uri(self, table: str) -> str:
        return self.location.uri(self.spec.name, table)

    def land(
        self, n: int, ingested_at: datetime, *, retried_at: datetime | None = None, tables=OFFSET_TABLES
    ):
        """One micro-batch of ``n`` events over the partitions. ``retried_at``: silver and dead letters come
        from a retry of the run at that time (bronze keeps the first attempt's time)."""
        batch = self.events.generate(n)
        rows, ranges = [], []
        for p in PARTITIONS:
            mine = [i for i in range(n) if i % len(PARTITIONS) == p]
            for j, i in enumerate(mine):
                rows.append(
                    {
                        "topic": TOPIC,
                        "partition": p,
                        "offset": self.next[p] + j,
                        "timestamp": datetime.fromtimestamp(int(batch.times_ms[i]) / 1000, UTC),
                        "key": batch.keys[i],
                        "value": batch.values[i],
                        "ingested_at": ingested_at,
                        "run_id": f"run-{ingested_at:%d%H%M%S}",
                    }
                )
            ranges.append(OffsetRange(TOPIC, p, self.next[p], self.next[p] + len(mine)))
            self.next[p] += len(mine)
        bronze = pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA)
        cleaned_at = retried_at or ingested_at
        read = bronze.set_column(
            bronze.schema.get_field_index("ingested_at"),
            "ingested_at",
            pa.array([cleaned_at] * bronze.num_rows, BRONZE_SCHEMA.field("ingested_at").type),
        )
        mark = read_event_clock(self.spec, self.location).watermark
        cleaned = clean_batch(
            read,
            self.spec,
            seen_ids=seen_ids_outside(self.spec, self.location, ranges, mark),
            now=cleaned_at,
            reference=mark,
        )
        outputs = {
            "bronze": (bronze, BRONZE_SCHEMA),
            "silver": (cleaned.silver, silver_schema(self.spec)),
            "dead_letters": (cleaned.dead_letters, DEAD_LETTER_SCHEMA),
        }
        earliest = {(TOPIC, p): 0 for p in PARTITIONS}
        for table in tables:
            data, schema = outputs[table]
            append_exactly_once(
                self.uri(table), data, ranges, self.spec.name, earliest=earliest, schema=schema
            )

    def table(self, name: str, version: int | None = None) -> pa.Table:
        return read_version(self.uri(name), version)

    def offsets(self) -> dict[str, dict[int, int | None]]:
        return {t: committed_offsets(self.uri(t), self.spec.name, TOPIC, PARTITIONS) for t in OFFSET_TABLES}


def coords(table: pa.Table, prefix: str = "") -> list[tuple[int, int]]:
    return sorted(
        zip(
            table.column(f"{prefix}partition").to_pylist(),
            table.column(f"{prefix}offset").to_pylist(),
            strict=True,
        )
    )


def of_day(table: pa.Table, day: date, column: str) -> pa.Table:
    start, end = day_bounds(day)
    when = table.column(column)
    return table.filter(pc.and_(pc.greater_equal(when, start), pc.less(when, end)))


def in_order(table: pa.Table, prefix: str = "") -> pa.Table:
    return table.sort_by([(f"{prefix}partition", "ascending"), (f"{prefix}offset", "ascending")])


def assert_partitioned_exactly(lake: Lake) -> None:
    """Every bronze offset is once in silver or once in dead letters, and nowhere else."""
    bronze, silver, dead = (coords(lake.table("bronze")), coords(lake.table("silver"), "_"),
                            coords(lake.table("dead_letters")))  # fmt: skip
    assert len(set(silver)) == len(silver) and len(set(dead)) == len(dead)
    assert not set(silver) & set(dead)
    assert sorted(silver + dead) == bronze


@pytest.fixture
def spec() -> PipelineSpec:
    return spec_for(TOPIC)


@pytest.fixture
def lake(tmp_path: Path, spec: PipelineSpec) -> Lake:
    """Day A: two micro-batches; day B: two more (the first 40 minutes after midnight, within the dedup
    history of day A's last batch)."""
    lake = Lake(tmp_path, spec)
    for when in (at(DAY_A, 10), at(DAY_A, 23, 40), at(DAY_B, 0, 20), at(DAY_B, 9)):
        lake.land(600, when)
    return lake


def test_a_cleaning_change_replaces_exactly_that_day_once_with_offsets_and_history_kept(lake, spec) -> None:
    # The day as the current spec cleans it in one piece (the micro-batches judged duplicates batch by batch).
    rebuild_day(spec, lake.location, DAY_A, "run-baseline")
    before = {t: lake.table(t) for t in OFFSET_TABLES}
    versions = {t: commits(lake.uri(t), limit=1)[0].version for t in ("silver", "dead_letters")}
    offsets = lake.offsets()
    old_silver_a = of_day(before["silver"], DAY_A, "_ingested_at")
    old_dead_a = of_day(before["dead_letters"], DAY_A, "ingested_at")
    too_dear = pc.greater(old_silver_a.column("price"), PRICE_MAX)
    assert 0 < pc.sum(too_dear).as_py() < old_silver_a.num_rows

    report = rebuild_day(narrower_price(spec), lake.location, DAY_A, "run-strict")

    silver, dead = lake.table("silver"), lake.table("dead_letters")
    # Day A: the old silver rows within the new range stay and the others are out_of_range dead letters; a
    # duplicate whose earlier copies all left silver is the first valid copy now, so it joins silver.
    new_silver_a = of_day(silver, DAY_A, "_ingested_at")
    new_dead_a = of_day(dead, DAY_A, "ingested_at")
    assert pc.max(new_silver_a.column("price")).as_py() <= PRICE_MAX
    kept, moved = (
        set(coords(old_silver_a.filter(pc.invert(too_dear)), "_")),
        coords(old_silver_a.filter(too_dear), "_"),
    )
    joined = set(coords(new_silver_a, "_")) - kept
    assert kept <= set(coords(new_silver_a, "_"))
    old_reason = dict(zip(coords(old_dead_a), in_order(old_dead_a).column("reason").to_pylist(), strict=True))
    new_reason = dict(zip(coords(new_dead_a), in_order(new_dead_a).column("reason").to_pylist(), strict=True))
    assert joined and {old_reason[c] for c in joined} == {"duplicate_id"}
    assert {new_reason[c] for c in moved} == {"out_of_range"}
    assert set(new_reason) == (set(old_reason) - joined) | set(moved)
    out_of_range = sum(r == "out_of_range" for r in new_reason.values())
    # Day B is untouched, row for row.
    for table, column in (("silver", "_ingested_at"), ("dead_letters", "ingested_at")):
        prefix = "_" if table == "silver" else ""
        after_b = in_order(of_day(lake.table(table), DAY_B, column), prefix)
        assert after_b.equals(in_order(of_day(before[table], DAY_B, column), prefix))
    assert_partitioned_exactly(lake)
    # The report's numbers.
    assert report.committed and report.day == DAY_A and report.run_id == "run-strict"
    assert report.rows_in == 1200 == of_day(before["bronze"], DAY_A, "ingested_at").num_rows
    assert (report.silver_before, report.silver_after) == (old_silver_a.num_rows, new_silver_a.num_rows)
    assert (report.dead_letters_before, report.dead_letters_after) == (
        old_dead_a.num_rows,
        new_dead_a.num_rows,
    )
    assert report.reasons_after["out_of_range"] == out_of_range
    assert report.cutoffs == {f"{TOPIC}[{p}]": 800 for p in PARTITIONS}
    assert report.regrouped == 0 and report.attempts == {"silver": 1, "dead_letters": 1}
    meta = report.metadata()
    assert meta["dead_letters_out_of_range"] > meta["dead_letters_out_of_range_before"]
    # One commit per table, carrying what it was; the offsets are those of before; the old day reads back.
    for table, version in versions.items():
        (last,) = commits(lake.uri(table), limit=1)
        assert last.version == version + 1 and last.operation == "WRITE"
        assert last.custom[REBUILD_KEY]["day"] == DAY_A.isoformat()
        assert last.custom[REBUILD_KEY]["run_id"] == "run-strict"
        assert last.ranges == []
        assert lake.table(table, version).equals(before[table])
    assert lake.offsets() == offsets == {t: dict.fromkeys(PARTITIONS, 800) for t in OFFSET_TABLES}

    # The same rebuild again gives the same rows, in one more commit per table.
    again = rebuild_day(narrower_price(spec), lake.location, DAY_A, "run-strict-2")
    assert in_order(lake.table("silver"), "_").equals(in_order(silver, "_"))
    assert in_order(lake.table("dead_letters")).equals(in_order(dead))
    assert (again.silver_before, again.silver_after) == (report.silver_after, report.silver_after)
    assert again.silver_version == report.silver_version + 1
    # The micro-batches go on exactly once after the rebuild.
    lake.land(300, at(TODAY, 0, 5))
    assert lake.offsets() == {t: dict.fromkeys(PARTITIONS, 900) for t in OFFSET_TABLES}
    assert_partitioned_exactly(lake)


def test_rebuilding_with_the_old_spec_restores_the_first_rebuild(lake, spec) -> None:
    first = rebuild_day(spec, lake.location, DAY_B)
    rows = {t: in_order(lake.table(t), "_" if t == "silver" else "") for t in ("silver", "dead_letters")}
    rebuild_day(narrower_price(spec), lake.location, DAY_B)
    assert lake.table("silver").num_rows < rows["silver"].num_rows
    second = rebuild_day(spec, lake.location, DAY_B)
    for table, expected in rows.items():
        assert in_order(lake.table(table), "_" if table == "silver" else "").equals(expected)
    # Day B's reference is the highest event time silver held before the day; its dedup history is day A's
    # rows within ingest.dedup_history_s of it in event time (all of day A: its events span minutes), although
    # day A's first batches were ingested hours before midnight.
    day_a = of_day(lake.table("silver"), DAY_A, "_ingested_at")
    top = pc.max(day_a.column("event_time")).as_py()
    assert first.reference is not None and first.reference.max_event_time == top
    since = top - timedelta(seconds=spec.ingest.dedup_history_s)
    in_history = day_a.filter(
        pc.greater_equal(pc.field("event_time"), pa.scalar(since, pa.timestamp("us", "UTC")))
    )
    assert in_history.num_rows == day_a.num_rows
    assert first.history_ids == second.history_ids == day_a.num_rows
    # A shorter history keeps only the newest seconds of event time.
    short = spec.model_copy(update={"ingest": spec.ingest.model_copy(update={"dedup_history_s": 5.0})})
    newest = day_a.filter(
        pc.greater_equal(
            pc.field("event_time"), pa.scalar(top - timedelta(seconds=5), pa.timestamp("us", "UTC"))
        )
    )
    assert 0 < newest.num_rows < day_a.num_rows
    assert rebuild_day(short, lake.location, DAY_B).history_ids == len(pc.unique(newest.column("event_id")))


def test_metrics_pass_over_rebuild_commits(lake, spec) -> None:
    """Freshness and event-to-silver latency describe ingestion, which a rebuild is not."""
    from rt_training.monitoring.snapshot import gather_snapshot

    before = gather_snapshot(spec, lake.location.root)
    rebuild_day(narrower_price(spec), lake.location, DAY_A)
    after = gather_snapshot(spec, lake.location.root)
    assert before.last_commit_time and after.last_commit_time == before.last_commit_time
    assert before.event_to_silver_latency and after.event_to_silver_latency == before.event_to_silver_latency


def test_a_day_without_rows_commits_nothing(lake, spec) -> None:
    versions = [commits(lake.uri(t), limit=1)[0].version for t in ("silver", "dead_letters")]
    report = rebuild_day(spec, lake.location, DAY_A - timedelta(days=5))
    assert not report.committed and report.rows_in == 0
    assert [commits(lake.uri(t), limit=1)[0].version for t in ("silver", "dead_letters")] == versions


def test_rows_beyond_the_committed_offsets_are_left_to_their_micro_batch(tmp_path, spec) -> None:
    """A micro-batch between its commits: bronze and silver hold it, dead letters not yet."""
    lake = Lake(tmp_path, spec)
    lake.land(600, at(DAY_A, 10))
    lake.land(600, at(DAY_A, 11), tables=("bronze", "silver"))
    silver_before = lake.table("silver")
    report = rebuild_day(narrower_price(spec), lake.location, DAY_A)
    assert report.cutoffs == {f"{TOPIC}[{p}]": 200 for p in PARTITIONS} and report.rows_in == 600
    in_flight = pc.greater_equal(pc.field("_offset"), 200)
    assert in_order(lake.table("silver").filter(in_flight), "_").equals(
        in_order(silver_before.filter(in_flight), "_")
    )
    # The batch's retry finds bronze and silver done and commits dead letters (cleaned as the first attempt was).
    pending = Lake(tmp_path / "replay", spec)
    pending.land(600, at(DAY_A, 10))
    pending.land(600, at(DAY_A, 11))
    batch = pending.table("dead_letters").filter(pc.greater_equal(pc.field("offset"), 200))
    ranges = [OffsetRange(TOPIC, p, 200, 400) for p in PARTITIONS]
    append_exactly_once(lake.uri("dead_letters"), batch, ranges, spec.name, schema=DEAD_LETTER_SCHEMA)
    assert_partitioned_exactly(lake)


def test_commits_that_land_during_a_rebuild_are_kept(lake, spec, monkeypatch) -> None:
    """While the day is cleaned, a micro-batch of the same day commits and maintenance compacts both tables:
    the rebuild's first commits conflict, its retries replace the day's rows below the cutoffs and keep the rest."""
    from deltalake import DeltaTable

    import rt_training.clean.pipeline as pipeline

    clean = pipeline.clean_batch

    def clean_then_commit_meanwhile(*args, **kwargs):
        result = clean(*args, **kwargs)
        lake.land(300, at(DAY_A, 15))
        for table in ("silver", "dead_letters"):
            DeltaTable(lake.uri(table)).optimize.compact()
        return result

    monkeypatch.setattr(pipeline, "clean_batch", clean_then_commit_meanwhile)
    report = rebuild_day(narrower_price(spec), lake.location, DAY_A)
    monkeypatch.undo()
    assert report.attempts == {"silver": 2, "dead_letters": 2}
    assert report.cutoffs == {f"{TOPIC}[{p}]": 800 for p in PARTITIONS}
    assert lake.offsets() == {t: dict.fromkeys(PARTITIONS, 900) for t in OFFSET_TABLES}
    assert_partitioned_exactly(lake)
    silver = lake.table("silver")
    late = silver.filter(pc.greater_equal(pc.field("_offset"), 800))
    assert late.num_rows > 0 and pc.max(late.column("price")).as_py() > PRICE_MAX  # cleaned by its own batch
    early_a = of_day(silver, DAY_A, "_ingested_at").filter(pc.less(pc.field("_offset"), 800))
    assert pc.max(early_a.column("price")).as_py() <= PRICE_MAX


def test_a_batch_retried_across_midnight_belongs_to_bronzes_day(tmp_path, spec) -> None:
    """Bronze committed at 23:59:58 of day A; the retry wrote silver and dead letters at 00:00:03 of day B."""
    lake = Lake(tmp_path, spec)
    lake.land(300, at(DAY_A, 20))
    lake.land(300, at(DAY_A, 23, 59, 58), retried_at=at(DAY_B, 0, 0, 3))
    lake.land(300, at(DAY_B, 1))
    assert of_day(lake.table("silver"), DAY_A, "_ingested_at").num_rows < 300
    # Day B first: it leaves the retried batch alone (bronze puts it in day A).
    b = rebuild_day(spec, lake.location, DAY_B)
    assert b.rows_in == 300 and b.regrouped == 300
    assert_partitioned_exactly(lake)
    a = rebuild_day(spec, lake.location, DAY_A)
    assert a.rows_in == 600 and a.regrouped == 300
    assert_partitioned_exactly(lake)
    silver, dead = lake.table("silver"), lake.table("dead_letters")
    assert of_day(silver, DAY_A, "_ingested_at").num_rows + of_day(dead, DAY_A, "ingested_at").num_rows == 600
    assert of_day(silver, DAY_B, "_ingested_at").num_rows + of_day(dead, DAY_B, "ingested_at").num_rows == 300
    # Now the days agree with bronze: rebuilding again moves nothing.
    assert rebuild_day(spec, lake.location, DAY_A).regrouped == 0


def test_no_bronze_table_is_a_clear_error(tmp_path, spec) -> None:
    with pytest.raises(RebuildError, match=r"no bronze table at .*bronze"):
        rebuild_day(spec, LakeLocation(str(tmp_path)), DAY_A)


def test_rebuild_job_runs_one_day_partition_and_records_it(lake, spec, tmp_path) -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    strict_defs = definitions(narrower_price(spec), settings, tmp_path)
    job = strict_defs.resolve_job_def("rebuild_silver_job")
    before = datetime.now(UTC).date().isoformat()
    keys = job.partitions_def.get_partition_keys()
    after = datetime.now(UTC).date().isoformat()
    # The last partition is today, whichever side of midnight the keys were listed on.
    assert keys[0] == "2026-01-01" and keys[-1] in {before, after}
    instance = dg.DagsterInstance.ephemeral()
    silver_b = in_order(of_day(lake.table("silver"), DAY_B, "_ingested_at"), "_")
    result = job.execute_in_process(
        partition_key=DAY_A.isoformat(), instance=instance, resources=resources(settings, tmp_path)
    )
    assert result.success
    assert pc.max(of_day(lake.table("silver"), DAY_A, "_ingested_at").column("price")).as_py() <= PRICE_MAX
    assert in_order(of_day(lake.table("silver"), DAY_B, "_ingested_at"), "_").equals(silver_b)
    (last,) = commits(lake.uri("silver"), limit=1)
    assert last.custom[REBUILD_KEY] == {
        "day": DAY_A.isoformat(),
        "run_id": result.run_id,
        "rows": 1200,
        "cutoffs": {f"{TOPIC}[{p}]": 800 for p in PARTITIONS},
    }
    materialized = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("rebuild_silver_day")
    }
    assert set(materialized) == {"silver_events", "dead_letters"}
    meta = materialized["silver_events"]
    assert meta["rebuilt_day"].value == DAY_A.isoformat()
    assert meta["table_version"].value == last.version
    assert meta["dead_letters_out_of_range"].value > meta["dead_letters_out_of_range_before"].value
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/partition"] == DAY_A.isoformat()


@pytest.mark.kafka
def test_rebuild_of_today_under_dagster_keeps_ingest_exactly_once(
    kafka_broker, topic_factory, tmp_path
) -> None:
    topic = topic_factory(partitions=3)
    spec = spec_for(topic, min_records=1)
    start_ms = (int(time.time()) - 3600) * 1000
    from rt_training.stream.producer import produce

    produce(kafka_broker, spec, topic, count=2000, seed=12, start_ms=start_ms, bad_ratio=0.03)
    daemon = Daemon(
        definitions(spec, kafka_broker, tmp_path),
        dg.DagsterInstance.ephemeral(),
        resources(kafka_broker, tmp_path),
    )
    daemon.catch_up()
    location = LakeLocation(str(tmp_path))
    offsets = {
        t: committed_offsets(location.uri(spec.name, t), spec.name, topic, PARTITIONS) for t in OFFSET_TABLES
    }
    before = read_table(location, spec, "silver")
    job = definitions(narrower_price(spec), kafka_broker, tmp_path).resolve_job_def("rebuild_silver_job")
    # The day the rows were ingested (the run at midnight would otherwise rebuild a day with no rows yet).
    today = pc.max(before.column("_ingested_at")).as_py().date().isoformat()
    result = job.execute_in_process(
        partition_key=today, instance=daemon.instance, resources=resources(kafka_broker, tmp_path)
    )
    assert result.success
    rebuilt = read_table(location, spec, "silver")
    assert 0 < rebuilt.num_rows < before.num_rows
    assert rebuilt.num_rows + read_table(location, spec, "dead_letters").num_rows == 2000
    assert {
        t: committed_offsets(location.uri(spec.name, t), spec.name, topic, PARTITIONS) for t in OFFSET_TABLES
    } == offsets
    # Ingestion goes on exactly once: its runs and their asset checks (offset gaps, reconciliation) pass.
    produce(kafka_broker, spec, topic, count=500, seed=13, start_ms=start_ms + 3_000_000)
    runs_before = len(daemon.results)
    daemon.catch_up()
    later = daemon.results[runs_before:]
    assert later and all(r.success for r in later)
    assert all(e.passed for r in later for e in r.get_asset_check_evaluations())
    bronze = read_table(location, spec, "bronze")
    silver, dead = read_table(location, spec, "silver"), read_table(location, spec, "dead_letters")
    assert bronze.num_rows == 2500
    assert sorted(coords(silver, "_") + coords(dead)) == coords(bronze)
