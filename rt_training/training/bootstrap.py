"""Paired bootstrap of a metric difference, and the trivial baseline every model must beat.

The gate compares two predictions of the *same* held-out rows. Resampling rows with replacement and scoring
both predictions on each resample keeps the pairing (a hard row is hard for both models), so the interval is
about the difference, not about each metric separately (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13; the percentile interval).

A resample is a vector of counts (how often each row was drawn), so every metric on a resample is the
weighted metric with weights ``weight * counts``: the scores are sorted once for AUC, and all resamples of a
chunk are scored with a few matrix operations.

The trivial baseline predicts the same value for every row, chosen knowing the held-out labels: AUC 0.5, the
label prior's log loss, the majority-class rate, the standard deviation of the target (RMSE of its mean). It
is recomputed on each resample, so the interval against it is also paired.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=float)
>>> good = np.array([-2.0, -1.0, 1.0, 2.0, -0.5, 0.5, -1.5, 1.5])
>>> [round(baseline_metric(m, y[:3]), 4) for m in ("auc", "log_loss", "accuracy")]
[0.5, 0.6365, 0.6667]
>>> vs_baseline = paired_bootstrap("auc", y, good, None, samples=50, confidence=0.9, seed=0)
>>> (vs_baseline.low, vs_baseline.high, vs_baseline.valid_samples)
(0.5, 0.5, 50)
>>> same = paired_bootstrap("log_loss", y, good, good, samples=50, seed=0)
>>> (same.low, same.high)
(0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from rt_training.training.metrics import HIGHER_IS_BETTER

_CHUNK_CELLS = 4_000_000
"""Resamples are scored in chunks of at most this many (resample, row) cells (32 MB of float64)."""
_EPS = 1e-7
"""Probability clipping, the same as :func:`rt_training.training.metrics.log_loss`."""


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile interval of ``improvement(candidate, reference)``: positive means the candidate is better.

    ``valid_samples`` counts resamples where both metrics were defined (an AUC resample with one class is
    not); the percentiles are taken over those.
    """

    low: float
    high: float
    confidence: float
    samples: int
    valid_samples: int


