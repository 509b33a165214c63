"""Which reservoir a sampling policy asks for, and which class a saved state belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rt_training.sampling.base import Reservoir
from rt_training.sampling.grouped import GroupedTimeBiasedReservoir, GroupedWeightedReservoir
from rt_training.sampling.time_biased import TimeBiasedReservoir
from rt_training.sampling.uniform import UniformReservoir
from rt_training.sampling.weighted import WeightedReservoir

if TYPE_CHECKING:
    from rt_training.spec.models import SamplingPolicy

SAMPLERS: dict[str, type[Reservoir]] = {
    cls.kind: cls
    for cls in (
        UniformReservoir,
        WeightedReservoir,
        TimeBiasedReservoir,
        GroupedWeightedReservoir,
        GroupedTimeBiasedReservoir,
    )
}


def make_sampler(policy: SamplingPolicy, capacity: int | None = None, seed: int | None = None) -> Reservoir:
    """The reservoir for ``policy.strategy``, with the policy's capacity and seed unless overridden.

    With ``policy.mixture`` the reservoir keeps target shares per group (:mod:`rt_training.sampling.grouped`):
    ``weighted`` and ``time_biased`` become their grouped forms, and ``uniform`` a grouped A-Res reservoir
    without weights, whose members are a uniform sample of each group's rows.

    Examples
    --------
    >>> from rt_training.spec.models import SamplingPolicy
    >>> make_sampler(SamplingPolicy(strategy="time_biased", recency_half_life_s=60, capacity=10)).half_life_s
    60.0
    """
    capacity = policy.capacity if capacity is None else capacity
    seed = policy.seed if seed is None else seed
    grouped = policy.mixture is not None
    if policy.strategy == "uniform":
        return (
            GroupedWeightedReservoir(capacity, seed=seed)
            if grouped
            else UniformReservoir(capacity, seed=seed)
        )
    if policy.strategy == "weighted":
        return (
            GroupedWeightedReservoir(capacity, seed=seed)
            if grouped
            else WeightedReservoir(capacity, seed=seed)
        )
    if policy.recency_half_life_s is None:
        raise ValueError("sampling.strategy 'time_biased' needs sampling.recency_half_life_s (seconds)")
    biased = GroupedTimeBiasedReservoir if grouped else TimeBiasedReservoir
    return biased(capacity, half_life_s=policy.recency_half_life_s, seed=seed)


def restore_sampler(state: dict[str, Any]) -> Reservoir:
    """Rebuild whichever sampler wrote ``state`` (see :meth:`Reservoir.state`)."""
    kind = state.get("kind")
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler kind {kind!r} in saved state; known kinds: {sorted(SAMPLERS)}")
    return SAMPLERS[kind].from_state(state)
