"""Exactly-once appends on real Delta tables: replays, refusals, marker-only commits, racing writers.

The ``test_deltalake_*`` tests pin what deltalake itself does (measured on 1.6.6), which is why the checks in
:mod:`rt_training.lake.exactly_once` exist; if a deltalake upgrade changes that behaviour they say so.
"""

from __future__ import annotations

import threading
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from rt_training.lake.exactly_once import (
    GAPS_KEY,
    RANGES_KEY,
    CommitOutcome,
    OffsetMismatchError,
    PartialCommitError,
    app_id,
    append_exactly_once,
    committed_offsets,
)
from rt_training.lake.tables import BRONZE_SCHEMA, LakeSchemaError, ensure_table
from rt_training.stream.reader import DataGap
from rt_training_tests.lake_batches import PIPELINE, TOPIC, bronze, keys, rng

EARLIEST = {(TOPIC, p): 0 for p in range(3)}


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return str(tmp_path / "bronze")


def append(uri: str, *ranges, data: pa.Table | None = None, **kw) -> CommitOutcome:
    kw.setdefault("earliest", EARLIEST)
    return append_exactly_once(uri, bronze(*ranges) if data is None else data, list(ranges), PIPELINE, **kw)


def test_first_commit_creates_table_and_records_next_offsets(uri: str) -> None:
    out = append(uri, rng(0, 0, 5), rng(1, 0, 3))
    assert (out.committed, out.rows, out.version, out.attempts) == (True, 8, 1, 1)
    dt = DeltaTable(uri)
    assert dt.transaction_version(f"{PIPELINE}/{TOPIC}/0") == 5
    assert dt.transaction_version(app_id(PIPELINE, TOPIC, 1)) == 3
    assert keys(dt.to_pyarrow_table()) == [(0, o) for o in range(5)] + [(1, o) for o in range(3)]
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == {0: 5, 1: 3, 2: None}
    last = dt.history(1)[0]
    assert last[RANGES_KEY] == [
        {"topic": TOPIC, "partition": 0, "start": 0, "end": 5},
        {"topic": TOPIC, "partition": 1, "start": 0, "end": 3},
    ]
    assert GAPS_KEY not in last


def test_committed_offsets_of_missing_table_are_none(uri: str) -> None:
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1]) == {0: None, 1: None}


def test_replayed_range_is_skipped_without_writing(uri: str) -> None:
    append(uri, rng(0, 0, 5), rng(1, 0, 3))
    replay = append(uri, rng(0, 0, 5), rng(1, 0, 3))
    assert (replay.committed, replay.already_committed, replay.rows, replay.version) == (False, True, 0, 1)
    dt = DeltaTable(uri)
    assert dt.version() == 1
    assert dt.to_pyarrow_table().num_rows == 8


def test_next_range_continues_where_the_table_stands(uri: str) -> None:
    append(uri, rng(0, 0, 5))
    out = append(uri, rng(0, 5, 9))
    assert (out.committed, out.rows, out.version) == (True, 4, 2)
    assert committed_offsets(uri, PIPELINE, TOPIC, [0]) == {0: 9}
    assert keys(DeltaTable(uri).to_pyarrow_table()) == [(0, o) for o in range(9)]


@pytest.mark.parametrize(
    ("second", "word"),
    [((2, 9), "duplicate"), ((0, 3), "duplicate"), ((6, 9), "skip")],
    ids=["overlapping", "lower", "ahead"],
)
def test_range_not_starting_at_the_table_offset_is_refused(
    uri: str, second: tuple[int, int], word: str
) -> None:
    append(uri, rng(0, 0, 5))
    with pytest.raises(OffsetMismatchError) as err:
        append(uri, rng(0, *second))
    e = err.value
    assert (e.table_uri, e.topic, e.partition, e.table_offset) == (uri, TOPIC, 0, 5)
    message = str(e)
    assert uri in message and f"{TOPIC}[0]" in message and "offset 5" in message
    assert f"[{second[0]}, {second[1]})" in message and f"would {word}" in message
    dt = DeltaTable(uri)
    assert (
        dt.version(),
        dt.to_pyarrow_table().num_rows,
        dt.transaction_version(app_id(PIPELINE, TOPIC, 0)),
    ) == (1, 5, 5)


def test_new_partition_needs_its_earliest_offset(uri: str) -> None:
    with pytest.raises(OffsetMismatchError, match="earliest offset in Kafka was not given"):
        append_exactly_once(uri, bronze(rng(0, 0, 5)), [rng(0, 0, 5)], PIPELINE)
    # A later range of a backlog finishing before the first one must not skip it.
    with pytest.raises(OffsetMismatchError, match=r"would skip offsets \[0, 5\)") as err:
        append(uri, rng(0, 5, 9))
    assert err.value.table_offset is None
    assert committed_offsets(uri, PIPELINE, TOPIC, [0]) == {0: None}
    # Retention moved the earliest offset past the planned start (the reader reported a gap): accepted.
    out = append(uri, rng(0, 0, 5), data=bronze(rng(0, 3, 5)), earliest={(TOPIC, 0): 3})
    assert (out.committed, out.rows) == (True, 2)


