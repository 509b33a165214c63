"""The validation gate's rule (floor, held-out size and span, tolerance, significance) and its paired bootstrap."""

import math
import time

import numpy as np
import pytest
from scipy.special import expit

from rt_training.spec import load_spec
from rt_training.training import metrics
from rt_training.training.bootstrap import BootstrapInterval, baseline_metric, paired_bootstrap
from rt_training.training.gate import GateDecision, decide

POLICY = load_spec().training


def policy(**update):
    return POLICY.model_copy(update=update)


def rule(p=POLICY, *, candidate, champion=None, baseline=0.5, rows=1000, span=600.0, interval=None):
    return decide(
        p,
        candidate=candidate,
        champion=champion,
        baseline=baseline,
        holdout_rows=rows,
        holdout_span_s=span,
        interval=interval,
    )


def ci(low, high):
    return BootstrapInterval(low, high, 0.95, 200, 200)


def seeded_task(n=3000, seed=0):
    """Labels with a 30% prior, a strong score, a weak score (the strong one plus noise)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    strong = 2.0 * (y - 0.3) + rng.normal(0.0, 1.0, n)
    weak = strong + rng.normal(0.0, 2.0, n)
    return y, strong, weak


# -- the rule on numbers ----------------------------------------------------------------------------------------


def test_champion_comparison_and_tolerance():
    assert rule(candidate=0.80, champion=0.79).promote
    assert rule(candidate=0.79, champion=0.79).promote  # a tie promotes the fresher model
    worse = rule(candidate=0.78, champion=0.79)
    assert not worse.promote and "worse by 0.01" in worse.reason
    assert rule(policy(promotion_tolerance=0.01), candidate=0.785, champion=0.79).promote
    assert rule(policy(metric="log_loss"), candidate=0.40, champion=0.45, baseline=0.6).promote
    assert not rule(
        policy(metric="rmse", promotion_tolerance=0.1), candidate=1.2, champion=1.0, baseline=2
    ).promote
    assert not rule(candidate=math.nan).promote
    assert "empty" in rule(candidate=0.9, rows=0).reason


@pytest.mark.parametrize(
    ("metric", "baseline", "passes", "fails"),
    [
        ("auc", 0.5, 0.52, 0.505),  # higher is better: must exceed 0.5 + margin
        ("accuracy", 0.7, 0.72, 0.705),  # the majority-class rate
        ("log_loss", 0.61, 0.59, 0.605),  # lower is better: the label prior's log loss minus the margin
        ("rmse", 1.3, 1.28, 1.295),  # the target's standard deviation
    ],
)
def test_first_champion_must_beat_the_trivial_baseline_by_the_margin(metric, baseline, passes, fails):
    p = policy(metric=metric, first_champion_margin=0.01)
    good = rule(p, candidate=passes, baseline=baseline)
    assert (
        good.promote
        and "no champion yet" in good.reason
        and f"trivial baseline {baseline:.4g}" in good.reason
    )
    bad = rule(p, candidate=fails, baseline=baseline)
    assert not bad.promote and "training.first_champion_margin 0.01" in bad.reason
    assert bad.baseline_metric == baseline and bad.champion_metric is None
    # A champion whose metric is undefined is replaced only by a candidate that clears the same floor.
    assert not rule(p, candidate=fails, champion=math.nan, baseline=baseline).promote
    assert rule(p, candidate=passes, champion=math.nan, baseline=baseline).promote


def test_held_out_window_must_be_large_and_long_enough():
    few = rule(policy(min_holdout_rows=200), candidate=0.9, champion=0.6, rows=199)
    assert not few.promote
    assert few.reason == (
        "the held-out window has 199 rows, fewer than training.min_holdout_rows (200): wait for more events, "
        "widen training.holdout_window_s (2m) or lower training.min_holdout_rows"
    )
    assert rule(policy(min_holdout_rows=200), candidate=0.9, champion=0.6, rows=200).promote

    p = policy(min_holdout_span_s=90.0)
    short = rule(p, candidate=0.9, champion=0.6, span=89.5)
    assert not short.promote and short.holdout_span_s == 89.5
    assert short.reason == (
        "the held-out window spans 89.5s of event time, less than training.min_holdout_span_s (1.5m): wait for "
        "more events, widen training.holdout_window_s (2m) or lower training.min_holdout_span_s"
    )
    assert rule(p, candidate=0.9, champion=0.6, span=90.0).promote
    assert not rule(p, candidate=0.9, champion=0.6, span=None).promote  # no time column: span unknown
    assert rule(candidate=0.9, champion=0.6, span=None).promote  # no span required by default


def test_require_significant_checks_the_lower_bound():
    strict = policy(require_significant=True, promotion_tolerance=0.0)
    # Better on the point estimate, but the interval reaches below 0: not significant.
    unsure = rule(strict, candidate=0.80, champion=0.79, interval=ci(-0.002, 0.022))
    assert not unsure.promote
    assert "95% CI of the gain [-0.002, 0.022] over 200 paired bootstrap resamples" in unsure.reason
    assert "lower bound -0.002 is not above 0 (training.promotion_tolerance)" in unsure.reason
    assert (unsure.ci_low, unsure.ci_high, unsure.ci_confidence, unsure.ci_samples) == (
        -0.002,
        0.022,
        0.95,
        200,
    )
    assert unsure.ci_versus == "champion"
    assert rule(strict, candidate=0.80, champion=0.79, interval=ci(0.001, 0.02)).promote
    # Identical models (interval [0, 0]): a tolerance lets them through, tolerance 0 does not.
    assert not rule(strict, candidate=0.79, champion=0.79, interval=ci(0.0, 0.0)).promote
    tolerant = policy(require_significant=True, promotion_tolerance=0.005)
    assert rule(tolerant, candidate=0.79, champion=0.79, interval=ci(0.0, 0.0)).promote
    assert not rule(tolerant, candidate=0.79, champion=0.79, interval=ci(-0.006, 0.004)).promote
    # The first champion: the lower bound of the gain over the baseline must exceed the margin.
    first = rule(strict, candidate=0.56, interval=ci(0.004, 0.11))
    assert not first.promote and first.ci_versus == "baseline"
    assert rule(strict, candidate=0.56, interval=ci(0.02, 0.11)).promote
    assert not rule(strict, candidate=0.56, interval=None).promote
    # Without require_significant the interval is reported but does not decide.
    assert rule(candidate=0.80, champion=0.79, interval=ci(-0.002, 0.022)).promote


def test_decision_is_json_able_and_old_decisions_read_back():
    decision = rule(candidate=0.8, champion=0.7, interval=ci(0.05, 0.15))
    assert GateDecision(**decision.to_dict()) == decision
    old = {
        "promote": True,
        "metric_name": "auc",
        "candidate_metric": 0.8,
        "champion_metric": None,
        "tolerance": 0.0,
        "holdout_rows": 1000,
        "reason": "no champion yet; candidate auc 0.8 is finite",
    }
    restored = GateDecision(**old)
    assert restored.promote and restored.baseline_metric is None and restored.ci_low is None


# -- the paired bootstrap ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["auc", "log_loss", "accuracy", "rmse"])
def test_bootstrap_matches_scoring_each_resample_with_the_metrics_module(metric):
    """Same seed, same draws: the vectorized interval equals a loop over resamples scored one by one."""
    y, strong, weak = seeded_task(n=400, seed=1)
    samples, confidence = 60, 0.9
    drawn = np.random.default_rng((5, 0xB0075)).integers(0, len(y), size=(samples, len(y)))
    score = {
        "auc": lambda t, s: metrics.auc(t, s),
        "log_loss": lambda t, s: metrics.log_loss(t, expit(s)),
        "accuracy": lambda t, s: metrics.accuracy(t, expit(s)),
        "rmse": lambda t, s: metrics.rmse(t, s),
    }[metric]
    sign = 1.0 if metrics.HIGHER_IS_BETTER[metric] else -1.0
    gains = [sign * (score(y[i], strong[i]) - score(y[i], weak[i])) for i in drawn]
    expected = np.quantile(gains, [0.05, 0.95])
    got = paired_bootstrap(metric, y, strong, weak, samples=samples, confidence=confidence, seed=5)
    assert (got.low, got.high) == pytest.approx(tuple(expected), abs=1e-12)
    assert got.samples == got.valid_samples == samples and got.confidence == confidence


def test_bootstrap_separates_a_better_model_and_not_identical_ones():
    y, strong, weak = seeded_task()
    better = paired_bootstrap("auc", y, strong, weak, samples=200, seed=0)
    assert metrics.auc(y, strong) - metrics.auc(y, weak) == pytest.approx(0.1800, abs=1e-4)
    assert better.low == pytest.approx(0.1608, abs=1e-4) and better.high == pytest.approx(0.1993, abs=1e-4)
    same = paired_bootstrap("auc", y, weak, weak.copy(), samples=200, seed=0)
    assert (same.low, same.high) == (0.0, 0.0)
    # Two different models of the same quality (same signal, independent noise): the interval holds 0.
    twin = 2.0 * (y - 0.3) + np.random.default_rng(9).normal(0.0, 1.0, len(y))
    equal = paired_bootstrap("auc", y, strong, twin, samples=200, seed=0)
    assert equal.low < 0.0 < equal.high
    vs_baseline = paired_bootstrap("log_loss", y, np.zeros_like(y), None, samples=200, seed=0)
    assert vs_baseline.high < 0  # logit 0 (p = 0.5) is worse than the label prior on every resample


def test_baselines_are_the_best_constant_predictions():
    y = np.array([1.0, 0.0, 0.0, 0.0])
    assert baseline_metric("auc", y) == 0.5
    assert baseline_metric("accuracy", y) == 0.75
    assert baseline_metric("log_loss", y) == pytest.approx(metrics.log_loss(y, np.full(4, 0.25)))
    assert baseline_metric("rmse", y) == pytest.approx(metrics.rmse(y, np.full(4, 0.25)))
    assert baseline_metric("accuracy", y, weight=[3.0, 1.0, 1.0, 0.0]) == 0.6
    assert math.isnan(baseline_metric("auc", []))


def test_bootstrap_is_fast_enough_for_the_gate():
    y, strong, weak = seeded_task(n=5000)
    start = time.perf_counter()
    paired_bootstrap("auc", y, strong, weak, samples=200, seed=0)
    assert time.perf_counter() - start < 2.0
