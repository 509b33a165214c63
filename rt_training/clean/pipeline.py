"""One bronze batch → silver rows + dead letters: size, parse, validate, feature checks, lateness, dedupe, in order.

Silver rows are the Kafka meta columns and every schema field, typed (:func:`rt_training.clean.schemas.silver_schema`);
no feature columns. Every bronze row ends in exactly one of the two outputs, so ``rows_in == silver_rows + dead_letter_rows``.
Rows keep their bronze order in both outputs. A row keeps the first reason it gets: the steps run in the order
of :data:`rt_training.clean.reasons.PRECEDENCE`, except that a feature that is not finite (``out_of_range``,
see :mod:`rt_training.clean.features`) is checked after all schema checks, ``not_allowed`` included (and before
the plausibility checks: ``empty_id``, ``before_min_event_time``, ``future_event_time``). Oversized
records are masked out (set null, without copying the batch) before parsing, so they are never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.clean.dedupe import SeenIds, find_duplicates
from rt_training.clean.features import check_features
from rt_training.clean.parse import JsonParser, ParsedBatch, Parser, oversized_mask
from rt_training.clean.reasons import CleaningSetupError, Reason, Verdicts, unparseable_detail
from rt_training.clean.schemas import BRONZE_SCHEMA, DEAD_LETTER_SCHEMA, META_SOURCES, silver_schema
from rt_training.clean.validate import check_fields, check_plausibility
from rt_training.eventtime.clock import before
from rt_training.spec.models import PipelineSpec


@dataclass(frozen=True)
class LagStats:
    """Event-time lag of the silver rows: ``ingested_at - event time`` in seconds (None when no rows)."""

    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    freshness_s: float | None
    """``now`` minus the newest event time: how far behind the stream silver is."""


@dataclass(frozen=True)
class Lateness:
    """Silver rows whose event time is below the batch's reference watermark, and by how much (seconds)."""

    reference: datetime | None
    """The watermark the batch was judged against (None: no silver row before it, so nothing is late)."""
    late_rows: int = 0
    late_by_p50_s: float | None = None
    late_by_p95_s: float | None = None
    late_by_max_s: float | None = None


@dataclass(frozen=True)
class CleanResult:
    """Outcome of :func:`clean_batch`."""

    silver: pa.Table
    dead_letters: pa.Table
    reason_counts: dict[str, int]
    """Dead letters per reason; every reason is listed, zeros included."""
    rows_in: int
    silver_rows: int
    dead_letter_rows: int
    duplicates: int
    lag: LagStats
    lateness: Lateness = Lateness(None)

    def metadata(self) -> dict[str, Any]:
        """Flat numbers for run metadata and metrics (None where undefined)."""
        out: dict[str, Any] = {
            "rows_in": self.rows_in,
            "silver_rows": self.silver_rows,
            "dead_letter_rows": self.dead_letter_rows,
            "duplicates": self.duplicates,
            "dead_letter_share": self.dead_letter_rows / self.rows_in if self.rows_in else 0.0,
            "event_lag_p50_s": self.lag.p50_s,
            "event_lag_p95_s": self.lag.p95_s,
            "event_lag_max_s": self.lag.max_s,
            "freshness_s": self.lag.freshness_s,
            "late_rows": self.lateness.late_rows,
            "late_share": self.lateness.late_rows / self.silver_rows if self.silver_rows else 0.0,
            "late_by_p50_s": self.lateness.late_by_p50_s,
            "late_by_p95_s": self.lateness.late_by_p95_s,
            "late_by_max_s": self.lateness.late_by_max_s,
        }
        out.update({f"dead_letters_{reason}": count for reason, count in self.reason_counts.items()})
        return out


@dataclass(frozen=True)
class PreparedBatch:
    """A bronze batch parsed, validated and its features checked: everything but the duplicate check (see
    :func:`prepare_batch`)."""

    bronze: pa.Table
    spec: PipelineSpec
    verdicts: Verdicts
    columns: dict[str, pa.Array]


