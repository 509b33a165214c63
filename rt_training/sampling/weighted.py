"""Weighted reservoir sampling without replacement (A-Res), vectorized over batches.

Efraimidis and Spirakis give each item the key ``u^(1/w)`` (``u`` uniform on (0, 1), ``w`` its weight) and
keep the ``k`` largest keys; the result is distributed as ``k`` successive draws without replacement, each
with probability proportional to weight among the items not yet drawn. Raw keys underflow for small weights,
so this module keeps the monotone transform

    key = log(w) - log(E),   E = -log(u) ~ Exp(1),

which orders items exactly as ``u^(1/w)`` does (it is ``-log(-log(u^(1/w)))``, the Gumbel-top-k form of the
same sampler). Keys of different weights never overflow or underflow, and a weight given as a logarithm (see
:mod:`rt_training.sampling.time_biased`) needs no exponentiation at all.

A batch costs one exponential draw per item plus one array comparison against the current threshold (the
smallest member key); only the items above the threshold join a partial sort with the members. Each item
consumes exactly one draw in stream order, so the sample does not depend on how the stream is cut into
batches. A-ExpJ (exponential jumps) would draw fewer random numbers but ties its draws to the accepted items,
which loses that batching invariance for no measurable gain here: key generation already runs well above the
throughput target.

References
----------
Pavlos S. Efraimidis, Paul G. Spirakis. "Weighted random sampling with a reservoir".
Information Processing Letters 97(5), 2006, pp. 181-185.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_training.sampling.base import Reservoir, UpdateResult, as_stored_ids

_TINY = np.finfo(np.float64).tiny


class WeightedReservoir(Reservoir):
    """A weighted sample without replacement of at most ``capacity`` stream items (A-Res, log-space keys).

    Items with weight 0 are counted but never sampled. Without weights every item has weight 1 and the sample
    is uniform. :attr:`keys` are ``log(w) - log(E)``; the members are the items with the largest keys seen.

    Parameters
    ----------
    capacity
        Number of members once the stream has that many items with positive weight.
    seed
        Seed of the PCG64 generator.

    Examples
    --------
    With capacity 1 the member is item ``i`` with probability ``w_i / sum(w)``:

    >>> import numpy as np
    >>> picks = [
    ...     int(WeightedReservoir(1, seed=s).update(np.arange(3), np.zeros(3), [1.0, 0.0, 3.0]).added_ids[0])
    ...     for s in range(2000)
    ... ]
    >>> np.bincount(picks, minlength=3) / 2000
    array([0.248, 0.   , 0.752])
    """

    kind = "weighted"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__(capacity, seed)
        self._threshold = -np.inf

    def _log_weights(self, times: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
        """Log-weights of a batch; ``None`` means all weights are 1 (saves a pass over the batch)."""
        if weights is None:
            return None
        with np.errstate(divide="ignore"):
            return np.log(weights)

    def _batch_keys(self, times: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """``log(w) - log(E)`` for each item of a batch: one exponential draw per item, in stream order."""
        exponentials = self._rng.standard_exponential(len(times))
        np.maximum(exponentials, _TINY, out=exponentials)
        log_e = np.log(exponentials, out=exponentials)
        log_w = self._log_weights(times, weights)
        return np.negative(log_e, out=log_e) if log_w is None else np.subtract(log_w, log_e, out=log_e)

    def _update(self, ids: np.ndarray, times: np.ndarray, weights: np.ndarray | None) -> UpdateResult:
        assert self._id_kind is not None
        keys = self._batch_keys(times, weights)
        candidates = np.flatnonzero(keys > self._threshold)
        if candidates.size == 0:
            return self._no_change()
        members = len(self._ids)
        pool_keys = np.concatenate([self._keys, keys[candidates]])
        keep = np.ones(pool_keys.size, dtype=bool)
        if pool_keys.size > self.capacity:
            drop = pool_keys.size - self.capacity
            keep[np.argpartition(pool_keys, drop - 1)[:drop]] = False
        kept_old = keep[:members]
        added_index = candidates[keep[members:]]
        evicted_ids = self._ids[~kept_old]
        evicted_times = self._times[~kept_old]
        added_ids = as_stored_ids(ids[added_index], self._id_kind)
        self._ids = np.concatenate([self._ids[kept_old], added_ids])
        self._times = np.concatenate([self._times[kept_old], times[added_index]])
        self._positions = np.concatenate([self._positions[kept_old], self._items_seen + added_index])
        self._keys = pool_keys[keep]
        if len(self._ids) == self.capacity:
            self._threshold = float(self._keys.min())
        return UpdateResult(added_ids, added_index, evicted_ids, evicted_times)

    def _no_change(self) -> UpdateResult:
        empty = self._ids[:0].copy()
        return UpdateResult(empty, np.empty(0, np.int64), empty.copy(), np.empty(0, np.float64))

    def _restore_extra(self, state: dict[str, Any]) -> None:
        self._threshold = float(self._keys.min()) if len(self._keys) == self.capacity else -np.inf
