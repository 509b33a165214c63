"""Mixture sampling by group: target shares of the sample per group of a field, fixed or trending.

A spec's ``sampling.mixture`` (:class:`~rt_training.spec.models.MixtureSpec`) names a string, int or bool field
``by``; its values, compared as text (:func:`group_keys`), split the stream into groups (a topic, a source). The
functions here turn the rows of the stream up to the training set's cut into one target share per group, and a
target mix into per-group quotas of a sample. They are pure (numpy and pyarrow only); the reservoir that keeps
the quotas is :mod:`rt_training.sampling.grouped`.

Windows (event time, against the cut ``c``, never the wall clock)
    * trend window: ``(c - trend_window, c]``;
    * reference window: ``(c - trend_window - reference_window, c - trend_window]``, the span just before it;
    * the *horizon*: both together. A group is *seen* when the horizon holds at least one of its rows, and its
      *stream share* is its share of the horizon's rows.

Targets (:func:`mixture_targets`), in this order
    1. Base: a group named in ``shares`` gets its share; the groups seen but not named split what the named
       shares leave (``1 - sum(shares)``) in proportion to their stream shares.
    2. Trending (when on): a group's boost is ``clip(trend share / reference share, 1, max_boost)``, where each
       share is the group's share of that window's rows; a group with rows in the trend window and none in the
       reference window gets ``max_boost``; with an empty window every boost is 1. Falling groups are not cut
       (boost 1); they lose share only through the renormalization. The base is multiplied by the boost.
    3. Floor and renormalization: every eligible group (seen, or named with a positive share) ends at
       ``max(floor, c * boosted)`` with the one ``c`` that makes the targets sum to 1 (:func:`apply_floor`), so
       the floor holds *after* renormalizing; when the eligible groups are so many that ``n * floor >= 1`` they
       get ``1 / n`` each. A group named with share 0 is excluded: its target is 0 and the floor does not lift it.

Quotas (:func:`allocate_quotas`)
    A sample of ``capacity`` rows gets ``capacity * target`` rows of each group, rounded by largest remainder;
    a group with fewer rows available than that keeps all of them, and its unused quota goes to the others in
    proportion to their targets (water-filling), so the sample stays full whenever enough rows exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from rt_training.spec.models import MixtureSpec

NULL_GROUP = "(null)"
"""The group of rows whose ``by`` field is null."""
OTHER_GROUP = "(other)"
"""The metadata bucket that sums the groups beyond the reported ones."""
MAX_REPORTED_GROUPS = 20
"""At most this many group keys in metadata (the top groups by target, then :data:`OTHER_GROUP`)."""


def group_keys(values: pa.Array | pa.ChunkedArray | Any) -> np.ndarray:
    """Group of each value as text: strings as they are, ints as ``str(int)``, bools as ``true``/``false``,
    nulls as :data:`NULL_GROUP`; an object array of ``str``.

    Examples
    --------
    >>> group_keys(pa.array([3, None, 12])).tolist(), group_keys(pa.array([True, False])).tolist()
    (['3', '(null)', '12'], ['true', 'false'])
    """
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        if not (
            pa.types.is_integer(array.type) or pa.types.is_boolean(array.type) or pa.types.is_null(array.type)
        ):
            raise TypeError(f"mixture groups come from a string, int or bool field, not {array.type}")
        array = pc.cast(array, pa.string())
    filled = pc.fill_null(array, NULL_GROUP)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=object)


def _counts(groups: np.ndarray) -> dict[str, int]:
    keys, counts = np.unique(groups, return_counts=True)
    return {str(k): int(c) for k, c in zip(keys, counts, strict=True)}


@dataclass(frozen=True)
class WindowCounts:
    """Rows per group in the trend window, in the reference window, and in both (the horizon)."""

    trend: dict[str, int]
    reference: dict[str, int]

    @property
    def horizon(self) -> dict[str, int]:
        out = dict(self.reference)
        for g, n in self.trend.items():
            out[g] = out.get(g, 0) + n
        return out


def window_counts(
    groups: Any, times: Any, cut: float, trend_window_s: float, reference_window_s: float
) -> WindowCounts:
    """Count rows per group in the trend and reference windows before ``cut`` (all in event-time seconds).

    Rows after the cut or before the horizon are ignored.

    Examples
    --------
    >>> counts = window_counts(["a", "b", "a", "b", "a"], [10.0, 50.0, 95.0, 99.0, 101.0], cut=100.0,
    ...                        trend_window_s=10.0, reference_window_s=60.0)
    >>> counts.trend, counts.reference, counts.horizon
    ({'a': 1, 'b': 1}, {'b': 1}, {'b': 2, 'a': 1})
    """
    groups = np.asarray(groups, dtype=object)
    times = np.asarray(times, dtype=np.float64)
    if groups.shape != times.shape:
        raise ValueError(f"groups and times must have equal length, got {groups.shape} and {times.shape}")
    split = cut - trend_window_s
    in_trend = (times > split) & (times <= cut)
    in_reference = (times > split - reference_window_s) & (times <= split)
    return WindowCounts(_counts(groups[in_trend]), _counts(groups[in_reference]))


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {g: n / total for g, n in counts.items()} if total else {}


def trend_boosts(
    trend: Mapping[str, int], reference: Mapping[str, int], max_boost: float
) -> dict[str, float]:
    """``clip(trend share / reference share, 1, max_boost)`` for each group with rows in the trend window.

    A group new in the trend window gets ``max_boost``; with an empty window nothing is boosted (empty dict).

    Examples
    --------
    >>> trend_boosts({"a": 6, "b": 4}, {"a": 2, "b": 8}, max_boost=2.0)
    {'a': 2.0, 'b': 1.0}
    >>> trend_boosts({"a": 5, "new": 5}, {"a": 10}, max_boost=3.0)
    {'a': 1.0, 'new': 3.0}
    """
    now, before = _shares(trend), _shares(reference)
    if not now or not before:
        return {}
    out = {}
    for g, share in now.items():
        ratio = share / before[g] if before.get(g, 0.0) > 0 else math.inf
        out[g] = float(min(max(ratio, 1.0), max_boost))
    return out


def apply_floor(weights: Mapping[str, float], floor: float) -> dict[str, float]:
    """Shares ``max(floor, c * w)`` summing to 1, for the one scale ``c`` that makes them sum to 1.

    Every group keeps at least ``floor`` after normalizing; when ``len(weights) * floor >= 1`` (or every weight
    is 0) all groups get ``1 / n``.

    Examples
    --------
    >>> {g: round(s, 4) for g, s in apply_floor({"a": 8.0, "b": 1.9, "c": 0.1}, floor=0.05).items()}
    {'a': 0.7677, 'b': 0.1823, 'c': 0.05}
    """
    if not weights:
        return {}
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1), got {floor!r}")
    n = len(weights)
    if n * floor >= 1 or sum(weights.values()) <= 0:
        return dict.fromkeys(weights, 1.0 / n)
    floored: set[str] = set()
    while True:
        free = sum(w for g, w in weights.items() if g not in floored)
        scale = (1.0 - floor * len(floored)) / free
        more = {g for g, w in weights.items() if g not in floored and scale * w < floor}
        if not more:
            return {g: (floor if g in floored else scale * w) for g, w in weights.items()}
        floored |= more


@dataclass(frozen=True)
class MixturePlan:
    """The targets of one materialization and how they came about.

    Attributes
    ----------
    targets
        Target share per eligible group (sums to 1), plus 0 for each group named with share 0.
    boosts
        Trending boost per group with rows in the trend window (empty when trending is off).
    stream_shares
        Each seen group's share of the horizon's rows.
    cut
        The event time (Unix seconds) the windows count back from.
    """

    targets: dict[str, float]
    boosts: dict[str, float]
    stream_shares: dict[str, float]
    cut: float

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "boosts": self.boosts,
            "stream_shares": self.stream_shares,
            "cut": self.cut,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MixturePlan:
        return cls(
            {str(k): float(v) for k, v in data["targets"].items()},
            {str(k): float(v) for k, v in data["boosts"].items()},
            {str(k): float(v) for k, v in data["stream_shares"].items()},
            float(data["cut"]),
        )


def mixture_targets(
    horizon: Mapping[str, int],
    shares: Mapping[str, float],
    floor: float,
    boosts: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Target share per group from the horizon's counts, the fixed shares, the boosts and the floor.

    See the module docstring for the exact rule.

    Examples
    --------
    Fixed ``a``; ``b`` and ``c`` split the remaining 0.5 by their stream shares (3:1); no floor needed.

    >>> mixture_targets({"a": 10, "b": 60, "c": 20}, {"a": 0.5}, floor=0.02)
    {'a': 0.5, 'b': 0.375, 'c': 0.125}

    ``c`` trends (boost 3), then everything is renormalized; ``x`` is excluded.

    >>> t = mixture_targets({"a": 10, "b": 60, "c": 20, "x": 5}, {"a": 0.5, "x": 0.0}, 0.02, {"c": 3.0})
    >>> {g: round(s, 4) for g, s in t.items()}
    {'a': 0.4, 'b': 0.3, 'c': 0.3, 'x': 0.0}
    """
    boosts = boosts or {}
    seen = {g for g, n in horizon.items() if n > 0}
    unnamed = sorted(seen - set(shares))
    rest = max(1.0 - sum(shares.values()), 0.0)
    unnamed_rows = sum(horizon[g] for g in unnamed)
    base = {g: float(s) for g, s in shares.items() if s > 0}
    for g in unnamed:
        base[g] = rest * horizon[g] / unnamed_rows
    boosted = {g: b * boosts.get(g, 1.0) for g, b in sorted(base.items())}
    targets = apply_floor(boosted, floor)
    targets.update({g: 0.0 for g, s in shares.items() if s <= 0})
    return targets


