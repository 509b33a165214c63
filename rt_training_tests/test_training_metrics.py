"""Metric functions against values worked out by hand."""

import math

import numpy as np
import pytest

from rt_training.training.metrics import accuracy, auc, compute_metric, improvement, log_loss, rmse


def test_auc_counts_correctly_ordered_pairs():
    # Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs (pos > neg): (.35,.1) (.8,.1) (.8,.4) = 3 of 4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_auc_ties_count_half():
    # Positive 0.5 ties negative 0.5 (1/2), beats negative 0.2 (1); positive 0.9 beats both (2) -> 3.5 / 4.
    assert auc([1, 0, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_auc_perfect_inverted_and_undefined():
    assert auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert auc([0, 0, 1], [0.3, 0.2, 0.1]) == 0.0
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_weighted_auc_equals_repeating_rows():
    y, s, w = [0, 1, 0, 1, 1], [0.2, 0.2, 0.6, 0.7, 0.1], [2, 1, 1, 3, 1]
    repeated = auc(np.repeat(y, w), np.repeat(s, w))
    assert auc(y, s, weight=w) == pytest.approx(repeated, abs=1e-12)
    # By hand: negatives 0.2 (w2), 0.6 (w1); positives 0.2 (w1): tie with 0.2 -> 1*2*0.5 = 1;
    # 0.7 (w3): beats both -> 3*3 = 9; 0.1 (w1): beats none. Total 10 / (5 * 3) = 2/3.
    assert repeated == pytest.approx(2 / 3, abs=1e-12)


def test_log_loss_by_hand():
    # -(ln 0.8 + ln 0.9) / 2
    assert log_loss([1, 0], [0.8, 0.1]) == pytest.approx(-(math.log(0.8) + math.log(0.9)) / 2, abs=1e-12)
    # weights 3:1 -> (3 * -ln 0.8 + 1 * -ln 0.9) / 4
    expected = (3 * -math.log(0.8) + -math.log(0.9)) / 4
    assert log_loss([1, 0], [0.8, 0.1], weight=[3, 1]) == pytest.approx(expected, abs=1e-12)
    # a confident mistake is clipped, not infinite
    assert math.isfinite(log_loss([1], [0.0]))


def test_accuracy_and_rmse_by_hand():
    assert accuracy([1, 0, 1, 0], [0.9, 0.4, 0.3, 0.5]) == 0.5  # 0.5 counts as class 1
    assert accuracy([1, 0], [0.9, 0.6], weight=[3, 1]) == 0.75
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3), abs=1e-12)
    assert math.isnan(rmse([], []))


def test_compute_metric_from_logits():
    logits = [-2.0, 0.5, 1.0]
    probs = 1 / (1 + np.exp(-np.array(logits)))
    assert compute_metric("log_loss", [0, 1, 1], logits, "binary") == pytest.approx(
        log_loss([0, 1, 1], probs)
    )
    assert compute_metric("accuracy", [0, 0, 1], logits, "binary") == pytest.approx(2 / 3)
    assert compute_metric("auc", [0, 1, 1], logits, "binary") == 1.0
    with pytest.raises(ValueError, match="needs a binary label"):
        compute_metric("auc", [0.3], [0.1], "regression")


@pytest.mark.parametrize(
    ("name", "candidate", "baseline", "expected"),
    [
        ("auc", 0.8, 0.7, 0.1),
        ("accuracy", 0.6, 0.7, -0.1),
        ("log_loss", 0.4, 0.5, 0.1),
        ("rmse", 2.0, 1.0, -1.0),
    ],
)
def test_improvement_direction(name, candidate, baseline, expected):
    assert improvement(name, candidate, baseline) == pytest.approx(expected)
