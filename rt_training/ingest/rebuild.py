"""Re-derive one day of silver and dead letters from bronze, after cleaning or the spec changed.

A day is a UTC day of ingestion time: bronze's ``ingested_at``, which silver keeps as ``_ingested_at`` and dead
letters as ``ingested_at``. :func:`rebuild_day` cleans that day's bronze rows again and replaces the day's rows
of silver and of dead letters, each table in one Delta commit (an overwrite with a predicate, Delta's
``replaceWhere``): a reader sees the old day or the new day, never a mix, and the old version stays readable by
time travel. The commit carries no app transactions, so the Kafka offsets the tables hold are unchanged and
ingestion goes on exactly once; its custom metadata says what it was (``rt_training.rebuild``: day, run id,
rows). Rows keep their offsets and ingestion time, so the training-set sampler does not offer them again.

Which rows, exactly
-------------------
* Only offsets the lake already holds: per partition, below both silver's and dead letters' committed offset
  (read from the handles the rebuild commits through). A micro-batch committing meanwhile appends beyond that
  cutoff, and the predicate leaves its rows alone, so rebuilding today while ingestion runs neither drops nor
  duplicates them (rows past the cutoff are left as their micro-batch wrote them, until the day is rebuilt
  again). deltalake judges commit conflicts from file statistics, so such a micro-batch, or a compaction, can
  make a rebuild's commit conflict; it is retried on a refreshed handle, where the predicate selects the same
  rows.
* A micro-batch retried after its bronze commit stamps silver and dead letters with the retry's time, which can
  fall on the next day. Such records belong to the day bronze gives them: the rebuild of that day replaces them
  wherever they are, and the rebuild of the other day leaves them alone.

Duplicates
----------
The day is cleaned as one batch, judged on event time like a micro-batch (see :mod:`rt_training.ingest.batch`)
against one reference watermark: the watermark of the silver rows ingested before the day (their highest event
time minus ``time.allowed_lateness``). Within the day the first occurrence of an id in ``(topic, partition,
offset)`` order is kept, and ids of silver rows ingested before the day whose event time is at or after
``reference - ingest.dedup_history_s`` are duplicates (the micro-batches' history, anchored at the watermark the
day started from). Records below the reference are counted late, and with ``time.max_lateness`` set those more
than that below it are ``too_late``. The result depends only on bronze and on the silver rows before the day,
so the same rebuild twice gives the same rows.
It can differ from what the micro-batches kept when one id came in two partitions (they kept the one ingested
first) or twice further apart than the history (they had forgotten the first), and in what is late: each
micro-batch had its own reference, later in the day than the day's; rebuild days oldest first, since a day's
history is the rebuilt day before it.

A rebuild that stops between its two commits (silver first) leaves the day's records that changed table in
neither or in both tables; running it again completes it, as the rows it writes come from bronze alone.

The day's bronze rows are read and cleaned in memory, in one piece.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.eventtime.clock import EventClock, before
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import PIPELINE_KEY, app_id
from rt_training.lake.tables import (
    DEAD_LETTER_SCHEMA,
    UTC_US,
    ensure_table,
    open_table,
    silver_schema,
    table_schema,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.spec import PipelineSpec

REBUILD_KEY = "rt_training.rebuild"
"""Key of a rebuild commit's custom metadata: ``{"day", "run_id", "rows", "cutoffs"}``."""

MAX_COMMIT_ATTEMPTS = 5

Partition = tuple[str, int]


@dataclass(frozen=True)
class Columns:
    """Names of the Kafka coordinates and the ingestion time in one table."""

    topic: str
    partition: str
    offset: str
    ingested_at: str


SILVER_COLUMNS = Columns("_topic", "_partition", "_offset", "_ingested_at")
DEAD_LETTER_COLUMNS = Columns("topic", "partition", "offset", "ingested_at")
BRONZE_COLUMNS = DEAD_LETTER_COLUMNS


class RebuildError(RuntimeError):
    """The rebuild cannot run, or its commit kept conflicting; nothing of the failed step was committed."""


