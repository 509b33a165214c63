"""Time-biased reservoir sampling: a sample whose inclusion odds halve with every half-life of age.

Aggarwal (2006) asks for a reservoir in which the chance that an item is still present decays exponentially
with its age, ``f(r, t) = exp(-lambda (t - r))``, so a model trained on the sample follows an evolving stream
without forgetting it abruptly. His replacement scheme measures age in arrivals and ties the capacity to the
rate (``capacity <= 1 / lambda``). This module keeps his exponential bias function but realizes it with A-Res
keys (:mod:`rt_training.sampling.weighted`) and a time-dependent weight,

    w_i(T) = b_i * 2^(-(T - t_i) / h),    h = half-life in seconds, b_i = any other weight,

because then the bias is in event-time seconds (what a half-life in a spec means), the capacity is free, and
the sample stays batch- and restart-invariant. The factor ``2^(-T / h)`` is common to every item, so ordering
by ``w_i(T)`` is ordering by ``b_i 2^(t_i / h)`` for every ``T``: keys never need refreshing as time passes.
In log space the key is ``log(b_i) + ln(2) (t_i - t_ref) / h - log(E_i)``, which never overflows.

Inclusion property: at any time ``T`` the members are distributed as ``capacity`` successive draws without
replacement from all items seen, each draw picking item ``i`` with probability proportional to
``b_i 2^(-(T - t_i) / h)`` among the items not yet drawn. For capacity 1 this is exact and simple:
``P(i is the member) = b_i 2^(-(T - t_i)/h) / sum_j b_j 2^(-(T - t_j)/h)``. Items arriving late (an old event
time) enter with the odds of their event time, not of their arrival.

References
----------
Charu C. Aggarwal. "On biased reservoir sampling in the presence of stream evolution". VLDB 2006, pp. 607-618.
Pavlos S. Efraimidis, Paul G. Spirakis. "Weighted random sampling with a reservoir". IPL 97(5), 2006.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rt_training.sampling.weighted import WeightedReservoir


class TimeBiasedReservoir(WeightedReservoir):
    """A sample of at most ``capacity`` items whose inclusion odds halve every ``half_life_s`` seconds of age.

    Parameters
    ----------
    capacity
        Number of members.
    half_life_s
        Age (event-time seconds) at which an item's odds of being sampled are half those of a new one.
    seed
        Seed of the PCG64 generator.
    reference_time
        Origin of the time term in the keys; it cancels out of the sample and only matters for float
        precision: keep it within about ``1e6 * half_life_s`` of the stream's times (0, i.e. the Unix epoch,
        is fine for half-lives of a second or more).

    Examples
    --------
    Two equally weighted items one half-life apart: the newer one is the member twice as often.

    >>> import numpy as np
    >>> picks = [
    ...     int(TimeBiasedReservoir(1, half_life_s=60.0, seed=s).update([0, 1], [0.0, 60.0]).added_ids[0])
    ...     for s in range(3000)
    ... ]
    >>> round(float(np.mean(picks)), 2)
    0.67
    """

    kind = "time_biased"

    def __init__(self, capacity: int, half_life_s: float, seed: int = 0, reference_time: float = 0.0) -> None:
        super().__init__(capacity, seed)
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s!r}")
        if not math.isfinite(reference_time):
            raise ValueError(f"reference_time must be finite, got {reference_time!r}")
        self.half_life_s = float(half_life_s)
        self.reference_time = float(reference_time)

    @property
    def decay_rate(self) -> float:
        """lambda = ln(2) / half-life, per second."""
        return math.log(2.0) / self.half_life_s

    def _log_weights(self, times: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        log_w = np.subtract(times, self.reference_time)
        log_w *= self.decay_rate
        if weights is not None:
            with np.errstate(divide="ignore"):
                log_w += np.log(weights)
        return log_w

    def _extra_state(self) -> dict[str, Any]:
        return {"half_life_s": self.half_life_s, "reference_time": self.reference_time}

    def _restore_extra(self, state: dict[str, Any]) -> None:
        self.half_life_s = float(state["half_life_s"])
        self.reference_time = float(state["reference_time"])
        super()._restore_extra(state)
