"""A restarted sampler continues the exact same sample; states live in Delta once per silver version."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from rt_training.sampling import (
    SamplerStateStore,
    TimeBiasedReservoir,
    UniformReservoir,
    WeightedReservoir,
    restore_sampler,
    sampler_state_uri,
)
from rt_training.sampling.base import Reservoir

N = 20_000


def _stream(id_kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    ids = np.arange(N) if id_kind == "int" else np.array([f"ev-{i:06d}" for i in range(N)])
    times = 1.7e9 + np.sort(rng.uniform(0, 3600, N)) + rng.normal(0, 30, N)  # some events arrive late
    weights = rng.gamma(2.0, 1.0, N) * (rng.random(N) > 0.05)  # 5% zero weights
    return ids, times, weights


SAMPLERS = {
    "uniform": lambda: UniformReservoir(500, seed=9),
    "weighted": lambda: WeightedReservoir(500, seed=9),
    "time_biased": lambda: TimeBiasedReservoir(500, half_life_s=600.0, seed=9, reference_time=1.7e9),
}


def _by_id(r: Reservoir) -> dict:
    return {i: (k, t, p) for i, k, t, p in zip(r.members.tolist(), r.keys, r.times, r.positions, strict=True)}


def _json_round_trip(r: Reservoir) -> Reservoir:
    return restore_sampler(json.loads(json.dumps(r.state(), allow_nan=False)))


@pytest.mark.parametrize("id_kind", ["int", "str"])
@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_sampling_a_then_b_after_a_restart_equals_sampling_a_and_b_in_one_go(kind: str, id_kind: str) -> None:
    ids, times, weights = _stream(id_kind)
    whole = SAMPLERS[kind]()
    whole.update(ids, times, weights)

    cut = 7_321
    first = SAMPLERS[kind]()
    first.update(ids[:cut], times[:cut], weights[:cut])
    resumed = _json_round_trip(first)
    resumed.update(ids[cut:], times[cut:], weights[cut:])

    assert _by_id(resumed) == _by_id(whole)
    assert resumed.items_seen == whole.items_seen == N
    assert resumed.total_weight == pytest.approx(whole.total_weight, rel=1e-12)
    assert resumed.rng_state == whole.rng_state
    if kind == "uniform":  # slot order is part of Algorithm L's state
        assert resumed.members.tolist() == whole.members.tolist()


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_any_batching_with_restarts_gives_the_same_sample(kind: str) -> None:
    ids, times, weights = _stream("int")
    whole = SAMPLERS[kind]()
    whole.update(ids, times, weights)
    cuts = np.sort(np.random.default_rng(1).choice(np.arange(1, N), size=60, replace=False))
    r = SAMPLERS[kind]()
    for i, (lo, hi) in enumerate(itertools.pairwise([0, *cuts.tolist(), N])):
        r.update(ids[lo:hi], times[lo:hi], weights[lo:hi])
        if i % 5 == 0:
            r = _json_round_trip(r)
    assert _by_id(r) == _by_id(whole)


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_a_restored_sampler_reports_the_same_changes_as_the_original(kind: str) -> None:
    ids, times, weights = _stream("int")
    original = SAMPLERS[kind]()
    original.update(ids[:5000], times[:5000], weights[:5000])
    restored = _json_round_trip(original)
    for lo in range(5000, N, 3000):
        a = original.update(ids[lo : lo + 3000], times[lo : lo + 3000], weights[lo : lo + 3000])
        b = restored.update(ids[lo : lo + 3000], times[lo : lo + 3000], weights[lo : lo + 3000])
        assert a.added_index.tolist() == b.added_index.tolist()
        assert a.evicted_ids.tolist() == b.evicted_ids.tolist()


def test_state_of_another_sampler_kind_is_refused() -> None:
    state = UniformReservoir(3).state()
    with pytest.raises(ValueError, match="'uniform' sampler, not 'weighted'"):
        WeightedReservoir.from_state(state)
    with pytest.raises(ValueError, match="unknown sampler kind"):
        restore_sampler({**state, "kind": "bogus"})


# -- Delta store -------------------------------------------------------------------------------------


def test_state_round_trips_through_delta_and_continues_the_sample(tmp_path: Path) -> None:
    ids, times, weights = _stream("str")
    store = SamplerStateStore(tmp_path / "sampler_state")
    assert store.load_latest() is None
    assert store.covered_version() is None

    r = SAMPLERS["time_biased"]()
    r.update(ids[:9000], times[:9000], weights[:9000])
    result = store.save(r.state(), silver_version=4)
    assert result.saved and result.table_version == 0

    loaded = store.load_latest()
    assert loaded is not None and loaded.silver_version == 4
    assert loaded.state == json.loads(json.dumps(r.state()))
    resumed = restore_sampler(loaded.state)
    resumed.update(ids[9000:], times[9000:], weights[9000:])
    whole = SAMPLERS["time_biased"]()
    whole.update(ids, times, weights)
    assert _by_id(resumed) == _by_id(whole)


def test_a_silver_version_is_saved_at_most_once(tmp_path: Path) -> None:
    store = SamplerStateStore(tmp_path / "sampler_state", app_id="demo/sampler_state")
    r = WeightedReservoir(10, seed=0)
    r.update(np.arange(100), np.zeros(100))
    assert store.save(r.state(), silver_version=3).saved

    r.update(np.arange(100, 200), np.zeros(100))
    again = store.save(r.state(), silver_version=3)
    older = store.save(r.state(), silver_version=2)
    assert not again.saved and again.covered_version == 3
    assert not older.saved and older.covered_version == 3
    table = DeltaTable(str(tmp_path / "sampler_state"))
    assert table.version() == 0
    assert table.to_pyarrow_table().num_rows == 1
    assert table.transaction_version("demo/sampler_state") == 3

    assert store.save(r.state(), silver_version=5).saved
    latest = store.load_latest()
    assert latest is not None and latest.silver_version == 5
    assert latest.state["items_seen"] == 200
    assert store.covered_version() == 5


def test_prune_keeps_the_newest_states(tmp_path: Path) -> None:
    store = SamplerStateStore(tmp_path / "s")
    r = UniformReservoir(2, seed=0)
    for version in range(5):
        r.update([version], [0.0])
        store.save(r.state(), silver_version=version)
    assert store.prune(keep_last=2) == 3
    remaining = DeltaTable(str(tmp_path / "s")).to_pyarrow_table(columns=["silver_version"])
    assert sorted(remaining.column("silver_version").to_pylist()) == [3, 4]
    latest = store.load_latest()
    assert latest is not None and latest.silver_version == 4
    assert not store.save(r.state(), silver_version=1).saved  # the covered version survives pruning


def test_non_json_state_is_refused_with_the_table_named(tmp_path: Path) -> None:
    store = SamplerStateStore(tmp_path / "s")
    with pytest.raises(ValueError, match=r"sampler_state|not plain JSON"):
        store.save({"keys": [float("nan")]}, silver_version=0)


def test_damaged_state_is_detected(tmp_path: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    store = SamplerStateStore(tmp_path / "s")
    store.save({"a": 1}, silver_version=0)
    row = DeltaTable(str(tmp_path / "s")).to_pyarrow_table()
    row = row.set_column(row.schema.get_field_index("state_json"), "state_json", pa.array(['{"a":2}']))
    row = row.set_column(
        row.schema.get_field_index("silver_version"), "silver_version", pa.array([1], pa.int64())
    )
    write_deltalake(str(tmp_path / "s"), row, mode="append")
    store = SamplerStateStore(tmp_path / "s", app_id="other")  # no txn: found by scanning the versions
    with pytest.raises(ValueError, match="does not match its sha256"):
        store.load_latest()


def test_lake_layout_uses_the_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RT_TRAINING_LAKE", str(tmp_path / "lake"))
    assert sampler_state_uri("clickstream") == str(tmp_path / "lake" / "clickstream" / "sampler_state")
    store = SamplerStateStore.for_pipeline("clickstream")
    assert store.app_id == "clickstream/sampler_state"
    assert store.save({"x": 1}, silver_version=0).saved
    assert (tmp_path / "lake" / "clickstream" / "sampler_state" / "_delta_log").is_dir()