@dataclass(frozen=True)
class RebuildReport:
    """What :func:`rebuild_day` did to one day."""

    day: date
    run_id: str
    rows_in: int
    """Bronze rows of the day that were cleaned again."""
    silver_before: int
    silver_after: int
    dead_letters_before: int
    dead_letters_after: int
    reasons_before: dict[str, int]
    reasons_after: dict[str, int]
    """Dead letters of the day per reason code (every code, zeros included, after)."""
    duplicates: int
    cutoffs: dict[str, int]
    """``topic[partition]`` -> the offset the rebuild stopped before (the lake's committed offset)."""
    regrouped: int
    """Records whose silver or dead-letter row carried another day than bronze's (a retried micro-batch)."""
    committed: bool
    """False when the day has no rows to rebuild (nothing was written)."""
    silver_version: int
    dead_letters_version: int
    seconds: float
    history_ids: int = 0
    """Distinct ids of the silver rows ingested in the dedup history before the day."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Commit attempts per table (more than 1 when a concurrent commit conflicted)."""
    late_rows: int = 0
    """Rebuilt silver rows whose event time is below ``reference``'s watermark."""
    reference: EventClock | None = None
    """The event-time clock the day was judged against (silver ingested before the day)."""

    def metadata(self) -> dict[str, Any]:
        """Flat values for run metadata; reason counts where the day has any, before and after."""
        out: dict[str, Any] = {
            "day": self.day.isoformat(),
            "rows_in": self.rows_in,
            "silver_rows_before": self.silver_before,
            "silver_rows": self.silver_after,
            "dead_letter_rows_before": self.dead_letters_before,
            "dead_letter_rows": self.dead_letters_after,
            "duplicates": self.duplicates,
            "history_ids": self.history_ids,
            "late_rows": self.late_rows,
            "regrouped_rows": self.regrouped,
            "committed": self.committed,
            "silver_version": self.silver_version,
            "dead_letters_version": self.dead_letters_version,
            "cutoffs": ", ".join(f"{k} {v}" for k, v in sorted(self.cutoffs.items())) or "none",
            "duration_s": round(self.seconds, 3),
        }
        for reason in sorted(set(self.reasons_before) | set(self.reasons_after)):
            before, after = self.reasons_before.get(reason, 0), self.reasons_after.get(reason, 0)
            if before or after:
                out[f"dead_letters_{reason}"] = after
                out[f"dead_letters_{reason}_before"] = before
        if self.reference is not None:
            out.update(self.reference.to_metadata())
        return out

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.day}: {self.rows_in} bronze rows -> silver {self.silver_before} -> {self.silver_after}, "
            f"dead letters {self.dead_letters_before} -> {self.dead_letters_after}"
            + ("" if self.committed else " (nothing to rebuild)")
        )


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def rebuild_day(
    spec: PipelineSpec,
    lake: LakeLocation,
    day: date,
    run_id: str | None = None,
    *,
    max_attempts: int = MAX_COMMIT_ATTEMPTS,
) -> RebuildReport:
    """Replace ``day``'s silver and dead-letter rows with what cleaning under ``spec`` makes of its bronze rows.

    Raises
    ------
    RebuildError
        No bronze table, or a commit conflicted with concurrent commits ``max_attempts`` times.
    LakeSchemaError
        Silver's columns differ from the ones ``spec`` gives (a changed schema needs a new table, not a rebuild).
    """
    from rt_training.clean.pipeline import clean_batch

    started = time.monotonic()
    run_id = run_id or f"rebuild-{uuid.uuid4().hex[:12]}"
    start, end = day_bounds(day)
    options = lake.storage_options
    bronze_uri = lake.uri(spec.name, "bronze")
    bronze_dt = open_table(bronze_uri, options)
    if bronze_dt is None:
        raise RebuildError(
            f"no bronze table at {bronze_uri}: nothing to rebuild day {day} from (has pipeline {spec.name!r} "
            "ingested yet, and is the lake root right?)"
        )
    silver_dt = ensure_table(lake.uri(spec.name, "silver"), silver_schema(spec), options)
    dead_dt = ensure_table(lake.uri(spec.name, "dead_letters"), DEAD_LETTER_SCHEMA, options)
    # Bronze is read at a version after silver's and dead letters': each micro-batch commits bronze before them,
    # so it holds every offset these versions hold.
    bronze_dt.update_incremental()
    plan = _plan(bronze_dt, silver_dt, dead_dt, spec.name, start, end)
    reference = _reference_before(spec, silver_dt, start)
    history = _history_ids(spec, silver_dt, start, reference.watermark)
    cleaned = clean_batch(plan.bronze, spec, seen_ids=history, now=end, reference=reference.watermark)

    def report(committed: bool, attempts: dict[str, int] | None = None) -> RebuildReport:
        return RebuildReport(
            day=day,
            run_id=run_id,
            rows_in=plan.bronze.num_rows,
            silver_before=plan.silver_before,
            silver_after=cleaned.silver_rows,
            dead_letters_before=plan.dead_letters_before,
            dead_letters_after=cleaned.dead_letter_rows,
            reasons_before=plan.reasons_before,
            reasons_after=dict(cleaned.reason_counts),
            duplicates=cleaned.duplicates,
            cutoffs=plan.cutoff_labels(),
            regrouped=_size(plan.moved_in) + _size(plan.left_out),
            committed=committed,
            silver_version=silver_dt.version(),
            dead_letters_version=dead_dt.version(),
            seconds=time.monotonic() - started,
            history_ids=0 if history is None else len(pc.unique(history)),
            attempts=attempts or {},
            late_rows=cleaned.lateness.late_rows,
            reference=reference,
        )

    if plan.bronze.num_rows == 0 and plan.silver_before + plan.dead_letters_before == 0:
        return report(committed=False)
    metadata = {
        PIPELINE_KEY: spec.name,
        REBUILD_KEY: {
            "day": day.isoformat(),
            "run_id": run_id,
            "rows": plan.bronze.num_rows,
            "cutoffs": plan.cutoff_labels(),
        },
    }
    attempts = {}
    for name, dt, data, columns in (
        ("silver", silver_dt, cleaned.silver, SILVER_COLUMNS),
        ("dead_letters", dead_dt, cleaned.dead_letters, DEAD_LETTER_COLUMNS),
    ):
        predicate = replace_predicate(
            columns, start, end, plan.cutoffs, include=plan.moved_in, exclude=plan.left_out
        )
        attempts[name] = _replace(dt, data, predicate, metadata, max_attempts)
    return report(committed=True, attempts=attempts)


