"""Objectives: what a model's output is trained against, and how it is scored.

The model contract is ``forward(batch) -> output``; the objective of ``spec.label.kind`` gives the loss and the
per-row numbers every metric is computed from, so a factory model can change its inputs and outputs freely as
long as the output has the objective's shape:

============== ======================= ============================================= ==========================
kind           output                  loss                                          metrics
============== ======================= ============================================= ==========================
binary         ``[B]`` logits          binary cross-entropy                          auc, log_loss, accuracy
multiclass     ``[B, classes]`` logits cross-entropy (label -1, an unknown class,    accuracy, log_loss
                                       is left out of the loss, counted wrong)
regression     ``[B]`` values          squared error                                 rmse
language_model ``[B, L, vocab]``       next-token cross-entropy: position ``t``      perplexity, token_loss
                                       predicts token ``t + 1`` where the mask holds
============== ======================= ============================================= ==========================

Scoring runs in batches and keeps only per-row numbers (:class:`RowScores`): the raw output for binary and
regression (AUC needs the ranking), and for the others each row's summed negative log-likelihood, its count
(tokens, or 1) and, for multiclass, whether the top class was right. Every such metric is a ratio of weighted
sums, so the validation gate's paired bootstrap resamples rows and recomputes it exactly
(:func:`rt_training.training.bootstrap.paired_bootstrap_ratio`). A language model's logits never exist for a
whole held-out window at once (``rows x length x vocab`` floats would not fit), only per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rt_training.features.inputs import MASK_SUFFIX
from rt_training.spec import PipelineSpec
from rt_training.training.metrics import compute_metric

if TYPE_CHECKING:
    from rt_training.training.data import TrainingTensors

RATIO_METRICS = ("accuracy", "log_loss", "perplexity", "token_loss")
"""Metrics of multiclass and language-model objectives that are ratios of per-row sums."""


@dataclass(frozen=True)
class RowScores:
    """Per-row numbers a metric is computed from (numpy, aligned with the scored rows).

    ``raw``: the output of a binary or regression model. ``nll`` / ``count``: summed negative log-likelihood
    and what it is summed over (tokens for a language model, 1 for a class). ``correct``: 1.0 where a
    multiclass model's top class is the label.
    """

    raw: np.ndarray | None = None
    nll: np.ndarray | None = None
    count: np.ndarray | None = None
    correct: np.ndarray | None = None

    def __len__(self) -> int:
        for values in (self.raw, self.nll):
            if values is not None:
                return len(values)
        return 0

    def ratio_terms(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(numerator, denominator)`` per row, so ``metric = f(sum(w * num) / sum(w * den))``."""
        if self.nll is None or self.count is None:
            raise ValueError(
                f"metric {metric!r} needs per-row log-likelihoods, these scores hold raw outputs"
            )
        if metric == "accuracy":
            if self.correct is None:
                raise ValueError("accuracy needs to know which rows were right; these scores do not say")
            return self.correct, np.ones_like(self.correct)
        return self.nll, self.count


def ratio_metric(metric: str, num: np.ndarray, den: np.ndarray, weight: np.ndarray | None = None) -> float:
    """``metric`` from per-row terms: the weighted ratio of sums, ``exp`` of it for perplexity."""
    w = np.ones(len(num)) if weight is None else np.asarray(weight, dtype=np.float64)
    total = float((w * den).sum())
    if total <= 0:
        return math.nan
    value = float((w * num).sum()) / total
    return math.exp(min(value, 700.0)) if metric == "perplexity" else value


