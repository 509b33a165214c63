"""The sampling session turns silver versions into training-set changes, and resumes from Delta exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rt_training.sampling import PolicyChangedError, SamplerStateStore, SamplingSession, SessionUpdate
from rt_training.spec import load_spec
from rt_training.spec.models import PipelineSpec, SamplingPolicy

ROWS_PER_VERSION = 500


def _spec(**sampling: object) -> PipelineSpec:
    policy = {
        "capacity": 200,
        "strategy": "time_biased",
        "recency_half_life_s": 120.0,
        "class_balance": {0: 0.5, 1: 0.5},
        "importance": True,
        "replay_share": 0.25,
        "seed": 7,
        **sampling,
    }
    return load_spec().model_copy(update={"sampling": SamplingPolicy(**policy)})


def _silver(version: int) -> tuple[pa.Table, np.ndarray]:
    """Rows of one silver version (the columns a session reads, plus a feature) and the champion's losses."""
    rng = np.random.default_rng(version)
    first = version * ROWS_PER_VERSION
    micros = (1_700_000_000 + first // 10 + np.arange(ROWS_PER_VERSION) // 10) * 1_000_000
    rows = pa.table(
        {
            "event_id": [f"ev-{i}" for i in range(first, first + ROWS_PER_VERSION)],
            "event_time": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "clicked": pa.array((rng.random(ROWS_PER_VERSION) < 0.1).astype(np.int64)),
            "num__price": pa.array(rng.normal(size=ROWS_PER_VERSION).astype(np.float32)),
        }
    )
    return rows, rng.gamma(2.0, 0.3, ROWS_PER_VERSION)


def _apply(table: dict[str, tuple[bool, float]], update: SessionUpdate) -> None:
    """The training_set writer: append new rows, flag rows moving to replay, delete rows that left."""
    for row in update.added_rows.select(["event_id", "num__price"]).to_pylist():
        assert row["event_id"] not in table
        table[row["event_id"]] = (False, row["num__price"])
    for i in update.to_replay_ids.tolist():
        table[i] = (True, table[i][1])
    for i in update.removed_ids.tolist():
        del table[i]


def test_session_changes_keep_a_training_set_table_equal_to_the_sample() -> None:
    session = SamplingSession(_spec())
    table: dict[str, tuple[bool, float]] = {}
    for version in range(12):
        rows, losses = _silver(version)
        update = session.update(rows, silver_version=version, losses=losses)
        _apply(table, update)
        ids, is_replay = session.members()
        assert {i: r for i, (r, _) in table.items()} == dict(
            zip(ids.tolist(), is_replay.tolist(), strict=True)
        )
        assert update.items_seen == (version + 1) * ROWS_PER_VERSION
    assert (update.recent_rows, update.replay_rows) == (150, 50)
    assert session.silver_version == 11


def test_added_rows_are_the_batch_rows_with_all_their_columns() -> None:
    session = SamplingSession(_spec(capacity=1000, replay_share=0.0))
    rows, losses = _silver(0)
    update = session.update(rows, silver_version=0, losses=losses)
    assert update.added_rows.schema == rows.schema
    assert update.added_rows.num_rows == ROWS_PER_VERSION  # everything fits
    assert update.added_rows.column("event_id").to_pylist() == rows.column("event_id").to_pylist()


def test_a_session_resumed_from_delta_continues_the_same_sample(tmp_path: Path) -> None:
    spec = _spec()
    straight = SamplingSession(spec)
    straight_updates = []
    for version in range(10):
        rows, losses = _silver(version)
        straight_updates.append(straight.update(rows, silver_version=version, losses=losses))

    store = SamplerStateStore.for_pipeline(spec.name, lake_root=tmp_path)
    first = SamplingSession(spec)
    for version in range(5):
        rows, losses = _silver(version)
        first.update(rows, silver_version=version, losses=losses)
        assert store.save(first.state(), silver_version=version).saved
    assert not store.save(first.state(), silver_version=4).saved  # a retried save is a no-op

    loaded = store.load_latest()
    assert loaded is not None and loaded.silver_version == 4
    resumed = SamplingSession.from_state(spec, loaded.state)
    for version in range(5, 10):
        rows, losses = _silver(version)
        a = resumed.update(rows, silver_version=version, losses=losses)
        b = straight_updates[version]
        assert a.added_rows.equals(b.added_rows)
        assert a.to_replay_ids.tolist() == b.to_replay_ids.tolist()
        assert a.removed_ids.tolist() == b.removed_ids.tolist()
    for got, want in zip(resumed.members(), straight.members(), strict=True):
        assert got.tolist() == want.tolist()


def test_covered_versions_are_refused() -> None:
    session = SamplingSession(_spec())
    rows, losses = _silver(0)
    session.update(rows, silver_version=3, losses=losses)
    with pytest.raises(ValueError, match="silver version 3 is already covered"):
        session.update(rows, silver_version=3, losses=losses)


def test_a_changed_policy_is_refused_on_resume() -> None:
    session = SamplingSession(_spec())
    rows, losses = _silver(0)
    session.update(rows, silver_version=0, losses=losses)
    with pytest.raises(PolicyChangedError, match=r"capacity: 200 -> 300"):
        SamplingSession.from_state(_spec(capacity=300), session.state())


def test_missing_columns_and_contradictory_policies_are_clear_errors() -> None:
    session = SamplingSession(_spec())
    rows, _ = _silver(0)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['clicked'\]"):
        session.update(rows.drop_columns(["clicked"]), silver_version=0)
    with pytest.raises(ValueError, match="losses must have one value per example"):
        session.update(rows, silver_version=0, losses=np.ones(3))
    with pytest.raises(ValueError, match="losses must be finite and >= 0; position 0"):
        session.update(rows, silver_version=0, losses=np.full(rows.num_rows, -1.0))
    assert session.state() == SamplingSession(_spec()).state()  # a refused batch changes nothing
    with pytest.raises(ValueError, match=r"'uniform' .* cannot apply"):
        SamplingSession(_spec(strategy="uniform"))
