"""Micro-batch planning by the ingest policy: thresholds, backlog split, repair ranges, new partitions."""

from __future__ import annotations

import itertools

import pytest

from rt_training.stream.planner import (
    OffsetRange,
    PartitionState,
    plan_runs,
    ranges_from_json,
    ranges_key,
    ranges_to_json,
)

T = "events"


def state(
    p: int, end: int, committed: int | None, earliest: int = 0, **per_table: int | None
) -> PartitionState:
    tables = per_table or {"bronze": committed, "silver": committed, "dead_letters": committed}
    return PartitionState(T, p, earliest, end, tables)


def plan(
    states, *, planned=None, min_records=100, max_wait_s=10.0, max_per_run=1000, waited=None, max_runs=10
):
    return plan_runs(
        states,
        planned_until=planned or {},
        min_records=min_records,
        max_wait_s=max_wait_s,
        max_records_per_run=max_per_run,
        waited_s=waited,
        max_runs=max_runs,
    )


def test_nothing_pending_skips_with_reason() -> None:
    p = plan([state(0, 50, 50), state(1, 0, None)])
    assert p.runs == [] and p.pending == 0 and p.reason == "no new records"


def test_below_min_records_waits_then_launches_after_max_wait() -> None:
    states = [state(0, 30, 0), state(1, 20, 0)]
    early = plan(states, waited=3.0)
    assert early.runs == []
    assert early.pending == 50
    assert "50 pending records < min_records 100" in early.reason
    late = plan(states, waited=10.0)
    assert late.runs == [[OffsetRange(T, 0, 0, 30), OffsetRange(T, 1, 0, 20)]]


def test_min_records_reached_launches_one_run_over_all_partitions() -> None:
    p = plan([state(0, 70, 10), state(1, 60, 20), state(2, 5, 5)])
    assert p.pending == 100
    assert p.runs == [[OffsetRange(T, 0, 10, 70), OffsetRange(T, 1, 20, 60)]]


def test_backlog_becomes_several_runs_each_within_the_limit() -> None:
    p = plan([state(0, 2500, 0), state(1, 1000, 0)], max_per_run=1000)
    assert all(sum(r.size for r in run) <= 1000 for run in p.runs)
    covered = {0: [], 1: []}
    for run in p.runs:
        for r in run:
            covered[r.partition].append((r.start, r.end))
    # Contiguous, in order, exactly up to the end offsets.
    for part, end in ((0, 2500), (1, 1000)):
        spans = covered[part]
        assert spans[0][0] == 0 and spans[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert len(p.runs) == 4  # 3500 records at 1000 a run


def test_max_runs_caps_a_tick_and_planned_until_continues() -> None:
    states = [state(0, 5000, 0)]
    first = plan(states, max_per_run=1000, max_runs=2)
    assert [r[0].end for r in first.runs] == [1000, 2000]
    second = plan(states, max_per_run=1000, max_runs=2, planned={(T, 0): 2000})
    assert [(r[0].start, r[0].end) for r in second.runs] == [(2000, 3000), (3000, 4000)]


def test_new_partition_starts_at_its_earliest_offset() -> None:
    p = plan([state(0, 500, 500), state(3, 400, None, earliest=250)])
    assert p.runs == [[OffsetRange(T, 3, 250, 400)]]


def test_tables_disagree_gives_a_repair_range_first() -> None:
    # A killed run committed bronze up to 300 but not silver or dead letters.
    s = state(0, 1000, None, bronze=300, silver=100, dead_letters=100)
    p = plan([s], min_records=1)
    assert p.runs[0] == [OffsetRange(T, 0, 100, 300)]
    assert p.runs[1] == [OffsetRange(T, 0, 300, 1000)]


def test_repair_is_due_even_below_thresholds() -> None:
    s = state(0, 300, None, bronze=300, silver=200, dead_letters=300)
    p = plan([s], min_records=10_000)
    assert p.runs == [[OffsetRange(T, 0, 200, 300)]]


def test_committed_below_earliest_is_planned_so_the_run_reports_data_loss() -> None:
    p = plan([state(0, 900, 100, earliest=400)], min_records=1)
    assert p.runs == [[OffsetRange(T, 0, 100, 900)]]


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan([state(0, 1, 0)], min_records=0)


def test_ranges_round_trip_and_key() -> None:
    ranges = [OffsetRange(T, 1, 5, 9), OffsetRange(T, 0, 0, 3)]
    assert ranges_from_json(ranges_to_json(ranges)) == sorted(ranges)
    assert ranges_key(ranges) == "events:p0:0-3,events:p1:5-9"