def _prepare(
    y: npt.ArrayLike, weight: npt.ArrayLike | None, *outputs: npt.ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    outs = [None if o is None else np.asarray(o, dtype=np.float64).ravel() for o in outputs]
    for length in [len(w), *(len(o) for o in outs if o is not None)]:
        if length != len(y):
            raise ValueError(
                f"labels ({len(y)} rows) and predictions or weights ({length} rows) differ in length"
            )
    return y, w, outs


def _weighted_metrics(name: str, y: np.ndarray, raw: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric of one prediction under each row of ``weights`` (shape ``[resamples, rows]``)."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "auc":
            order = np.argsort(raw, kind="mergesort")
            ranked = raw[order]
            starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
            w_sorted = weights[:, order]
            is_pos = (y[order] > 0.5)[None, :]
            pos_run = np.add.reduceat(np.where(is_pos, w_sorted, 0.0), starts, axis=1)
            neg_run = np.add.reduceat(np.where(is_pos, 0.0, w_sorted), starts, axis=1)
            neg_below = np.cumsum(neg_run, axis=1) - neg_run
            correct = (pos_run * (neg_below + 0.5 * neg_run)).sum(axis=1)
            pairs = pos_run.sum(axis=1) * neg_run.sum(axis=1)
            return np.where(pairs > 0, correct / pairs, np.nan)
        if name == "log_loss":
            p = np.clip(expit(raw), _EPS, 1.0 - _EPS)
            per_row = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
        elif name == "accuracy":
            per_row = ((expit(raw) >= 0.5) == (y > 0.5)).astype(np.float64)
        elif name == "rmse":
            per_row = (raw - y) ** 2
        else:
            raise ValueError(f"unknown metric {name!r}; choose one of {sorted(HIGHER_IS_BETTER)}")
        mean = (weights @ per_row) / total
        return np.sqrt(mean) if name == "rmse" else mean


def _weighted_baselines(name: str, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The trivial baseline's metric under each row of ``weights``."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights @ y) / total
        if name == "auc":
            return np.where(total > 0, 0.5, np.nan)
        if name == "log_loss":
            p = np.clip(mean, _EPS, 1.0 - _EPS)
            return -(mean * np.log(p) + (1.0 - mean) * np.log1p(-p))
        if name == "accuracy":
            return np.maximum(mean, 1.0 - mean)
        if name == "rmse":
            return np.sqrt(np.maximum((weights @ (y * y)) / total - mean * mean, 0.0))
    raise ValueError(f"unknown metric {name!r}; choose one of {sorted(HIGHER_IS_BETTER)}")


def baseline_metric(name: str, y_true: npt.ArrayLike, weight: npt.ArrayLike | None = None) -> float:
    """The metric of the best constant prediction for these labels (``nan`` on no rows).

    auc: 0.5 (a constant ranks no pair); log_loss: the label prior's; accuracy: the majority class's rate;
    rmse: the target's standard deviation (predicting its mean).
    """
    y, w, _ = _prepare(y_true, weight)
    if not len(y):
        return math.nan
    return float(_weighted_baselines(name, y, w[None, :])[0])


def paired_bootstrap(
    name: str,
    y_true: npt.ArrayLike,
    candidate: npt.ArrayLike,
    reference: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None,
    *,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile interval of the candidate's improvement over a reference on resamples of the same rows.

    Parameters
    ----------
    name
        The metric (``auc``, ``log_loss``, ``accuracy``, ``rmse``).
    candidate, reference
        Raw model outputs for each row (logits for binary labels, values for regression); ``reference=None``
        compares with the trivial baseline (:func:`baseline_metric`) recomputed on each resample.
    samples, confidence, seed
        Number of resamples, the interval's coverage (e.g. 0.95: the 2.5th and 97.5th percentiles) and the
        seed of the resampling: the same seed gives the same interval.
    """
    y, w, (cand, ref) = _prepare(y_true, weight, candidate, reference)
    assert cand is not None

    def gains(weights: np.ndarray) -> np.ndarray:
        cand_m = _weighted_metrics(name, y, cand, weights)
        ref_m = (
            _weighted_baselines(name, y, weights) if ref is None else _weighted_metrics(name, y, ref, weights)
        )
        return cand_m - ref_m if HIGHER_IS_BETTER[name] else ref_m - cand_m

    return _percentile_interval(gains, w, samples=samples, confidence=confidence, seed=seed)


def _percentile_interval(
    gains: Callable[[np.ndarray], np.ndarray], w: np.ndarray, *, samples: int, confidence: float, seed: int
) -> BootstrapInterval:
    """Draw ``samples`` resamples of the rows (as count vectors times the row weights ``w``), score each with
    ``gains`` (chunks of resamples at once, ``[resamples, rows]`` in, one gain per resample out) and take the
    percentile interval over the resamples whose gain is defined."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    n = len(w)
    if n == 0:
        return BootstrapInterval(math.nan, math.nan, confidence, samples, 0)
    rng = np.random.default_rng((seed, 0xB0075))
    parts: list[np.ndarray] = []
    chunk = max(1, _CHUNK_CELLS // n)
    for first in range(0, samples, chunk):
        size = min(chunk, samples - first)
        drawn = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        counts = np.bincount((drawn + offsets).ravel(), minlength=size * n).reshape(size, n)
        parts.append(gains(counts * w[None, :]))
    gain = np.concatenate(parts)
    gain = gain[np.isfinite(gain)]
    if not len(gain):
        return BootstrapInterval(math.nan, math.nan, confidence, samples, 0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(gain, [tail, 1.0 - tail])
    return BootstrapInterval(float(low), float(high), confidence, samples, len(gain))


def _ratio_values(name: str, num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        value = (weights @ num) / (weights @ den)
        return np.exp(np.minimum(value, 700.0)) if name == "perplexity" else value


def paired_bootstrap_ratio(
    name: str,
    candidate: tuple[npt.ArrayLike, npt.ArrayLike],
    reference: tuple[npt.ArrayLike, npt.ArrayLike],
    weight: npt.ArrayLike | None = None,
    *,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """:func:`paired_bootstrap` for a metric that is a ratio of per-row sums.

    ``candidate`` and ``reference`` are ``(numerator, denominator)`` per row (from
    :meth:`RowScores.ratio_terms <rt_training.training.objectives.RowScores.ratio_terms>`; a baseline's terms
    for a first champion): multiclass accuracy and log loss, a language model's perplexity and token loss. A
    resample's metric is ``sum(c * w * num) / sum(c * w * den)`` with ``c`` the draw counts, ``exp`` of it for
    perplexity, so the pairing and the resampling unit (a row, i.e. a whole text) are the same as for
    :func:`paired_bootstrap`.

    Examples
    --------
    >>> nll = np.array([2.0, 4.0, 1.0, 3.0]); tokens = np.array([1.0, 2.0, 1.0, 1.0])
    >>> same = paired_bootstrap_ratio("perplexity", (nll, tokens), (nll, tokens), samples=20, seed=0)
    >>> (same.low, same.high, same.valid_samples)
    (0.0, 0.0, 20)
    """
    cand_num, w, (cand_den, ref_num, ref_den) = _prepare(candidate[0], weight, candidate[1], *reference)
    assert cand_den is not None and ref_num is not None and ref_den is not None

    def gains(weights: np.ndarray) -> np.ndarray:
        cand_m = _ratio_values(name, cand_num, cand_den, weights)
        ref_m = _ratio_values(name, ref_num, ref_den, weights)
        return cand_m - ref_m if HIGHER_IS_BETTER[name] else ref_m - cand_m

    return _percentile_interval(gains, w, samples=samples, confidence=confidence, seed=seed)
