"""The champion's side of continual training: register a candidate, decide it with the gate, score the champion.

A trained candidate is registered with its checkpoint, validation metric and lineage (plus where its job config
and result are). The decision on the newest candidate comes from its training run, which scored the candidate
and the champion it started from on the held-out window; when the champion has moved since (a manual promote
or rollback) or the run started from scratch while a champion exists, both are scored again here on the same
window, so a candidate is always judged against the champion it would replace. Promotions and rejections are
single registry commits (:class:`~rt_training.training.registry.ModelRegistry`).

Dagster-free; imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rt_training.training.gate import GateDecision
from rt_training.training.registry import (
    REGISTRY_TABLE,
    Candidate,
    ModelRegistry,
    RegistryError,
    RegistryEvent,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec.models import PipelineSpec
    from rt_training.training.launch import LaunchPlan

SAMPLES_PER_S = "samples_per_s"
"""Key of the training throughput in a registered checkpoint's ``lineage["metrics"]`` (read by monitoring)."""


def registry_for(spec: PipelineSpec, lake: LakeLocation) -> ModelRegistry:
    """The pipeline's model registry at ``<lake>/<pipeline>/model_registry``."""
    options = dict(lake.storage_options) if lake.storage_options else None
    return ModelRegistry(lake.uri(spec.name, REGISTRY_TABLE), options)


