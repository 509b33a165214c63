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
    rows_ingested_by,
    update_training_set,
)
from rt_training.spec import load_spec
from rt_training.training.teacher import LinearTeacher

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HOLDOUT = 600.0


def make_spec(**sampling):
    spec = load_spec()
    return spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(update={"capacity": 500, "replay_share": 0.2, **sampling}),
            "training": spec.training.model_copy(update={"holdout_window_s": HOLDOUT}),
        }
    )


def silver_batch(spec, rows: int, seed: int, start_offset: int, ingested_at: dt.datetime) -> pa.Table:
    """Silver-like rows for offsets ``start_offset...`` of partition 0, all stamped ``ingested_at``; event times
    one second apart ending one second before the stamp."""
    start = ingested_at - dt.timedelta(seconds=rows)
    table = LinearTeacher(spec, seed=1).table(
        rows, seed=seed, start_offset=start_offset, start_time=start, interval=dt.timedelta(seconds=1)
    )
    stamp = pa.array([ingested_at] * rows, pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("_ingested_at"), "_ingested_at", stamp)


def at(cut: dt.datetime) -> dt.datetime:
    """The run time whose cut is ``cut``."""
    return cut + dt.timedelta(seconds=HOLDOUT)


def members(lake: LakeLocation, spec) -> pa.Table:
    return DeltaTable(lake.uri(spec.name, "training_set")).to_pyarrow_table()


def test_each_silver_row_is_offered_once_late_commits_included(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    silver = lake.uri(spec.name, "silver")
    write_deltalake(silver, silver_batch(spec, 300, seed=1, start_offset=0, ingested_at=T0))
    write_deltalake(
        silver,
        silver_batch(spec, 200, seed=2, start_offset=300, ingested_at=T0 + dt.timedelta(hours=1)),
        mode="append",
    )
    first = update_training_set(spec, lake, now=at(T0 + dt.timedelta(minutes=30)))
    assert first.changed and first.rows_offered == 300 and first.items_seen == 300
    assert first.current.version == 0 and first.current.silver_version == 1
    # Nothing new in silver: no new snapshot, whatever the clock says.
    same = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=5)))
    assert not same.changed and same.current.version == 0 and "no version after 1" in same.reason
    # A micro-batch stamped before the previous cut but committed after that run read silver (a late commit),
    # and one after the cut.
    write_deltalake(
        silver,
        silver_batch(spec, 50, seed=3, start_offset=500, ingested_at=T0 + dt.timedelta(minutes=10)),
        mode="append",
    )
    write_deltalake(
        silver,
        silver_batch(spec, 70, seed=4, start_offset=550, ingested_at=T0 + dt.timedelta(hours=2)),
        mode="append",
    )
    second = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=1, minutes=30)))
    assert second.changed and second.rows_offered == 50 + 200
    third = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=3)))
    assert third.rows_offered == 0 and not third.changed  # silver did not change since the second run
    write_deltalake(
        silver,
        silver_batch(spec, 30, seed=5, start_offset=620, ingested_at=T0 + dt.timedelta(hours=4)),
        mode="append",
    )
    fourth = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=3)))
    assert fourth.rows_offered == 70  # the hours=4 batch is after this cut: held out
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
    silver_ids = set(DeltaTable(silver).to_pyarrow_table(columns=[spec.id_field])[spec.id_field].to_pylist())
    assert set(ids.tolist()) <= silver_ids
    # Every version is one snapshot, with its watermark in the commit.
    training_set = DeltaTable(lake.uri(spec.name, "training_set"))
    covered = [c.get("rt_training.training_set", {}).get("silver_version") for c in training_set.history()]
    assert covered == [4, 3, 1]
    first_snapshot = DeltaTable(lake.uri(spec.name, "training_set"), version=0).to_pyarrow_table()
    assert first_snapshot.num_rows == first.stats.rows


def test_a_run_that_died_after_saving_the_state_is_completed_by_the_next(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    silver = lake.uri(spec.name, "silver")
    write_deltalake(silver, silver_batch(spec, 400, seed=1, start_offset=0, ingested_at=T0))
    update_training_set(spec, lake, now=at(T0))
    write_deltalake(
        silver,
        silver_batch(spec, 400, seed=2, start_offset=400, ingested_at=T0 + dt.timedelta(hours=1)),
        mode="append",
    )
    done = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=1)))
    expected = members(lake, spec).sort_by(spec.id_field)
    # The crash: the snapshot's commit never happened (its data file stays as an orphan, as after a real crash).
    log = tmp_path / spec.name / "training_set" / "_delta_log" / f"{done.current.version:020d}.json"
    log.unlink()
    assert current_training_set(spec, lake).silver_version == 0
    again = update_training_set(spec, lake, now=at(T0 + dt.timedelta(hours=1)))
    assert again.recovered and not again.changed
    assert again.current.silver_version == 1
    assert members(lake, spec).sort_by(spec.id_field).equals(expected)


