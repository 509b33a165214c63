"""Reservoirs that keep a target share of members per group: A-Res keys ranked within each group.

A weighted reservoir (:mod:`rt_training.sampling.weighted`) keeps the ``capacity`` largest keys of the stream. The
reservoirs here give each member a group (:mod:`rt_training.sampling.mixture`) and keep, for every group with a
positive target, the ``quota`` largest keys of that group, with quotas from
:func:`~rt_training.sampling.mixture.allocate_quotas`. Within a group the members are therefore the weighted
(or time-biased) sample the key defines, drawn from that group's rows only; across groups the counts follow the
targets whenever the groups have enough rows. Slots a group cannot fill go to the other listed groups, then to
rows of groups the targets do not list (largest keys first), so the sample stays full; a group listed with
target 0 never has members.

Targets change between updates (:meth:`GroupedWeightedReservoir.set_targets`): a group whose quota shrinks loses
its smallest keys at the next update (they are evicted, and a replay buffer may keep them), a group whose quota
grows fills from the rows offered next. A member never comes back once evicted, as with every reservoir here.

Unlike the plain reservoirs this one is not batch-invariant: quotas are applied at each update, so the same
stream cut into other batches may keep other members when a group is short in one batch. Each item still
consumes exactly one random draw in stream order, and a restored reservoir continues the exact same sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rt_training.sampling.base import UpdateResult, as_stored_ids
from rt_training.sampling.mixture import allocate_quotas
from rt_training.sampling.time_biased import TimeBiasedReservoir
from rt_training.sampling.weighted import WeightedReservoir


def select_by_quota(
    keys: np.ndarray, groups: np.ndarray, targets: Mapping[str, float], capacity: int
) -> np.ndarray:
    """Mask of the items kept: the largest keys per group up to its quota, then unlisted groups' largest keys.

    Items with key ``-inf`` (weight 0) are never kept.

    Examples
    --------
    >>> keys = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    >>> groups = np.array(["a", "a", "a", "b", "b", "z"], dtype=object)
    >>> select_by_quota(keys, groups, {"a": 0.5, "b": 0.5}, capacity=4).tolist()
    [True, True, False, True, True, False]
    >>> select_by_quota(keys, groups, {"a": 0.5, "b": 0.0}, capacity=4).tolist()
    [True, True, True, False, False, True]
    """
    keep = np.zeros(keys.size, dtype=bool)
    usable = keys > -np.inf
    if keys.size == 0:
        return keep
    names, codes = np.unique(groups, return_inverse=True)
    codes = codes.ravel()
    available = np.bincount(codes[usable], minlength=names.size)
    quotas = allocate_quotas(
        targets, {str(g): int(n) for g, n in zip(names, available, strict=True)}, capacity
    )
    quota_of = np.array([quotas.get(str(g), 0) for g in names], dtype=np.int64)
    order = np.lexsort((-keys, codes))
    sorted_codes = codes[order]
    starts = np.searchsorted(sorted_codes, np.arange(names.size))
    rank = np.arange(order.size) - starts[sorted_codes]
    keep[order[rank < quota_of[sorted_codes]]] = True
    keep &= usable
    room = capacity - int(keep.sum())
    if room > 0:
        listed = np.array([str(g) in targets for g in names], dtype=bool)
        spare = np.flatnonzero(usable & ~keep & ~listed[codes])
        if spare.size > room:
            spare = spare[np.argpartition(-keys[spare], room - 1)[:room]]
        keep[spare] = True
    return keep


class GroupedWeightedReservoir(WeightedReservoir):
    """A weighted reservoir (A-Res keys) that keeps a target share of members per group.

    Without weights every item has weight 1, so each group's members are a uniform sample of its rows. It takes
    the parameters of :class:`WeightedReservoir`.

    Examples
    --------
    A stream that is 90% ``a``: with targets 50/50 the sample holds as many ``b`` rows as ``a`` rows.

    >>> r = GroupedWeightedReservoir(100, seed=3)
    >>> r.set_targets({"a": 0.5, "b": 0.5})
    >>> groups = np.where(np.arange(2000) % 10 == 0, "b", "a").astype(object)
    >>> _ = r.update(np.arange(2000), np.zeros(2000), groups=groups)
    >>> r.group_counts()
    {'a': 50, 'b': 50}
    """

    kind = "grouped_weighted"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._groups = np.empty(0, dtype=object)
        self._batch_groups: np.ndarray | None = None
        self.targets: dict[str, float] = {}

    @property
    def groups(self) -> np.ndarray:
        """Group of each member, aligned with :attr:`members`."""
        return self._groups.copy()

    def group_counts(self) -> dict[str, int]:
        """Members per group."""
        names, counts = np.unique(self._groups, return_counts=True)
        return {str(g): int(n) for g, n in zip(names, counts, strict=True)}

    def set_targets(self, targets: Mapping[str, float]) -> None:
        """Target share per group for the next updates; groups not listed only fill spare slots."""
        bad = {g: s for g, s in targets.items() if not (np.isfinite(s) and s >= 0)}
        if bad:
            raise ValueError(f"group targets must be finite shares >= 0, got {bad}")
        self.targets = {str(g): float(s) for g, s in targets.items()}

    def update(
        self, ids: Any, times: Any, weights: Any | None = None, groups: Any | None = None
    ) -> UpdateResult:
        """Offer a batch, each item with its group (a str, see :func:`~rt_training.sampling.mixture.group_keys`).

        Raises
        ------
        ValueError
            When ``groups`` is missing or not one str per item (besides the checks of the plain reservoir).
        """
        if groups is None:
            raise ValueError("a grouped reservoir needs the group of each offered item (groups=...)")
        groups = np.asarray(groups, dtype=object)
        if groups.shape != np.shape(ids):
            raise ValueError(f"groups must have one entry per id, got {groups.shape} for {np.shape(ids)}")
        if any(not isinstance(g, str) for g in groups):
            raise TypeError("groups must be str (see rt_training.sampling.mixture.group_keys)")
        self._batch_groups = groups
        try:
            return super().update(ids, times, weights)
        finally:
            self._batch_groups = None

    def _update(self, ids: np.ndarray, times: np.ndarray, weights: np.ndarray | None) -> UpdateResult:
        assert self._id_kind is not None and self._batch_groups is not None
        keys = self._batch_keys(times, weights)
        candidates = np.flatnonzero(keys > -np.inf)
        members = len(self._ids)
        pool_keys = np.concatenate([self._keys, keys[candidates]])
        pool_groups = np.concatenate([self._groups, self._batch_groups[candidates]])
        keep = select_by_quota(pool_keys, pool_groups, self.targets, self.capacity)
        kept_old = keep[:members]
        added_index = candidates[keep[members:]]
        evicted_ids = self._ids[~kept_old]
        evicted_times = self._times[~kept_old]
        added_ids = as_stored_ids(ids[added_index], self._id_kind)
        self._ids = np.concatenate([self._ids[kept_old], added_ids])
        self._times = np.concatenate([self._times[kept_old], times[added_index]])
        self._positions = np.concatenate([self._positions[kept_old], self._items_seen + added_index])
        self._keys = pool_keys[keep]
        self._groups = pool_groups[keep]
        return UpdateResult(added_ids, added_index, evicted_ids, evicted_times)

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "groups": self._groups.tolist(), "targets": self.targets}

    def _restore_extra(self, state: dict[str, Any]) -> None:
        super()._restore_extra(state)
        self._groups = np.array(state["groups"], dtype=object)
        self._batch_groups = None
        self.targets = {str(g): float(s) for g, s in state["targets"].items()}


class GroupedTimeBiasedReservoir(GroupedWeightedReservoir, TimeBiasedReservoir):
    """A time-biased reservoir (odds halve every ``half_life_s`` of age) that keeps a target share per group.

    Parameters are those of :class:`~rt_training.sampling.time_biased.TimeBiasedReservoir`.
    """

    kind = "grouped_time_biased"