def plan_mixture(mixture: MixtureSpec, groups: Any, times: Any, cut: float) -> MixturePlan:
    """The targets for the rows up to ``cut`` (event time): counts, boosts and :func:`mixture_targets`.

    Parameters
    ----------
    mixture
        The spec's ``sampling.mixture``.
    groups
        Group key of each row (:func:`group_keys`).
    times
        Event time of each row, Unix seconds.
    cut
        The training set's cut, Unix seconds.

    Examples
    --------
    A topic that appears in the last 10 s: its stream share (0.1) is tripled, then all are renormalized.

    >>> from rt_training.spec.models import MixtureSpec
    >>> spec = MixtureSpec(by="topic", trending=True, trend_window=10, reference_window=90, floor=0.1)
    >>> times = np.arange(100.0)
    >>> groups = np.where(times >= 90, "new", np.where(times % 2 == 0, "a", "b"))
    >>> plan = plan_mixture(spec, groups, times, cut=99.0)
    >>> plan.boosts, plan.targets
    ({'new': 3.0}, {'a': 0.375, 'b': 0.375, 'new': 0.25})
    """
    counts = window_counts(groups, times, cut, mixture.trend_window, mixture.reference_window)
    horizon = counts.horizon
    boosts = trend_boosts(counts.trend, counts.reference, mixture.max_boost) if mixture.trending else {}
    return MixturePlan(
        targets=mixture_targets(horizon, mixture.shares, mixture.floor, boosts),
        boosts=boosts,
        stream_shares=_shares(horizon),
        cut=float(cut),
    )


