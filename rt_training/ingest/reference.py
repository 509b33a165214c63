"""The reference watermark of a micro-batch: the event-time clock its records are judged against.

A batch judges lateness (``late_rows``, ``too_late``) and the duplicate history (silver rows whose event time is
within ``ingest.dedup_history_s`` of it) against one *reference*: the pipeline's watermark
(:mod:`rt_training.eventtime.clock`) as silver stood *before* the batch's rows.

Why it is deterministic
-----------------------
Silver and dead letters commit one after the other, each exactly once on its own, and a run killed between the
two is completed by a retry of the same ranges. A record must then land in the table the first attempt would
have sent it to, or it ends in both tables or in neither. Routing depends on the reference (``too_late`` and the
duplicate window), and silver's watermark moves in between: the first attempt's silver commit itself raises it,
and other partitions' batches may commit too. So each silver and dead-letters commit records, in its custom
metadata under :data:`REFERENCE_KEY`, the batch's :func:`~rt_training.stream.planner.ranges_key` and the clock
it used (highest event time, allowed lateness, silver version). A retry that finds either table at the ranges'
ends reads that clock back from the table's history (:func:`recorded_reference`) instead of computing one;
a retry that finds neither table committed has routed nothing yet, so a fresh clock is as good as the first
attempt's. A silver commit written before references were recorded gives the clock of the silver version before
it, which holds exactly the rows before the batch's. The clock's ``silver_version`` also fixes the duplicate
history: it is silver at that version (:func:`rt_training.ingest.batch.duplicate_history`), so rows other batches
commit after the reference never change a retry's routing.

Overlapped batches
------------------
A batch that reads while the batch before it still runs computes its reference after it waited for its turn
(:func:`rt_training.ingest.batch.await_turn`), when the previous batch's rows are in silver: consecutive batches
see the clock a sequential run would. A batch that does not wait reads silver at its own start offsets, which
is the same state it would see after the read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rt_training.eventtime.clock import EventClock, read_event_clock
from rt_training.lake.exactly_once import RANGES_KEY
from rt_training.lake.tables import open_table
from rt_training.stream.planner import OffsetRange, ranges_key

if TYPE_CHECKING:
    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec.models import PipelineSpec

REFERENCE_KEY = "rt_training.reference"
"""Key of a silver or dead-letters commit's custom metadata: ``{"ranges", "max_event_time",
"allowed_lateness_s", "silver_version"}`` (the batch's reference clock)."""


def reference_metadata(clock: EventClock, ranges: Sequence[OffsetRange]) -> dict[str, Any]:
    """The value recorded under :data:`REFERENCE_KEY` for a batch of ``ranges`` judged against ``clock``."""
    top = clock.max_event_time
    return {
        "ranges": ranges_key(ranges),
        "max_event_time": None if top is None else top.isoformat(),
        "allowed_lateness_s": clock.allowed_lateness_s,
        "silver_version": clock.silver_version,
    }


def clock_from_metadata(value: Mapping[str, Any]) -> EventClock:
    """The clock :func:`reference_metadata` recorded."""
    top = value.get("max_event_time")
    version = value.get("silver_version")
    return EventClock(
        max_event_time=None if top is None else dt.datetime.fromisoformat(str(top)),
        allowed_lateness_s=float(value["allowed_lateness_s"]),
        silver_version=None if version is None else int(version),
    )


def recorded_reference(
    spec: PipelineSpec, lake: LakeLocation, table: str, ranges: Sequence[OffsetRange]
) -> EventClock | None:
    """The reference clock recorded by ``table``'s commit of ``ranges``; None when the table has no such commit.

    History is read newest first, in growing pages, until the commit is found. A silver commit of these ranges
    without a recorded reference gives the clock of the version before it.
    """
    handle = open_table(lake.uri(spec.name, table), lake.storage_options)
    if handle is None:
        return None
    key = ranges_key(ranges)
    wanted = [r.to_dict() for r in sorted(ranges)]
    limit = 20
    while True:
        page = handle.history(limit)
        for info in page:
            recorded = info.get(REFERENCE_KEY)
            if isinstance(recorded, Mapping) and recorded.get("ranges") == key:
                return clock_from_metadata(recorded)
            if table == "silver" and info.get(RANGES_KEY) == wanted:
                before = int(info["version"]) - 1
                if before < 0:
                    return EventClock(None, spec.time.allowed_lateness, None)
                return read_event_clock(spec, lake, before)
        if len(page) < limit:
            return None
        limit *= 4


def batch_reference(
    spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange], done: Mapping[str, bool]
) -> EventClock:
    """The reference clock of a batch of ``ranges``: recorded by whichever of silver and dead letters already
    committed them (``done``: table -> at the ranges' ends), else silver's clock now (see the module docstring).
    """
    for table in ("silver", "dead_letters"):
        if done.get(table):
            recorded = recorded_reference(spec, lake, table, ranges)
            if recorded is not None:
                return recorded
    return read_event_clock(spec, lake)
