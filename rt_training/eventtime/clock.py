"""The event-time clock of a pipeline: the highest event time committed to silver, and its watermark.

Real streams carry their own time: a replay of last year's topic, a backfill, ingestion that lags behind by hours.
Measured on the wall clock, every such event looks old, and windows such as "the newest 10 minutes are held out"
come out empty. So every window of a pipeline is measured on *event time*, against a per-pipeline watermark
(after the Dataflow model's watermarks and Flink's bounded-out-of-orderness strategy):

``watermark = max(event time committed to silver) - time.allowed_lateness``

It is a function of a silver version alone (the Delta add actions' column statistics hold each file's highest
event time), so every asset, sensor and replay that reads the same version sees the same clock, and it never moves
back while silver only grows. Windows built on it: the training-set cut and the gate's held-out window
(``watermark - training.holdout_window_s``), recency ages, drift and quality windows, the retraining cooldown and
periodic retraining, and the dedup history. When event time tracks the wall clock (a live stream), the watermark
trails it by the ingest lag plus the allowed lateness, and nothing a user sees changes.

Examples
--------
>>> import datetime as dt
>>> top = dt.datetime(2019, 3, 1, 12, 0, tzinfo=dt.UTC)
>>> clock = EventClock(max_event_time=top, allowed_lateness_s=600.0, silver_version=7)
>>> clock.watermark.isoformat(), clock.cut(3600.0).isoformat()
('2019-03-01T11:50:00+00:00', '2019-03-01T10:50:00+00:00')
>>> EventClock(None, 600.0, None).watermark is None
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec.models import PipelineSpec

_TS = pa.timestamp("us", tz="UTC")
STATS_RESOLUTION = dt.timedelta(milliseconds=1)
"""Delta's column statistics keep timestamps to the millisecond, rounded down: a file's true highest time may be
up to this much (less a microsecond) above its ``max`` statistic. Code that decides from statistics alone that a
file lies wholly at or before a bound adds it; the watermark itself uses the rounded-down value, which only errs
towards holding a row back for one more run."""
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
"""0001-01-01T00:00:00Z, the earliest event time a record may carry (:mod:`rt_training.clean.timestamps`)."""


def before(when: dt.datetime, seconds: float) -> dt.datetime:
    """``when - seconds``, or :data:`EARLIEST` when that is before it.

    A record may carry an event time in year 1; when silver's newest event time is such a record, a watermark,
    window or lateness bound reaching back from it must not raise (an ``OverflowError`` there would fail every
    later batch, so one record would stop the pipeline).

    >>> before(dt.datetime(1, 1, 1, 0, 5, tzinfo=dt.UTC), 3600.0) == EARLIEST
    True
    """
    try:
        return when - dt.timedelta(seconds=seconds)
    except OverflowError:
        return EARLIEST


@dataclass(frozen=True)
class EventClock:
    """The event-time clock at one silver version.

    ``max_event_time`` is the highest event time silver holds at ``silver_version`` (``None`` before the first
    row); ``allowed_lateness_s`` is the spec's ``time.allowed_lateness``.
    """

    max_event_time: dt.datetime | None
    allowed_lateness_s: float
    silver_version: int | None

    @property
    def watermark(self) -> dt.datetime | None:
        """``max_event_time - allowed_lateness`` (UTC), or ``None`` while silver is empty."""
        if self.max_event_time is None:
            return None
        return before(self.max_event_time, self.allowed_lateness_s)

    @property
    def watermark_s(self) -> float | None:
        """The watermark in Unix seconds (the clock the retraining trigger and cooldown count on)."""
        mark = self.watermark
        return None if mark is None else mark.timestamp()

    def cut(self, window_s: float) -> dt.datetime | None:
        """``watermark - window_s``: the start of the newest ``window_s`` of event time."""
        mark = self.watermark
        return None if mark is None else before(mark, window_s)

    def to_metadata(self) -> dict[str, Any]:
        """Plottable values for run metadata (nothing before the first row)."""
        if self.max_event_time is None or self.watermark is None:
            return {}
        return {
            "max_event_time": self.max_event_time.isoformat(),
            "watermark": self.watermark.isoformat(),
            "watermark_unix_s": self.watermark.timestamp(),
        }


def _add_actions(table: DeltaTable) -> pa.Table:
    return pa.table(table.get_add_actions(flatten=True))


def _as_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    raise TypeError(f"expected a timestamp statistic, got {value!r}")


def max_event_time(table: DeltaTable, time_field: str) -> dt.datetime | None:
    """The highest value of ``time_field`` in ``table`` at its loaded version, or ``None`` when it has no rows.

    From the add actions' ``max`` statistics; files written without statistics (or with a null max) are read.
    """
    actions = _add_actions(table)
    if actions.num_rows == 0:
        return None
    stat = f"max.{time_field}"
    highest: dt.datetime | None = None
    unknown: list[str] = actions.column("path").to_pylist()
    if stat in actions.column_names:
        values = actions.column(stat).to_pylist()
        counts = actions.column("num_records").to_pylist()
        unknown = []
        for path, value, count in zip(actions.column("path").to_pylist(), values, counts, strict=True):
            if value is None:
                if count != 0:
                    unknown.append(path)
                continue
            when = _as_utc(value)
            highest = when if highest is None or when > highest else highest
    if unknown:
        rest = _max_of_files(table, unknown, time_field)
        if rest is not None and (highest is None or rest > highest):
            highest = rest
    return highest


def _max_of_files(table: DeltaTable, paths: list[str], time_field: str) -> dt.datetime | None:
    """Highest ``time_field`` in some data files of ``table`` (those without statistics)."""
    dataset = table.to_pyarrow_dataset()
    wanted = set(paths)
    fragments = [f for f in dataset.get_fragments() if _relative(f.path, table) in wanted]
    best: dt.datetime | None = None
    for fragment in fragments:
        column = fragment.to_table(columns=[time_field]).column(time_field)
        top = pc.max(column).as_py() if len(column) else None
        top = _as_utc(top)
        if top is not None and (best is None or top > best):
            best = top
    return best


def _relative(path: str, table: DeltaTable) -> str:
    root = table.table_uri.rstrip("/").removeprefix("file://")
    return path.removeprefix(root).lstrip("/")


def event_clock(spec: PipelineSpec, silver: DeltaTable | None) -> EventClock:
    """The clock of ``spec``'s pipeline at the loaded version of its ``silver`` table (``None``: no table yet)."""
    lateness = spec.time.allowed_lateness
    if silver is None:
        return EventClock(None, lateness, None)
    return EventClock(max_event_time(silver, spec.time_field), lateness, silver.version())


