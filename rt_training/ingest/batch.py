"""One micro-batch: read exact Kafka offset ranges, land them in bronze, silver and dead letters, exactly once.

Each table commits its rows with the ranges' end offsets as Delta app transactions, checked on the handle it
commits through (:func:`rt_training.lake.exactly_once.append_exactly_once`). Each table is idempotent on its
own, so a run that was killed anywhere is completed by running the same ranges again: tables already at the
ranges' ends skip, the others commit. When every table already holds the ranges, Kafka is not read at all.

Retries write what the first attempt would have
-----------------------------------------------
That completion is only exactly once if the retry routes every record to the table the first attempt sent it
to (else a record whose silver row committed lands in dead letters too, or one meant for dead letters in
neither) and writes the same values. So nothing a batch routes on or writes is taken from the attempt's clock or
from lake state that moves between attempts; all of it is a function of the ranges, the records Kafka holds in
them, and what the lake recorded:

- Lateness (``late_rows``, ``too_late``) and the duplicate window are judged against the batch's *reference*
  clock, recorded in the silver and dead-letters commits and read back by a retry
  (:mod:`rt_training.ingest.reference`).
- The duplicate history is silver *at the reference's version* (``EventClock.silver_version``), not silver now:
  batches of other partitions that commit between the attempts (or between the reference and the scan) add rows
  the first attempt never saw, and a record the first attempt kept in silver would otherwise be dead-lettered
  as a duplicate of a later copy of itself on retry. Duplicates are the silver rows of that version *outside*
  the batch's own ranges whose event time is at or after ``reference - ingest.dedup_history_s``.
- ``ingested_at`` and ``run_id``, which silver (``_ingested_at``) and dead letters copy from bronze, are bronze's:
  a retry that finds bronze holding the ranges takes them from bronze's rows of the ranges
  (:func:`bronze_stamp`), so every table says the same about a record, whichever attempt wrote it (a rebuild
  selects a day's rows of every table by this time). An attempt that finds bronze without the ranges has
  written nothing yet and stamps the rows with its own clock and run id (restamped with bronze's when a racing
  run of the same ranges commits bronze first). Stamping from the data, not from a time fixed in the planned
  run config, holds for every way a range is run again: a re-executed run, a range the sensor plans anew after
  a failure, a bare :func:`run_micro_batch`.

A retry reads the ranges from Kafka again, which holds the same records at the same offsets; only retention or
compaction between the attempts could remove one, and the ``counts_reconcile`` check then reports the batch.
Reading silver at the reference's version needs that version's files: maintenance's vacuum keeps files it
compacted away for its retention (7 days by default), the longest a killed batch may wait for its retry.

Which attempt committed a table is in that commit's metadata (``run_id``). The wall clock is also read for
``freshness_s`` (how far silver's newest event time is behind now) and for durations: numbers reported as run
metadata, never written into a table nor used to route a record.

Time is event time: a record is late when its event time is below the reference watermark (kept, counted as
``late_rows``), ``too_late`` when more than ``time.max_lateness`` below it. Before silver holds a row there is
no watermark: nothing is late and the history is all of silver (which is empty).

Consecutive batches may overlap: a batch whose ranges start beyond where a table stands reads Kafka and parses,
validates and featurizes its records while the batch before it is still running, then waits for its turn
(``wait_for_turn``) before it takes its reference, scans the duplicate history, drops duplicates and commits.
Commits therefore stay in offset order, and the reference and duplicate history include the previous batch's
rows, as when batches run one after another.

With ``ingest.commit_consumer_group`` set, a batch whose tables all hold its ranges (committed now or by an
earlier attempt) then commits to that Kafka consumer group, per partition of its ranges, the offset every table
stands at, so that lag tools see the pipeline. It is a copy for display: never read back, never moved
backwards, and a failure to commit only warns (``BatchReport.consumer_group`` says why); the batch still succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rt_training.eventtime.clock import EventClock, before
from rt_training.ingest.reference import REFERENCE_KEY, batch_reference, reference_metadata
from rt_training.lake.exactly_once import CommitOutcome, append_exactly_once, committed_offsets
from rt_training.lake.tables import OFFSET_TABLES, open_table, silver_schema, table_uri
from rt_training.stream.planner import OffsetRange, PartitionState, ranges_key

if TYPE_CHECKING:
    import pyarrow as pa

    from rt_training.clean.pipeline import CleanResult
    from rt_training.spec import PipelineSpec
    from rt_training.stream.client import KafkaSettings
    from rt_training.stream.offsets import GroupCommit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LakeLocation:
    """Where a pipeline's tables are: the lake root and object-store options (passed to deltalake as is)."""

    root: str
    storage_options: Mapping[str, str] | None = None

    def uri(self, pipeline: str, table: str) -> str:
        return table_uri(pipeline, table, self.root)


