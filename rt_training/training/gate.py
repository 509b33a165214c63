"""The validation gate: a candidate becomes champion only if it is at least as good on recent held-out data.

After TFX's Evaluator "blessing": candidate and champion are scored on the same window (silver rows newer than
the candidate's training set, so neither model has seen them) with the spec's metric. ``gain`` below is
``improvement(candidate, reference)``: positive means the candidate is better, whichever way the metric runs.
The rule, in order (each rejection names the numbers and the spec field to change):

1. The window must hold at least ``training.min_holdout_rows`` rows whose event times span at least
   ``training.min_holdout_span_s`` (max - min of the time field).
2. The candidate's metric must be finite (AUC is undefined on one class; a diverged model gives ``nan``).
3. No champion yet (or one whose metric is undefined): the reference is the trivial baseline, a constant
   prediction scored on the same rows (:func:`~rt_training.training.bootstrap.baseline_metric`; for a
   multiclass label the majority class or the class prior, for a language model the held-out unigram
   distribution: :func:`~rt_training.training.objectives.baseline_terms`), and the candidate needs
   ``gain > first_champion_margin``.
4. A champion: the candidate needs ``gain >= -promotion_tolerance``. A tie with tolerance 0 promotes: the
   fresher model is as good and has seen more recent data.
5. A paired bootstrap of the held-out rows gives a ``confidence`` interval of ``gain``; it is always reported.
   With ``require_significant`` its lower bound must also clear the bar of 3 or 4 strictly:
   ``low > first_champion_margin``, or ``low > -promotion_tolerance`` (with tolerance 0: the candidate is
   better at that confidence; a tie is not enough).

Every decision carries the reason, for the registry's history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from rt_training.spec import PipelineSpec
from rt_training.spec.durations import format_duration
from rt_training.spec.models import TrainingPolicy
from rt_training.training.bootstrap import (
    BootstrapInterval,
    baseline_metric,
    paired_bootstrap,
    paired_bootstrap_ratio,
)
from rt_training.training.checkpoints import Restored
from rt_training.training.data import TrainingTensors, tensors_from_arrow
from rt_training.training.loop import score_rows
from rt_training.training.metrics import improvement
from rt_training.training.objectives import (
    RATIO_METRICS,
    RowScores,
    baseline_terms,
    objective_for,
    ratio_metric,
)


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, the metrics on the held-out window, and why.

    Fields after ``reason`` have defaults so a decision written before they existed still reads back.
    ``ci_low``/``ci_high`` bound ``improvement(candidate, ci_versus)`` (positive: the candidate is better) at
    ``ci_confidence`` over ``ci_samples`` paired bootstrap resamples; ``ci_versus`` is ``champion`` or
    ``baseline``.
    """

    promote: bool
    metric_name: str
    candidate_metric: float
    champion_metric: float | None
    tolerance: float
    holdout_rows: int
    reason: str
    baseline_metric: float | None = None
    holdout_span_s: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_confidence: float | None = None
    ci_samples: int | None = None
    ci_versus: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def decide(
    policy: TrainingPolicy,
    *,
    candidate: float,
    champion: float | None,
    baseline: float | None,
    holdout_rows: int,
    holdout_span_s: float | None,
    interval: BootstrapInterval | None = None,
) -> GateDecision:
    """The promotion rule (see the module docstring) on numbers already measured.

    ``champion=None``: there is no champion yet. ``holdout_span_s=None``: the span is unknown (no time column),
    which passes only when ``policy.min_holdout_span_s`` is 0. ``interval``: the bootstrap interval of the gain
    over the champion (or over the baseline when there is no finite champion metric).
    """
    name = policy.metric
    first = champion is None or not math.isfinite(champion)
    ci = {}
    if interval is not None:
        ci = {
            "ci_low": interval.low,
            "ci_high": interval.high,
            "ci_confidence": interval.confidence,
            "ci_samples": interval.samples,
            "ci_versus": "baseline" if first else "champion",
        }

    def result(promote: bool, reason: str) -> GateDecision:
        return GateDecision(
            promote,
            name,
            candidate,
            champion,
            policy.promotion_tolerance,
            holdout_rows,
            reason,
            baseline_metric=baseline,
            holdout_span_s=holdout_span_s,
            **ci,
        )

    span = "unknown" if holdout_span_s is None else format_duration(holdout_span_s)
    window = f"{holdout_rows} held-out rows spanning {span} of event time"
    if holdout_rows == 0:
        return result(False, "the held-out window is empty: no rows newer than the training set to judge on")
    if holdout_rows < policy.min_holdout_rows:
        return result(
            False,
            f"the held-out window has {holdout_rows} rows, fewer than training.min_holdout_rows "
            f"({policy.min_holdout_rows}): wait for more events, widen training.holdout_window_s "
            f"({format_duration(policy.holdout_window_s)}) or lower training.min_holdout_rows",
        )
    if policy.min_holdout_span_s > 0 and (
        holdout_span_s is None or holdout_span_s < policy.min_holdout_span_s
    ):
        return result(
            False,
            f"the held-out window spans {span} of event time, less than training.min_holdout_span_s "
            f"({format_duration(policy.min_holdout_span_s)}): wait for more events, widen "
            f"training.holdout_window_s ({format_duration(policy.holdout_window_s)}) or lower "
            "training.min_holdout_span_s",
        )
    if not math.isfinite(candidate):
        return result(
            False,
            f"candidate {name} is {candidate} on {window} "
            "(undefined: e.g. a single class in the window, or a diverged model)",
        )
    confidence = ""
    if interval is not None and interval.valid_samples:
        confidence = (
            f"; {interval.confidence:.0%} CI of the gain [{_fmt(interval.low)}, {_fmt(interval.high)}] "
            f"over {interval.samples} paired bootstrap resamples"
        )
    if first:
        if baseline is None or not math.isfinite(baseline):
            return result(
                False,
                f"no finite trivial baseline {name} ({baseline}) on {window} to hold the first champion to",
            )
        gain = improvement(name, candidate, baseline)
        bar, field = policy.first_champion_margin, "training.first_champion_margin"
        prefix = "no champion yet" if champion is None else f"champion {name} is {champion}"
        versus = (
            f"{prefix}; candidate {name} {_fmt(candidate)} vs trivial baseline {_fmt(baseline)} "
            f"(a constant prediction) on {window}: gain {_fmt(gain)}, needs > {field} {bar:g}{confidence}"
        )
        passed = gain > bar
    else:
        assert champion is not None
        gain = improvement(name, candidate, champion)
        bar, field = -policy.promotion_tolerance or 0.0, "training.promotion_tolerance"  # not -0.0
        versus = (
            f"candidate {name} {_fmt(candidate)} vs champion {_fmt(champion)} on {window} "
            f"(tolerance {policy.promotion_tolerance:g}){confidence}"
        )
        passed = gain >= bar
        if not passed:
            return result(False, f"{versus}: worse by {_fmt(-gain)}")
    if not passed:
        return result(False, f"{versus}: not enough")
    if policy.require_significant:
        if interval is None or not interval.valid_samples:
            return result(False, f"{versus}: no confidence interval, and training.require_significant is set")
        if not interval.low > bar:
            return result(
                False,
                f"{versus}: the CI's lower bound {_fmt(interval.low)} is not above {_fmt(bar)} "
                f"({field}) and training.require_significant is set",
            )
    if first:
        return result(True, f"{versus}: promoted")
    return result(True, f"{versus}: {'better' if gain > 0 else 'within tolerance'}")