@dataclass(frozen=True)
class _DayPlan:
    """The rows a rebuild of one day cleans and replaces."""

    bronze: pa.Table
    """Bronze rows to clean, in ``(topic, partition, offset)`` order."""
    cutoffs: dict[Partition, int]
    moved_in: dict[Partition, np.ndarray]
    """Offsets bronze puts in the day whose silver/dead-letter row is on another day (or missing)."""
    left_out: dict[Partition, np.ndarray]
    """Offsets of the day's silver/dead-letter rows that bronze puts on another day."""
    silver_before: int
    dead_letters_before: int
    reasons_before: dict[str, int]

    def cutoff_labels(self) -> dict[str, int]:
        return {f"{t}[{p}]": o for (t, p), o in sorted(self.cutoffs.items())}


def _plan(
    bronze_dt: DeltaTable,
    silver_dt: DeltaTable,
    dead_dt: DeltaTable,
    pipeline: str,
    start: datetime,
    end: datetime,
) -> _DayPlan:
    old_silver = _rows_of_day(silver_dt, SILVER_COLUMNS, start, end)
    old_dead = _rows_of_day(dead_dt, DEAD_LETTER_COLUMNS, start, end, extra=["reason"])
    bronze = _rows_of_day(bronze_dt, BRONZE_COLUMNS, start, end, extra=None)
    partitions = sorted(
        set(_partitions(bronze, BRONZE_COLUMNS))
        | set(_partitions(old_silver, SILVER_COLUMNS))
        | set(_partitions(old_dead, DEAD_LETTER_COLUMNS))
    )
    cutoffs = _cutoffs(pipeline, partitions, silver_dt, dead_dt)
    bronze = _below(bronze, BRONZE_COLUMNS, cutoffs)
    old_silver = _below(old_silver, SILVER_COLUMNS, cutoffs)
    old_dead = _below(old_dead, DEAD_LETTER_COLUMNS, cutoffs)
    new_offsets = _offsets(bronze, BRONZE_COLUMNS)
    old_offsets = _merge(_offsets(old_silver, SILVER_COLUMNS), _offsets(old_dead, DEAD_LETTER_COLUMNS))
    left_out = _difference(old_offsets, new_offsets)
    return _DayPlan(
        bronze=bronze.sort_by([(c, "ascending") for c in ("topic", "partition", "offset")]),
        cutoffs=cutoffs,
        moved_in=_difference(new_offsets, old_offsets),
        left_out=left_out,
        silver_before=old_silver.num_rows - _count_in(old_silver, SILVER_COLUMNS, left_out),
        dead_letters_before=old_dead.num_rows - _count_in(old_dead, DEAD_LETTER_COLUMNS, left_out),
        reasons_before=_reason_counts(old_dead, left_out),
    )