def register_candidate(
    registry: ModelRegistry, spec: PipelineSpec, result: dict[str, Any], plan: LaunchPlan, run_id: str
) -> RegistryEvent:
    """Register the checkpoint a training run wrote (``result`` is the entry point's result JSON)."""
    checkpoint = result["checkpoint"]
    lineage = dict(result["lineage"])
    lineage["metrics"] = {**lineage.get("metrics", {}), SAMPLES_PER_S: result["train"]["samples_per_s"]}
    lineage["job"] = {
        "run_id": run_id,
        "config_path": str(plan.config_path),
        "result_path": str(plan.result_path),
        "gate_champion_id": None if plan.warm_start is None else plan.warm_start.checkpoint_id,
    }
    metric = _finite(result["metrics"].get(spec.training.metric))
    scored = "undefined" if metric is None else f"{metric:.4g}"
    reason = (
        f"trained on training set version {lineage['training_set_version']}: {result['train']['steps']} steps, "
        f"validation {spec.training.metric} {scored}"
    )
    candidate = Candidate(
        checkpoint_id=checkpoint["id"],
        path=checkpoint["path"],
        sha256=checkpoint["sha256"],
        metric_name=spec.training.metric,
        metric_value=metric,
        lineage=lineage,
    )
    return registry.register(candidate, reason=reason)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on a candidate, as recorded in the registry."""

    decision: str
    """``promoted`` or ``rejected``."""
    candidate_id: str
    metric_name: str
    candidate_metric: float | None
    """Held-out metrics (the gate's window), like the ones below."""
    champion_metric: float | None
    tolerance: float
    holdout_rows: int | None
    reason: str
    previous_champion_id: str | None
    champion_id: str | None
    source: str
    """``training run`` (the run's own gate), ``re-scored`` (scored again here) or ``recorded earlier``."""
    registry_seq: int
    baseline_metric: float | None = None
    """The trivial baseline's metric on the held-out window (see :mod:`rt_training.training.gate`)."""
    holdout_span_s: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_confidence: float | None = None
    ci_versus: str | None = None

    def metadata(self) -> dict[str, Any]:
        """Flat values for the ``champion_model`` materialization (``None`` left out)."""
        out = {
            "decision": self.decision,
            "candidate_id": self.candidate_id,
            "metric_name": self.metric_name,
            "candidate_metric": self.candidate_metric,
            "champion_metric": self.champion_metric,
            "tolerance": self.tolerance,
            "holdout_rows": self.holdout_rows,
            "reason": self.reason,
            "previous_champion_id": self.previous_champion_id,
            "champion_id": self.champion_id,
            "decided_by": self.source,
            "registry_seq": self.registry_seq,
            "holdout_baseline_metric": self.baseline_metric,
            "holdout_span_s": self.holdout_span_s,
            "gain_ci_low": self.ci_low,
            "gain_ci_high": self.ci_high,
            "gain_ci_confidence": self.ci_confidence,
            "gain_ci_versus": self.ci_versus,
        }
        return {
            k: v
            for k, v in out.items()
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _rescore(
    spec: PipelineSpec,
    registry: ModelRegistry,
    candidate: RegistryEvent,
    champion: RegistryEvent | None,
    scored_against: str | None,
) -> GateDecision:
    """Score the candidate and the current champion on the candidate's held-out window."""
    from rt_training.training.checkpoints import load_checkpoint, restore_model
    from rt_training.training.data import read_holdout
    from rt_training.training.entrypoint import read_config
    from rt_training.training.gate import run_gate

    config_path = candidate.lineage.get("job", {}).get("config_path")
    if config_path is None:
        raise RegistryError(
            f"candidate {candidate.checkpoint_id} in {registry.uri} was not registered by a training run (its "
            "lineage has no job config), so there is no held-out window to judge it on; promote it by hand with "
            "`rt-training model promote` if it should be the champion"
        )
    config = read_config(config_path)
    if config.holdout is None:
        raise RegistryError(
            f"candidate {candidate.checkpoint_id}'s job config {config_path} has no held-out window to judge it on"
        )
    model = restore_model(load_checkpoint(candidate.path, candidate.sha256), spec)
    loaded = registry.load_champion() if champion is not None else None
    champion_model = None if loaded is None else restore_model(loaded.checkpoint, spec)
    holdout = read_holdout(
        config.holdout.uri,
        spec,
        after=config.holdout.after,
        version=config.holdout.version,
        storage_options=registry.storage_options,
    )
    decision = run_gate(spec, model, champion_model, holdout, "cpu")
    against = "no champion" if loaded is None else f"champion {loaded.entry.checkpoint_id}"
    trained = "no champion" if scored_against is None else f"champion {scored_against}"
    return dataclasses.replace(
        decision,
        reason=f"{decision.reason} (scored here against {against}; the training run compared with {trained})",
    )


def decide_latest_candidate(spec: PipelineSpec, registry: ModelRegistry) -> Verdict | None:
    """Promote or reject the newest registered candidate (one registry commit); ``None`` when there is none.

    A candidate that already has a decision is reported as it was recorded, without a new commit, so a retried
    step does not decide twice.
    """
    history = registry.history()
    registered = [e for e in history if e.event == "registered"]
    if not registered:
        return None
    candidate = registered[-1]
    recorded = [
        e
        for e in history
        if e.event in ("promoted", "rejected")
        and e.checkpoint_id == candidate.checkpoint_id
        and e.seq > candidate.seq
    ]
    champion = registry.champion()
    if recorded:
        event = recorded[-1]
        return Verdict(
            decision=event.event,
            candidate_id=candidate.checkpoint_id,
            metric_name=spec.training.metric,
            candidate_metric=_finite(event.metric_value),
            champion_metric=_finite(event.champion_metric_value),
            tolerance=spec.training.promotion_tolerance,
            holdout_rows=None,
            reason=event.reason,
            previous_champion_id=None,
            champion_id=None if champion is None else champion.checkpoint_id,
            source="recorded earlier",
            registry_seq=event.seq,
        )
    job = candidate.lineage.get("job", {})
    scored_against = job.get("gate_champion_id")
    result_path = Path(job.get("result_path", ""))
    gate = json.loads(result_path.read_text()).get("gate") if result_path.is_file() else None
    current_id = None if champion is None else champion.checkpoint_id
    if gate is not None and scored_against == current_id:
        decision, source = GateDecision(**gate), "training run"
    else:
        decision, source = _rescore(spec, registry, candidate, champion, scored_against), "re-scored"
    move = registry.promote if decision.promote else registry.reject
    event = move(
        candidate.checkpoint_id,
        decision.reason,
        metric_value=_finite(decision.candidate_metric),
        champion_metric_value=_finite(decision.champion_metric),
    )
    return Verdict(
        decision=event.event,
        candidate_id=candidate.checkpoint_id,
        metric_name=decision.metric_name,
        candidate_metric=_finite(decision.candidate_metric),
        champion_metric=_finite(decision.champion_metric),
        tolerance=decision.tolerance,
        holdout_rows=decision.holdout_rows,
        reason=decision.reason,
        previous_champion_id=current_id,
        champion_id=candidate.checkpoint_id if decision.promote else current_id,
        source=source,
        registry_seq=event.seq,
        baseline_metric=decision.baseline_metric,
        holdout_span_s=decision.holdout_span_s,
        ci_low=decision.ci_low,
        ci_high=decision.ci_high,
        ci_confidence=decision.ci_confidence,
        ci_versus=decision.ci_versus,
    )


@dataclass(frozen=True)
class ChampionScore:
    """The champion loaded (sha256 verified) and scored on the current held-out window."""

    champion_id: str | None
    metric_name: str
    metric: float
    loss: float
    holdout_rows: int
    holdout_after: str | None
    fell_back: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.champion_id is not None and math.isfinite(self.metric) and not self.fell_back


def score_champion(spec: PipelineSpec, lake: LakeLocation) -> ChampionScore:
    """Load the champion as serving would and score it on silver rows after the newest training-set cut.

    Raises
    ------
    RegistryError
        When no champion (nor an earlier one) can be loaded.
    """
    from rt_training.sampling.training_set import current_training_set
    from rt_training.training.checkpoints import restore_model
    from rt_training.training.data import read_holdout, tensors_from_arrow
    from rt_training.training.loop import evaluate

    registry = registry_for(spec, lake)
    loaded = registry.load_champion()
    if loaded is None:
        return ChampionScore(None, spec.training.metric, math.nan, math.nan, 0, None, False, [])
    info = current_training_set(spec, lake)
    after = None if info is None else info.cut
    holdout = read_holdout(
        lake.uri(spec.name, "silver"), spec, after=after, storage_options=registry.storage_options
    )
    restored = restore_model(loaded.checkpoint, spec)
    data = tensors_from_arrow(holdout, spec, restored.state, where="held-out window")
    loss, metric = evaluate(restored.model, data, spec)
    return ChampionScore(
        champion_id=loaded.entry.checkpoint_id,
        metric_name=spec.training.metric,
        metric=metric,
        loss=loss,
        holdout_rows=len(data),
        holdout_after=None if after is None else after.isoformat(),
        fell_back=loaded.fell_back,
        problems=loaded.problems,
    )


def champion_losses(spec: PipelineSpec, registry: ModelRegistry) -> Callable[[pa.Table], Any] | None:
    """The champion's per-row loss on silver rows (the sampler's importance signal); ``None`` without one.

    The champion is loaded (sha256 verified) only when the returned function is first called.
    """
    if registry.champion() is None:
        return None
    model: list[Any] = []

    def losses(rows: pa.Table) -> Any:
        from rt_training.training.checkpoints import restore_model
        from rt_training.training.data import tensors_from_arrow
        from rt_training.training.loop import row_losses

        if not model:
            loaded = registry.load_champion()
            assert loaded is not None
            model.append(restore_model(loaded.checkpoint, spec))
        champion = model[0]
        return row_losses(
            champion.model, tensors_from_arrow(rows, spec, champion.state, where="new silver rows"), spec
        )

    return losses
