"""The training-set step on real Delta tables: each silver row offered once (late commits included), one snapshot
per silver version equal to the sample, recovery after a crash between the state and the snapshot, drift override."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from rt_training.ingest.batch import LakeLocation
from rt_training.sampling.state_store import SamplerStateStore
from rt_training.sampling.training_set import (
    REPLAY_COLUMN,
    SavedSample,
    current_training_set,
    update_training_set,
)
from rt_training.spec import load_spec
from rt_training.training.data import read_holdout
from rt_training.training.teacher import LinearTeacher

T0 = dt.datetime(2019, 3, 1, tzinfo=dt.UTC)
"""Years before the tests run: nothing here may depend on the wall clock."""
HOLDOUT = 600.0


def make_spec(lateness: float = 0.0, **sampling):
    spec = load_spec()
    return spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(update={"capacity": 500, "replay_share": 0.2, **sampling}),
            "training": spec.training.model_copy(update={"holdout_window_s": HOLDOUT}),
            "time": spec.time.model_copy(update={"allowed_lateness": lateness}),
        }
    )


def silver_batch(spec, rows: int, seed: int, start_offset: int, events_end: dt.datetime) -> pa.Table:
    """Silver-like rows for offsets ``start_offset...`` of partition 0 with event times one second apart, ending
    one second before ``events_end``; ingested now (the wall clock, which the training set must ignore)."""
    start = events_end - dt.timedelta(seconds=rows)
    table = LinearTeacher(spec, seed=1).table(
        rows, seed=seed, start_offset=start_offset, start_time=start, interval=dt.timedelta(seconds=1)
    )
    stamp = pa.array([dt.datetime.now(dt.UTC)] * rows, pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("_ingested_at"), "_ingested_at", stamp)


def append(spec, lake: LakeLocation, batch: pa.Table) -> None:
    write_deltalake(lake.uri(spec.name, "silver"), batch, mode="append")


def members(lake: LakeLocation, spec) -> pa.Table:
    return DeltaTable(lake.uri(spec.name, "training_set")).to_pyarrow_table()


def test_each_silver_row_is_offered_once_late_events_included(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    append(spec, lake, silver_batch(spec, 300, seed=1, start_offset=0, events_end=T0))
    append(
        spec, lake, silver_batch(spec, 200, seed=2, start_offset=300, events_end=T0 + dt.timedelta(hours=1))
    )
    # The watermark is the newest event (T0 + 1h - 1s); the cut 10 minutes before it holds the second batch out.
    first = update_training_set(spec, lake)
    assert first.changed and first.rows_offered == 300 and first.items_seen == 300
    assert first.current.version == 0 and first.current.silver_version == 1
    assert first.cut == T0 + dt.timedelta(minutes=50, seconds=-1)
    assert first.metadata()["watermark"] == (T0 + dt.timedelta(hours=1, seconds=-1)).isoformat()
    # Nothing new in silver: no new snapshot.
    same = update_training_set(spec, lake)
    assert not same.changed and same.current.version == 0 and "no version after 1" in same.reason
    # Late events (event time before the previous cut, committed after that run read silver), then newer ones.
    append(
        spec, lake, silver_batch(spec, 50, seed=3, start_offset=500, events_end=T0 + dt.timedelta(minutes=10))
    )
    append(
        spec, lake, silver_batch(spec, 70, seed=4, start_offset=550, events_end=T0 + dt.timedelta(hours=2))
    )
    second = update_training_set(spec, lake)
    assert second.changed and second.rows_offered == 50 + 200
    third = update_training_set(spec, lake)
    assert third.rows_offered == 0 and not third.changed  # silver did not change since the second run
    append(
        spec, lake, silver_batch(spec, 30, seed=5, start_offset=620, events_end=T0 + dt.timedelta(hours=4))
    )
    fourth = update_training_set(spec, lake)
    assert fourth.rows_offered == 70  # the batch ending at T0 + 4h is after this cut: held out
    assert first.rows_offered + second.rows_offered + fourth.rows_offered == 300 + 200 + 50 + 70
    assert fourth.items_seen == 620
    # The snapshot is the sample: unique silver ids, the replay flags as the sampler has them.
    snapshot = members(lake, spec)
    state = SavedSample.from_state(
        SamplerStateStore.for_pipeline(spec.name, str(tmp_path)).load_latest().state, "test"
    )
    ids, is_replay = state.members()
    assert sorted(snapshot.column(spec.id_field).to_pylist()) == sorted(ids.tolist())
    replay_ids = set(pc.filter(snapshot[spec.id_field], snapshot[REPLAY_COLUMN]).to_pylist())
    assert replay_ids == set(ids[is_replay].tolist()) and len(replay_ids) == 100
    assert snapshot.num_rows == 500 and fourth.stats.replay_share == pytest.approx(0.2)
    silver = lake.uri(spec.name, "silver")
    silver_ids = set(DeltaTable(silver).to_pyarrow_table(columns=[spec.id_field])[spec.id_field].to_pylist())
    assert set(ids.tolist()) <= silver_ids
    # No member is in the gate's held-out window (event time after the cut).
    info = current_training_set(spec, lake)
    assert read_holdout(silver, spec, after=info.cut).num_rows == 30
    held_out = (
        DeltaTable(silver)
        .to_pyarrow_dataset()
        .to_table(filter=pc.field(spec.time_field) > pa.scalar(info.cut, pa.timestamp("us", tz="UTC")))
    )
    assert held_out.num_rows == 30
    assert not set(held_out.column(spec.id_field).to_pylist()) & set(ids.tolist())
    assert pc.max(snapshot.column(spec.time_field)).as_py() <= info.cut
    # Every version is one snapshot, with its offer record in the commit.
    training_set = DeltaTable(lake.uri(spec.name, "training_set"))
    covered = [c.get("rt_training.training_set", {}).get("silver_version") for c in training_set.history()]
    assert covered == [4, 3, 1]
    first_snapshot = DeltaTable(lake.uri(spec.name, "training_set"), version=0).to_pyarrow_table()
    assert first_snapshot.num_rows == first.stats.rows


def test_allowed_lateness_moves_the_cut_back(tmp_path: Path) -> None:
    spec, lake = make_spec(lateness=1800.0), LakeLocation(str(tmp_path))
    append(spec, lake, silver_batch(spec, 3600, seed=1, start_offset=0, events_end=T0))
    update = update_training_set(spec, lake)
    # watermark = T0 - 1s - 30 min; cut = watermark - 10 min: rows from T0 - 3600s to the cut are offered.
    assert update.cut == T0 - dt.timedelta(minutes=40, seconds=1)
    assert update.rows_offered == 3600 - 40 * 60
    # Ages count back from the watermark: members are between 10 and 30 minutes older than it.
    assert 600 <= update.stats.age_p50_s <= update.stats.age_p95_s <= 1800


def test_a_run_that_died_after_saving_the_state_is_completed_by_the_next(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    append(spec, lake, silver_batch(spec, 1000, seed=1, start_offset=0, events_end=T0))
    assert update_training_set(spec, lake).rows_offered == 400  # the newest 600 s are held out
    append(
        spec, lake, silver_batch(spec, 400, seed=2, start_offset=1000, events_end=T0 + dt.timedelta(hours=1))
    )
    done = update_training_set(spec, lake)
    expected = members(lake, spec).sort_by(spec.id_field)
    # The crash: the snapshot's commit never happened (its data file stays as an orphan, as after a real crash).
    log = tmp_path / spec.name / "training_set" / "_delta_log" / f"{done.current.version:020d}.json"
    log.unlink()
    assert current_training_set(spec, lake).silver_version == 0
    again = update_training_set(spec, lake)
    assert again.recovered and not again.changed
    assert again.current.silver_version == 1
    assert members(lake, spec).sort_by(spec.id_field).equals(expected)


def test_drift_override_and_importance_reach_the_weights(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    append(spec, lake, silver_batch(spec, 300, seed=1, start_offset=0, events_end=T0))
    # One newer event moves the watermark to T0 + 599s: the cut (T0 - 1s) offers all 300 rows.
    append(
        spec,
        lake,
        silver_batch(spec, 1, seed=9, start_offset=300, events_end=T0 + dt.timedelta(seconds=HOLDOUT)),
    )
    seen: list[int] = []

    def losses(rows: pa.Table) -> np.ndarray:
        seen.append(rows.num_rows)
        return rows.column(spec.label.field).to_numpy().astype(float) + 0.1

    update = update_training_set(spec, lake, losses_fn=losses, half_life_override=600.0)
    assert seen == [300] and update.importance_weighted
    assert update.adapted_for_drift and update.recency_half_life_s == 600.0
    meta = update.metadata()
    assert meta["adapted_for_drift"] is True and meta["recency_half_life_s"] == 600.0
    assert meta["label_share_0"] + meta["label_share_1"] == pytest.approx(1.0)
    assert 600 <= meta["age_p50_s"] <= meta["age_p95_s"] <= 900
    # The saved policy is the spec's: a later run restores it without PolicyChangedError.
    state = SamplerStateStore.for_pipeline(spec.name, str(tmp_path)).load_latest().state
    assert state["session"]["policy"]["recency_half_life_s"] == spec.sampling.recency_half_life_s
    # time_biased keeps its half-life in the reservoir keys: the override is not applied, and says so.
    biased = make_spec(strategy="time_biased")
    other = LakeLocation(str(tmp_path / "other"))
    append(biased, other, silver_batch(biased, 100, seed=1, start_offset=0, events_end=T0))
    append(
        biased,
        other,
        silver_batch(biased, 1, seed=9, start_offset=100, events_end=T0 + dt.timedelta(hours=1)),
    )
    update = update_training_set(biased, other, half_life_override=600.0)
    assert not update.adapted_for_drift and update.recency_half_life_s == biased.sampling.recency_half_life_s


def test_ids_seen_again_after_silver_deduplication_are_not_offered_twice(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    append(spec, lake, silver_batch(spec, 300, seed=1, start_offset=0, events_end=T0))
    append(
        spec,
        lake,
        silver_batch(spec, 1, seed=9, start_offset=300, events_end=T0 + dt.timedelta(seconds=HOLDOUT)),
    )
    assert update_training_set(spec, lake).stats.rows == 300  # all members: under capacity
    later = T0 + dt.timedelta(hours=2)
    fresh = silver_batch(spec, 100, seed=2, start_offset=301, events_end=later)
    resent = silver_batch(spec, 3, seed=1, start_offset=0, events_end=later)  # ids of members, new offsets
    resent = resent.set_column(2, "_offset", pa.array([401, 402, 403], pa.int64()))
    batch = pa.concat_tables([fresh, resent, fresh.slice(0, 1).set_column(2, "_offset", pa.array([404]))])
    append(spec, lake, batch)
    append(
        spec, lake, silver_batch(spec, 1, seed=8, start_offset=405, events_end=later + dt.timedelta(hours=1))
    )
    update = update_training_set(spec, lake)
    assert (
        update.duplicates_dropped == 4 and update.rows_offered == 100 + 1
    )  # and the row that moved the clock
    ids = members(lake, spec).column(spec.id_field)
    assert pc.count_distinct(ids).as_py() == ids.length() == update.stats.rows


def test_only_the_newest_sampler_states_are_kept(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    for i in range(5):
        end = T0 + dt.timedelta(hours=i)
        append(spec, lake, silver_batch(spec, 50, seed=i, start_offset=50 * i, events_end=end))
        if i:  # the first batch is still held out (its events are the newest)
            assert update_training_set(spec, lake).changed
    states = DeltaTable(lake.uri(spec.name, "sampler_state")).to_pyarrow_table()
    assert sorted(states.column("silver_version").to_pylist()) == [2, 3, 4]


def test_a_stream_of_old_events_replayed_years_later_trains_on_event_time(tmp_path: Path) -> None:
    """A backfill of last year's history then live-like events: the same cut rule throughout."""
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    days = [T0 + dt.timedelta(days=d) for d in range(1, 4)]
    offset = 0
    offered = 0
    for day in days:
        append(spec, lake, silver_batch(spec, 100, seed=offset, start_offset=offset, events_end=day))
        offset += 100
        update = update_training_set(spec, lake)
        assert update.cut == day - dt.timedelta(seconds=1 + HOLDOUT)
        offered += update.rows_offered
    # Each day's batch is held out while it is the newest, then offered whole once a newer day arrives.
    assert offered == 200
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    append(spec, lake, silver_batch(spec, 100, seed=offset, start_offset=offset, events_end=now))
    live = update_training_set(spec, lake)
    assert live.rows_offered == 100 and live.cut == now - dt.timedelta(seconds=1 + HOLDOUT)