def replace_predicate(
    columns: Columns,
    start: datetime,
    end: datetime,
    cutoffs: Mapping[Partition, int],
    *,
    include: Mapping[Partition, np.ndarray] | None = None,
    exclude: Mapping[Partition, np.ndarray] | None = None,
) -> str:
    """The SQL predicate of the rows a rebuild replaces in one table.

    Rows ingested in ``[start, end)`` below their partition's cutoff, except the offsets in ``exclude``, plus the
    offsets in ``include`` whatever their day. With no cutoffs it matches nothing.
    """
    ingested = _quote(columns.ingested_at)
    below = [
        f"({_quote(columns.topic)} = {_literal(t)} AND {_quote(columns.partition)} = {p} "
        f"AND {_quote(columns.offset)} < {offset})"
        for (t, p), offset in sorted(cutoffs.items())
    ]
    if not below:
        return "FALSE"
    predicate = (
        f"{ingested} >= '{start.isoformat()}' AND {ingested} < '{end.isoformat()}' AND ({' OR '.join(below)})"
    )
    if exclude:
        predicate += f" AND NOT ({_offsets_clause(columns, exclude)})"
    if include:
        predicate = f"({predicate}) OR ({_offsets_clause(columns, include)})"
    return predicate


def _rows_of_day(
    dt: DeltaTable, columns: Columns, start: datetime, end: datetime, extra: Sequence[str] | None = ()
) -> pa.Table:
    """Rows ingested in ``[start, end)``: their coordinates and ``extra`` columns (every column when None)."""
    when = pc.field(columns.ingested_at)
    where = (when >= pa.scalar(start, UTC_US)) & (when < pa.scalar(end, UTC_US))
    wanted = None if extra is None else [columns.topic, columns.partition, columns.offset, *extra]
    return dt.to_pyarrow_dataset().to_table(columns=wanted, filter=where)


def _partitions(rows: pa.Table, columns: Columns) -> list[Partition]:
    if rows.num_rows == 0:
        return []
    pairs = rows.select([columns.topic, columns.partition]).group_by([columns.topic, columns.partition])
    keys = pairs.aggregate([]).to_pydict()
    return [(str(t), int(p)) for t, p in zip(keys[columns.topic], keys[columns.partition], strict=True)]


def _cutoffs(
    pipeline: str, partitions: Iterable[Partition], silver: DeltaTable, dead_letters: DeltaTable
) -> dict[Partition, int]:
    """Per partition, the lower of silver's and dead letters' committed offsets (only partitions both hold)."""
    out = {}
    for topic, partition in partitions:
        ids = app_id(pipeline, topic, partition)
        offsets = [silver.transaction_version(ids), dead_letters.transaction_version(ids)]
        if None not in offsets:
            out[(topic, partition)] = min(offsets)
    return out


def _below(rows: pa.Table, columns: Columns, cutoffs: Mapping[Partition, int]) -> pa.Table:
    keep = pc.scalar(False)
    for (topic, partition), offset in cutoffs.items():
        keep = keep | (
            (pc.field(columns.topic) == topic)
            & (pc.field(columns.partition) == partition)
            & (pc.field(columns.offset) < offset)
        )
    return rows.filter(keep)


def _offsets(rows: pa.Table, columns: Columns) -> dict[Partition, np.ndarray]:
    """Partition -> its sorted offsets in ``rows``."""
    out = {}
    for topic, partition in _partitions(rows, columns):
        mine = rows.filter((pc.field(columns.topic) == topic) & (pc.field(columns.partition) == partition))
        out[(topic, partition)] = np.sort(mine.column(columns.offset).to_numpy())
    return out


def _merge(
    a: Mapping[Partition, np.ndarray], b: Mapping[Partition, np.ndarray]
) -> dict[Partition, np.ndarray]:
    keys = set(a) | set(b)
    empty = np.array([], dtype=np.int64)
    return {k: np.union1d(a.get(k, empty), b.get(k, empty)) for k in keys}


def _difference(
    a: Mapping[Partition, np.ndarray], b: Mapping[Partition, np.ndarray]
) -> dict[Partition, np.ndarray]:
    out = {}
    for key, offsets in a.items():
        rest = offsets if key not in b else np.setdiff1d(offsets, b[key], assume_unique=True)
        if rest.size:
            out[key] = rest
    return out


