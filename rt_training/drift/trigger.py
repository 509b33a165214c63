"""Whether to launch a retraining now: pure decisions from the latest signals, the last launch and the policy.

A drifting stream keeps drifting until a new model is trained and promoted, so without a guard every check
would launch another GPU job. Two guards apply, in this order: at most one retraining in flight, and a cooldown
of ``DriftPolicy.cooldown_s`` after the last launch. The caller (the Dagster sensor) owns the state: it passes
the time of its last launch and whether that run is still going, and records a launch when it makes one.

Both times are *event time*: ``now`` is the pipeline's watermark (:attr:`rt_training.eventtime.EventClock.
watermark_s`) and ``last_launch_at`` the watermark when the last retraining launched. A replay of last year's
topic then cools down over 10 minutes of its own events, not over 10 minutes of the wall clock in which it may
pass through weeks of data; a stalled stream's watermark stands still, so its cooldown does too.

:func:`periodic_due` is the event-time schedule (``training.retrain_every_s`` of event time, or
``training.retrain_every_rows`` new silver rows, since the last retraining launch or the champion's cut).

Examples
--------
>>> from rt_training.drift.quality import quality_drop
>>> from rt_training.spec.models import DriftPolicy
>>> signal = quality_drop("auc", baseline=0.81, recent=0.74, max_drop=0.05)
>>> policy = DriftPolicy(cooldown_s=600)
>>> decide_retraining(quality=signal, now=1000.0, last_launch_at=880.0, in_flight=False, policy=policy).reasons
('quality drop: auc 0.81 -> 0.74 (worse by 0.07 > 0.05)', 'cooldown: last retraining 2m of event time ago < 10m')
>>> decide_retraining(quality=signal, now=1000.0, last_launch_at=None, in_flight=False, policy=policy).launch
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rt_training.drift.detector import DriftResult
from rt_training.drift.quality import QualitySignal
from rt_training.spec.durations import format_duration
from rt_training.spec.models import DriftPolicy, TrainingPolicy

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
        Event-time seconds: the current watermark and the watermark at the last launch (``None`` before the
        first launch).
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
        held = (
            f"cooldown: last retraining {format_duration(round(now - last_launch_at, 3))} of event time ago "
            f"< {format_duration(policy.cooldown_s)}"
        )
        return TriggerDecision(False, (*reasons, held))
    return TriggerDecision(True, tuple(reasons))


def periodic_due(
    *,
    policy: TrainingPolicy,
    now: float,
    since: float | None,
    new_rows: int | None,
    in_flight: bool,
) -> TriggerDecision:
    """Whether periodic retraining is due: ``retrain_every_s`` of event time or ``retrain_every_rows`` rows.

    Parameters
    ----------
    policy
        Its ``retrain_every_s`` and ``retrain_every_rows`` (either or both may be set; neither: never due).
    now, since
        The current watermark and the event time the period counts from (the watermark at the last retraining
        launch, else the champion's cut), in seconds; ``since`` is ``None`` when there is neither.
    new_rows
        Silver rows with event time after ``since`` (``None``: not counted).
    in_flight
        Whether a retraining is running; a due period waits for it.

    Examples
    --------
    >>> policy = TrainingPolicy(retrain_every_s="30d", retrain_every_rows=1000)
    >>> periodic_due(policy=policy, now=31 * 86400.0, since=0.0, new_rows=10, in_flight=False).reason
    '30d of event time since the last retraining (31d >= 30d)'
    >>> periodic_due(policy=policy, now=86400.0, since=0.0, new_rows=10, in_flight=False).reason
    'not due: 1d of event time < 30d, 10 new rows < 1000'
    """
    every_s, every_rows = policy.retrain_every_s, policy.retrain_every_rows
    if every_s is None and every_rows is None:
        return TriggerDecision(False, ("no periodic retraining (training.retrain_every_s/_rows unset)",))
    if since is None:
        return TriggerDecision(False, ("not due: no champion and no retraining launched yet",))
    elapsed = max(now - since, 0.0)
    due: list[str] = []
    waiting: list[str] = []
    if every_s is not None:
        span = f"{format_duration(round(elapsed, 3))}"
        if elapsed >= every_s:
            due.append(
                f"{format_duration(every_s)} of event time since the last retraining "
                f"({span} >= {format_duration(every_s)})"
            )
        else:
            waiting.append(f"{span} of event time < {format_duration(every_s)}")
    if every_rows is not None and new_rows is not None:
        if new_rows >= every_rows:
            due.append(f"{new_rows} new silver rows since the last retraining (>= {every_rows})")
        else:
            waiting.append(f"{new_rows} new rows < {every_rows}")
    if not due:
        return TriggerDecision(False, ("not due: " + ", ".join(waiting),))
    if in_flight:
        return TriggerDecision(False, (*due, IN_FLIGHT))
    return TriggerDecision(True, tuple(due))