class Objective:
    """The loss and scores of one label kind; see the module docstring for shapes."""

    def __init__(self, kind: str, text_field: str = "") -> None:
        self.kind = kind
        self.text_field = text_field
        """The text feature a language model predicts."""

    def loss(
        self, output: torch.Tensor, label: torch.Tensor | None, weight: torch.Tensor | None, batch: dict
    ) -> torch.Tensor:
        """Weighted mean loss of a batch (per token for a language model)."""
        nll, count = self.row_nll(output, label, batch)
        if weight is None:
            return nll.sum() / count.sum().clamp_min(1e-12)
        return (nll * weight).sum() / (count * weight).sum().clamp_min(1e-12)

    def row_nll(
        self, output: torch.Tensor, label: torch.Tensor | None, batch: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's summed loss and what it sums over (float32 ``[B]`` both)."""
        output = output.float()
        if self.kind == "binary":
            assert label is not None
            return F.binary_cross_entropy_with_logits(output, label, reduction="none"), torch.ones_like(label)
        if self.kind == "regression":
            assert label is not None
            return F.mse_loss(output, label, reduction="none"), torch.ones_like(label)
        if self.kind == "multiclass":
            assert label is not None
            known = label >= 0
            nll = F.cross_entropy(output, label.clamp_min(0), reduction="none")
            return torch.where(known, nll, torch.zeros_like(nll)), known.float()
        return self._token_nll(output, batch)

    def _token_nll(self, logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = batch[self.text_field], batch[self.text_field + MASK_SUFFIX]
        # Position t predicts token t + 1; the last position predicts nothing.
        target, keep = ids[:, 1:], mask[:, 1:].float()
        flat = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
        ).view_as(keep)
        return (flat * keep).sum(dim=1), keep.sum(dim=1)

    def scores(self, output: torch.Tensor, label: torch.Tensor | None, batch: dict) -> dict[str, np.ndarray]:
        """The per-row numbers of one batch (see :class:`RowScores`), as float64 numpy."""
        if self.kind in ("binary", "regression"):
            return {"raw": output.float().detach().cpu().numpy().astype(np.float64)}
        nll, count = self.row_nll(output, label, batch)
        out = {
            "nll": nll.detach().cpu().numpy().astype(np.float64),
            "count": count.detach().cpu().numpy().astype(np.float64),
        }
        if self.kind == "multiclass":
            assert label is not None
            # A row of an unknown class is never right (accuracy counts every row); log loss counts known ones.
            out["correct"] = (output.argmax(dim=1) == label).cpu().numpy().astype(np.float64)
        return out

    def metric(
        self, name: str, scores: RowScores, label: np.ndarray | None, weight: np.ndarray | None = None
    ) -> float:
        """``name`` over all scored rows (``nan`` on no rows)."""
        if len(scores) == 0:
            return math.nan
        if self.kind in ("binary", "regression"):
            assert scores.raw is not None and label is not None
            return compute_metric(name, label, scores.raw, self.kind, weight)
        num, den = scores.ratio_terms(name)
        return ratio_metric(name, num, den, weight)

    def mean_loss(
        self, scores: RowScores, label: np.ndarray | None, weight: np.ndarray | None = None
    ) -> float:
        """The training loss over all scored rows (what :meth:`loss` gives, without batching)."""
        if len(scores) == 0:
            return math.nan
        if self.kind in ("binary", "regression"):
            assert scores.raw is not None and label is not None
            out, y = torch.from_numpy(scores.raw), torch.from_numpy(np.asarray(label, dtype=np.float64))
            per_row = (
                F.binary_cross_entropy_with_logits(out, y, reduction="none")
                if self.kind == "binary"
                else F.mse_loss(out, y, reduction="none")
            ).numpy()
            return ratio_metric("log_loss", per_row, np.ones_like(per_row), weight)
        assert scores.nll is not None and scores.count is not None
        return ratio_metric("token_loss", scores.nll, scores.count, weight)

    def row_losses(self, scores: RowScores, label: np.ndarray | None) -> np.ndarray:
        """Each row's mean loss (per token for a language model): the sampler's importance signal."""
        if self.kind in ("binary", "regression"):
            assert scores.raw is not None and label is not None
            out, y = torch.from_numpy(scores.raw), torch.from_numpy(np.asarray(label, dtype=np.float64))
            fn: Callable[..., torch.Tensor] = (
                F.binary_cross_entropy_with_logits if self.kind == "binary" else F.mse_loss
            )
            return fn(out, y, reduction="none").numpy()
        assert scores.nll is not None and scores.count is not None
        return scores.nll / np.maximum(scores.count, 1.0)


def objective_for(spec: PipelineSpec) -> Objective:
    """The objective of the spec's label kind."""
    return Objective(spec.label.kind, spec.label.field if spec.label.kind == "language_model" else "")


def baseline_terms(objective: Objective, metric: str, data: TrainingTensors) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(numerator, denominator)`` of the best constant prediction, knowing the held-out targets.

    Multiclass: always the majority class (accuracy) or the class prior (log loss). Language model: the unigram
    distribution of the held-out target tokens, the best prediction that ignores the context. These are the
    references a first champion must beat (:mod:`rt_training.training.gate`).
    """
    if objective.kind == "multiclass":
        assert data.label is not None
        label = data.label.cpu().numpy()
        classes, counts = np.unique(label, return_counts=True)
        if metric == "accuracy":
            return (label == classes[np.argmax(counts)]).astype(np.float64), np.ones(len(label))
        prior = counts / counts.sum()
        return -np.log(prior[np.searchsorted(classes, label)]), np.ones(len(label))
    ids = data.inputs[objective.text_field][:, 1:].cpu().numpy()
    keep = data.inputs[objective.text_field + MASK_SUFFIX][:, 1:].cpu().numpy()
    if not keep.any():
        return np.zeros(len(ids)), np.zeros(len(ids))
    counts = np.bincount(ids[keep], minlength=int(ids.max()) + 1)
    log_p = np.log(np.maximum(counts, 1) / counts.sum())
    return (-(log_p[ids] * keep)).sum(axis=1), keep.sum(axis=1).astype(np.float64)
