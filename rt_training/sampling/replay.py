"""Replay: keep a fixed share of the training set for older rows, so new data does not erase old skills.

Continual learning on a drifting stream forgets what it no longer sees; mixing a slice of older examples into
every training set (experience replay) is the simplest guard. Here the training set of ``capacity`` rows is

* ``n_recent = capacity - n_replay`` rows from the policy's sampler (uniform, weighted or time-biased), and
* ``n_replay = round(capacity * replay_share)`` rows from a uniform Algorithm L reservoir fed with the rows
  the recent sample evicts.

Feeding the replay reservoir with evictions, rather than with the whole stream, makes its rows older data by
construction and disjoint from the recent rows (an evicted row never re-enters a reservoir), so the replay
count is exact with no overlap to resolve, and a row moving to replay is already in the training set table:
it only changes its flag. The replay rows are a uniform sample of every row that has left the recent sample.
Until ``n_replay`` rows have been evicted the replay part is smaller than its share (:attr:`ReplayMixer.shortfall`).

References
----------
David Rolnick, Arun Ahuja, Jonathan Schwarz, Timothy Lillicrap, Greg Wayne. "Experience replay for
continual learning". NeurIPS 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_training.sampling.base import Reservoir
from rt_training.sampling.factory import make_sampler, restore_sampler
from rt_training.sampling.grouped import GroupedWeightedReservoir
from rt_training.sampling.uniform import UniformReservoir

if TYPE_CHECKING:
    from rt_training.spec.models import SamplingPolicy


def replay_split(capacity: int, replay_share: float) -> tuple[int, int]:
    """``(n_recent, n_replay)`` for a training set of ``capacity`` rows; ``n_replay`` rounds half up.

    Examples
    --------
    >>> replay_split(50_000, 0.2), replay_split(7, 0.25), replay_split(10, 0.0)
    ((40000, 10000), (5, 2), (10, 0))
    """
    if not 0 <= replay_share < 1:
        raise ValueError(f"replay_share must be in [0, 1), got {replay_share!r}")
    n_replay = math.floor(capacity * replay_share + 0.5)
    n_recent = capacity - n_replay
    if n_recent < 1:
        raise ValueError(
            f"capacity {capacity} with replay_share {replay_share} leaves no room for recent rows"
        )
    return n_recent, n_replay


@dataclass(frozen=True)
class MixUpdate:
    """How one batch changed the training set.

    Attributes
    ----------
    added_ids, added_index
        Batch rows that joined the training set (as recent rows) and their positions in the batch.
    to_replay_ids
        Rows that left the recent sample and stay in the training set as replay rows.
    removed_ids
        Rows that left the training set altogether.
    """

    added_ids: np.ndarray
    added_index: np.ndarray
    to_replay_ids: np.ndarray
    removed_ids: np.ndarray


class ReplayMixer:
    """A training set made of a recent sample plus a replay share of rows the recent sample let go.

    Parameters
    ----------
    recent
        The policy's sampler, with capacity ``n_recent``.
    replay
        A uniform reservoir with capacity ``n_replay``, or ``None`` for no replay.

    Examples
    --------
    >>> import numpy as np
    >>> from rt_training.spec.models import SamplingPolicy
    >>> mixer = ReplayMixer.for_policy(SamplingPolicy(strategy="uniform", capacity=10, replay_share=0.3))
    >>> for start in range(0, 200, 50):
    ...     _ = mixer.update(np.arange(start, start + 50), np.arange(start, start + 50, dtype=float))
    >>> ids, is_replay = mixer.members()
    >>> len(ids), int(is_replay.sum()), mixer.shortfall
    (10, 3, 0)
    """

    def __init__(self, recent: Reservoir, replay: UniformReservoir | None) -> None:
        self.recent = recent
        self.replay = replay

    @classmethod
    def for_policy(cls, policy: SamplingPolicy) -> ReplayMixer:
        """Split ``policy.capacity`` by ``policy.replay_share``; the replay reservoir is seeded ``seed + 1``."""
        n_recent, n_replay = replay_split(policy.capacity, policy.replay_share)
        replay = UniformReservoir(n_replay, seed=policy.seed + 1) if n_replay else None
        return cls(make_sampler(policy, capacity=n_recent), replay)

    @property
    def n_replay(self) -> int:
        """Replay rows the training set holds once warmed up."""
        return 0 if self.replay is None else self.replay.capacity

    @property
    def shortfall(self) -> int:
        """How many replay rows are missing (only while fewer rows than ``n_replay`` have been evicted)."""
        return 0 if self.replay is None else self.replay.capacity - len(self.replay)

    def update(
        self, ids: Any, times: Any, weights: Any | None = None, groups: Any | None = None
    ) -> MixUpdate:
        """Offer a batch to the recent sample and pass its evictions to the replay reservoir.

        ``groups`` (one str per item) is for a recent sample that keeps group shares
        (:class:`~rt_training.sampling.grouped.GroupedWeightedReservoir`); the replay part ignores groups.
        """
        if isinstance(self.recent, GroupedWeightedReservoir):
            recent = self.recent.update(ids, times, weights, groups=groups)
        elif groups is not None:
            raise ValueError(
                f"groups were given, but the recent sample ({self.recent.kind}) keeps no group shares"
            )
        else:
            recent = self.recent.update(ids, times, weights)
        if self.replay is None or recent.evicted_ids.size == 0:
            return MixUpdate(recent.added_ids, recent.added_index, recent.evicted_ids[:0], recent.evicted_ids)
        replay = self.replay.update(recent.evicted_ids, recent.evicted_times)
        kept = np.zeros(recent.evicted_ids.size, dtype=bool)
        kept[replay.added_index] = True
        removed = np.concatenate([recent.evicted_ids[~kept], replay.evicted_ids])
        return MixUpdate(recent.added_ids, recent.added_index, replay.added_ids, removed)

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """The training set: ids (recent rows first) and a mask that is True for replay rows."""
        recent = self.recent.members
        replay = self.replay.members if self.replay is not None else recent[:0]
        ids = np.concatenate([recent, replay]) if replay.size else recent
        is_replay = np.zeros(ids.size, dtype=bool)
        is_replay[recent.size :] = True
        return ids, is_replay

    def state(self) -> dict[str, Any]:
        return {
            "recent": self.recent.state(),
            "replay": None if self.replay is None else self.replay.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReplayMixer:
        replay = None if state["replay"] is None else UniformReservoir.from_state(state["replay"])
        return cls(restore_sampler(state["recent"]), replay)
