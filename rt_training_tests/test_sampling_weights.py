"""Per-example weights: exact values, guarded inputs, and class balance reaching the target mix in a sample."""

from __future__ import annotations

import numpy as np
import pytest

from rt_training.sampling import (
    ClassBalancer,
    PolicyWeights,
    TimeBiasedReservoir,
    WeightedReservoir,
    compose_weights,
    importance_weights,
    normalize,
    recency_weights,
)
from rt_training.sampling.weights import class_keys
from rt_training.spec.models import SamplingPolicy


def test_recency_halves_per_half_life_and_treats_future_events_as_new() -> None:
    w = recency_weights([1000.0, 940.0, 880.0, 700.0, 1010.0], reference_time=1000.0, half_life_s=60.0)
    np.testing.assert_array_equal(w, [1.0, 0.5, 0.25, 2.0**-5, 1.0])


def test_importance_is_proportional_to_loss_with_a_uniform_floor() -> None:
    w = importance_weights([0.0, 0.5, 1.0, 2.5], uniform_mix=0.2)  # mean loss 1
    np.testing.assert_allclose(w, [0.2, 0.6, 1.0, 2.2])
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(importance_weights([0.0, 0.0]), [1.0, 1.0])


@pytest.mark.parametrize("bad", [np.nan, -0.1, np.inf])
def test_importance_refuses_broken_losses(bad: float) -> None:
    with pytest.raises(ValueError, match="losses must be finite and >= 0; position 1"):
        importance_weights([1.0, bad])


def test_class_balancer_weights_by_target_over_observed_share() -> None:
    balancer = ClassBalancer({0: 0.5, 1: 0.5})
    balancer.observe([0, 0, 0, 1], [0.0] * 4)
    np.testing.assert_allclose(balancer.weights([0, 1]), [0.5 / 0.75, 0.5 / 0.25])
    balancer.observe([1, 1, 1, 1], [0.0] * 4)  # now 3 zeros, 5 ones
    np.testing.assert_allclose(balancer.weights([0, 1]), [0.5 / (3 / 8), 0.5 / (5 / 8)])


def test_decayed_class_counts_follow_the_half_life() -> None:
    balancer = ClassBalancer({"a": 0.5, "b": 0.5}, half_life_s=10.0)
    balancer.observe(["a", "a"], [0.0, 0.0])
    balancer.observe(["b"], [20.0])  # the two a's are two half-lives old: count 2 * 1/4 = 0.5
    assert balancer.counts == {"a": 0.5, "b": 1.0}
    np.testing.assert_allclose(balancer.weights(["a", "b"]), [0.5 / (1 / 3), 0.5 / (2 / 3)])


def test_unknown_classes_and_unobserved_classes_are_clear_errors() -> None:
    balancer = ClassBalancer({0: 0.5, 1: 0.5})
    with pytest.raises(ValueError, match=r"\['2'\] are not classes of class_balance \['0', '1'\]"):
        balancer.observe([0, 2], [0.0, 0.0])
    with pytest.raises(ValueError, match="has not been observed yet"):
        balancer.weights([1])


def test_labels_map_to_the_policy_keys() -> None:
    assert class_keys(np.array([0, 1])).tolist() == ["0", "1"]
    assert class_keys(np.array([True, False])).tolist() == ["True", "False"]
    assert class_keys(np.array([1.0, 0.0])).tolist() == ["1", "0"]
    with pytest.raises(ValueError, match="whole numbers"):
        class_keys(np.array([0.5]))