def clean_batch(
    bronze: pa.Table,
    spec: PipelineSpec,
    *,
    seen_ids: SeenIds | None = None,
    parser: Parser | None = None,
    now: datetime | None = None,
    reference: datetime | None = None,
) -> CleanResult:
    """Clean one bronze batch: :func:`prepare_batch`, then :func:`finish_batch`.

    Parameters
    ----------
    bronze
        Rows with at least the bronze columns (``BRONZE_SCHEMA``), any order.
    spec
        The pipeline spec: schema, features, id and time fields.
    seen_ids
        Ids already in silver (see :func:`rt_training.clean.dedupe.recent_ids`); records repeating them are
        dead-lettered as ``duplicate_id``.
    parser
        Record decoder; default :class:`JsonParser` over the spec's fields.
    now
        Reference time for ``lag.freshness_s`` (default: the current time).
    reference
        The batch's reference watermark (aware): rows with an earlier event time are late, and with
        ``time.max_lateness`` set, rows more than that earlier are ``too_late``. None: nothing is late.
    """
    return finish_batch(
        prepare_batch(bronze, spec, parser=parser), seen_ids=seen_ids, now=now, reference=reference
    )


class ParserContractError(CleaningSetupError):
    """A plugged-in parser broke the :class:`~rt_training.clean.parse.Parser` contract: a fault of the code, not
    of any record, so it fails the batch instead of dead-lettering it."""


def prepare_batch(bronze: pa.Table, spec: PipelineSpec, *, parser: Parser | None = None) -> PreparedBatch:
    """The costly part of cleaning, which needs no duplicate history: sizes, parsing, validation, feature checks.

    A micro-batch that waits for the batch before it to commit (whose rows its duplicate history must hold)
    does this first, while it waits; ``parser`` as for :func:`clean_batch`.

    No record can fail the batch: when the vectorized path raises (a record the per-record guards of the parser
    did not catch, tripping validation or a feature), the batch is bisected, halves prepared again down to
    single records, and each record that still raises alone is dead-lettered as ``unparseable`` with the
    exception's class and message. A normal batch pays nothing for this. Raises
    :class:`~rt_training.clean.reasons.CleaningSetupError` (such as :class:`ParserContractError`) for a fault of
    the spec or of a plugged-in parser, and re-raises the batch's exception
    when every record of a batch of several raises alone (a fault of the spec or the code, not of the data).
    """
    bronze = _conform(bronze)
    try:
        return _prepare(bronze, spec, parser)
    except CleaningSetupError:
        raise
    except Exception as exc:
        pieces = _bisect(bronze, spec, parser, 0, bronze.num_rows)
        if bronze.num_rows > 1 and all(isinstance(piece, Exception) for _, _, piece in pieces):
            exc.add_note(
                f"every one of the {bronze.num_rows} records of the batch raises this alone: a fault of the "
                "spec or of the cleaning code, not of one record; fix it and run the batch again"
            )
            raise
        return _assemble(bronze, spec, pieces)


_Piece = tuple[int, int, "PreparedBatch | Exception"]
"""Rows ``start:stop`` of a batch, prepared, or the exception that a single record among them raised."""


def _bisect(
    bronze: pa.Table, spec: PipelineSpec, parser: Parser | None, start: int, stop: int
) -> list[_Piece]:
    """Prepare rows ``start:stop`` (known to raise together when more than one), splitting in halves until the
    records that raise alone are found; pieces in row order."""
    if stop - start == 1:
        try:
            return [(start, stop, _prepare(bronze.slice(start, 1), spec, parser))]
        except CleaningSetupError:
            raise
        except Exception as exc:
            return [(start, stop, exc)]
    pieces = []
    middle = (start + stop) // 2
    for lo, hi in ((start, middle), (middle, stop)):
        try:
            pieces.append((lo, hi, _prepare(bronze.slice(lo, hi - lo), spec, parser)))
        except CleaningSetupError:
            raise
        except Exception:
            pieces.extend(_bisect(bronze, spec, parser, lo, hi))
    return pieces


