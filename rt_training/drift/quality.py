"""Quality monitoring: has the champion got worse on recent labelled events than on its validation data?

Input drift says the data moved; a quality drop says the model suffers from it (or from a change in the label
relation that input drift cannot see). Both can trigger retraining, see :mod:`rt_training.drift.trigger`.

Examples
--------
>>> signal = quality_drop("auc", baseline=0.81, recent=0.74, max_drop=0.05)
>>> signal.dropped, signal.reason()
(True, 'quality drop: auc 0.81 -> 0.74 (worse by 0.07 > 0.05)')
>>> quality_drop("log_loss", baseline=0.40, recent=0.42, max_drop=0.05).dropped
False
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from rt_training.training.metrics import HIGHER_IS_BETTER

#: Worsening within this much of the tolerance counts as equal to it (0.90 - 0.85 is 0.05000000000000004).
FLOAT_SLACK = 1e-12


@dataclass(frozen=True)
class QualitySignal:
    """The champion's metric on its validation data and on recent events, and whether it dropped too far.

    ``worsening`` is positive when the recent value is worse (lower AUC/accuracy, higher log loss/RMSE).
    ``dropped`` is ``worsening > max_drop`` (beyond float rounding, see :data:`FLOAT_SLACK`), and ``False``
    when either value is not finite (e.g. AUC on recent events of a single class): no evidence is not a drop.
    """

    metric: str
    baseline: float
    recent: float
    worsening: float
    max_drop: float
    dropped: bool

    def reason(self) -> str:
        """One line for logs and trigger reasons."""
        if not math.isfinite(self.worsening):
            return f"quality unknown: {self.metric} {self.baseline:.4g} -> {self.recent:.4g} (not finite)"
        if self.dropped:
            return (
                f"quality drop: {self.metric} {self.baseline:.4g} -> {self.recent:.4g} "
                f"(worse by {self.worsening:.4g} > {self.max_drop:g})"
            )
        return (
            f"quality held: {self.metric} {self.baseline:.4g} -> {self.recent:.4g} "
            f"(worse by {self.worsening:.4g} <= {self.max_drop:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form (non-finite values as ``None``)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def quality_drop(metric: str, baseline: float, recent: float, max_drop: float) -> QualitySignal:
    """Compare the champion's ``recent`` metric with its ``baseline`` (validation) value.

    Parameters
    ----------
    metric
        One of :data:`HIGHER_IS_BETTER` (the spec's ``training.metric``).
    baseline, recent
        The metric on the champion's validation data and on recent labelled events.
    max_drop
        The largest tolerated absolute worsening (``DriftPolicy.quality_drop``).
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}: expected one of {sorted(HIGHER_IS_BETTER)}")
    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    baseline, recent = float(baseline), float(recent)
    worsening = baseline - recent if HIGHER_IS_BETTER[metric] else recent - baseline
    dropped = math.isfinite(worsening) and worsening > max_drop + FLOAT_SLACK
    return QualitySignal(metric, baseline, recent, worsening, float(max_drop), dropped)