@dataclass
class BatchReport:
    """What a micro-batch did, for run metadata and logs."""

    ranges: list[OffsetRange]
    run_id: str
    records: int = 0
    bronze_bytes: int = 0
    outcomes: dict[str, CommitOutcome] = field(default_factory=dict)
    clean: CleanResult | None = None
    reference: EventClock | None = None
    """The event-time clock the batch's records were judged against (None when nothing was cleaned)."""
    gaps: list[dict[str, Any]] = field(default_factory=list)
    read_s: float = 0.0
    waited_s: float = 0.0
    """Time spent waiting for the previous batch to commit (batches that overlap)."""
    clean_s: float = 0.0
    commit_s: float = 0.0
    total_s: float = 0.0
    consumer_group: GroupCommit | None = None
    """What was committed to ``ingest.commit_consumer_group`` (None when the spec names no group)."""

    @property
    def skipped(self) -> bool:
        """Every table already held these ranges (a replayed run)."""
        return bool(self.outcomes) and not any(o.committed for o in self.outcomes.values())

    def table_metadata(self, table: str) -> dict[str, Any]:
        """Plottable numbers for one table's materialization."""
        outcome = self.outcomes[table]
        meta: dict[str, Any] = {
            "offset_ranges": ranges_key(self.ranges),
            "records_in": self.records,
            "rows_written": outcome.rows,
            "committed": outcome.committed,
            "table_version": outcome.version,
            "duration_s": round(self.total_s, 3),
        }
        if table == "bronze":
            meta["bytes"] = self.bronze_bytes
            meta["read_s"] = round(self.read_s, 3)
            meta["waited_for_previous_batch_s"] = round(self.waited_s, 3)
            if self.gaps:
                meta["data_loss_gaps"] = len(self.gaps)
            if self.consumer_group is not None:
                meta.update(self.consumer_group.metadata())
        elif self.clean is not None:
            meta.update(self.clean.metadata())
            meta["clean_s"] = round(self.clean_s, 3)
            if self.reference is not None:
                meta.update(self.reference.to_metadata())
        return meta


def partition_states(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, topic: str | None = None
) -> list[PartitionState]:
    """What the planner needs per partition of ``topic`` (default the spec's): Kafka's earliest and end offsets
    and the next offset each offset table committed. Raises ``KafkaUnreachableError`` when no broker answers."""
    from rt_training.stream.offsets import partition_offsets

    topic = topic or spec.source.topic
    offsets = partition_offsets(settings, topic)
    committed = {
        table: committed_offsets(
            lake.uri(spec.name, table), spec.name, topic, list(offsets), lake.storage_options
        )
        for table in OFFSET_TABLES
    }
    return [
        PartitionState(topic, p, earliest, end, {t: committed[t].get(p) for t in OFFSET_TABLES})
        for p, (earliest, end) in sorted(offsets.items())
    ]


def table_offsets(
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    tables: Sequence[str] = OFFSET_TABLES,
) -> dict[str, dict[tuple[str, int], int | None]]:
    """Per offset table: (topic, partition) -> the next offset it has committed, for the partitions of ``ranges``."""
    out: dict[str, dict[tuple[str, int], int | None]] = {}
    by_topic: dict[str, list[int]] = {}
    for r in ranges:
        by_topic.setdefault(r.topic, []).append(r.partition)
    for table in tables:
        out[table] = {}
        for topic, parts in by_topic.items():
            done = committed_offsets(
                lake.uri(spec.name, table), spec.name, topic, parts, lake.storage_options
            )
            out[table].update({(topic, p): done[p] for p in parts})
    return out


def _at_end(
    offsets: Mapping[str, Mapping[tuple[str, int], int | None]], ranges: Sequence[OffsetRange]
) -> dict[str, bool]:
    return {table: all(at[(r.topic, r.partition)] == r.end for r in ranges) for table, at in offsets.items()}