def _assemble(bronze: pa.Table, spec: PipelineSpec, pieces: list[_Piece]) -> PreparedBatch:
    """One prepared batch from its bisected pieces; the records that raised alone are ``unparseable``."""
    verdicts = Verdicts(bronze.num_rows)
    types = silver_schema(spec)
    names = list(spec.schema_.fields)
    parts: dict[str, list[pa.Array]] = {name: [] for name in names}
    for start, stop, piece in pieces:
        if isinstance(piece, Exception):
            verdicts.reject_rows(np.array([start]), Reason.UNPARSEABLE, [unparseable_detail(piece)])
            for name, arrays in parts.items():
                arrays.append(pa.nulls(1, types.field(name).type))
            continue
        verdicts.code[start:stop] = piece.verdicts.code
        verdicts.detail[start:stop] = piece.verdicts.detail
        for name, arrays in parts.items():
            arrays.append(_array(piece.columns[name]))
    columns = {name: pa.concat_arrays(parts[name]) for name in names}
    return PreparedBatch(bronze=bronze, spec=spec, verdicts=verdicts, columns=columns)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _prepare(bronze: pa.Table, spec: PipelineSpec, parser: Parser | None) -> PreparedBatch:
    """:func:`prepare_batch` of a conformed batch, without its guard."""
    n = bronze.num_rows
    verdicts = Verdicts(n)
    value_column = bronze.column("value")
    # combine_chunks copies even a single chunk: 60 MB for 200k records
    values = value_column.chunk(0) if value_column.num_chunks == 1 else value_column.combine_chunks()
    limit = spec.schema_.max_record_bytes
    too_big = oversized_mask(values, limit)
    verdicts.reject(
        too_big,
        Reason.OVERSIZED,
        lambda rows: [
            f"value is {size} bytes, more than max_record_bytes {limit}"
            for size in pc.binary_length(values.take(pa.array(rows))).to_pylist()
        ],
    )

    fields = spec.schema_.fields
    parser = parser or JsonParser(list(fields), {name: f.type for name, f in fields.items()})
    parsed = parser.parse(without_rows(values, too_big))
    _check_parsed(parsed, spec, n, parser)
    _reject_parse_errors(verdicts, parsed.errors, n)
    checked = check_fields(parsed.columns, spec.schema_, parsed.loose)
    if parsed.duplicate_keys is not None:
        _reject_parse_errors(verdicts, parsed.duplicate_keys(checked.present), n)
    columns = checked.apply(verdicts)
    for failure in check_features(columns, spec):
        verdicts.reject(failure.mask, Reason.OUT_OF_RANGE, failure.describe)
    check_plausibility(columns, bronze.column("timestamp"), spec.schema_, spec.time, verdicts)
    return PreparedBatch(bronze=bronze, spec=spec, verdicts=verdicts, columns=columns)


def _reject_parse_errors(verdicts: Verdicts, errors: dict[int, tuple[Reason, str]], n: int) -> None:
    """Reject the rows a parser reported, by precedence."""
    for reason in Reason:
        failed = {row: detail for row, (why, detail) in errors.items() if why == reason}
        if failed:
            mask = np.zeros(n, dtype=bool)
            mask[list(failed)] = True
            verdicts.reject(mask, reason, lambda rows, failed=failed: [failed[int(r)] for r in rows])


