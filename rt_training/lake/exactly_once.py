"""Exactly-once appends of Kafka offset ranges to a Delta table.

Each commit carries, next to its data, one Delta app transaction per partition it covers:
``app_id = "<pipeline>/<topic>/<partition>"`` with ``version`` = the next offset to read. The offsets therefore
live in the table and move only together with the data.

deltalake does not protect these versions by itself: it accepts a replayed or lower version, duplicating rows and
moving the version back (measured with deltalake 1.6.6, see ``rt_training_tests/test_lake_exactly_once.py``).
So :func:`append_exactly_once` checks them, on one ``DeltaTable`` handle:

1. open the table (create it if missing) and read each range's version from that handle;
2. all ranges already at ``end``: a replay, nothing is written;
3. all ranges at ``start``: commit the data and the new versions through the *same* handle. A concurrent writer
   that committed the same app id after the handle was read makes this commit fail with ``CommitFailedError``
   (deltalake's conflict check on app transactions), its data files become orphans for vacuum, and the check
   runs again on a fresh handle, which now sees the ranges at ``end``: the loser stops cleanly, no rows written;
4. anything else raises :class:`OffsetMismatchError` naming the table, the partition and both offsets.

The guarantee rests on the store's atomic "create the next commit file only if absent": local and most object
stores give it; on S3 configure deltalake's conditional put or locking provider through ``storage_options``.

A partition the table has never committed (version ``None``) is accepted only for a range that starts at or
before the partition's earliest offset in Kafka (``earliest``, as the reader saw it). Accepting any start would let
a later range of a backlog, committed first by a concurrent run, silently skip the ranges before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rt_training.lake.tables import LakeSchemaError, ensure_table, open_table, table_schema
from rt_training.stream.planner import OffsetRange

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.stream.reader import DataGap

RANGES_KEY = "rt_training.ranges"
GAPS_KEY = "rt_training.data_loss"
PIPELINE_KEY = "rt_training.pipeline"
"""Keys of the commit's custom metadata (visible in the table's history)."""


def app_id(pipeline: str, topic: str, partition: int) -> str:
    """The Delta app transaction id that carries a partition's next offset for ``pipeline``."""
    return f"{pipeline}/{topic}/{partition}"


class OffsetMismatchError(RuntimeError):
    """A range does not continue from where the table stands: committing it would duplicate or skip records."""

    def __init__(self, message: str, *, table_uri: str, topic: str, partition: int, table_offset: int | None):
        super().__init__(message)
        self.table_uri = table_uri
        self.topic = topic
        self.partition = partition
        self.table_offset = table_offset


class PartialCommitError(OffsetMismatchError):
    """Some ranges of one batch are committed and others are not: the batch mixes old and new ranges."""


class CommitConflictError(RuntimeError):
    """Concurrent commits kept failing this commit; nothing of it was committed."""


@dataclass(frozen=True)
class CommitOutcome:
    """What :func:`append_exactly_once` did."""

    table_uri: str
    committed: bool
    """True when this call wrote a commit; False when every range was already committed (a replay)."""
    rows: int
    """Rows this call wrote (0 for a replay)."""
    version: int
    """The table version of this call's commit; for a replay, the version the table stood at."""
    ranges: tuple[OffsetRange, ...]
    attempts: int
    """Commit attempts (more than 1 when a concurrent commit conflicted)."""

    @property
    def already_committed(self) -> bool:
        return not self.committed

    def metadata(self) -> dict[str, Any]:
        """Flat values for run metadata."""
        return {
            "table": self.table_uri,
            "committed": self.committed,
            "rows": self.rows,
            "table_version": self.version,
            "attempts": self.attempts,
        }


def read_offsets(
    dt: DeltaTable, pipeline: str, topic: str, partitions: Sequence[int]
) -> dict[int, int | None]:
    """Partition -> next offset committed in the loaded version of ``dt`` (None: nothing committed yet)."""
    return {p: dt.transaction_version(app_id(pipeline, topic, p)) for p in partitions}