def read_event_clock(spec: PipelineSpec, lake: LakeLocation, version: int | None = None) -> EventClock:
    """Open the pipeline's silver table (at ``version``, default the newest) and read its clock."""
    from deltalake import DeltaTable

    from rt_training.lake.tables import open_table

    uri = lake.uri(spec.name, "silver")
    options = dict(lake.storage_options) if lake.storage_options else None
    silver = (
        open_table(uri, options)
        if version is None
        else DeltaTable(uri, version=version, storage_options=options)
    )
    return event_clock(spec, silver)


def rows_up_to(silver: DeltaTable, time_field: str, cut: dt.datetime) -> int:
    """Silver rows with event time at or before ``cut``.

    Files wholly at or before the cut count from their statistics; files that straddle it (or lack statistics)
    are read, so the count is exact.
    """
    actions = _add_actions(silver)
    if actions.num_rows == 0:
        return 0
    lo, hi = f"min.{time_field}", f"max.{time_field}"
    if hi not in actions.column_names or lo not in actions.column_names:
        return _count_files(silver, actions.column("path").to_pylist(), time_field, cut)
    total = 0
    straddling: list[str] = []
    for path, first, last, count in zip(
        actions.column("path").to_pylist(),
        actions.column(lo).to_pylist(),
        actions.column(hi).to_pylist(),
        actions.column("num_records").to_pylist(),
        strict=True,
    ):
        if not count:
            continue
        first, last = _as_utc(first), _as_utc(last)
        if first is None or last is None:
            straddling.append(path)
        elif last + STATS_RESOLUTION <= cut:
            total += int(count)
        elif first <= cut:
            straddling.append(path)
    if straddling:
        total += _count_files(silver, straddling, time_field, cut)
    return total


def rows_after(silver: DeltaTable, time_field: str, cut: dt.datetime) -> int:
    """Silver rows with event time after ``cut`` (the held-out window when ``cut`` is the training set's)."""
    actions = _add_actions(silver)
    total = int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0
    return total - rows_up_to(silver, time_field, cut)


def _count_files(silver: DeltaTable, paths: list[str], time_field: str, cut: dt.datetime) -> int:
    dataset = silver.to_pyarrow_dataset()
    wanted = set(paths)
    where = pc.field(time_field) <= pa.scalar(cut, _TS)
    return sum(
        f.count_rows(filter=where) for f in dataset.get_fragments() if _relative(f.path, silver) in wanted
    )
