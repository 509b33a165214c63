"""Evaluation metrics on numpy arrays: AUC, log loss, accuracy, RMSE.

Each function takes the true labels and the model's prediction as a probability (binary metrics) or a value
(RMSE), plus optional per-row weights. They are plain numpy so the validation gate, the training loop and
tests share one definition. :data:`HIGHER_IS_BETTER` tells the gate which way a metric improves.

Examples
--------
>>> round(auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
0.75
>>> accuracy([0, 1, 1], [0.2, 0.7, 0.4])
0.6666666666666666
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.special import expit

ArrayLike = npt.ArrayLike

HIGHER_IS_BETTER: dict[str, bool] = {
    "auc": True,
    "accuracy": True,
    "log_loss": False,
    "rmse": False,
    "perplexity": False,
    "token_loss": False,
}

METRIC_SPLIT_KEY = "metric_split"
"""Lineage key of a registry ``promoted``/``rejected`` event saying which data its metric was measured on."""
VALIDATION, HOLDOUT = "validation", "holdout"
"""The training run's validation split (rows of the training set), and the gate's held-out window (newer rows)."""


def _prepare(
    y_true: ArrayLike, y_pred: ArrayLike, weight: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape[0]} rows) and predictions ({p.shape[0]} rows) differ in length")
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    if w.shape != y.shape:
        raise ValueError(f"weights ({w.shape[0]} rows) and labels ({y.shape[0]} rows) differ in length")
    return y, p, w


def _weighted_mean(values: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    return float((values * w).sum() / total) if total > 0 else math.nan


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span (what Mann-Whitney U needs)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_of = np.repeat(np.arange(len(starts)), ends - starts)
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run_of]
    return ranks


def auc(y_true: ArrayLike, y_score: ArrayLike, weight: ArrayLike | None = None) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); a positive-negative tie counts 1/2.

    Weighted AUC is the weighted share of (positive, negative) pairs ranked correctly, computed by sorting the
    weighted positives and negatives once. Returns ``nan`` when only one class is present: AUC is undefined
    there, and the gate refuses a ``nan`` rather than guessing.
    """
    y, s, w = _prepare(y_true, y_score, weight)
    pos = y > 0.5
    if weight is None:
        n_pos = int(pos.sum())
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            return math.nan
        ranks = _average_ranks(s)
        return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    w_pos, w_neg = w[pos].sum(), w[~pos].sum()
    if w_pos <= 0 or w_neg <= 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    s_sorted, pos_sorted, w_sorted = s[order], pos[order], w[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    neg_w_per_run = np.add.reduceat(np.where(pos_sorted, 0.0, w_sorted), starts)
    pos_w_per_run = np.add.reduceat(np.where(pos_sorted, w_sorted, 0.0), starts)
    neg_below = np.cumsum(neg_w_per_run) - neg_w_per_run
    correct = (pos_w_per_run * (neg_below + 0.5 * neg_w_per_run)).sum()
    return float(correct / (w_pos * w_neg))


def log_loss(
    y_true: ArrayLike, y_prob: ArrayLike, weight: ArrayLike | None = None, eps: float = 1e-7
) -> float:
    """Mean binary cross-entropy (natural log); probabilities are clipped to ``[eps, 1 - eps]`` so one
    confident mistake costs a large but finite amount."""
    y, p, w = _prepare(y_true, y_prob, weight)
    p = np.clip(p, eps, 1.0 - eps)
    losses = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return _weighted_mean(losses, w)


def accuracy(
    y_true: ArrayLike, y_prob: ArrayLike, weight: ArrayLike | None = None, threshold: float = 0.5
) -> float:
    """Share of rows whose predicted class (probability >= ``threshold``) equals the label."""
    y, p, w = _prepare(y_true, y_prob, weight)
    correct = ((p >= threshold) == (y > 0.5)).astype(np.float64)
    return _weighted_mean(correct, w)


def rmse(y_true: ArrayLike, y_pred: ArrayLike, weight: ArrayLike | None = None) -> float:
    """Root mean squared error (``nan`` on no rows, like the other metrics)."""
    y, p, w = _prepare(y_true, y_pred, weight)
    return math.sqrt(_weighted_mean((p - y) ** 2, w))


def compute_metric(
    name: str, y_true: ArrayLike, raw_output: ArrayLike, label_kind: str, weight: ArrayLike | None = None
) -> float:
    """A metric from a model's raw output: logits are turned into probabilities for binary labels."""
    if name not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(HIGHER_IS_BETTER)}")
    out = np.asarray(raw_output, dtype=np.float64)
    if name == "rmse":
        return rmse(y_true, out, weight)
    if label_kind != "binary":
        raise ValueError(f"metric {name!r} needs a binary label, the label kind is {label_kind!r}")
    prob = expit(out)
    if name == "auc":
        return auc(
            y_true, out, weight
        )  # ranks are the same for logits and probabilities; logits keep ties exact
    if name == "log_loss":
        return log_loss(y_true, prob, weight)
    return accuracy(y_true, prob, weight)


def improvement(name: str, candidate: float, baseline: float) -> float:
    """How much ``candidate`` beats ``baseline`` on metric ``name``: positive is better, either direction."""
    diff = candidate - baseline
    return diff if HIGHER_IS_BETTER[name] else -diff


def metric_split(event: str, lineage: dict[str, object]) -> str | None:
    """Where a registry event's metric was measured: ``validation``, ``holdout`` or ``None`` (not recorded).

    A ``registered`` event carries the training run's validation metric. A gate decision carries the held-out
    metric and says so in its lineage (:data:`METRIC_SPLIT_KEY`); a hand promotion copies the validation metric;
    a rollback copies the split of the promotion it returns to. Rows written before the key existed: a
    rejection came from the gate (held-out), a promotion is not known.
    """
    if event == "registered":
        return VALIDATION
    split = lineage.get(METRIC_SPLIT_KEY)
    if isinstance(split, str):
        return split
    return HOLDOUT if event == "rejected" else None
