"""Compaction, checkpoints, vacuum and log cleanup on real Delta tables keep rows and committed offsets."""

from __future__ import annotations

import threading
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from rt_training.lake.exactly_once import append_exactly_once, committed_offsets
from rt_training.lake.maintenance import MaintenanceError, compact, file_stats, maintain, vacuum
from rt_training.lake.tables import BRONZE_SCHEMA, ensure_table
from rt_training_tests.lake_batches import PIPELINE, TOPIC, bronze, keys, rng

EARLIEST = {(TOPIC, p): 0 for p in range(3)}
SHORT_LOG_RETENTION = {"delta.logRetentionDuration": "interval 0 seconds"}


def ingest_small_batches(uri: str, batches: int = 4) -> list[tuple[int, int]]:
    """``batches`` commits per partition 0..2, five offsets each; returns the expected (partition, offset) keys."""
    for b in range(batches):
        ranges = [rng(p, 5 * b, 5 * b + 5) for p in range(3)]
        for r in ranges:
            append_exactly_once(uri, bronze(r), [r], PIPELINE, earliest=EARLIEST)
    return sorted((p, o) for p in range(3) for o in range(5 * batches))


@pytest.fixture
def uri(tmp_path: Path) -> str:
    target = str(tmp_path / "bronze")
    ensure_table(target, BRONZE_SCHEMA, configuration=SHORT_LOG_RETENTION)
    return target


def test_maintain_compacts_checkpoints_vacuums_and_keeps_offsets(uri: str) -> None:
    expected = ingest_small_batches(uri)
    orphan = Path(uri) / "part-00000-killed-write-c000.snappy.parquet"
    pq.write_table(bronze(rng(0, 100, 103)), orphan)
    log_files = len(list((Path(uri) / "_delta_log").iterdir()))

    report = maintain(uri, retention_hours=0, allow_short_retention=True)

    assert (report.before.files, report.after.files) == (12, 1)
    assert report.before.rows == report.after.rows == 60
    assert (report.files_removed_by_compaction, report.files_added_by_compaction) == (12, 1)
    assert report.version_before == 12 and report.checkpoint_version == 13
    assert report.vacuumed_files == 13  # the 12 compacted files and the orphan
    assert report.log_files_removed is not None and report.log_files_removed >= 13
    assert len(list((Path(uri) / "_delta_log").iterdir())) < log_files
    assert not orphan.exists()
    assert len(list(Path(uri).glob("*.parquet"))) == 1
    assert report.metadata()["files_after"] == 1

    fresh = DeltaTable(uri)
    assert keys(fresh.to_pyarrow_table()) == expected
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == {0: 20, 1: 20, 2: 20}
    # Ingest continues where it stood, and a replay is still recognized.
    assert append_exactly_once(uri, bronze(rng(0, 15, 20)), [rng(0, 15, 20)], PIPELINE).already_committed
    assert append_exactly_once(uri, bronze(rng(0, 20, 22)), [rng(0, 20, 22)], PIPELINE).rows == 2


def test_offsets_survive_each_step_alone(uri: str) -> None:
    ingest_small_batches(uri, batches=2)
    want = {0: 10, 1: 10, 2: 10}
    dt = DeltaTable(uri)
    compact(dt)
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == want
    dt.create_checkpoint()
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == want
    vacuum(dt, retention_hours=0, allow_short_retention=True)
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == want
    dt.cleanup_metadata()
    assert sorted(p.name for p in (Path(uri) / "_delta_log").iterdir())[0].startswith("00000000000000000007")
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == want


def test_short_vacuum_retention_needs_explicit_permission(uri: str) -> None:
    ingest_small_batches(uri, batches=1)
    with pytest.raises(MaintenanceError, match="allow_short_retention=True only when no writer"):
        vacuum(DeltaTable(uri), retention_hours=1)
    with pytest.raises(MaintenanceError, match="at least 0 hours"):
        vacuum(DeltaTable(uri), retention_hours=-1, allow_short_retention=True)


def test_default_vacuum_keeps_young_orphans(uri: str) -> None:
    """A file younger than the retention may belong to a write about to commit: kept."""
    ingest_small_batches(uri, batches=1)
    orphan = Path(uri) / "part-00000-in-flight-c000.snappy.parquet"
    pq.write_table(bronze(rng(0, 100, 101)), orphan)
    assert vacuum(DeltaTable(uri)) == []
    assert orphan.exists()


def test_maintain_missing_table_says_so(tmp_path: Path) -> None:
    with pytest.raises(MaintenanceError, match=r"no Delta table at .*nothing to maintain"):
        maintain(str(tmp_path / "nothing"))


def test_append_racing_a_compaction_commits(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """An append whose handle was read before a compaction committed still commits, once."""
    ingest_small_batches(uri, batches=2)
    real_write = deltalake.write_deltalake
    compacted = threading.Event()

    def write_after_compaction(*args, **kwargs):
        compact(DeltaTable(uri))
        compacted.set()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", write_after_compaction)
    out = append_exactly_once(uri, bronze(rng(1, 10, 13)), [rng(1, 10, 13)], PIPELINE)
    assert compacted.is_set()
    assert (out.committed, out.rows, out.attempts) == (True, 3, 1)
    dt = DeltaTable(uri)
    assert dt.history(2)[1]["operation"] == "OPTIMIZE"
    assert file_stats(dt).files == 2
    assert committed_offsets(uri, PIPELINE, TOPIC, [0, 1, 2]) == {0: 10, 1: 13, 2: 10}
    assert dt.to_pyarrow_table().num_rows == 33


def test_file_stats_of_empty_table(uri: str) -> None:
    stats = file_stats(DeltaTable(uri))
    assert (stats.files, stats.bytes, stats.rows) == (0, 0, 0)
    assert pa.table(DeltaTable(uri).to_pyarrow_table()).num_rows == 0