def finish_batch(
    prepared: PreparedBatch,
    *,
    seen_ids: SeenIds | None = None,
    now: datetime | None = None,
    reference: datetime | None = None,
) -> CleanResult:
    """Drop records too late and duplicates (within the batch and against ``seen_ids``), build silver and dead
    letters.

    ``prepared`` is used up: its verdicts take the rejections. ``seen_ids``, ``now`` and ``reference`` as for
    :func:`clean_batch`.
    """
    bronze, spec, verdicts = prepared.bronze, prepared.spec, prepared.verdicts
    columns = prepared.columns
    n = bronze.num_rows
    if reference is not None and reference.tzinfo is None:
        raise ValueError(
            f"finish_batch: reference={reference.isoformat()} has no time zone; pass an aware datetime (UTC)"
        )
    event_us = _micros(columns[spec.time_field])
    if reference is not None and spec.time.max_lateness is not None:
        _reject_too_late(verdicts, event_us, reference, spec.time.max_lateness)
    candidates = np.flatnonzero(verdicts.ok)
    coords = _take(bronze.select(["topic", "partition", "offset"]), candidates, n)
    ids = _take(columns[spec.id_field], candidates, n)
    duplicates = find_duplicates(ids, coords, id_field=spec.id_field, seen=seen_ids)
    verdicts.reject_rows(candidates[duplicates.rows], Reason.DUPLICATE_ID, duplicates.details)

    keep = np.flatnonzero(verdicts.ok)
    arrays = [bronze.column(src) for src in META_SOURCES]
    arrays += [columns[name] for name in spec.schema_.fields]
    silver = _take(pa.Table.from_arrays(arrays, schema=silver_schema(spec)), keep, n)
    dead_letters = _dead_letters(bronze, verdicts)
    return CleanResult(
        silver=silver,
        dead_letters=dead_letters,
        reason_counts=verdicts.counts(),
        rows_in=n,
        silver_rows=silver.num_rows,
        dead_letter_rows=dead_letters.num_rows,
        duplicates=len(duplicates.rows),
        lag=_lag(silver.column("_ingested_at"), silver.column(spec.time_field), now or datetime.now(UTC)),
        lateness=_lateness(event_us[keep], reference),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(times: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Event times as float microseconds since the epoch, NaN where null."""
    return pc.cast(times, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _reject_too_late(verdicts: Verdicts, event_us: np.ndarray, reference: datetime, limit_s: float) -> None:
    bound_us = before(reference, limit_s).timestamp() * 1e6
    with np.errstate(invalid="ignore"):
        too_late = event_us < bound_us
    mark, mark_us = reference.isoformat(), reference.timestamp() * 1e6
    verdicts.reject(
        too_late,
        Reason.TOO_LATE,
        lambda rows: [
            f"event time {(_EPOCH + timedelta(microseconds=int(event_us[r]))).isoformat()} is "
            f"{(mark_us - event_us[r]) / 1e6:.3f}s below the watermark {mark}, more than max_lateness {limit_s:g}s"
            for r in rows
        ],
    )


def _lateness(event_us: np.ndarray, reference: datetime | None) -> Lateness:
    """How many of the kept rows (event times ``event_us``) are below ``reference``, and by how much."""
    if reference is None:
        return Lateness(None)
    with np.errstate(invalid="ignore"):
        behind_s = (reference.timestamp() * 1e6 - event_us) / 1e6
        late = behind_s[behind_s > 0]
    if late.size == 0:
        return Lateness(reference)
    p50, p95 = np.percentile(late, [50, 95])
    return Lateness(reference, int(late.size), float(p50), float(p95), float(late.max()))


def without_rows(values: pa.BinaryArray, rows: np.ndarray) -> pa.BinaryArray:
    """``values`` with the masked rows set to null, sharing the data buffer (nothing is copied or parsed)."""
    if not rows.any():
        return values
    if values.offset:
        values = pa.concat_arrays([values])
    keep = pa.array(~rows)
    if values.null_count:
        keep = pc.and_(keep, values.is_valid())
    return pa.Array.from_buffers(values.type, len(values), [keep.buffers()[1], *values.buffers()[1:]])


def _check_parsed(parsed: ParsedBatch, spec: PipelineSpec, n: int, parser: Parser) -> None:
    """A plugged-in parser must return one value per record for every schema field."""
    for name in spec.schema_.fields:
        got = len(parsed.columns.get(name, ()))
        if got != n:
            raise ParserContractError(
                f"parser {type(parser).__name__} returned {got} values for field {name!r} of a batch of {n} "
                "records; a parser must return one value (None when absent) per record for every schema field"
            )


def _take(data: pa.Table | pa.Array, rows: np.ndarray, n: int) -> Any:
    """``data.take(rows)``, skipped when ``rows`` is every row in order."""
    return data if len(rows) == n else data.take(pa.array(rows))


def _conform(bronze: pa.Table) -> pa.Table:
    missing = [name for name in BRONZE_SCHEMA.names if name not in bronze.column_names]
    if missing:
        raise ValueError(
            f"bronze batch lacks columns {missing}; expected the bronze schema {BRONZE_SCHEMA.names}"
        )
    try:
        return bronze.select(BRONZE_SCHEMA.names).cast(BRONZE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"bronze batch columns do not fit the bronze schema {BRONZE_SCHEMA}: {exc}") from exc


def _dead_letters(bronze: pa.Table, verdicts: Verdicts) -> pa.Table:
    dead = np.flatnonzero(~verdicts.ok)
    rows = bronze.take(pa.array(dead))
    arrays = {name: rows.column(name) for name in bronze.column_names}
    arrays["reason"] = pa.array(verdicts.reasons(dead), type=pa.string())
    arrays["detail"] = pa.array(verdicts.detail[dead].tolist(), type=pa.string())
    return pa.Table.from_arrays(
        [arrays[name] for name in DEAD_LETTER_SCHEMA.names], schema=DEAD_LETTER_SCHEMA
    )


def _lag(ingested_at: pa.ChunkedArray, event_time: pa.ChunkedArray, now: datetime) -> LagStats:
    if len(event_time) == 0:
        return LagStats(None, None, None, None)
    event_us = event_time.cast(pa.int64()).to_numpy()
    lag_s = (ingested_at.cast(pa.int64()).to_numpy() - event_us) / 1e6
    p50, p95 = np.percentile(lag_s, [50, 95])
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    freshness = now.timestamp() - event_us.max() / 1e6
    return LagStats(float(p50), float(p95), float(lag_s.max()), float(freshness))
