"""A domain classifier: how well can a linear model tell current rows from reference rows?

Per-coordinate tests on a vector field (an embedding of hundreds of dimensions) miss a change that moves the
vectors along a direction no single coordinate shows, and multiply the false alarms. The classifier looks at
all coordinates at once: an L2-regularised logistic regression is fitted on half of each window (label 1 for
current rows) and scored on the other half; its held-out ROC AUC is 0.5 when the windows come from one
distribution and grows with how separable they became.

Fast and repeatable: at most :data:`MAX_ROWS_PER_SIDE` rows of each window (a seeded sample), coordinates
standardized with the training half's mean and std, projected on :data:`MAX_DIM` seeded random Gaussian
directions when there are more (distances are kept up to a small factor, Johnson-Lindenstrauss), and L-BFGS on
the exact gradient.

The threshold (:func:`auc_threshold`) is ``0.5 + MIN_EFFECT + NULL_SDS * sd0``: ``sd0`` is the standard
deviation of a held-out AUC when nothing drifted (Mann-Whitney: ``sqrt((n1 + n2 + 1) / (12 n1 n2))`` for
``n1``/``n2`` held-out rows a side), so small windows do not raise false alarms, and :data:`MIN_EFFECT` keeps
an AUC of 0.55 or less, a separation too small to matter, from counting as drift in large windows.

References
----------
Rabanser, Guennemann and Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting Dataset Shift",
NeurIPS 2019 (domain classifiers as shift detectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

MAX_ROWS_PER_SIDE = 2000
"""Rows drawn from each window (half to fit, half to score): 2,000 a side fit in well under a second."""
MAX_DIM = 256
"""Wider vectors are projected on this many random directions before the fit."""
MIN_EFFECT = 0.05
"""AUC above 0.5 that never counts as drift, however large the windows."""
NULL_SDS = 2.0
"""Standard deviations of the no-drift AUC added to the threshold."""
L2_PENALTY = 1.0
"""``0.5 * L2_PENALTY * ||w||^2`` added to the summed log loss (the intercept is not penalised)."""
MIN_ROWS_PER_SIDE = 4
"""Fewest rows a window needs (two to fit, two to score)."""


@dataclass(frozen=True)
class DomainClassifierOutcome:
    """The held-out AUC, the threshold it was judged at, and the rows used on each side."""

    auc: float
    threshold: float
    drifted: bool
    fit_rows: int
    scored_reference_rows: int
    scored_current_rows: int


def auc_threshold(scored_reference_rows: int, scored_current_rows: int) -> float:
    """``0.5 + MIN_EFFECT + NULL_SDS * sd0``, ``sd0`` the held-out AUC's standard deviation without drift."""
    n1, n2 = scored_reference_rows, scored_current_rows
    return 0.5 + MIN_EFFECT + NULL_SDS * float(np.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2)))


def domain_classifier_auc(
    reference: np.ndarray, current: np.ndarray, seed: int = 0, max_rows: int = MAX_ROWS_PER_SIDE
) -> DomainClassifierOutcome:
    """Fit a reference-vs-current logistic regression on half of each ``[n, dim]`` sample, score the rest.

    Raises
    ------
    ValueError
        A sample has fewer than :data:`MIN_ROWS_PER_SIDE` rows, or the two have different widths.
    """
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"need two [n, dim] samples of one width, got {reference.shape} and {current.shape}")
    if min(len(reference), len(current)) < MIN_ROWS_PER_SIDE:
        raise ValueError(
            f"need at least {MIN_ROWS_PER_SIDE} rows a side, got {len(reference)} reference and "
            f"{len(current)} current"
        )
    rng = np.random.default_rng(seed)
    ref_fit, ref_test = _halves(reference, max_rows, rng)
    cur_fit, cur_test = _halves(current, max_rows, rng)
    x_fit = np.concatenate([ref_fit, cur_fit])
    y_fit = np.concatenate([np.zeros(len(ref_fit)), np.ones(len(cur_fit))])
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std[std == 0] = 1.0
    projection = None
    if x_fit.shape[1] > MAX_DIM:
        projection = rng.standard_normal((x_fit.shape[1], MAX_DIM)) / np.sqrt(MAX_DIM)

    def features(x: np.ndarray) -> np.ndarray:
        z = (x - mean) / std
        return z if projection is None else z @ projection

    weights = _fit_logistic(features(x_fit), y_fit)
    ref_scores = features(ref_test) @ weights[:-1]
    cur_scores = features(cur_test) @ weights[:-1]
    auc = _auc(ref_scores, cur_scores)
    threshold = auc_threshold(len(ref_test), len(cur_test))
    return DomainClassifierOutcome(
        auc=auc,
        threshold=threshold,
        drifted=auc >= threshold,
        fit_rows=len(x_fit),
        scored_reference_rows=len(ref_test),
        scored_current_rows=len(cur_test),
    )


def _halves(sample: np.ndarray, max_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of at most ``max_rows`` rows, shuffled and cut in two (float64)."""
    order = rng.permutation(len(sample))[:max_rows]
    rows = np.asarray(sample, dtype=np.float64)[order]
    half = len(rows) // 2
    return rows[:half], rows[half:]


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights then intercept of the L2-penalised logistic regression (labels 0/1), by L-BFGS."""
    signs = 2.0 * y - 1.0
    n_features = x.shape[1]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        margins = signs * (x @ w + b)
        loss = np.logaddexp(0.0, -margins).sum() + 0.5 * L2_PENALTY * w @ w
        slope = -signs * special.expit(-margins)
        grad = np.empty_like(theta)
        grad[:-1] = x.T @ slope + L2_PENALTY * w
        grad[-1] = slope.sum()
        return float(loss), grad

    fitted = optimize.minimize(loss_and_grad, np.zeros(n_features + 1), jac=True, method="L-BFGS-B")
    return fitted.x


def _auc(negative_scores: np.ndarray, positive_scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U), ties counted half."""
    ranks = stats.rankdata(np.concatenate([negative_scores, positive_scores]))
    n_neg, n_pos = len(negative_scores), len(positive_scores)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_neg * n_pos))