def test_rows_ingested_by_counts_from_file_statistics(tmp_path: Path) -> None:
    spec = make_spec()
    uri = str(tmp_path / "silver")
    write_deltalake(uri, silver_batch(spec, 120, seed=1, start_offset=0, ingested_at=T0))
    write_deltalake(
        uri,
        silver_batch(spec, 80, seed=2, start_offset=120, ingested_at=T0 + dt.timedelta(hours=1)),
        mode="append",
    )
    table = DeltaTable(uri)
    assert rows_ingested_by(table, T0 - dt.timedelta(seconds=1)) == 0
    assert rows_ingested_by(table, T0) == 120
    assert rows_ingested_by(table, T0 + dt.timedelta(hours=2)) == 200


def test_drift_override_and_importance_reach_the_weights(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    write_deltalake(
        lake.uri(spec.name, "silver"), silver_batch(spec, 300, seed=1, start_offset=0, ingested_at=T0)
    )
    seen: list[int] = []

    def losses(rows: pa.Table) -> np.ndarray:
        seen.append(rows.num_rows)
        return rows.column(spec.label.field).to_numpy().astype(float) + 0.1

    update = update_training_set(spec, lake, now=at(T0), losses_fn=losses, half_life_override=600.0)
    assert seen == [300] and update.importance_weighted
    assert update.adapted_for_drift and update.recency_half_life_s == 600.0
    meta = update.metadata()
    assert meta["adapted_for_drift"] is True and meta["recency_half_life_s"] == 600.0
    assert meta["label_share_0"] + meta["label_share_1"] == pytest.approx(1.0)
    assert 300 <= meta["age_p50_s"] <= meta["age_p95_s"] <= 900
    # The saved policy is the spec's: a later run restores it without PolicyChangedError.
    state = SamplerStateStore.for_pipeline(spec.name, str(tmp_path)).load_latest().state
    assert state["session"]["policy"]["recency_half_life_s"] == spec.sampling.recency_half_life_s
    # time_biased keeps its half-life in the reservoir keys: the override is not applied, and says so.
    biased = make_spec(strategy="time_biased")
    other = LakeLocation(str(tmp_path / "other"))
    write_deltalake(
        other.uri(biased.name, "silver"), silver_batch(biased, 100, seed=1, start_offset=0, ingested_at=T0)
    )
    update = update_training_set(biased, other, now=at(T0), half_life_override=600.0)
    assert not update.adapted_for_drift and update.recency_half_life_s == biased.sampling.recency_half_life_s


def test_ids_seen_again_after_silver_deduplication_are_not_offered_twice(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    silver = lake.uri(spec.name, "silver")
    write_deltalake(silver, silver_batch(spec, 300, seed=1, start_offset=0, ingested_at=T0))
    assert update_training_set(spec, lake, now=at(T0)).stats.rows == 300  # all members: under capacity
    later = T0 + dt.timedelta(hours=2)
    fresh = silver_batch(spec, 100, seed=2, start_offset=300, ingested_at=later)
    resent = silver_batch(spec, 3, seed=1, start_offset=0, ingested_at=later)  # ids of members, new offsets
    resent = resent.set_column(2, "_offset", pa.array([400, 401, 402], pa.int64()))
    batch = pa.concat_tables([fresh, resent, fresh.slice(0, 1).set_column(2, "_offset", pa.array([403]))])
    write_deltalake(silver, batch, mode="append")
    update = update_training_set(spec, lake, now=at(later))
    assert update.duplicates_dropped == 4 and update.rows_offered == 100
    ids = members(lake, spec).column(spec.id_field)
    assert pc.count_distinct(ids).as_py() == ids.length() == update.stats.rows


def test_only_the_newest_sampler_states_are_kept(tmp_path: Path) -> None:
    spec, lake = make_spec(), LakeLocation(str(tmp_path))
    silver = lake.uri(spec.name, "silver")
    for i in range(5):
        stamp = T0 + dt.timedelta(hours=i)
        write_deltalake(
            silver, silver_batch(spec, 50, seed=i, start_offset=50 * i, ingested_at=stamp), mode="append"
        )
        assert update_training_set(spec, lake, now=at(stamp)).changed
    states = DeltaTable(lake.uri(spec.name, "sampler_state")).to_pyarrow_table()
    assert sorted(states.column("silver_version").to_pylist()) == [2, 3, 4]