def committed_offsets(
    table_uri: str,
    pipeline: str,
    topic: str,
    partitions: Sequence[int],
    storage_options: Mapping[str, str] | None = None,
) -> dict[int, int | None]:
    """Partition -> next offset to read per the table at ``table_uri`` (all None when the table does not exist)."""
    dt = open_table(table_uri, storage_options)
    if dt is None:
        return dict.fromkeys(partitions)
    return read_offsets(dt, pipeline, topic, partitions)


def append_exactly_once(
    table_uri: str,
    data: pa.Table,
    ranges: Sequence[OffsetRange],
    pipeline: str,
    storage_options: Mapping[str, str] | None = None,
    *,
    earliest: Mapping[tuple[str, int], int] | None = None,
    gaps: Sequence[DataGap] = (),
    custom_metadata: Mapping[str, Any] | None = None,
    schema: pa.Schema | None = None,
    max_attempts: int = 5,
) -> CommitOutcome:
    """Append ``data`` (the records of ``ranges``) once, with each range's ``end`` as its partition's version.

    Parameters
    ----------
    data
        The rows of ``ranges``; may be empty (ranges of transaction markers or compacted-away records), and the
        versions still advance.
    ranges
        At most one range per (topic, partition), each ``[start, end)``.
    earliest
        (topic, partition) -> the partition's earliest offset in Kafka when it was read. Needed to accept the
        first range of a partition the table has never committed: it must start at or before this offset.
    gaps
        Offsets deleted by retention before they were read (the reader's ``on_data_loss="skip"``), recorded in
        the commit's metadata under ``rt_training.data_loss``.
    custom_metadata
        Extra JSON values for the commit (e.g. the run id), next to ``rt_training.ranges``.
    schema
        The table's schema: it is created with it when missing, and an existing table must have it. Default:
        ``data``'s schema when creating; an existing table is then taken as it is and ``data`` converted to it.

    Raises
    ------
    OffsetMismatchError
        A range starts neither where the table stands nor is already committed (names table, partition, the
        table's offset and the range).
    PartialCommitError
        Some ranges are committed and some are not.
    CommitConflictError
        Concurrent commits conflicted ``max_attempts`` times.
    LakeSchemaError
        ``data`` lacks or adds columns, or its types do not convert to the table's.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    checked = _validated(ranges, table_uri)
    metadata = _commit_metadata(pipeline, checked, gaps, custom_metadata)
    last_conflict: Exception | None = None
    for attempt in range(1, max_attempts + 1):
        dt = open_table(table_uri, storage_options)
        if dt is None or schema is not None:
            dt = ensure_table(table_uri, schema or data.schema, storage_options)
        versions = {
            (r.topic, r.partition): dt.transaction_version(app_id(pipeline, r.topic, r.partition))
            for r in checked
        }
        if _all_at_end(checked, versions):
            return CommitOutcome(table_uri, False, 0, dt.version(), tuple(checked), attempt)
        _check_at_start(table_uri, checked, versions, earliest)
        batch = _conform(table_uri, data, table_schema(dt))
        transactions = [Transaction(app_id(pipeline, r.topic, r.partition), r.end) for r in checked]
        try:
            write_deltalake(
                dt,
                batch,
                mode="append",
                commit_properties=CommitProperties(custom_metadata=metadata, app_transactions=transactions),
            )
        except CommitFailedError as exc:
            last_conflict = exc
            continue
        return CommitOutcome(table_uri, True, batch.num_rows, dt.version(), tuple(checked), attempt)
    raise CommitConflictError(
        f"could not commit offset ranges {_describe(checked)} to Delta table {table_uri}: concurrent commits "
        f"conflicted {max_attempts} times (last: {last_conflict}). Nothing of this batch was committed; retry the run."
    )


def _validated(ranges: Sequence[OffsetRange], table_uri: str) -> list[OffsetRange]:
    if not ranges:
        raise ValueError(f"no offset ranges given for a commit to {table_uri}")
    seen: set[tuple[str, int]] = set()
    for r in ranges:
        if r.start < 0 or r.end < r.start:
            raise ValueError(
                f"invalid offset range {r.topic}[{r.partition}] [{r.start}, {r.end}) for {table_uri}"
            )
        if (r.topic, r.partition) in seen:
            raise ValueError(f"two offset ranges for {r.topic}[{r.partition}] in one commit to {table_uri}")
        seen.add((r.topic, r.partition))
    return sorted(ranges)


def _all_at_end(ranges: list[OffsetRange], versions: Mapping[tuple[str, int], int | None]) -> bool:
    return all(versions[(r.topic, r.partition)] == r.end for r in ranges)


def _check_at_start(
    table_uri: str,
    ranges: list[OffsetRange],
    versions: Mapping[tuple[str, int], int | None],
    earliest: Mapping[tuple[str, int], int] | None,
) -> None:
    """Raise unless every range starts where the table stands."""
    at_end = [r for r in ranges if versions[(r.topic, r.partition)] == r.end and r.end != r.start]
    for r in ranges:
        version = versions[(r.topic, r.partition)]
        if version == r.start or (version == r.end and r in at_end):
            continue
        where = f"{r.topic}[{r.partition}]"
        if version is None:
            first = None if earliest is None else earliest.get((r.topic, r.partition))
            if first is not None and r.start <= first:
                continue
            if first is None:
                reason = (
                    f"the table has committed nothing of {where} and the partition's earliest offset in Kafka was "
                    "not given, so it cannot be told whether offsets before this range would be skipped. Pass "
                    "earliest={(topic, partition): offset} as the reader reported it."
                )
            else:
                reason = (
                    f"the table has committed nothing of {where}, but the partition's earliest offset in Kafka is "
                    f"{first}: committing would skip offsets [{first}, {r.start}). An earlier range of this "
                    "partition has not been committed yet (runs finishing out of order); retry after it."
                )
            raise OffsetMismatchError(
                f"Delta table {table_uri}: range [{r.start}, {r.end}) of {where} refused: {reason}",
                table_uri=table_uri,
                topic=r.topic,
                partition=r.partition,
                table_offset=None,
            )
        direction = "would skip" if version < r.start else "would duplicate"
        raise OffsetMismatchError(
            f"Delta table {table_uri} stands at offset {version} of {where}, but this batch covers "
            f"[{r.start}, {r.end}): committing it {direction} records. The run was planned from an older state "
            "of the table; plan again from the offsets committed in the table.",
            table_uri=table_uri,
            topic=r.topic,
            partition=r.partition,
            table_offset=version,
        )
    if at_end:
        first = at_end[0]
        pending = [r for r in ranges if r not in at_end]
        raise PartialCommitError(
            f"Delta table {table_uri} already holds {_describe(at_end)} but not {_describe(pending)}: this batch "
            "mixes committed and uncommitted ranges. Plan the uncommitted ranges as a batch of their own.",
            table_uri=table_uri,
            topic=first.topic,
            partition=first.partition,
            table_offset=first.end,
        )


def _conform(table_uri: str, data: pa.Table, stored: pa.Schema) -> pa.Table:
    """``data`` with the table's column order and types."""
    missing = [n for n in stored.names if n not in data.column_names]
    extra = [n for n in data.column_names if n not in stored.names]
    if missing or extra:
        raise LakeSchemaError(
            f"batch for Delta table {table_uri} does not match its columns: missing {missing}, unexpected {extra}"
        )
    try:
        return data.select(stored.names).cast(stored)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise LakeSchemaError(
            f"batch for Delta table {table_uri} does not convert to its column types: {exc}"
        ) from exc


def _commit_metadata(
    pipeline: str,
    ranges: list[OffsetRange],
    gaps: Sequence[DataGap],
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(extra or {})
    metadata[PIPELINE_KEY] = pipeline
    metadata[RANGES_KEY] = [r.to_dict() for r in ranges]
    if gaps:
        metadata[GAPS_KEY] = [g.to_dict() for g in gaps]
    return metadata


def _describe(ranges: Sequence[OffsetRange]) -> str:
    return ", ".join(f"{r.topic}[{r.partition}] [{r.start}, {r.end})" for r in ranges)