def test_composition_multiplies_and_normalize_sums_to_one() -> None:
    w = compose_weights([1.0, 0.5, 2.0, 4.0], [2.0, 2.0, 0.5, 0.0], [1.0, 3.0, 1.0, 1.0])
    np.testing.assert_array_equal(w, [2.0, 3.0, 1.0, 0.0])
    np.testing.assert_array_equal(normalize(w), [2 / 6, 3 / 6, 1 / 6, 0.0])
    with pytest.raises(ValueError, match="weight factor 1 must be finite"):
        compose_weights([1.0], [np.nan])
    with pytest.raises(ValueError, match="shape"):
        compose_weights([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="sum to 0"):
        normalize([0.0, 0.0])


def test_policy_weights_compose_recency_class_and_importance() -> None:
    policy = SamplingPolicy(
        strategy="weighted", recency_half_life_s=100.0, class_balance={0: 0.5, 1: 0.5}, importance=True
    )
    pw = PolicyWeights(policy, uniform_mix=0.5)
    w = pw.weights(labels=[0, 0, 0, 1], times=[100.0, 0.0, 100.0, 100.0], losses=[1.0, 1.0, 1.0, 5.0])
    recency = np.array([1.0, 0.5, 1.0, 1.0])
    balance = np.array([2 / 3, 2 / 3, 2 / 3, 2.0])
    importance = 0.5 * np.array([1.0, 1.0, 1.0, 5.0]) / 2.0 + 0.5
    np.testing.assert_allclose(w, recency * balance * importance)
    # The clock is the newest event time seen: a later batch of old events is discounted.
    w = pw.weights(labels=[0, 1], times=[0.0, 100.0])
    np.testing.assert_allclose(w, [0.5 * 0.5 / (4 / 6), 1.0 * 0.5 / (2 / 6)])


def test_policy_weights_refuse_contradictory_policies() -> None:
    with pytest.raises(ValueError, match=r"'uniform' .* cannot apply"):
        PolicyWeights(SamplingPolicy(strategy="uniform", importance=True))
    with pytest.raises(ValueError, match=r"needs sampling\.recency_half_life_s"):
        PolicyWeights(SamplingPolicy(strategy="time_biased", recency_half_life_s=None))
    assert PolicyWeights(SamplingPolicy(strategy="uniform")).weights(None, [0.0]) is None


def test_class_balance_reaches_the_target_mix_in_a_weighted_sample() -> None:
    """10% positives in the stream, target 50/50: the sample's positive share is 0.5 within 4 sd (0.044).

    With k = 2000 of 200,000 the without-replacement effect on shares is far below the binomial noise
    (sd sqrt(0.25 / 2000) = 0.011).
    """
    n, k = 200_000, 2000
    rng = np.random.default_rng(3)
    labels = (rng.random(n) < 0.1).astype(np.int64)
    balancer = ClassBalancer({0: 0.5, 1: 0.5})
    r = WeightedReservoir(k, seed=5)
    for lo in range(0, n, 20_000):
        batch = labels[lo : lo + 20_000]
        balancer.observe(batch, np.zeros(batch.size))
        r.update(np.arange(lo, lo + batch.size), np.zeros(batch.size), balancer.weights(batch))
    share = labels[r.members].mean()
    assert abs(share - 0.5) < 0.044, share


def test_decayed_class_balance_tracks_a_changing_mix_in_a_time_biased_sample() -> None:
    """The positive rate drops from 50% to 5% halfway; the time-biased sample mostly holds recent rows.

    Balancing against decayed counts (same half-life) gives 50/50 among the members; balancing against
    all-time counts (27.5% positives) would leave the recent, 5%-positive rows under-weighted (the share
    would be near 0.5 * (0.05 / 0.275) / (0.5 * 0.05 / 0.275 + 0.5 * 0.95 / 0.725) = 0.12).
    The sample must stay small next to the recent positives (about 3,600 within the decayed window here,
    k / 2 = 250 of them wanted), or the heavy positive weights saturate at inclusion probability 1 and the
    mix falls short of the target. Tolerance: 4 sd of a binomial share at k = 500 (0.089).
    """
    n, k, h = 1_000_000, 500, 50.0
    rng = np.random.default_rng(4)
    times = np.linspace(0.0, 1000.0, n)
    labels = (rng.random(n) < np.where(times < 500.0, 0.5, 0.05)).astype(np.int64)
    balancer = ClassBalancer({0: 0.5, 1: 0.5}, half_life_s=h)
    r = TimeBiasedReservoir(k, half_life_s=h, seed=6)
    for lo in range(0, n, 50_000):
        sl = slice(lo, lo + 50_000)
        balancer.observe(labels[sl], times[sl])
        r.update(np.arange(lo, min(lo + 50_000, n)), times[sl], balancer.weights(labels[sl]))
    share = labels[r.members].mean()
    assert abs(share - 0.5) < 0.089, share


def test_weighted_recency_on_an_in_order_stream_counts_from_the_cut() -> None:
    """A seeded in-order stream offered in one-minute batches, as a refresh offers it: against each batch's cut
    the ratio of two rows' weights is exactly 2^(-(age difference) / half-life); against the newest row seen it
    was about 1 inside every batch."""
    rng = np.random.default_rng(7)
    times = np.sort(rng.uniform(0.0, 3600.0, 600)) + 1_230_768_000.0  # an hour of 2009, in order
    half_life = 600.0
    weighting = PolicyWeights(SamplingPolicy(strategy="weighted", recency_half_life_s=half_life))
    for start in range(0, 600, 100):
        batch = times[start : start + 100]
        cut = float(batch[-1]) + 120.0  # the cut is a little after the batch's newest row
        w = weighting.weights(None, batch, reference_time=cut)
        np.testing.assert_allclose(w, np.exp2(-(cut - batch) / half_life), rtol=1e-12)
        np.testing.assert_allclose(w[0] / w[-1], np.exp2(-(batch[-1] - batch[0]) / half_life), rtol=1e-12)
    # The whole hour offered at once (a retraining after a drift report): a row 2 half-lives older weighs 1/4.
    once = PolicyWeights(SamplingPolicy(strategy="weighted", recency_half_life_s=half_life))
    w = once.weights(None, np.array([0.0, 1200.0]) + times[0], reference_time=times[0] + 1200.0)
    np.testing.assert_array_equal(w, [0.25, 1.0])
    assert once.clock == times[0] + 1200.0  # the clock still follows the newest event time seen
