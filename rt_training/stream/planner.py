"""Plan micro-batches: which offset ranges the next ingest runs read, by the pipeline's ingest policy.

Pure logic, so the sensor that calls it stays thin and the policy is testable with plain numbers.

A partition's *committed* offset is the smallest next-offset over the lake tables (bronze, silver, dead letters),
since each table commits on its own and a killed run may leave one behind. When the tables disagree the next
range is exactly the repair range ``[min, max)``, so the lagging table catches up and the others skip it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class OffsetRange:
    """Offsets ``[start, end)`` of one topic partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, int | str]:
        return {"topic": self.topic, "partition": self.partition, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> OffsetRange:
        return cls(str(d["topic"]), int(d["partition"]), int(d["start"]), int(d["end"]))  # type: ignore[arg-type]


def ranges_to_json(ranges: Sequence[OffsetRange]) -> str:
    return json.dumps([r.to_dict() for r in sorted(ranges)], separators=(",", ":"))


def ranges_from_json(text: str) -> list[OffsetRange]:
    return [OffsetRange.from_dict(d) for d in json.loads(text)]


def ranges_key(ranges: Sequence[OffsetRange]) -> str:
    """A short, stable description of ranges: ``topic:p0:100-200,topic:p1:50-80``."""
    return ",".join(f"{r.topic}:p{r.partition}:{r.start}-{r.end}" for r in sorted(ranges))


@dataclass(frozen=True)
class PartitionState:
    """What the planner knows of one partition."""

    topic: str
    partition: int
    earliest: int
    end: int
    committed: Mapping[str, int | None] = field(default_factory=dict)
    """Next offset to read per lake table (``None``: the table has nothing of this partition yet)."""

    def table_offsets(self) -> list[int]:
        return [self.earliest if v is None else v for v in self.committed.values()] or [self.earliest]

    @property
    def next_offset(self) -> int:
        """Where the slowest table stands (a fresh partition starts at its earliest offset)."""
        return min(self.table_offsets())

    @property
    def repair_end(self) -> int | None:
        """Where the fastest table stands, when the tables disagree."""
        offsets = self.table_offsets()
        return max(offsets) if max(offsets) != min(offsets) else None


@dataclass(frozen=True)
class Plan:
    runs: list[list[OffsetRange]]
    pending: int
    reason: str


def plan_runs(
    partitions: Sequence[PartitionState],
    *,
    planned_until: Mapping[tuple[str, int], int],
    min_records: int,
    max_wait_s: float,
    max_records_per_run: int,
    waited_s: float | None,
    max_runs: int = 10,
) -> Plan:
    """Decide the next runs.

    ``planned_until`` holds, per (topic, partition), the end of ranges already requested and not yet
    committed (runs in flight); planning continues from there. ``waited_s`` is how long records have been
    pending (``None``: nothing was pending before this evaluation). A run is due when the pending records reach
    ``min_records`` or have waited ``max_wait_s``; a backlog over ``max_records_per_run`` becomes several runs.
    Repair ranges (tables disagree) are always due, each in a run of its own first.
    """
    if min_records < 1 or max_records_per_run < 1:
        raise ValueError("min_records and max_records_per_run must be at least 1")
    runs: list[list[OffsetRange]] = []
    cursors: dict[tuple[str, int], int] = {}
    for p in partitions:
        tp = (p.topic, p.partition)
        start = max(p.next_offset, planned_until.get(tp, p.next_offset))
        repair = p.repair_end
        if repair is not None and start < repair:
            runs.append([OffsetRange(p.topic, p.partition, start, repair)])
            start = repair
        cursors[tp] = start
    pending = sum(max(0, p.end - cursors[(p.topic, p.partition)]) for p in partitions)
    if pending == 0:
        return Plan(runs, 0, "repair of a partly committed range" if runs else "no new records")
    due = pending >= min_records or (waited_s is not None and waited_s >= max_wait_s)
    if not due:
        waited = 0.0 if waited_s is None else waited_s
        return Plan(
            runs,
            pending,
            f"{pending} pending records < min_records {min_records}, waited {waited:.1f}s < max_wait_s {max_wait_s}",
        )
    remaining = {(p.topic, p.partition): (cursors[(p.topic, p.partition)], p.end) for p in partitions}
    while len(runs) < max_runs:
        # Smallest remainders first: each partition takes at most its fair share of what is left of the budget,
        # so what a small partition leaves over goes to the larger ones and every run but the last is full.
        active = sorted(
            (tp for tp, (s, e) in remaining.items() if e > s),
            key=lambda tp: remaining[tp][1] - remaining[tp][0],
        )
        if not active:
            break
        budget = max_records_per_run
        run: list[OffsetRange] = []
        for i, tp in enumerate(active):
            s, e = remaining[tp]
            share = budget // (len(active) - i)
            take = min(e - s, max(share, 1))
            if take <= 0:
                continue
            run.append(OffsetRange(tp[0], tp[1], s, s + take))
            remaining[tp] = (s + take, e)
            budget -= take
            if budget <= 0:
                break
        runs.append(sorted(run))
    return Plan(runs, pending, f"{pending} pending records in {len(runs)} run(s)")
