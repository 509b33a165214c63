"""Table maintenance: compact small files, write a checkpoint, vacuum unreferenced files, expire old log entries.

Micro-batches leave one small file per commit per table; compaction rewrites them into few large ones.
None of these operations touches the app transactions that carry the Kafka offsets: they live in the log, and
checkpoints copy them (the tests verify the versions after each step). Do not set
``delta.setTransactionRetentionDuration`` on the offset tables: it would expire those versions.

Vacuum removes files the table no longer references (compacted away) and, in ``full`` mode, files no commit
ever referenced: the data files of a write killed before its commit, or of a commit that lost a race. A file
younger than the retention is kept, because a writer still running may be about to commit it; so a retention
shorter than the table's ``delta.deletedFileRetentionDuration`` (7 days by default) needs an explicit
``allow_short_retention=True`` and is safe only while no writer runs (tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rt_training.lake.tables import is_object_store, open_table

if TYPE_CHECKING:
    from deltalake import DeltaTable

DEFAULT_RETENTION_HOURS = 168


class MaintenanceError(RuntimeError):
    """Maintenance was asked of something that is not a Delta table, or with unsafe settings."""


@dataclass(frozen=True)
class FileStats:
    """Data files the table's current version references."""

    files: int
    bytes: int
    rows: int


@dataclass(frozen=True)
class MaintenanceReport:
    """What :func:`maintain` did to one table."""

    table_uri: str
    version_before: int
    version_after: int
    before: FileStats
    after: FileStats
    files_removed_by_compaction: int
    files_added_by_compaction: int
    checkpoint_version: int
    vacuumed_files: int
    log_files_removed: int | None
    """Expired log files deleted by vacuum's commits and the cleanup (None on object stores: not counted)."""
    seconds: float

    def metadata(self) -> dict[str, Any]:
        """Flat numbers for run metadata."""
        return {
            "table": self.table_uri,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "files_before": self.before.files,
            "files_after": self.after.files,
            "bytes_before": self.before.bytes,
            "bytes_after": self.after.bytes,
            "rows": self.after.rows,
            "files_removed_by_compaction": self.files_removed_by_compaction,
            "files_added_by_compaction": self.files_added_by_compaction,
            "checkpoint_version": self.checkpoint_version,
            "vacuumed_files": self.vacuumed_files,
            "log_files_removed": self.log_files_removed,
            "seconds": round(self.seconds, 3),
        }


def file_stats(dt: DeltaTable) -> FileStats:
    """Files, bytes and rows (from file statistics) of the loaded version."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return FileStats(0, 0, 0)
    sizes = actions.column("size_bytes").to_pylist()
    rows = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else []
    return FileStats(len(sizes), int(sum(sizes)), int(sum(r or 0 for r in rows)))


def compact(dt: DeltaTable, *, target_size: int | None = None) -> dict[str, Any]:
    """Rewrite small files into files of about ``target_size`` bytes (default: the table's, or 100 MB).

    Returns deltalake's metrics (``numFilesAdded``, ``numFilesRemoved``, ...). Appends committed meanwhile
    do not conflict with it: compaction only removes files it read, and appends only add files.
    """
    return dt.optimize.compact(target_size=target_size)


def checkpoint(dt: DeltaTable) -> int:
    """Write a checkpoint of the loaded version (readers then skip replaying the log before it)."""
    dt.create_checkpoint()
    return dt.version()


def vacuum(
    dt: DeltaTable,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    full: bool = True,
    dry_run: bool = False,
    allow_short_retention: bool = False,
) -> list[str]:
    """Delete files the table does not reference and that are older than ``retention_hours``; returns them.

    ``full`` also removes files never referenced (orphans of killed writes). A retention below the table's
    minimum raises :class:`MaintenanceError` unless ``allow_short_retention`` (only while no writer runs).
    """
    from deltalake.exceptions import DeltaError

    if retention_hours < 0:
        raise MaintenanceError(f"vacuum retention must be at least 0 hours, got {retention_hours}")
    try:
        return dt.vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=not allow_short_retention,
            full=full,
        )
    except DeltaError as exc:
        if allow_short_retention or "retention" not in str(exc).lower():
            raise
        raise MaintenanceError(
            f"vacuum of Delta table {dt.table_uri} refused a retention of {retention_hours}h: {exc}. A file younger "
            "than the table's minimum may belong to a write about to commit; pass allow_short_retention=True only "
            "when no writer can be running."
        ) from exc


def cleanup_logs(dt: DeltaTable) -> None:
    """Delete log entries older than ``delta.logRetentionDuration`` (30 days by default) that precede the latest
    checkpoint. (Commits also do this in their post-commit hook when ``delta.enableExpiredLogCleanup`` is on,
    the default.)"""
    dt.cleanup_metadata()


def maintain(
    table_uri: str,
    storage_options: Mapping[str, str] | None = None,
    *,
    target_size: int | None = None,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    full_vacuum: bool = True,
    allow_short_retention: bool = False,
) -> MaintenanceReport:
    """Compact, checkpoint, vacuum and expire old log entries of one table, in that order.

    The checkpoint follows compaction so it holds the compacted file list, and vacuum follows the checkpoint so
    the files compaction replaced are no longer referenced by the newest state.
    """
    started = time.monotonic()
    dt = open_table(table_uri, storage_options)
    if dt is None:
        raise MaintenanceError(
            f"no Delta table at {table_uri}: nothing to maintain (has the pipeline ingested yet?)"
        )
    version_before = dt.version()
    before = file_stats(dt)
    metrics = compact(dt, target_size=target_size)
    checkpoint_version = checkpoint(dt)
    log_dir = None if is_object_store(dt.table_uri) else os.path.join(_local_path(dt.table_uri), "_delta_log")
    logs_before = _list_files(log_dir)
    removed = vacuum(
        dt, retention_hours=retention_hours, full=full_vacuum, allow_short_retention=allow_short_retention
    )
    cleanup_logs(dt)
    logs_after = _list_files(log_dir)
    dt.update_incremental()
    return MaintenanceReport(
        table_uri=table_uri,
        version_before=version_before,
        version_after=dt.version(),
        before=before,
        after=file_stats(dt),
        files_removed_by_compaction=int(metrics.get("numFilesRemoved", 0)),
        files_added_by_compaction=int(metrics.get("numFilesAdded", 0)),
        checkpoint_version=checkpoint_version,
        vacuumed_files=len(removed),
        log_files_removed=None
        if logs_before is None or logs_after is None
        else len(logs_before - logs_after),
        seconds=time.monotonic() - started,
    )


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _list_files(folder: str | None) -> set[str] | None:
    if folder is None or not os.path.isdir(folder):
        return None
    return set(os.listdir(folder))