def _size(offsets: Mapping[Partition, np.ndarray]) -> int:
    return sum(int(v.size) for v in offsets.values())


def _count_in(rows: pa.Table, columns: Columns, offsets: Mapping[Partition, np.ndarray]) -> int:
    return rows.filter(_in_offsets(columns, offsets)).num_rows if offsets else 0


def _in_offsets(columns: Columns, offsets: Mapping[Partition, np.ndarray]) -> pc.Expression:
    keep = pc.scalar(False)
    for (topic, partition), values in offsets.items():
        keep = keep | (
            (pc.field(columns.topic) == topic)
            & (pc.field(columns.partition) == partition)
            & pc.field(columns.offset).isin(pa.array(values, pa.int64()))
        )
    return keep


def _reason_counts(dead: pa.Table, left_out: Mapping[Partition, np.ndarray]) -> dict[str, int]:
    kept = dead.filter(~_in_offsets(DEAD_LETTER_COLUMNS, left_out)) if left_out else dead
    counts = pc.value_counts(kept.column("reason")).to_pylist() if kept.num_rows else []
    return {str(c["values"]): int(c["counts"]) for c in counts}


def _reference_before(spec: PipelineSpec, silver: DeltaTable, start: datetime) -> EventClock:
    """The watermark of the silver rows ingested before ``start``: the day's reference (read from the rows, as
    file statistics cover rows of the day too)."""
    when = pc.field(SILVER_COLUMNS.ingested_at)
    times = silver.to_pyarrow_dataset().to_table(
        columns=[spec.time_field], filter=when < pa.scalar(start, UTC_US)
    )
    top = pc.max(times.column(spec.time_field)).as_py() if times.num_rows else None
    return EventClock(top, spec.time.allowed_lateness, silver.version())


def _history_ids(
    spec: PipelineSpec, silver: DeltaTable, start: datetime, reference: datetime | None
) -> pa.Array | None:
    """Ids of the silver rows ingested before the day began whose event time is in the dedup history of
    ``reference`` (the micro-batches' rule)."""
    where = pc.field(SILVER_COLUMNS.ingested_at) < pa.scalar(start, UTC_US)
    if reference is not None:
        since = before(reference, spec.ingest.dedup_history_s)
        where = (pc.field(spec.time_field) >= pa.scalar(since, UTC_US)) & where
    ids = silver.to_pyarrow_dataset().to_table(columns=[spec.id_field], filter=where).column(spec.id_field)
    return ids.combine_chunks() if len(ids) else None


def _replace(
    dt: DeltaTable, data: pa.Table, predicate: str, metadata: Mapping[str, Any], max_attempts: int
) -> int:
    """Overwrite the rows matching ``predicate`` with ``data`` in one commit, through ``dt``; returns attempts.

    A commit that conflicts (deltalake judges conflicts from file statistics, so a concurrent micro-batch of
    the same day can conflict although its rows lie beyond the cutoffs) is retried on the refreshed handle: the
    predicate selects the same rows in any newer version, since nothing else writes below the cutoffs.
    """
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    stored = table_schema(dt)
    batch = data.select(stored.names).cast(stored)
    last: Exception | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            write_deltalake(
                dt,
                batch,
                mode="overwrite",
                predicate=predicate,
                commit_properties=CommitProperties(custom_metadata=dict(metadata)),
            )
        except CommitFailedError as exc:
            last = exc
            dt.update_incremental()
            continue
        return attempt
    raise RebuildError(
        f"rebuild of day {metadata[REBUILD_KEY]['day']} could not commit to Delta table {dt.table_uri}: "
        f"concurrent commits conflicted {max_attempts} times (last: {last}). Nothing of this commit was written; "
        "run the rebuild of this day again (pause maintenance_job, or rebuild today after the day ends)."
    )


def _offsets_clause(columns: Columns, offsets: Mapping[Partition, np.ndarray]) -> str:
    """SQL matching exactly ``offsets``, as runs of consecutive offsets."""
    parts = []
    for (topic, partition), values in sorted(offsets.items()):
        breaks = np.flatnonzero(np.diff(values) != 1) + 1
        for run in np.split(values, breaks):
            parts.append(
                f"({_quote(columns.topic)} = {_literal(topic)} AND {_quote(columns.partition)} = {partition} "
                f"AND {_quote(columns.offset)} >= {int(run[0])} AND {_quote(columns.offset)} <= {int(run[-1])})"
            )
    return " OR ".join(parts) if parts else "FALSE"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