def test_a_shorter_half_life_on_drift_takes_more_recent_rows(tmp_path: Path) -> None:
    """Three hours of in-order events offered at once: the drift half-life (10 min) fills the sample with rows
    near the cut, where the spec's (1 h) spreads it over the hours; ``recent_share`` reports it."""
    spec = make_spec(class_balance=None, importance=False)
    shares = {}
    for name, override in (("spec", None), ("drift", 600.0)):
        lake = LakeLocation(str(tmp_path / name))
        append(spec, lake, silver_batch(spec, 3 * 3600, seed=1, start_offset=0, events_end=T0))
        update = update_training_set(spec, lake, half_life_override=override)
        snapshot = members(lake, spec)
        times = snapshot.column(spec.time_field).cast(pa.int64()).to_numpy() / 1e6
        within = float(np.mean(times > update.cut.timestamp() - update.recency_half_life_s))
        assert update.stats.recent_share == pytest.approx(within)
        shares[name] = float(np.mean(times > update.cut.timestamp() - 600.0))
    # Weight 2^(-age / half-life), ages from the cut: the last 10 min of the 170 min offered hold 47% of the
    # sample with the 10 min half-life, 12% with 1 h (measured; a uniform sample would hold 6%).
    assert shares["drift"] > 0.4 and shares["spec"] < 0.2


