"""Uniform reservoir sampling with Algorithm L, vectorized over batches.

Algorithm L (Li 1994) keeps a uniform random sample of ``k`` items from a stream of unknown length by jumping
straight to the next accepted item: after the reservoir fills, it holds ``W ~ Beta(k, 1)``; the gap to the
next accepted item is geometric, ``floor(log(U) / log(1 - W)) + 1``; the accepted item replaces a uniformly
chosen member; then ``W <- W * U'^(1/k)``. Only O(k (1 + log(N / k))) random draws are made for N items.

Here the jumps are drawn in fixed-size blocks of accepts with array operations: the ``W`` sequence is a
cumulative sum in log space and the accept positions a cumulative sum of gaps, so a batch costs a few array
operations per block of accepts, never a Python step per item or per accept. Blocks always have the same size
and start from a saved point (generator state, ``log W`` and the last accept position), so the sample does not
depend on how the stream is cut into batches, and a restored sampler regenerates the current block exactly.

References
----------
Kim-Hung Li. "Reservoir-sampling algorithms of time complexity O(n(1 + log(N/n)))".
ACM Transactions on Mathematical Software 20(4), 1994, pp. 481-493.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_training.sampling.base import (
    Reservoir,
    UpdateResult,
    as_stored_ids,
    rng_from_json,
    rng_to_json,
)

BLOCK = 512
_MAX_POSITION = float(2**62)


class UniformReservoir(Reservoir):
    """A uniform sample without replacement of at most ``capacity`` stream items (Algorithm L).

    Every item of a stream of ``N >= capacity`` items is a member with probability ``capacity / N``.
    Weights, when given, only feed :attr:`total_weight`; they do not bias the sample. Algorithm L orders
    nothing by key, so :attr:`keys` holds each member's stream position (as float) to keep one state layout.

    Parameters
    ----------
    capacity
        Number of members once the stream has at least that many items.
    seed
        Seed of the PCG64 generator.

    Examples
    --------
    >>> import numpy as np
    >>> r = UniformReservoir(capacity=3, seed=1)
    >>> r.update(np.arange(10), np.zeros(10)).added_ids.size
    3
    >>> r.items_seen, len(r)
    (10, 3)
    >>> again = UniformReservoir(capacity=3, seed=1)
    >>> _ = again.update(np.arange(4), np.zeros(4))
    >>> again = UniformReservoir.from_state(again.state())
    >>> _ = again.update(np.arange(4, 10), np.zeros(6))
    >>> bool((again.members == r.members).all())
    True
    """

    kind = "uniform"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__(capacity, seed)
        self._block_start: dict[str, Any] | None = None
        self._block_log_w = 0.0
        self._block_last = 0
        self._cursor = 0
        self._next_positions = np.empty(0, np.int64)
        self._next_slots = np.empty(0, np.int64)
        self._log_w_after_block = 0.0

    # -- the jump sequence ------------------------------------------------------------------
    def _start_jumps(self) -> None:
        """Draw the first ``W`` when the reservoir has just filled, then the first block of accepts."""
        log_w = float(np.log1p(-self._rng.random())) / self.capacity
        self._new_block(log_w, self.capacity - 1)

    def _new_block(self, log_w: float, last_position: int) -> None:
        self._block_start = rng_to_json(self._rng)
        self._block_log_w = log_w
        self._block_last = last_position
        self._cursor = 0
        self._draw_block()

    def _draw_block(self) -> None:
        """Draw ``BLOCK`` accepts: their stream positions, their slots, and ``log W`` after the block."""
        k = self.capacity
        r = self._rng.random((BLOCK, 3))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_w_steps = np.cumsum(np.log1p(-r[:, 2]) / k)
            log_w = self._block_log_w + np.concatenate(([0.0], log_w_steps[:-1]))
            gaps = np.floor(np.log1p(-r[:, 0]) / np.log(-np.expm1(log_w))) + 1.0
        gaps = np.where(np.isfinite(gaps), gaps, 1.0)
        positions = np.minimum(self._block_last + np.cumsum(gaps), _MAX_POSITION)
        self._next_positions = positions.astype(np.int64)
        self._next_slots = np.minimum((r[:, 1] * k).astype(np.int64), k - 1)
        self._log_w_after_block = self._block_log_w + float(log_w_steps[-1])

    def _take_accepts(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        """All accepts at stream positions below ``end``, in order: (positions, slots)."""
        positions: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        while self._block_start is not None:
            stop = int(np.searchsorted(self._next_positions, end, side="left"))
            if stop > self._cursor:
                positions.append(self._next_positions[self._cursor : stop])
                slots.append(self._next_slots[self._cursor : stop])
                self._cursor = stop
            if self._cursor < BLOCK:
                break
            self._new_block(self._log_w_after_block, int(self._next_positions[-1]))
        if not positions:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(positions), np.concatenate(slots)

    # -- batch update -------------------------------------------------------------------------
    def _update(self, ids: np.ndarray, times: np.ndarray, weights: np.ndarray | None) -> UpdateResult:
        assert self._id_kind is not None
        start = self._items_seen
        before = len(self._ids)
        fill = min(self.capacity - before, len(ids))
        if fill:
            self._ids = np.concatenate([self._ids, as_stored_ids(ids[:fill], self._id_kind)])
            self._times = np.concatenate([self._times, times[:fill]])
            self._positions = np.concatenate([self._positions, start + np.arange(fill, dtype=np.int64)])
            self._keys = self._positions.astype(np.float64)
            if len(self._ids) == self.capacity:
                self._start_jumps()
        # Source of each slot's content after this batch: -1 = untouched, else a batch index.
        source = np.full(self.capacity, -1, dtype=np.int64)
        source[before : before + fill] = np.arange(fill)
        accept_positions, accept_slots = self._take_accepts(start + len(ids))
        if accept_slots.size:
            # The last accept into a slot wins: unique over the reversed sequence keeps last occurrences.
            slots, first = np.unique(accept_slots[::-1], return_index=True)
            source[slots] = (accept_positions[::-1] - start)[first]
            replaced = slots[slots < before]
            evicted_ids = self._ids[replaced].copy()
            evicted_times = self._times[replaced].copy()
            batch_index = source[slots]
            self._ids[slots] = as_stored_ids(ids[batch_index], self._id_kind)
            self._times[slots] = times[batch_index]
            self._positions[slots] = start + batch_index
            self._keys[slots] = (start + batch_index).astype(np.float64)
        else:
            evicted_ids = self._ids[:0].copy()
            evicted_times = np.empty(0, np.float64)
        added_index = np.sort(source[source >= 0])
        return UpdateResult(
            added_ids=as_stored_ids(ids[added_index], self._id_kind),
            added_index=added_index,
            evicted_ids=evicted_ids,
            evicted_times=evicted_times,
        )

    # -- persistence -------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "jumps": None
            if self._block_start is None
            else {
                "block_rng": self._block_start,
                "block_log_w": self._block_log_w,
                "block_last_position": self._block_last,
                "cursor": self._cursor,
            }
        }

    def _restore_extra(self, state: dict[str, Any]) -> None:
        jumps = state.get("jumps")
        self._block_start = None
        self._next_positions = np.empty(0, np.int64)
        self._next_slots = np.empty(0, np.int64)
        self._log_w_after_block = 0.0
        self._block_log_w = 0.0
        self._block_last = 0
        self._cursor = 0
        if jumps is not None:
            # Replay the current block from its saved start; the generator then sits exactly where the
            # uninterrupted sampler's generator sits.
            self._block_start = jumps["block_rng"]
            self._rng = rng_from_json(self._block_start)
            self._block_log_w = float(jumps["block_log_w"])
            self._block_last = int(jumps["block_last_position"])
            self._cursor = int(jumps["cursor"])
            self._draw_block()
