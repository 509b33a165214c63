"""The ``run_events`` Delta table: one row per finished orchestrator run, the source of run-failure metrics.

The metrics exporter has no access to the orchestrator's run storage (it may run on another host and must not
import the orchestrator), so a run-status hook appends what it sees here with :func:`append_run_event`.
Appends are at-least-once: a hook retried after a crash may append the same event twice, so readers count
distinct ``run_id`` values (:func:`count_failures_by_job`), never rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from collections.abc import Mapping

RUN_EVENTS_TABLE = "run_events"
FAILURE = "FAILURE"
"""The status that counts as a failed run (the name Dagster gives it in ``DagsterRunStatus``)."""

RUN_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_name", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("message", pa.string()),
    ]
)


def append_run_event(
    table_uri: str,
    *,
    run_id: str,
    job_name: str,
    status: str,
    message: str | None = None,
    timestamp: datetime | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Append one run event, creating the table on first use; return the new table version.

    Parameters
    ----------
    table_uri
        ``<lake>/<pipeline>/run_events`` (a local path or an object-store URI).
    status
        The run's final status, e.g. ``"SUCCESS"``, ``"FAILURE"`` or ``"CANCELED"``.
    timestamp
        When the run ended (timezone-aware); now when omitted.
    """
    from deltalake import DeltaTable, write_deltalake

    when = timestamp or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError(
            f"run event timestamp {when.isoformat()} for run {run_id} needs a timezone (use UTC)"
        )
    row = pa.Table.from_pylist(
        [{"run_id": run_id, "job_name": job_name, "status": status, "timestamp": when, "message": message}],
        schema=RUN_EVENTS_SCHEMA,
    )
    options = dict(storage_options or {})
    write_deltalake(table_uri, row, mode="append", storage_options=options or None)
    return DeltaTable(table_uri, storage_options=options or None).version()


def count_failures_by_job(events: pa.Table) -> dict[str, int]:
    """Distinct failed runs per job in a table with (at least) ``run_id``, ``job_name`` and ``status``.

    Every job that has any event gets an entry, 0 when none of its runs failed: a counter that exists before
    its first increment lets ``increase()`` see that increment.
    """
    failed = events.filter(pc.equal(events["status"], FAILURE))
    distinct = failed.group_by(["job_name", "run_id"]).aggregate([])
    counts = distinct.group_by("job_name").aggregate([("run_id", "count")])
    failures = dict(zip(counts["job_name"].to_pylist(), counts["run_id_count"].to_pylist(), strict=True))
    return {job: failures.get(job, 0) for job in sorted(set(events["job_name"].to_pylist()))}
