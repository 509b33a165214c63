"""The validation gate: a candidate becomes champion only if it is at least as good on recent held-out data.

After TFX's Evaluator "blessing": candidate and champion are scored on the same window (silver rows newer than
the candidate's training set, so neither model has seen them) with the spec's metric. The candidate is
promoted when ``improvement >= -promotion_tolerance``, where improvement is ``candidate - champion`` for
metrics where higher is better (auc, accuracy) and ``champion - candidate`` for the others (log_loss, rmse). A
tie with tolerance 0 promotes: the fresher model is as good and has seen more recent data. Without a champion,
the first candidate is promoted if its metric is finite. Every decision carries the reason, for the registry's
history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from rt_training.spec import PipelineSpec
from rt_training.training.data import TrainingTensors, tensors_from_arrow
from rt_training.training.loop import evaluate
from rt_training.training.metrics import improvement


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, both metrics on the held-out window, and why."""

    promote: bool
    metric_name: str
    candidate_metric: float
    champion_metric: float | None
    tolerance: float
    holdout_rows: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    metric_name: str,
    candidate_metric: float,
    champion_metric: float | None,
    tolerance: float,
    holdout_rows: int,
) -> GateDecision:
    """The promotion rule on two numbers (``champion_metric=None``: there is no champion yet)."""

    def result(promote: bool, reason: str) -> GateDecision:
        return GateDecision(
            promote, metric_name, candidate_metric, champion_metric, tolerance, holdout_rows, reason
        )

    if holdout_rows == 0:
        return result(False, "the held-out window is empty: no rows newer than the training set to judge on")
    if not math.isfinite(candidate_metric):
        return result(
            False,
            f"candidate {metric_name} is {candidate_metric} on {holdout_rows} held-out rows "
            "(undefined: e.g. a single class in the window, or a diverged model)",
        )
    if champion_metric is None:
        return result(True, f"no champion yet; candidate {metric_name} {candidate_metric:.6g} is finite")
    if not math.isfinite(champion_metric):
        return result(
            True, f"champion {metric_name} is {champion_metric}; candidate {candidate_metric:.6g} is finite"
        )
    gain = improvement(metric_name, candidate_metric, champion_metric)
    versus = (
        f"candidate {metric_name} {candidate_metric:.6g} vs champion {champion_metric:.6g} "
        f"on {holdout_rows} held-out rows (tolerance {tolerance:g})"
    )
    if gain >= -tolerance:
        return result(True, f"{versus}: {'better' if gain > 0 else 'within tolerance'}")
    return result(False, f"{versus}: worse by {-gain:.6g}")


def run_gate(
    spec: PipelineSpec,
    candidate: nn.Module,
    champion: nn.Module | None,
    holdout: pa.Table | TrainingTensors,
    device: str | torch.device = "cpu",
) -> GateDecision:
    """Score both models on ``holdout`` (silver rows as Arrow, or tensors) and apply :func:`decide`."""
    data = (
        holdout
        if isinstance(holdout, TrainingTensors)
        else tensors_from_arrow(holdout, spec, where="holdout")
    )
    data = data.to(device)
    _, candidate_metric = evaluate(candidate.to(device), data, spec)
    champion_metric = None
    if champion is not None:
        _, champion_metric = evaluate(champion.to(device), data, spec)
    return decide(
        spec.training.metric, candidate_metric, champion_metric, spec.training.promotion_tolerance, len(data)
    )