def allocate_quotas(
    targets: Mapping[str, float], available: Mapping[str, int], capacity: int
) -> dict[str, int]:
    """Rows per group for a sample of ``capacity``: ``capacity * target``, water-filled around short groups.

    Only groups with a positive target and rows available get a quota; the quotas sum to
    ``min(capacity, rows available in those groups)``.

    Examples
    --------
    >>> allocate_quotas({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1000, "b": 1000, "c": 1000}, capacity=10)
    {'a': 5, 'b': 3, 'c': 2}
    >>> allocate_quotas({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1000, "b": 1000, "c": 1}, capacity=10)
    {'a': 6, 'b': 3, 'c': 1}
    """
    active = {g: t for g, t in targets.items() if t > 0 and available.get(g, 0) > 0}
    quotas: dict[str, int] = {}
    remaining = int(capacity)
    while active:
        total = sum(active.values())
        short = {g for g, t in active.items() if available[g] <= remaining * t / total}
        if not short:
            break
        for g in short:
            quotas[g] = int(available[g])
            remaining -= int(available[g])
            del active[g]
    if active and remaining > 0:
        total = sum(active.values())
        ideal = {g: remaining * t / total for g, t in active.items()}
        floors = {g: math.floor(v) for g, v in ideal.items()}
        left = remaining - sum(floors.values())
        by_remainder = sorted(active, key=lambda g: (-(ideal[g] - floors[g]), g))
        for g in by_remainder[:left]:
            floors[g] += 1
        quotas.update(floors)
    return {g: quotas[g] for g in sorted(quotas)}