def test_marker_only_range_commits_new_offsets_without_rows(uri: str) -> None:
    append(uri, rng(0, 0, 5))
    out = append(uri, rng(0, 5, 7), data=BRONZE_SCHEMA.empty_table())
    assert (out.committed, out.rows, out.version) == (True, 0, 2)
    dt = DeltaTable(uri)
    assert dt.transaction_version(app_id(PIPELINE, TOPIC, 0)) == 7
    assert dt.to_pyarrow_table().num_rows == 5
    assert append(uri, rng(0, 5, 7), data=BRONZE_SCHEMA.empty_table()).already_committed


def test_first_commit_may_be_empty(uri: str) -> None:
    out = append(uri, rng(2, 0, 4), data=BRONZE_SCHEMA.empty_table())
    assert (out.committed, out.rows) == (True, 0)
    assert committed_offsets(uri, PIPELINE, TOPIC, [2]) == {2: 4}


def test_batch_mixing_committed_and_new_ranges_is_refused(uri: str) -> None:
    append(uri, rng(0, 0, 5))
    with pytest.raises(
        PartialCommitError, match=r"already holds events\[0\] \[0, 5\) but not events\[1\] \[0, 3\)"
    ):
        append(uri, rng(0, 0, 5), rng(1, 0, 3))
    assert DeltaTable(uri).version() == 1


def test_zero_length_range_is_neutral(uri: str) -> None:
    append(uri, rng(0, 0, 5))
    out = append(uri, rng(0, 5, 5), rng(1, 0, 2))
    assert (out.committed, out.rows) == (True, 2)
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1]) == {0: 5, 1: 2}


def test_invalid_ranges_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="no offset ranges"):
        append_exactly_once(uri, bronze(), [], PIPELINE)
    with pytest.raises(ValueError, match=r"invalid offset range events\[0\] \[5, 3\)"):
        append_exactly_once(uri, bronze(), [rng(0, 5, 3)], PIPELINE)
    with pytest.raises(ValueError, match=r"two offset ranges for events\[0\]"):
        append_exactly_once(uri, bronze(), [rng(0, 0, 3), rng(0, 3, 5)], PIPELINE)


def test_batch_with_wrong_columns_is_refused_by_name(uri: str) -> None:
    append(uri, rng(0, 0, 5))
    with pytest.raises(LakeSchemaError, match=r"missing \['run_id'\], unexpected \['extra'\]"):
        append(
            uri,
            rng(0, 5, 6),
            data=bronze(rng(0, 5, 6)).drop_columns(["run_id"]).append_column("extra", pa.array([1])),
        )
    assert DeltaTable(uri).version() == 1


def test_batch_columns_are_reordered_and_converted(uri: str) -> None:
    append(uri, rng(0, 0, 2))
    data = bronze(rng(0, 2, 4))
    shuffled = data.select(list(reversed(data.column_names)))
    shuffled = shuffled.set_column(
        shuffled.column_names.index("partition"), "partition", pa.array([0, 0], pa.int64())
    )
    assert append(uri, rng(0, 2, 4), data=shuffled).rows == 2
    assert keys(DeltaTable(uri).to_pyarrow_table()) == [(0, o) for o in range(4)]


def test_data_loss_gap_is_recorded_in_history(uri: str) -> None:
    gap = DataGap(TOPIC, 0, 0, 3)
    out = append(
        uri,
        rng(0, 0, 5),
        data=bronze(rng(0, 3, 5)),
        earliest={(TOPIC, 0): 3},
        gaps=[gap],
        custom_metadata={"run_id": "r-7"},
    )
    assert out.rows == 2
    last = DeltaTable(uri).history(1)[0]
    assert last[GAPS_KEY] == [{"topic": TOPIC, "partition": 0, "start": 0, "end": 3}]
    assert last["run_id"] == "r-7"


def _race(monkeypatch: pytest.MonkeyPatch, uri: str, ranges, data: pa.Table) -> list[CommitOutcome]:
    """Two writers of the same ranges, each past its offset check before either commits (a writer that retries
    after a conflict goes on alone)."""
    real_write = deltalake.write_deltalake
    both_checked = threading.Barrier(2, timeout=30)
    first_write = threading.local()

    def write_after_both_checked(*args, **kwargs):
        if threading.current_thread().name.startswith("writer") and not getattr(first_write, "done", False):
            first_write.done = True
            both_checked.wait()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", write_after_both_checked)
    outcomes: list[CommitOutcome] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            outcomes.append(append_exactly_once(uri, data, ranges, PIPELINE, earliest=EARLIEST))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, name=f"writer-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sorted(outcomes, key=lambda o: o.committed)


