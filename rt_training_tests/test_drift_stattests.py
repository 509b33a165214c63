"""The drift statistics: values against scipy and hand computations, directions at the threshold, test choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from rt_training.drift import choose_stattest, stattests


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "rounding"),
    [(1, 1, None), (7, 3, None), (2000, 1500, None), (100_000, 60_000, None), (5000, 4000, 1), (300, 300, 0)],
)
def test_wasserstein_1_equals_scipy(n_ref: int, n_cur: int, rounding: int | None) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    ref, cur = rng.normal(size=n_ref), rng.standard_t(3, size=n_cur) + 0.2
    if rounding is not None:  # many ties, within and across the samples
        ref, cur = ref.round(rounding), cur.round(rounding)
    ours = stattests.wasserstein_1(np.sort(ref), np.sort(cur))
    assert ours == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-12, abs=1e-15)


def test_wasserstein_norm_divides_by_reference_population_std() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 2, 4000), rng.normal(0.5, 2, 3000)
    score, drifted = stattests.wasserstein_norm(ref, cur)
    assert score == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12)
    assert drifted is bool(score >= 0.1)


def test_wasserstein_norm_floors_a_constant_reference_std() -> None:
    score, drifted = stattests.wasserstein_norm(np.zeros(2000), np.full(2000, 0.0005))
    assert score == pytest.approx(0.0005 / stattests.MIN_NORM)
    assert drifted


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int32])
def test_population_std_matches_pandas_bit_for_bit(dtype: type) -> None:
    values = (np.random.default_rng(5).normal(3, 7, 50_001) * 100).astype(dtype)
    assert stattests.population_std(values) == float(np.std(pd.Series(values)))


def test_ks_is_scipys_two_sided_test_and_drifts_at_equality() -> None:
    rng = np.random.default_rng(11)
    ref, cur = rng.normal(size=400), rng.normal(0.1, size=300)
    p = stats.ks_2samp(ref, cur).pvalue
    assert stattests.ks(ref, cur) == (p, p <= 0.05)
    assert stattests.ks(ref, cur, threshold=p).drifted  # p <= threshold
    assert not stattests.ks(ref, cur, threshold=math.nextafter(p, 0)).drifted


def test_chisquare_scales_reference_counts_to_the_current_size() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([30, 40, 30])
    expected = stats.chisquare(cur, ref * (100 / 100)).pvalue
    score, drifted = stattests.chisquare(ref, cur)
    assert score == pytest.approx(expected, rel=1e-12)
    assert drifted is bool(expected < 0.05)
    assert not stattests.chisquare(ref, cur, threshold=score).drifted  # strictly below


def test_chisquare_value_new_in_current_is_drift() -> None:
    assert stattests.chisquare(np.array([10, 10, 0]), np.array([10, 10, 1])) == (0.0, True)


def test_z_test_against_hand_computation() -> None:
    # reference 30/100 of the second value, current 45/100: pooled 0.375
    z = (0.30 - 0.45) / math.sqrt(0.375 * 0.625 * (1 / 100 + 1 / 100))
    p = 2 * (1 - stats.norm.cdf(abs(z)))
    score, drifted = stattests.z_test(np.array([70, 30]), np.array([55, 45]))
    assert score == pytest.approx(p, rel=1e-12)
    assert drifted is bool(p < 0.05)
    assert stattests.z_test(np.array([70, 30]), np.array([55, 45]), threshold=score).drifted is False


def test_z_test_single_value_everywhere_is_no_drift() -> None:
    assert stattests.z_test(np.array([80]), np.array([20])) == (1.0, False)


def test_jensenshannon_is_scipys_natural_log_distance_of_frequencies() -> None:
    ref, cur = np.array([500, 300, 200]), np.array([20, 50, 30])
    expected = distance.jensenshannon([0.5, 0.3, 0.2], [0.2, 0.5, 0.3])
    assert stattests.jensenshannon(ref, cur) == (pytest.approx(expected, rel=1e-12), expected >= 0.1)
    assert stattests.jensenshannon(ref, cur, threshold=stattests.jensenshannon(ref, cur).score).drifted


@pytest.mark.parametrize(
    ("column_type", "reference_count", "n_values", "expected"),
    [
        ("numeric", 1000, 6, "ks"),
        ("numeric", 1001, 6, "wasserstein"),
        ("numeric", 1000, 5, "chisquare"),
        ("numeric", 1000, 3, "chisquare"),
        ("numeric", 1000, 2, "z"),
        ("numeric", 1001, 5, "jensenshannon"),
        ("categorical", 10, 300, "chisquare"),
        ("categorical", 1000, 3, "chisquare"),
        ("categorical", 1000, 2, "z"),
        ("categorical", 1000, 1, "z"),
        ("categorical", 1001, 2, "jensenshannon"),
        ("categorical", 50_000, 300, "jensenshannon"),
    ],
)
def test_choose_stattest_follows_evidently_defaults(
    column_type: str, reference_count: int, n_values: int, expected: str
) -> None:
    assert choose_stattest(column_type, reference_count, n_values).name == expected  # type: ignore[arg-type]
