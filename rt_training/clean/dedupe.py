"""Duplicate ids: within a batch, and against the ids silver received recently.

Within a batch the first occurrence of an id in ``(topic, partition, offset)`` order is kept, whatever the
row order of the batch, so a replayed batch dedupes the same way. An id already in recent silver history (see
:func:`recent_ids`) is a duplicate everywhere in the batch. History is selected on event time against the
pipeline's watermark (the silver rows whose event time is within ``ingest.dedup_history_s`` of it), not on when
silver ingested a row: a replay of last year's topic dedupes against last year's rows, and a producer's retry
of a live event falls in the window as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.clean.values import show
from rt_training.lake.tables import field_type
from rt_training.spec.models import PipelineSpec

SeenIds = pa.Array | pa.ChunkedArray | Iterable[object]
"""Ids already in silver: an Arrow array, or any iterable of ids (a set)."""


@dataclass(frozen=True)
class Duplicates:
    """Rows (indices into the arrays given) that repeat an earlier id, with a detail each."""

    rows: np.ndarray
    details: list[str]


def as_id_array(seen: SeenIds | None, id_type: pa.DataType) -> pa.Array | None:
    """``seen`` as an Arrow array of the id column's type; None when empty."""
    if seen is None:
        return None
    if isinstance(seen, pa.ChunkedArray):
        seen = seen.combine_chunks()
    if not isinstance(seen, pa.Array):
        seen = pa.array(list(seen))
    if len(seen) == 0:
        return None
    try:
        return seen.cast(id_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(
            f"seen ids of type {seen.type} cannot be compared with ids of type {id_type}: {exc}"
        ) from exc


def find_duplicates(
    ids: pa.Array, coords: pa.Table, *, id_field: str, seen: SeenIds | None = None
) -> Duplicates:
    """Rows of ``ids`` to drop as duplicates.

    Parameters
    ----------
    ids
        The id of each record; a null id is never a duplicate.
    coords
        ``topic``, ``partition``, ``offset`` of each record, aligned with ``ids``.
    id_field
        The id field's name, for details.
    seen
        Ids already in silver.
    """
    n = len(ids)
    history = as_id_array(seen, ids.type)
    in_history = np.zeros(n, dtype=bool)
    if history is not None and n:
        in_history = pc.is_in(ids, value_set=history).to_numpy(zero_copy_only=False)
    order = _offset_order(coords)
    unmatched = in_history | ids.is_null().to_numpy(zero_copy_only=False)
    order = order[~unmatched[order]]
    codes = pc.dictionary_encode(ids.take(pa.array(order))).indices.to_numpy(zero_copy_only=False)
    first_of_code = _first_occurrences(codes)
    repeat = np.ones(len(codes), dtype=bool)
    repeat[first_of_code] = False
    later = order[repeat]
    earlier = order[first_of_code[codes[repeat]]]

    history_rows = np.flatnonzero(in_history)
    details = [
        f"{id_field} {show(v)} is already in silver (recent history)"
        for v in ids.take(pa.array(history_rows)).to_pylist()
    ]
    if later.size:
        first = coords.take(pa.array(earlier)).to_pydict()
        later_ids = ids.take(pa.array(later)).to_pylist()
        details += [
            f"{id_field} {show(v)} already appeared at {t}/{p}/{o} in this batch"
            for v, t, p, o in zip(later_ids, first["topic"], first["partition"], first["offset"], strict=True)
        ]
    return Duplicates(rows=np.concatenate([history_rows, later]).astype(np.int64), details=details)


def _offset_order(coords: pa.Table) -> np.ndarray:
    """Row order by (topic, partition, offset); the identity, without sorting, when rows are already so."""
    n = coords.num_rows
    partition = coords.column("partition").to_numpy()
    offset = coords.column("offset").to_numpy()
    step_p, step_o = np.diff(partition), np.diff(offset)
    one_topic = n == 0 or pc.count_distinct(coords.column("topic")).as_py() == 1
    if one_topic and bool(np.all((step_p > 0) | ((step_p == 0) & (step_o > 0)))):
        return np.arange(n)
    keys = [("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
    return pc.sort_indices(coords, sort_keys=keys).to_numpy(zero_copy_only=False)


def _first_occurrences(codes: np.ndarray) -> np.ndarray:
    """Position of the first occurrence of each dictionary code ``0..k-1``.

    Arrow numbers dictionary entries in order of first occurrence, so a row is a first occurrence exactly
    when its code exceeds every earlier one (one linear pass); should that ever not hold, sort instead.
    """
    previous_max = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]])) if len(codes) else codes
    first = np.flatnonzero(codes > previous_max)
    if len(first) and np.array_equal(codes[first], np.arange(len(first))) and codes.max() == len(first) - 1:
        return first
    return np.unique(codes, return_index=True)[1]


def recent_ids(
    silver_uri: str,
    spec: PipelineSpec,
    since: datetime | None = None,
    *,
    storage_options: dict[str, str] | None = None,
) -> pa.Array:
    """Distinct ids of the silver rows whose event time is at or after ``since`` (default: the table's watermark
    minus ``ingest.dedup_history_s``, see :mod:`rt_training.eventtime.clock`).

    Reads only the id column, filtered on the event-time field (Parquet statistics prune old files). A table that
    does not exist yet has no history.
    """
    from deltalake import DeltaTable

    from rt_training.eventtime.clock import event_clock

    id_type = field_type(spec.schema_.fields[spec.id_field])
    if since is not None and since.tzinfo is None:
        raise ValueError(
            f"recent_ids: since={since.isoformat()} has no time zone; pass an aware datetime (UTC)"
        )
    if not DeltaTable.is_deltatable(silver_uri, storage_options=storage_options):
        return pa.array([], type=id_type)
    silver = DeltaTable(silver_uri, storage_options=storage_options)
    if since is None:
        since = event_clock(spec, silver).cut(spec.ingest.dedup_history_s)
        if since is None:
            return pa.array([], type=id_type)
    cutoff = pa.scalar(since, type=pa.timestamp("us", tz="UTC"))
    where = pc.field(spec.time_field) >= cutoff
    table = silver.to_pyarrow_dataset().to_table(columns=[spec.id_field], filter=where)
    return pc.unique(table.column(spec.id_field).combine_chunks()).cast(id_type)
