"""Whether to launch a retraining now: a pure decision from the latest signals, the last launch and the policy.

A drifting stream keeps drifting until a new model is trained and promoted, so without a guard every check
would launch another GPU job. Two guards apply, in this order: at most one retraining in flight, and a cooldown
of ``DriftPolicy.cooldown_s`` after the last launch. The caller (the Dagster sensor) owns the state: it passes
the time of its last launch and whether that run is still going, and records a launch when it makes one.

Examples
--------
>>> from rt_training.drift.quality import quality_drop
>>> from rt_training.spec.models import DriftPolicy
>>> signal = quality_drop("auc", baseline=0.81, recent=0.74, max_drop=0.05)
>>> policy = DriftPolicy(cooldown_s=600)
>>> decide_retraining(quality=signal, now=1000.0, last_launch_at=880.0, in_flight=False, policy=policy).reasons
('quality drop: auc 0.81 -> 0.74 (worse by 0.07 > 0.05)', 'cooldown: last retraining 120s ago < 600s')
>>> decide_retraining(quality=signal, now=1000.0, last_launch_at=None, in_flight=False, policy=policy).launch
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rt_training.drift.detector import DriftResult
from rt_training.drift.quality import QualitySignal
from rt_training.spec.models import DriftPolicy

IN_FLIGHT = "retraining already in flight"


@dataclass(frozen=True)
class TriggerDecision:
    """Launch or not, and why: the signals seen first, then the guard that held a launch back (if any)."""

    launch: bool
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """All reasons on one line."""
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form."""
        return {"launch": self.launch, "reasons": list(self.reasons)}


def decide_retraining(
    *,
    now: float,
    last_launch_at: float | None,
    in_flight: bool,
    policy: DriftPolicy,
    drift: DriftResult | None = None,
    quality: QualitySignal | None = None,
) -> TriggerDecision:
    """Decide whether to launch a retraining.

    Parameters
    ----------
    now, last_launch_at
        Seconds on one clock (e.g. Unix time); ``last_launch_at`` is ``None`` before the first launch.
    in_flight
        Whether a retraining launched earlier has not finished yet.
    policy
        Its ``cooldown_s`` applies here; drift share and quality tolerance were applied by the signals.
    drift, quality
        The latest drift result and quality signal, either may be missing (no window or no labels yet).

    Returns
    -------
    TriggerDecision
        ``launch`` is true when dataset drift or a quality drop was seen and neither guard holds it back.
    """
    reasons: list[str] = []
    if drift is not None:
        label = "dataset drift" if drift.dataset_drift else "no dataset drift"
        reasons.append(f"{label}: {drift.summary()}")
    if quality is not None:
        reasons.append(quality.reason())
    triggered = (drift is not None and drift.dataset_drift) or (quality is not None and quality.dropped)
    if not reasons:
        reasons.append("no drift result or quality signal yet")
    if not triggered:
        return TriggerDecision(False, tuple(reasons))
    if in_flight:
        return TriggerDecision(False, (*reasons, IN_FLIGHT))
    if last_launch_at is not None and now - last_launch_at < policy.cooldown_s:
        held = f"cooldown: last retraining {now - last_launch_at:.0f}s ago < {policy.cooldown_s:g}s"
        return TriggerDecision(False, (*reasons, held))
    return TriggerDecision(True, tuple(reasons))
