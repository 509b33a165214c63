"""The reservoirs draw from the distributions their papers promise, checked on seeded repetitions.

Every statistical check is a goodness-of-fit test at alpha = 0.001 with a fixed seed per repetition, so a
pass is reproducible and a wrong sampler fails by a wide margin (see the power check on a biased sampler).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import chi2

from rt_training.sampling import TimeBiasedReservoir, UniformReservoir, WeightedReservoir
from rt_training.sampling.base import Reservoir

ALPHA = 0.001


def _inclusion_counts(make: type[Reservoir] | object, n: int, batches: list[int], reps: int, weights=None):
    """How often each of ``n`` items is a member, over ``reps`` seeded runs fed in the given batch sizes."""
    assert sum(batches) == n
    ids = np.arange(n)
    times = np.arange(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    bounds = np.cumsum([0, *batches])
    for seed in range(reps):
        sampler = make(seed)
        for lo, hi in itertools.pairwise(bounds):
            sampler.update(ids[lo:hi], times[lo:hi], None if weights is None else weights[lo:hi])
        counts[sampler.members] += 1
    return counts


def _uniform_inclusion_pvalue(counts: np.ndarray, k: int, reps: int) -> float:
    """p-value of "every item is included with probability k/n".

    Over ``reps`` independent samples of size k from n items, the counts have mean ``reps p`` (p = k/n) and
    covariance ``reps p (1-p) n/(n-1) (I - J/n)`` (the sample size is fixed), so Pearson's statistic
    ``sum (O - E)^2 / E`` is ``(1 - p) n/(n-1)`` times a chi-squared variable with n - 1 degrees of freedom.
    """
    n = counts.size
    p = k / n
    expected = reps * p
    statistic = ((counts - expected) ** 2 / expected).sum() * (n - 1) / (n * (1 - p))
    return float(chi2.sf(statistic, n - 1))


# -- Algorithm L -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "k", "batches", "reps"),
    [
        (60, 12, [7, 23, 30], 2000),  # fill and accepts spread over batches
        (1000, 10, [1000], 2000),  # long geometric jumps: W is small after the first few accepts
    ],
)
def test_algorithm_l_includes_every_item_with_probability_k_over_n(n, k, batches, reps) -> None:
    counts = _inclusion_counts(lambda s: UniformReservoir(k, seed=s), n, batches, reps)
    assert counts.sum() == reps * k
    assert _uniform_inclusion_pvalue(counts, k, reps) > ALPHA


def test_uniformity_check_rejects_a_biased_sampler() -> None:
    """Power check: a sampler favouring the second half by weight 1.5 fails the same test."""
    n, k, reps = 60, 12, 2000
    weights = np.where(np.arange(n) < n // 2, 1.0, 1.5)
    counts = _inclusion_counts(lambda s: WeightedReservoir(k, seed=s), n, [7, 23, 30], reps, weights)
    assert _uniform_inclusion_pvalue(counts, k, reps) < 1e-6


def test_algorithm_l_keeps_the_whole_stream_while_it_fits() -> None:
    r = UniformReservoir(100, seed=0)
    result = r.update(np.arange(40), np.zeros(40))
    assert result.added_ids.tolist() == list(range(40))
    assert result.evicted_ids.size == 0
    assert r.members.tolist() == list(range(40))


def test_algorithm_l_net_changes_match_the_member_sets() -> None:
    r = UniformReservoir(50, seed=3)
    rng = np.random.default_rng(0)
    start = 0
    for size in rng.integers(1, 400, size=40):
        before = set(r.members.tolist())
        ids = np.arange(start, start + size)
        result = r.update(ids, np.zeros(size))
        after = set(r.members.tolist())
        assert set(result.added_ids.tolist()) == after - before
        assert set(result.evicted_ids.tolist()) == before - after
        assert (ids[result.added_index] == result.added_ids).all()
        assert len(r) == min(50, start + size)
        start += size
    assert r.items_seen == start


def test_string_ids_are_kept_as_python_strings() -> None:
    r = UniformReservoir(3, seed=0)
    r.update(np.array(["a", "bb"]), np.zeros(2))
    r.update(np.array(["a-much-longer-id-than-before"]), [1.0])
    assert r.members.tolist() == ["a", "bb", "a-much-longer-id-than-before"]
    assert all(type(v) is str for v in r.members)
    with pytest.raises(TypeError, match="holds str ids"):
        r.update(np.array([1, 2]), np.zeros(2))


# -- A-Res --------------------------------------------------------------------------------------------


def test_a_res_with_capacity_one_picks_items_in_proportion_to_weight() -> None:
    """k = 1: the member is item i with probability w_i / sum(w) exactly; a zero weight is never picked."""
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 0.0])
    reps = 3000
    counts = _inclusion_counts(lambda s: WeightedReservoir(1, seed=s), 6, [3, 3], reps, weights)
    assert counts[5] == 0
    expected = reps * weights[:5] / weights.sum()
    statistic = ((counts[:5] - expected) ** 2 / expected).sum()
    assert chi2.sf(statistic, 4) > ALPHA


def test_a_res_first_and_second_keys_follow_successive_sampling() -> None:
    """k = 2: the (largest-key, second-key) pair is (i, j) with probability p_i p_j / (1 - p_i).

    A-Res is equivalent to drawing without replacement with probability proportional to weight among the
    items left (Efraimidis & Spirakis, Theorem 1); the key order is the draw order. The 20 ordered pairs of 5
    items form a multinomial, tested with 19 degrees of freedom.
    """
    weights = np.arange(1.0, 6.0)
    p = weights / weights.sum()
    reps = 3000
    ids = np.arange(5)
    pairs = np.zeros((5, 5), dtype=np.int64)
    for seed in range(reps):
        r = WeightedReservoir(2, seed=seed)
        r.update(ids[:2], np.zeros(2), weights[:2])
        r.update(ids[2:], np.zeros(3), weights[2:])
        first, second = r.members[np.argsort(-r.keys)]
        pairs[first, second] += 1
    expected = reps * p[:, None] * p[None, :] / (1 - p[:, None])
    off = ~np.eye(5, dtype=bool)
    statistic = ((pairs[off] - expected[off]) ** 2 / expected[off]).sum()
    assert pairs.trace() == 0
    assert chi2.sf(statistic, 19) > ALPHA


def test_a_res_zero_weights_never_enter_even_when_there_is_room() -> None:
    r = WeightedReservoir(10, seed=0)
    result = r.update(np.arange(5), np.zeros(5), [1.0, 0.0, 2.0, 0.0, 1.0])
    assert sorted(result.added_ids.tolist()) == [0, 2, 4]
    assert r.items_seen == 5
    assert r.total_weight == 4.0


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_invalid_weights_are_refused_with_their_position(bad: float) -> None:
    with pytest.raises(ValueError, match="position 2"):
        WeightedReservoir(3).update(np.arange(4), np.zeros(4), [1.0, 1.0, bad, 1.0])


def test_invalid_times_are_refused() -> None:
    with pytest.raises(ValueError, match="position 1"):
        WeightedReservoir(3).update(np.arange(2), [0.0, np.nan])


# -- time-biased --------------------------------------------------------------------------------------


def test_time_biased_capacity_one_follows_the_exponential_bias_exactly() -> None:
    """k = 1: P(i) = b_i 2^(t_i/h) / sum_j b_j 2^(t_j/h), also with late (out-of-order) events."""
    h = 60.0
    times = np.array([0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 45.0])  # the last one arrives late
    extra = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 2.0])
    reps = 3000
    counts = np.zeros(8, dtype=np.int64)
    for seed in range(reps):
        r = TimeBiasedReservoir(1, half_life_s=h, seed=seed)
        r.update(np.arange(4), times[:4], extra[:4])
        r.update(np.arange(4, 8), times[4:], extra[4:])
        counts[r.members] += 1
    odds = extra * np.exp2(times / h)
    expected = reps * odds / odds.sum()
    statistic = ((counts - expected) ** 2 / expected).sum()
    assert chi2.sf(statistic, 7) > ALPHA


def test_time_biased_sample_halves_with_each_half_life_of_age() -> None:
    """Members per half-life window of age fall off as 2^-age.

    Expectation per window: A-Res keeps item i iff E_i / w_i is below the k-th smallest such value, which for
    a large stream concentrates at a theta solving sum_i (1 - exp(-w_i theta)) = k, so
    P(i in sample) = 1 - exp(-w_i theta) (Rosén's order-sampling approximation; its error is far below the
    sampling noise at k = 2000 of 200,000). The per-window counts are compared with a chi-squared test (the
    counts are sums of Bernoulli variables with variance below their mean, so the test is conservative), and
    the window-to-window ratio is checked against 1/2 directly.
    """
    h, n, k = 100.0, 200_000, 2000
    times = np.sort(np.random.default_rng(5).uniform(0.0, 1000.0, n))
    ids = np.arange(n)
    r = TimeBiasedReservoir(k, half_life_s=h, seed=11)
    for lo in range(0, n, 10_000):
        r.update(ids[lo : lo + 10_000], times[lo : lo + 10_000])
    now = 1000.0
    windows = 7  # the last window pools every age >= 6 half-lives
    observed = np.bincount(np.minimum((now - r.times) // h, windows - 1).astype(int), minlength=windows)
    w = np.exp2(-(now - times) / h)
    theta = brentq(lambda th: np.sum(-np.expm1(-w * th)) - k, 1e-12, 1e6)
    inclusion = -np.expm1(-w * theta)
    expected = np.bincount(
        np.minimum((now - times) // h, windows - 1).astype(int), weights=inclusion, minlength=windows
    )
    statistic = ((observed - expected) ** 2 / expected).sum()
    assert chi2.sf(statistic, windows - 1) > ALPHA
    ratios = observed[1:4] / observed[:3]
    assert np.all(np.abs(ratios - 0.5) < 0.1), ratios


def test_time_biased_keys_do_not_overflow_far_from_the_reference_time() -> None:
    """Weights 2^(t/h) at t = 1.7e9 s, h = 1 s would overflow; the keys stay log-space Gumbel draws."""
    r = TimeBiasedReservoir(5, half_life_s=1.0, seed=0)
    r.update(np.arange(10), 1.7e9 + np.arange(10.0))
    assert np.isfinite(r.keys).all()
    gumbel = r.keys - np.log(2.0) * r.times
    assert np.all(np.abs(gumbel) < 40)


def test_time_biased_needs_a_positive_half_life() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        TimeBiasedReservoir(5, half_life_s=0.0)
