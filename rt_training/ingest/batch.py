"""One micro-batch: read exact Kafka offset ranges, land them in bronze, silver and dead letters, exactly once.

Each table commits its rows with the ranges' end offsets as Delta app transactions, checked on the handle it
commits through (:func:`rt_training.lake.exactly_once.append_exactly_once`). Each table is idempotent on its
own, so a run that was killed anywhere is completed by running the same ranges again: tables already at the
ranges' ends skip, the others commit. When every table already holds the ranges, Kafka is not read at all.

Cleaning is deterministic for a given set of records: duplicates are judged against silver rows *outside* the
batch's own ranges, so a retry that finds this batch's silver rows committed still routes the same records to
dead letters as the first attempt did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rt_training.lake.exactly_once import CommitOutcome, append_exactly_once, committed_offsets
from rt_training.lake.tables import OFFSET_TABLES, open_table, silver_schema, table_uri
from rt_training.stream.planner import OffsetRange, ranges_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pyarrow as pa

    from rt_training.clean.pipeline import CleanResult
    from rt_training.spec import PipelineSpec
    from rt_training.stream.client import KafkaSettings


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
    gaps: list[dict[str, Any]] = field(default_factory=list)
    read_s: float = 0.0
    clean_s: float = 0.0
    commit_s: float = 0.0
    total_s: float = 0.0

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
            if self.gaps:
                meta["data_loss_gaps"] = len(self.gaps)
        elif self.clean is not None:
            meta.update(self.clean.metadata())
            meta["clean_s"] = round(self.clean_s, 3)
        return meta


def tables_at_end(spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange]) -> dict[str, bool]:
    """Per offset table: does it already hold every one of ``ranges``?"""
    out: dict[str, bool] = {}
    for table in OFFSET_TABLES:
        by_topic: dict[str, list[int]] = {}
        for r in ranges:
            by_topic.setdefault(r.topic, []).append(r.partition)
        ok = True
        for topic, parts in by_topic.items():
            done = committed_offsets(
                lake.uri(spec.name, table), spec.name, topic, parts, lake.storage_options
            )
            ok &= all(done[r.partition] == r.end for r in ranges if r.topic == topic)
        out[table] = ok
    return out


def seen_ids_outside(
    spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange], now: datetime
) -> Any:
    """Ids of recent silver rows, leaving out rows of ``ranges`` themselves (see the module docstring)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dt = open_table(lake.uri(spec.name, "silver"), lake.storage_options)
    if dt is None:
        return None
    since = now - timedelta(seconds=spec.ingest.dedup_history_s)
    recent = ds.field("_ingested_at") >= pc.scalar(since)
    inside = None
    for r in ranges:
        cond = (
            (ds.field("_topic") == r.topic)
            & (ds.field("_partition") == r.partition)
            & (ds.field("_offset") >= r.start)
            & (ds.field("_offset") < r.end)
        )
        inside = cond if inside is None else inside | cond
    flt = recent if inside is None else recent & ~inside
    table = dt.to_pyarrow_dataset().to_table(columns=[spec.id_field], filter=flt)
    return table.column(spec.id_field).combine_chunks()


def run_micro_batch(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: Sequence[OffsetRange],
    run_id: str,
    *,
    stall_timeout_s: float = 30.0,
    on_phase: Callable[[str], None] | None = None,
) -> BatchReport:
    """Land the records of ``ranges`` in the pipeline's bronze, silver and dead-letter tables, exactly once.

    Raises whatever the reader raises (``DataLossError`` under ``on_data_loss: fail``, ``ReadStalledError``,
    ``KafkaUnreachableError``) before any commit, and ``OffsetMismatchError`` when a table stands neither at a
    range's start nor at its end (another writer moved it: the sensor re-plans from the tables).
    ``on_phase`` is called with ``read``, ``clean``, ``commit <table>``, ``committed <table>`` and ``done`` as the
    batch gets there (progress logs; the fault-injection test kills the process at these points).
    """
    from rt_training.clean.pipeline import clean_batch
    from rt_training.stream.reader import read_ranges

    phase = on_phase or (lambda _name: None)
    t0 = time.monotonic()
    ranges = sorted(ranges)
    report = BatchReport(ranges=list(ranges), run_id=run_id)
    done = tables_at_end(spec, lake, ranges)
    if all(done.values()):
        for table in OFFSET_TABLES:
            report.outcomes[table] = CommitOutcome(lake.uri(spec.name, table), False, 0, -1, tuple(ranges), 0)
        report.total_s = time.monotonic() - t0
        return report

    now = datetime.now(UTC)
    needs_clean = not (done["silver"] and done["dead_letters"])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedup-history") as pool:
        # The duplicate history leaves this batch's ranges out, so it does not depend on the read: it is scanned
        # on the other core while the consumer decodes records (Arrow's scan runs outside the GIL).
        history = pool.submit(seen_ids_outside, spec, lake, ranges, now) if needs_clean else None
        phase("read")
        read = read_ranges(
            settings,
            ranges,
            on_data_loss=spec.ingest.on_data_loss,
            stall_timeout_s=stall_timeout_s,
            run_id=run_id,
            ingested_at=now,
        )
        seen_ids = history.result() if history is not None else None
    bronze = read.table
    report.records = bronze.num_rows
    report.bronze_bytes = int(bronze.column("value").nbytes)
    report.gaps = [g.to_dict() for g in read.gaps]
    report.read_s = read.seconds

    t1 = time.monotonic()
    cleaned = None
    if needs_clean:
        phase("clean")
        cleaned = clean_batch(bronze, spec, seen_ids=seen_ids, now=now)
        report.clean = cleaned
    report.clean_s = time.monotonic() - t1

    t2 = time.monotonic()
    meta = {"run_id": run_id}
    outputs: dict[str, tuple[pa.Table | None, pa.Schema | None]] = {
        "bronze": (bronze, None),
        "silver": (cleaned.silver if cleaned else None, silver_schema(spec)),
        "dead_letters": (cleaned.dead_letters if cleaned else None, None),
    }
    for table, (data, schema) in outputs.items():
        uri = lake.uri(spec.name, table)
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
            custom_metadata=meta,
            schema=schema,
        )
        phase(f"committed {table}")
    report.commit_s = time.monotonic() - t2
    report.total_s = time.monotonic() - t0
    phase("done")
    return report
