"""Replay: the training set holds exactly its replay share of older rows, disjoint from the recent sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rt_training.sampling import ReplayMixer, replay_split
from rt_training.sampling.replay import MixUpdate
from rt_training.spec.models import SamplingPolicy


def test_replay_split_rounds_half_up_and_keeps_room_for_recent_rows() -> None:
    assert replay_split(100, 0.2) == (80, 20)
    assert replay_split(7, 0.25) == (5, 2)  # 1.75 -> 2
    assert replay_split(10, 0.25) == (7, 3)  # 2.5 -> 3
    assert replay_split(3, 0.1) == (3, 0)
    with pytest.raises(ValueError, match="no room for recent rows"):
        replay_split(1, 0.9)


def _apply(table: dict[int, bool], change: MixUpdate) -> None:
    """What the training_set writer does with a change: append, flag as replay, delete."""
    for i in change.added_ids.tolist():
        assert i not in table
        table[i] = False
    for i in change.to_replay_ids.tolist():
        assert table[i] is False
        table[i] = True
    for i in change.removed_ids.tolist():
        del table[i]


@pytest.mark.parametrize("strategy", ["uniform", "weighted", "time_biased"])
def test_replay_share_is_exact_once_enough_rows_have_left_the_recent_sample(strategy: str) -> None:
    policy = SamplingPolicy(
        capacity=100, strategy=strategy, recency_half_life_s=50.0, replay_share=0.2, seed=1
    )
    mixer = ReplayMixer.for_policy(policy)
    table: dict[int, bool] = {}
    rng = np.random.default_rng(0)

    change = mixer.update(np.arange(60), np.arange(60.0))
    _apply(table, change)
    ever_recent = set(change.added_ids.tolist())
    assert mixer.shortfall == 20 and not change.to_replay_ids.size  # nothing evicted yet: no replay rows

    start = 60
    for _ in range(40):
        size = int(rng.integers(50, 300))
        ids = np.arange(start, start + size)
        change = mixer.update(ids, ids.astype(np.float64), rng.gamma(2.0, 1.0, size))
        _apply(table, change)
        ever_recent |= set(change.added_ids.tolist())
        members, is_replay = mixer.members()
        assert dict(zip(members.tolist(), is_replay.tolist(), strict=True)) == table
        start += size

    members, is_replay = mixer.members()
    assert mixer.shortfall == 0
    assert len(members) == 100 and int(is_replay.sum()) == 20
    assert len(set(members.tolist())) == 100  # replay and recent rows are disjoint
    assert set(members[is_replay].tolist()) <= ever_recent - set(mixer.recent.members.tolist())


def test_replay_rows_are_older_than_recent_rows_under_time_bias() -> None:
    policy = SamplingPolicy(
        capacity=400, strategy="time_biased", recency_half_life_s=100.0, replay_share=0.25, seed=3
    )
    mixer = ReplayMixer.for_policy(policy)
    for lo in range(0, 20_000, 1000):
        ids = np.arange(lo, lo + 1000)
        mixer.update(ids, ids / 10.0)  # 10 events per second, 2000 s in all
    assert mixer.replay is not None
    assert mixer.replay.times.max() < np.median(mixer.recent.times)
    assert mixer.replay.times.mean() < mixer.recent.times.mean() - 500.0


def test_no_replay_share_means_evictions_leave_the_training_set() -> None:
    mixer = ReplayMixer.for_policy(SamplingPolicy(capacity=10, strategy="uniform", replay_share=0.0))
    assert mixer.replay is None
    mixer.update(np.arange(10), np.zeros(10))
    change = mixer.update(np.arange(10, 200), np.zeros(190))
    assert change.to_replay_ids.size == 0
    assert change.removed_ids.size == change.added_ids.size > 0


def test_mixer_state_round_trip_continues_identically() -> None:
    policy = SamplingPolicy(capacity=50, strategy="weighted", replay_share=0.3, seed=2)
    a = ReplayMixer.for_policy(policy)
    a.update(np.arange(500), np.zeros(500), np.linspace(0.1, 1.0, 500))
    b = ReplayMixer.from_state(json.loads(json.dumps(a.state())))
    for mixer in (a, b):
        mixer.update(np.arange(500, 2000), np.zeros(1500), np.linspace(1.0, 0.1, 1500))
    ids_a, replay_a = a.members()
    ids_b, replay_b = b.members()
    assert ids_a.tolist() == ids_b.tolist() and replay_a.tolist() == replay_b.tolist()