def test_microsecond_event_times_beside_a_cut_are_offered_once(tmp_path: Path) -> None:
    """Delta's statistics keep milliseconds, rounded down: a file whose newest row is 0.6 ms after the previous cut
    has a statistic equal to that cut, and must still be read (its newest row was not offered then)."""
    spec, lake = make_spec(class_balance=None, importance=False), LakeLocation(str(tmp_path))
    newest = T0 + dt.timedelta(microseconds=600)
    first = silver_batch(spec, 100, seed=1, start_offset=0, events_end=newest + dt.timedelta(seconds=1))
    append(spec, lake, first)
    # One event whose millisecond is HOLDOUT after the first batch's newest one: the cut lands in that millisecond.
    later = newest + dt.timedelta(seconds=HOLDOUT, microseconds=100)
    append(
        spec,
        lake,
        silver_batch(spec, 1, seed=2, start_offset=100, events_end=later + dt.timedelta(seconds=1)),
    )
    run_1 = update_training_set(spec, lake)
    assert run_1.cut == T0 and run_1.rows_offered == 99  # the newest row (T0 + 0.6 ms) is after the cut
    append(
        spec, lake, silver_batch(spec, 1, seed=3, start_offset=101, events_end=later + dt.timedelta(hours=2))
    )
    run_2 = update_training_set(spec, lake)
    assert run_2.rows_offered == 2  # the first batch's newest row and the second batch's
    assert run_1.rows_offered + run_2.rows_offered == 101