def _behind(
    offsets: Mapping[str, Mapping[tuple[str, int], int | None]], ranges: Sequence[OffsetRange]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for table, at in offsets.items():
        for r in ranges:
            offset = at[(r.topic, r.partition)]
            if r.start > 0 and (offset is None or offset < r.start):
                out[table] = f"{r.topic}[{r.partition}] at {offset}, this batch starts at {r.start}"
                break
    return out


def commit_consumer_group(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    run_id: str,
) -> GroupCommit | None:
    """Commit to ``spec.ingest.commit_consumer_group``, per partition of ``ranges``, the lowest offset the offset
    tables stand at (the next offset the pipeline reads there), forward only; None when the spec names no group.
    Never raises: a failure is logged as a warning and returned in :attr:`GroupCommit.error`."""
    from rt_training.stream.offsets import GroupCommit, commit_group_offsets

    group = spec.ingest.commit_consumer_group
    if group is None:
        return None
    try:
        offsets = table_offsets(spec, lake, ranges)
        standing: dict[tuple[str, int], int] = {}
        for r in ranges:
            at = [offsets[table][(r.topic, r.partition)] for table in OFFSET_TABLES]
            if all(o is not None for o in at):
                standing[(r.topic, r.partition)] = min(o for o in at if o is not None)
        return commit_group_offsets(settings, group, standing, metadata=f"rt_training {spec.name} {run_id}")
    except Exception as exc:  # display only: the lake holds the offsets, so the batch must not fail here
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "micro-batch %s committed to the lake but not to consumer group %r (lag tools will show it behind "
            "until a later batch commits): %s",
            run_id,
            group,
            reason,
        )
        return GroupCommit(group, error=reason)


class TurnTimeoutError(RuntimeError):
    """The previous batch did not commit within the allowed time."""


def await_turn(
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    wait_for_turn: Callable[[], str | None],
    *,
    timeout_s: float,
    poll_s: float = 0.1,
    on_wait: Callable[[str, dict[str, str]], None] | None = None,
) -> tuple[float, dict[str, dict[tuple[str, int], int | None]]]:
    """Wait while a table stands below the ranges' starts and ``wait_for_turn()`` names an earlier batch still
    running (it returns None when there is none: nothing will move the table, so waiting stops and the commit
    refuses the range). Returns the seconds waited and the tables' offsets (:func:`table_offsets`) as last read;
    raises :class:`TurnTimeoutError` after ``timeout_s``."""
    t0 = time.monotonic()
    announced = False
    offsets = table_offsets(spec, lake, ranges)
    while True:
        behind = _behind(offsets, ranges)
        if not behind:
            return time.monotonic() - t0, offsets
        awaited = wait_for_turn()
        if awaited is None:
            return time.monotonic() - t0, table_offsets(spec, lake, ranges)
        if not announced and on_wait is not None:
            on_wait(awaited, behind)
            announced = True
        if time.monotonic() - t0 > timeout_s:
            where = "; ".join(f"{t}: {w}" for t, w in behind.items())
            raise TurnTimeoutError(
                f"waited {timeout_s:.0f}s for {awaited} to commit the offsets before this batch ({where}); it is "
                "still running. Cancel it (the sensor then plans both ranges again) or raise the wait."
            )
        time.sleep(poll_s)
        # Tables only move forward: while the first table behind stands still, reading the others tells nothing
        # (each read parses a Delta log; polling one table instead of three keeps the wait off the CPU).
        first = next(iter(behind))
        if not _behind(table_offsets(spec, lake, ranges, (first,)), ranges):
            offsets = table_offsets(spec, lake, ranges)


def _in_ranges(ranges: Sequence[OffsetRange], prefix: str = "") -> Any:
    """Dataset filter: rows whose ``<prefix>topic``, ``<prefix>partition`` and ``<prefix>offset`` lie in ``ranges``."""
    import pyarrow.dataset as ds

    inside = None
    for r in ranges:
        cond = (
            (ds.field(f"{prefix}topic") == r.topic)
            & (ds.field(f"{prefix}partition") == r.partition)
            & (ds.field(f"{prefix}offset") >= r.start)
            & (ds.field(f"{prefix}offset") < r.end)
        )
        inside = cond if inside is None else inside | cond
    return inside


