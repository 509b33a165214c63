"""Commit history helpers: versions, last commit time, time travel, recorded data loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rt_training.lake.exactly_once import append_exactly_once
from rt_training.lake.history import commits, last_commit_time, read_version, recorded_data_loss, versions
from rt_training.lake.maintenance import compact
from rt_training.lake.tables import open_table
from rt_training.stream.reader import DataGap
from rt_training_tests.lake_batches import PIPELINE, TOPIC, bronze, keys, rng

EARLIEST = {(TOPIC, 0): 0, (TOPIC, 1): 0}


@pytest.fixture
def uri(tmp_path: Path) -> str:
    target = str(tmp_path / "bronze")
    append_exactly_once(target, bronze(rng(0, 0, 3)), [rng(0, 0, 3)], PIPELINE, earliest=EARLIEST)
    append_exactly_once(
        target,
        bronze(rng(1, 4, 6)),
        [rng(1, 0, 6)],
        PIPELINE,
        earliest={(TOPIC, 1): 4},
        gaps=[DataGap(TOPIC, 1, 0, 4)],
        custom_metadata={"run_id": "run-2"},
    )
    return target


def test_versions_and_commits(uri: str) -> None:
    assert versions(uri) == [0, 1, 2]
    newest, middle, first = commits(uri)
    assert [c.operation for c in (newest, middle, first)] == ["WRITE", "WRITE", "CREATE TABLE"]
    assert newest.custom["run_id"] == "run-2"
    assert newest.ranges == [{"topic": TOPIC, "partition": 1, "start": 0, "end": 6}]
    assert newest.data_loss == [{"topic": TOPIC, "partition": 1, "start": 0, "end": 4}]
    assert middle.data_loss == []
    assert newest.metrics["num_added_rows"] == 2
    assert len(commits(uri, limit=1)) == 1


def test_recorded_data_loss(uri: str) -> None:
    assert recorded_data_loss(uri) == [{"topic": TOPIC, "partition": 1, "start": 0, "end": 4, "version": 2}]


def test_last_commit_time_ignores_maintenance_when_asked(uri: str) -> None:
    data_time = last_commit_time(uri)
    assert data_time is not None and abs(datetime.now(UTC) - data_time) < timedelta(minutes=1)
    dt = open_table(uri)
    assert dt is not None
    compact(dt)
    assert commits(uri)[0].operation == "OPTIMIZE"
    assert last_commit_time(uri, data_only=True) == data_time
    assert last_commit_time(uri) == commits(uri)[0].timestamp


def test_read_version_time_travels(uri: str) -> None:
    assert keys(read_version(uri, 1)) == [(0, 0), (0, 1), (0, 2)]
    assert keys(read_version(uri)) == [(0, 0), (0, 1), (0, 2), (1, 4), (1, 5)]
    assert read_version(uri, 2, columns=["offset"]).column_names == ["offset"]
    with pytest.raises(LookupError, match="cannot read version 9 of Delta table"):
        read_version(uri, 9)


def test_missing_table(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    assert commits(missing) == [] and versions(missing) == []
    assert last_commit_time(missing) is None
    assert recorded_data_loss(missing) == []