def _span_s(holdout: pa.Table, time_field: str) -> float | None:
    if time_field not in holdout.column_names or holdout.num_rows == 0:
        return None
    bounds = pc.min_max(holdout.column(time_field)).as_py()
    if bounds["min"] is None:
        return None
    return (bounds["max"] - bounds["min"]).total_seconds()


def run_gate(
    spec: PipelineSpec,
    candidate: Restored,
    champion: Restored | None,
    holdout: pa.Table,
    device: str | torch.device = "cpu",
) -> GateDecision:
    """Score both models on ``holdout`` (silver rows as Arrow) and apply :func:`decide`.

    Each model sees the rows through its own feature state (a candidate's vocabulary may have grown), so both
    are judged on the same events; the event-time span comes from the spec's time field.
    """
    policy = spec.training
    name = policy.metric
    objective = objective_for(spec)
    device = torch.device(device)
    span = _span_s(holdout, spec.time_field)

    def scored(which: Restored) -> tuple[TrainingTensors, RowScores]:
        data = tensors_from_arrow(holdout, spec, which.state, where="holdout")
        return data, score_rows(which.model.to(device), data, objective, device)

    data, candidate_scores = scored(candidate)
    label = None if data.label is None else data.label.numpy()
    weight = None if data.weight is None else data.weight.numpy()
    champion_scores, champion_label = None, label
    if champion is not None:
        champion_data, champion_scores = scored(champion)
        # A multiclass label is encoded by each model's own classes (a champion's lacks the ones added since).
        if champion_data.label is not None:
            champion_label = champion_data.label.numpy()
    champion_metric = (
        None if champion_scores is None else objective.metric(name, champion_scores, champion_label, weight)
    )
    first = champion_metric is None or not math.isfinite(champion_metric)
    candidate_metric = objective.metric(name, candidate_scores, label, weight)
    interval, baseline = None, math.nan
    if name in RATIO_METRICS:
        base_terms = baseline_terms(objective, name, data) if len(data) else None
        baseline = ratio_metric(name, *base_terms, weight) if base_terms is not None else math.nan
        if len(data):
            reference = base_terms if first or champion_scores is None else champion_scores.ratio_terms(name)
            assert reference is not None
            interval = paired_bootstrap_ratio(
                name,
                candidate_scores.ratio_terms(name),
                reference,
                weight,
                samples=policy.bootstrap_samples,
                confidence=policy.confidence,
                seed=policy.seed,
            )
    else:
        assert label is not None
        baseline = baseline_metric(name, label, weight) if len(data) else math.nan
        if len(data):
            interval = paired_bootstrap(
                name,
                label,
                candidate_scores.raw,
                None if first or champion_scores is None else champion_scores.raw,
                weight,
                samples=policy.bootstrap_samples,
                confidence=policy.confidence,
                seed=policy.seed,
            )
    return decide(
        policy,
        candidate=candidate_metric,
        champion=champion_metric,
        baseline=baseline,
        holdout_rows=len(data),
        holdout_span_s=span,
        interval=interval,
    )