def seen_ids_outside(
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    reference: datetime | None,
    *,
    version: int | None = None,
) -> Any:
    """Ids of the silver rows in the duplicate history, leaving out rows of ``ranges`` themselves (see the module
    docstring): event time at or after ``reference - ingest.dedup_history_s``; all rows when ``reference`` is
    None. Silver is read at ``version`` (default: the newest). The filter on the time column lets Parquet
    statistics skip files wholly before the window."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    uri = lake.uri(spec.name, "silver")
    if version is None:
        dt = open_table(uri, lake.storage_options)
    else:
        options = dict(lake.storage_options) if lake.storage_options else None
        dt = DeltaTable(uri, version=version, storage_options=options)
    if dt is None:
        return None
    inside = _in_ranges(ranges, "_")
    flt = None if inside is None else ~inside
    if reference is not None:
        since = before(reference, spec.ingest.dedup_history_s)
        recent = ds.field(spec.time_field) >= pc.scalar(since)
        flt = recent if flt is None else recent & flt
    table = dt.to_pyarrow_dataset().to_table(columns=[spec.id_field], filter=flt)
    return table.column(spec.id_field).combine_chunks()


def duplicate_history(
    spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange], reference: EventClock
) -> Any:
    """The ids a batch of ``ranges`` judged against ``reference`` dedupes against: :func:`seen_ids_outside` of
    silver at the reference's version, where the reference's window starts; None when silver did not exist
    then. The same for every attempt of the batch (see the module docstring)."""
    if reference.silver_version is None:
        return None
    return seen_ids_outside(spec, lake, ranges, reference.watermark, version=reference.silver_version)


def bronze_stamp(
    spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange]
) -> tuple[datetime, str] | None:
    """``ingested_at`` and ``run_id`` of bronze's rows of ``ranges`` (one commit wrote them all, so they are the
    same on every row); None when bronze holds no row of them."""
    dt = open_table(lake.uri(spec.name, "bronze"), lake.storage_options)
    if dt is None:
        return None
    rows = dt.to_pyarrow_dataset().head(1, columns=["ingested_at", "run_id"], filter=_in_ranges(ranges))
    if rows.num_rows == 0:
        return None
    return rows.column("ingested_at")[0].as_py(), rows.column("run_id")[0].as_py()


def restamp(rows: pa.Table, ingested_at: datetime, run_id: str) -> pa.Table:
    """Silver or dead-letter ``rows`` with ``ingested_at`` (``_ingested_at`` in silver) and ``run_id`` set."""
    import pyarrow as pa

    for name, value in (("_ingested_at", ingested_at), ("ingested_at", ingested_at), ("run_id", run_id)):
        index = rows.schema.get_field_index(name)
        if index >= 0:
            column = rows.schema.field(index)
            rows = rows.set_column(index, column, pa.repeat(pa.scalar(value, column.type), rows.num_rows))
    return rows


def run_micro_batch(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    run_id: str,
    *,
    stall_timeout_s: float = 12.0,
    on_phase: Callable[[str], None] | None = None,
    wait_for_turn: Callable[[], str | None] | None = None,
    turn_timeout_s: float = 600.0,
    on_wait: Callable[[str, dict[str, str]], None] | None = None,
) -> BatchReport:
    """Land the records of ``ranges`` in the pipeline's bronze, silver and dead-letter tables, exactly once.

    Raises whatever the reader raises (``DataLossError`` under ``on_data_loss: fail``, ``ReadStalledError``,
    ``KafkaUnreachableError``) before any commit, and ``OffsetMismatchError`` when a table stands neither at a
    range's start nor at its end (another writer moved it: the sensor re-plans from the tables).
    ``on_phase`` is called with ``read``, ``clean``, ``commit <table>``, ``committed <table>`` and ``done`` as the
    batch gets there (progress logs; the fault-injection test kills the process at these points).

    ``wait_for_turn`` lets this batch overlap the one before it: when a table stands below the ranges' starts,
    the batch reads Kafka and does the part of cleaning that needs no duplicate history, then waits (see
    :func:`await_turn`) for as long as ``wait_for_turn()`` names an earlier batch that is still running, at most
    ``turn_timeout_s``; ``on_wait`` is told what it waits for, once.
    Without it, such a table makes the commit raise ``OffsetMismatchError`` at once.

    With ``ingest.commit_consumer_group`` set, the offsets the tables then stand at are committed to that group
    (:func:`commit_consumer_group`, also for a replayed run); a failure there is reported in
    ``BatchReport.consumer_group``, never raised.
    """
    from rt_training.clean.pipeline import finish_batch, prepare_batch
    from rt_training.stream.reader import read_ranges

    phase = on_phase or (lambda _name: None)
    t0 = time.monotonic()
    ranges = sorted(ranges)
    report = BatchReport(ranges=list(ranges), run_id=run_id)
    offsets = table_offsets(spec, lake, ranges)
    done = _at_end(offsets, ranges)
    if all(done.values()):
        for table in OFFSET_TABLES:
            report.outcomes[table] = CommitOutcome(lake.uri(spec.name, table), False, 0, -1, tuple(ranges), 0)
        report.consumer_group = commit_consumer_group(settings, spec, lake, ranges, run_id)
        report.total_s = time.monotonic() - t0
        return report

    # A retry whose bronze holds the ranges stamps every row as bronze did; a first attempt, with its own.
    stamp = bronze_stamp(spec, lake, ranges) if done["bronze"] else None
    ingested_at, row_run_id = stamp or (datetime.now(UTC), run_id)
    needs_clean = not (done["silver"] and done["dead_letters"])
    # Behind: the previous batch has not committed yet, so its rows are neither in the duplicate history nor
    # under the watermark: both are taken after the wait.
    behind = wait_for_turn is not None and bool(_behind(offsets, ranges))
    reference = batch_reference(spec, lake, ranges, done) if needs_clean and not behind else None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedup-history") as pool:
        # The duplicate history leaves this batch's ranges out, so it does not depend on the read: it is scanned
        # on the other core while the consumer decodes records (Arrow's scan runs outside the GIL).
        history = (
            pool.submit(duplicate_history, spec, lake, ranges, reference) if reference is not None else None
        )
        phase("read")
        read = read_ranges(
            settings,
            ranges,
            on_data_loss=spec.ingest.on_data_loss,
            stall_timeout_s=stall_timeout_s,
            run_id=row_run_id,
            ingested_at=ingested_at,
        )
        seen_ids = history.result() if history is not None else None
    bronze = read.table
    report.records = bronze.num_rows
    report.bronze_bytes = int(bronze.column("value").nbytes)
    report.gaps = [g.to_dict() for g in read.gaps]
    report.read_s = read.seconds

    prepared = None
    if needs_clean:
        phase("clean")
        t1 = time.monotonic()
        prepared = prepare_batch(bronze, spec)
        report.clean_s = time.monotonic() - t1

    if behind and wait_for_turn is not None:
        phase("wait")
        report.waited_s, offsets = await_turn(
            spec, lake, ranges, wait_for_turn, timeout_s=turn_timeout_s, on_wait=on_wait
        )
        done = _at_end(offsets, ranges)
        needs_clean = not (done["silver"] and done["dead_letters"])
        if needs_clean:
            reference = batch_reference(spec, lake, ranges, done)
            seen_ids = duplicate_history(spec, lake, ranges, reference)

    cleaned = None
    meta: dict[str, Any] = {"run_id": run_id}
    clean_meta = meta
    if needs_clean and prepared is not None and reference is not None:
        t1 = time.monotonic()
        # ``now`` (default: the wall clock) only measures freshness_s, a reported number.
        cleaned = finish_batch(prepared, seen_ids=seen_ids, reference=reference.watermark)
        report.clean = cleaned
        report.reference = reference
        report.clean_s += time.monotonic() - t1
        clean_meta = {**meta, REFERENCE_KEY: reference_metadata(reference, ranges)}

    t2 = time.monotonic()
    written: dict[str, pa.Table | None] = {
        "bronze": bronze,
        "silver": cleaned.silver if cleaned else None,
        "dead_letters": cleaned.dead_letters if cleaned else None,
    }
    for table in OFFSET_TABLES:
        uri = lake.uri(spec.name, table)
        data = written[table]
        if data is None:  # already at the end; nothing recomputed for it
            report.outcomes[table] = CommitOutcome(uri, False, 0, -1, tuple(ranges), 0)
            continue
        phase(f"commit {table}")
        report.outcomes[table] = append_exactly_once(
            uri,
            data,
            ranges,
            spec.name,
            lake.storage_options,
            earliest=read.earliest,
            gaps=read.gaps,
            custom_metadata=meta if table == "bronze" else clean_meta,
            schema=silver_schema(spec) if table == "silver" else None,
        )
        phase(f"committed {table}")
        if table == "bronze" and stamp is None and not report.outcomes[table].committed:
            # A racing run of the same ranges committed bronze first: stamp the rows as it did.
            raced = bronze_stamp(spec, lake, ranges)
            if raced is not None:
                written = {t: None if d is None else restamp(d, *raced) for t, d in written.items()}
    report.commit_s = time.monotonic() - t2
    report.consumer_group = commit_consumer_group(settings, spec, lake, ranges, run_id)
    report.total_s = time.monotonic() - t0
    phase("done")
    return report