def test_racing_writers_on_same_range_commit_once(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    append(uri, rng(0, 0, 5))
    ranges = [rng(0, 5, 10), rng(1, 0, 4)]
    loser, winner = _race(monkeypatch, uri, ranges, bronze(*ranges))
    assert (winner.committed, winner.rows, winner.version, winner.attempts) == (True, 9, 2, 1)
    assert (loser.committed, loser.rows, loser.version, loser.attempts) == (False, 0, 2, 2)
    dt = DeltaTable(uri)
    assert dt.version() == 2
    assert keys(dt.to_pyarrow_table()) == [(0, o) for o in range(10)] + [(1, o) for o in range(4)]
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1]) == {0: 10, 1: 4}


def test_racing_first_writers_of_a_missing_table_commit_once(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    ranges = [rng(0, 0, 6)]
    loser, winner = _race(monkeypatch, uri, ranges, bronze(*ranges))
    assert (winner.committed, winner.rows, loser.committed, loser.rows) == (True, 6, False, 0)
    dt = DeltaTable(uri)
    assert keys(dt.to_pyarrow_table()) == [(0, o) for o in range(6)]
    assert dt.transaction_version(app_id(PIPELINE, TOPIC, 0)) == 6


def test_loser_of_a_race_leaves_only_orphan_files_that_vacuum_removes(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    append(uri, rng(0, 0, 5))
    ranges = [rng(0, 5, 10)]
    _race(monkeypatch, uri, ranges, bronze(*ranges))
    dt = DeltaTable(uri)
    referenced = {Path(u).name for u in dt.file_uris()}
    on_disk = {p.name for p in Path(uri).glob("*.parquet")}
    orphans = on_disk - referenced
    assert len(referenced) == 2 and len(orphans) == 1
    removed = dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    assert {Path(r).name for r in removed} == orphans
    assert {p.name for p in Path(uri).glob("*.parquet")} == referenced
    assert keys(DeltaTable(uri).to_pyarrow_table()) == [(0, o) for o in range(10)]


def test_ensure_table_refuses_a_table_with_other_columns(uri: str) -> None:
    append(uri, rng(0, 0, 2))
    other = BRONZE_SCHEMA.remove(BRONZE_SCHEMA.get_field_index("key")).append(pa.field("extra", pa.int64()))
    with pytest.raises(LakeSchemaError, match=r"missing columns \['extra'\], unexpected columns \['key'\]"):
        ensure_table(uri, other)


# ---- what deltalake does by itself -------------------------------------------------------------------------


def _commit(target, rows: list[int], version: int, app: str = "p/t/0") -> None:
    write_deltalake(
        target,
        pa.table({"offset": pa.array(rows, pa.int64())}),
        mode="append",
        commit_properties=CommitProperties(app_transactions=[Transaction(app, version)]),
    )


def test_deltalake_accepts_replayed_and_lower_versions(uri: str) -> None:
    _commit(uri, [0, 1, 2], 3)
    _commit(uri, [0, 1, 2], 3)
    _commit(uri, [0], 1)
    dt = DeltaTable(uri)
    assert dt.to_pyarrow_table().num_rows == 7
    assert dt.transaction_version("p/t/0") == 1


def test_deltalake_refuses_same_app_id_through_a_stale_handle(uri: str) -> None:
    _commit(uri, [0], 1)
    first, second = DeltaTable(uri), DeltaTable(uri)
    _commit(first, [1, 2], 3)
    with pytest.raises(CommitFailedError, match="Concurrent transaction failed"):
        _commit(second, [1, 2], 3)
    # Another partition's app id does not conflict: deltalake retries on top of the new version.
    third = DeltaTable(uri)
    _commit(DeltaTable(uri), [5], 6, app="p/t/1")
    _commit(third, [7], 8, app="p/t/2")
    dt = DeltaTable(uri)
    assert (dt.version(), dt.to_pyarrow_table().num_rows) == (3, 5)
    assert [dt.transaction_version(f"p/t/{p}") for p in range(3)] == [3, 6, 8]


def test_deltalake_first_writers_by_uri_both_commit(tmp_path: Path) -> None:
    """Two writes by URI to a missing table, started together, both commit: no conflict check without a
    snapshot. So the exactly-once path creates the table first and commits through a handle."""
    duplicated = 0
    for trial in range(5):
        target = str(tmp_path / f"t{trial}")
        start = threading.Barrier(2)

        def write(target: str = target, start: threading.Barrier = start) -> None:
            start.wait()
            _commit(target, [0, 1], 2)

        threads = [threading.Thread(target=write) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        duplicated += DeltaTable(target).to_pyarrow_table().num_rows == 4
    assert duplicated >= 1