@dataclass(frozen=True)
class MixtureReport:
    """Achieved against target shares of the sample the mixture governs (the recent rows, not replay).

    Attributes
    ----------
    plan
        The targets in force.
    achieved
        Member rows per group after the update.
    """

    plan: MixturePlan
    achieved: dict[str, int] = field(default_factory=dict)

    def achieved_shares(self) -> dict[str, float]:
        return _shares(self.achieved)

    @property
    def max_gap(self) -> float:
        """The largest ``|achieved - target|`` over all groups (0 for an empty sample)."""
        shares = self.achieved_shares()
        if not shares:
            return 0.0
        groups = set(shares) | set(self.plan.targets)
        return max(abs(shares.get(g, 0.0) - self.plan.targets.get(g, 0.0)) for g in groups)

    def metadata(self, max_groups: int = MAX_REPORTED_GROUPS) -> dict[str, float | int]:
        """Flat numbers: ``mixture_target_<g>``, ``mixture_share_<g>`` (achieved) and, with trending,
        ``mixture_boost_<g>`` for the top ``max_groups - 1`` groups by target (then achieved share, then name),
        the rest summed under :data:`OTHER_GROUP`; plus ``mixture_groups`` and ``mixture_max_gap``.

        Examples
        --------
        >>> plan = MixturePlan({"a": 0.6, "b": 0.3, "c": 0.1}, {"a": 1.5}, {}, 0.0)
        >>> MixtureReport(plan, {"a": 5, "b": 4, "c": 1}).metadata(max_groups=2)
        ... # doctest: +NORMALIZE_WHITESPACE
        {'mixture_groups': 3, 'mixture_max_gap': 0.1, 'mixture_target_a': 0.6, 'mixture_share_a': 0.5,
         'mixture_boost_a': 1.5, 'mixture_target_(other)': 0.4, 'mixture_share_(other)': 0.5}
        """
        shares = self.achieved_shares()
        groups = sorted(
            set(shares) | set(self.plan.targets),
            key=lambda g: (-self.plan.targets.get(g, 0.0), -shares.get(g, 0.0), g),
        )
        shown = groups if len(groups) <= max_groups else groups[: max_groups - 1]
        out: dict[str, float | int] = {
            "mixture_groups": len(groups),
            "mixture_max_gap": round(self.max_gap, 6),
        }
        for g in shown:
            out[f"mixture_target_{g}"] = round(self.plan.targets.get(g, 0.0), 6)
            out[f"mixture_share_{g}"] = round(shares.get(g, 0.0), 6)
            if self.plan.boosts:
                out[f"mixture_boost_{g}"] = round(self.plan.boosts.get(g, 1.0), 6)
        hidden = groups[len(shown) :]
        if hidden:
            out[f"mixture_target_{OTHER_GROUP}"] = round(
                sum(self.plan.targets.get(g, 0.0) for g in hidden), 6
            )
            out[f"mixture_share_{OTHER_GROUP}"] = round(sum(shares.get(g, 0.0) for g in hidden), 6)
        return out
