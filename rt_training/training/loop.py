"""The training loop: warm start, AdamW, gradient clipping, bf16 on CUDA, early stopping, DDP.

:func:`train` reads top to bottom: set up device, seed and model (from the champion's weights or from
scratch), then up to ``training.epochs`` epochs of seeded, rank-sharded batches, a validation pass after each
epoch, and early stopping on the spec's metric (``early_stopping_patience`` epochs without a gain above
``early_stopping_min_delta``). The maximum is generous so the same policy fits a fresh model, which needs many
epochs, and a warm-started one, which stops after a few. It returns a :class:`TrainResult` holding the best
epoch's weights and a JSON-able summary.

Supports: one process on CPU or one GPU; ``torch.distributed`` already initialized (e.g. by torchrun) → the
model is wrapped in DDP, each rank trains on its shard, losses are averaged over ranks and rank 0 decides
early stopping for everyone; ``torch.compile`` when the policy (or the caller) asks for it. Deterministic for
a given seed on CPU.

Every label kind goes through the same loop: the model takes the batch dict, the objective of the spec's label
kind (:mod:`rt_training.training.objectives`) gives the loss and the validation metric.

Raises :class:`~rt_training.training.checkpoints.IncompatibleCheckpointError` when the warm-start checkpoint
does not fit the spec, and :class:`~rt_training.training.data.TrainingDataError` when there is nothing to train on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rt_training.features.inputs import MASK_SUFFIX
from rt_training.features.state import FeatureState
from rt_training.spec import PipelineSpec
from rt_training.training.checkpoints import check_compatible
from rt_training.training.data import EpochBatches, TrainingDataError, TrainingTensors
from rt_training.training.metrics import improvement
from rt_training.training.models import build_model, grow_state_dict
from rt_training.training.objectives import Objective, RowScores, objective_for

log = logging.getLogger(__name__)

EVAL_BATCH = 16_384
CURVE_POINTS = 100


@dataclass(frozen=True)
class Progress:
    """One progress report: every ``log_every`` steps (``kind="step"``) and after each epoch's validation."""

    kind: Literal["step", "epoch"]
    step: int
    epoch: int
    loss: float
    samples_per_s: float
    metric_name: str
    validation_metric: float | None = None
    validation_loss: float | None = None

    def line(self) -> str:
        text = f"epoch {self.epoch} step {self.step} loss {self.loss:.4f} {self.samples_per_s:,.0f} samples/s"
        if self.validation_metric is not None:
            text += f" | validation {self.metric_name} {self.validation_metric:.4f}"
            text += f" loss {self.validation_loss:.4f}"
        return text


@dataclass
class TrainResult:
    """What a run produced. ``model`` holds the best epoch's weights (unwrapped from DDP/compile)."""

    metric_name: str
    metrics: dict[str, float]
    initial_validation_loss: float | None
    loss_first: float
    loss_last: float
    loss_min: float
    loss_curve: list[tuple[int, float]]
    samples_per_s: float
    steps: int
    total_steps: int
    epochs: int
    best_epoch: int
    stopped_early: bool
    train_rows: int
    validation_rows: int
    train_seconds: float
    device: str
    world_size: int
    tokens_per_s: float | None
    """Real (unpadded) tokens trained on per second, for a language model; ``None`` otherwise."""
    grown: bool
    """Whether the warm start grew embeddings or the output (new vocabulary entries or classes)."""
    model: nn.Module = field(repr=False)
    optimizer_state: dict[str, Any] = field(repr=False)
    state: FeatureState = field(repr=False)
    """The feature state the model's inputs are made with (saved with its checkpoint)."""

    def summary(self) -> dict[str, Any]:
        """Everything but the model, optimizer and feature state, as JSON-able values."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("model", "optimizer_state", "state")}
        out["loss_curve"] = [[s, v] for s, v in self.loss_curve]
        return out


def distributed_rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/``None``: the local rank's GPU when CUDA is available, else the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(device)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 keeps fp32's exponent range, so no loss scaling is needed; on CPU autocast is slower, so it is off.
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def score_rows(
    model: nn.Module, data: TrainingTensors, objective: Objective, device: torch.device | None = None
) -> RowScores:
    """The per-row numbers of ``objective`` for every row, in eval mode and in batches (CPU numpy).

    Batches are sized in cells, not rows: a language model's logits are ``rows x length x vocab``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    widest = max((t[0].numel() for t in data.inputs.values() if t.dim() > 1 and len(t)), default=1)
    rows_per_batch = max(1, EVAL_BATCH // widest) if objective.kind == "language_model" else EVAL_BATCH
    for start in range(0, len(data), rows_per_batch):
        batch = data.rows(start, start + rows_per_batch).to(device)
        with _autocast(device):
            output = model(batch.inputs)
        for key, values in objective.scores(output, batch.label, batch.inputs).items():
            parts.setdefault(key, []).append(values)
    model.train(was_training)
    return RowScores(**{k: np.concatenate(v) for k, v in parts.items()})


@torch.no_grad()
def prediction_summary(model: nn.Module, data: TrainingTensors, spec: PipelineSpec) -> np.ndarray:
    """One number per row describing the model's output, for drift monitoring (float64).

    Binary: the probability; regression: the value; multiclass: the top class's probability (how sure the model
    is); language model: the row's mean token loss (how surprising the text is to the model). None of these
    needs the label.
    """
    objective = objective_for(spec)
    if objective.kind in ("binary", "regression"):
        raw = score_rows(model, data, objective).raw
        assert raw is not None
        return 1.0 / (1.0 + np.exp(-raw)) if objective.kind == "binary" else raw
    if objective.kind == "language_model":
        scores = score_rows(model, data, objective)
        assert scores.nll is not None and scores.count is not None
        return scores.nll / np.maximum(scores.count, 1.0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(data), EVAL_BATCH):
        batch = data.rows(start, start + EVAL_BATCH).to(device)
        with _autocast(device):
            parts.append(torch.softmax(model(batch.inputs).float(), dim=1).amax(dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


def row_losses(model: nn.Module, data: TrainingTensors, spec: PipelineSpec) -> np.ndarray:
    """Each row's loss under ``model`` (float64, unweighted; per token for a language model): the sampler's
    importance signal.

    Build ``data`` from silver rows with :func:`~rt_training.training.data.tensors_from_arrow` and the model's
    own feature state; the result is aligned with those rows.
    """
    objective = objective_for(spec)
    return objective.row_losses(score_rows(model, data, objective), _numpy(data.label)).astype(np.float64)


def evaluate(model: nn.Module, data: TrainingTensors, spec: PipelineSpec) -> tuple[float, float]:
    """``(loss, metric)`` of ``model`` on ``data`` with the spec's loss and metric (``nan`` on no rows)."""
    if len(data) == 0:
        return math.nan, math.nan
    objective = objective_for(spec)
    scores = score_rows(model, data, objective)
    label, weight = _numpy(data.label), _numpy(data.weight)
    return (
        objective.mean_loss(scores, label, weight),
        objective.metric(spec.training.metric, scores, label, weight),
    )


def _downsample(values: list[float], points: int = CURVE_POINTS) -> list[tuple[int, float]]:
    if not values:
        return []
    idx = np.unique(np.linspace(0, len(values) - 1, min(points, len(values))).round().astype(int))
    return [(int(i), float(values[i])) for i in idx]


def train(
    spec: PipelineSpec,
    state: FeatureState,
    train_data: TrainingTensors,
    valid_data: TrainingTensors,
    *,
    init_checkpoint: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    log_every: int = 50,
    progress: Callable[[Progress], None] | None = None,
    compile_model: bool | None = None,
) -> TrainResult:
    """Train the spec's model on ``train_data``, early-stopping on ``valid_data``.

    Parameters
    ----------
    state
        The feature state ``train_data`` and ``valid_data`` were made with; it sizes the model's embeddings
        and output. It may have grown against the checkpoint's (new vocabulary entries or classes): the
        checkpoint's rows are kept and the new rows start fresh (:func:`grow_state_dict`).
    init_checkpoint
        A verified checkpoint dict (the champion) to warm-start from, weights and optimizer state; ``None``
        trains
        from scratch. The policy's learning rate and weight decay replace the ones saved with the optimizer.
    max_steps
        Stop after this many optimizer steps (for smoke tests and benchmarks); epochs and early stopping still
        apply.
    progress
        Called on rank 0 with each :class:`Progress`; by default progress goes to this module's logger.
    compile_model
        Override ``spec.training.compile``.
    """
    policy = spec.training
    rank, world = distributed_rank_and_world()
    device = resolve_device(device)
    report = progress if progress is not None else (lambda p: log.info(p.line()))
    if len(train_data) == 0:
        raise TrainingDataError(f"no training rows for pipeline {spec.name!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")

    # Same seed on every rank: identical initial weights and batch order (DDP also broadcasts rank 0's
    # weights).
    torch.manual_seed(policy.seed)
    model = build_model(spec, state).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=policy.learning_rate, weight_decay=policy.weight_decay
    )
    start_step, grown = 0, False
    if init_checkpoint is not None:
        check_compatible(init_checkpoint, spec, state)
        old = init_checkpoint["model"]
        grown = any(old[k].shape != v.shape for k, v in model.state_dict().items() if k in old)
        model.load_state_dict(grow_state_dict(old, model))
        if init_checkpoint.get("optimizer") is not None and not grown:
            # Adam's moment estimates carry over, so the first steps on new data are not a cold restart. When an
            # embedding or the output grew, the saved moments no longer match the parameters: start them fresh.
            optimizer.load_state_dict(init_checkpoint["optimizer"])
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = policy.learning_rate, policy.weight_decay
        start_step = int(init_checkpoint.get("step", 0))

    train_data, valid_data = train_data.to(device), valid_data.to(device)
    initial_validation_loss, _ = evaluate(model, valid_data, spec) if len(valid_data) else (None, None)

    raw_model = model
    if policy.compile if compile_model is None else compile_model:
        model = torch.compile(model)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    objective = objective_for(spec)
    batches = EpochBatches(len(train_data), policy.batch_size, policy.seed, rank, world)
    losses: list[float] = []
    best_score, best_epoch, bad_epochs = -math.inf, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    best_optimizer: dict[str, Any] | None = None
    best_metrics: dict[str, float] = {}
    # What early stopping watches: the spec's metric, or validation loss when the metric is undefined (one
    # class).
    monitor: str | None = None
    step, epochs_run, stopped_early, train_seconds, last_epoch_loss = 0, 0, False, 0.0, math.nan
    rows_trained = 0
    lm_field = objective.text_field or None
    # Summed on the device and read once at the end: an .item() per step would sync the GPU every step.
    tokens_trained = torch.zeros((), dtype=torch.int64, device=device)

    for epoch in range(1, policy.epochs + 1):
        model.train()
        epoch_losses: list[torch.Tensor] = []
        t_epoch = t_log = time.perf_counter()
        rows_since_log = epoch_rows = 0
        # One gather per epoch puts this rank's rows in batch order; each batch is then a view, not a copy.
        epoch_data = train_data.take(batches.shard(epoch - 1, device))
        for start in range(0, len(epoch_data), batches.local_batch):
            if max_steps is not None and step >= max_steps:
                break
            batch = epoch_data.rows(start, start + batches.local_batch)
            with _autocast(device):
                output = model(batch.inputs)
            loss = objective.loss(output, batch.label, batch.weight, batch.inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if policy.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), policy.grad_clip)
            optimizer.step()
            epoch_losses.append(loss.detach())  # no .item() here: it would sync the GPU every step
            if lm_field:
                tokens_trained += batch.inputs[lm_field + MASK_SUFFIX].sum()
            step += 1
            rows_since_log += len(batch) * world
            epoch_rows += len(batch) * world
            if rank == 0 and log_every and step % log_every == 0:
                now = time.perf_counter()
                recent = torch.stack(epoch_losses[-log_every:]).mean().item()
                report(Progress("step", step, epoch, recent, rows_since_log / (now - t_log), policy.metric))
                t_log, rows_since_log = now, 0
        if not epoch_losses:
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - t_epoch
        train_seconds += epoch_seconds
        rows_trained += epoch_rows
        epochs_run = epoch

        # One all-reduce per epoch turns each rank's per-step losses into the mean over ranks.
        stacked = torch.stack(epoch_losses)
        if world > 1:
            dist.all_reduce(stacked)
            stacked /= world
        losses.extend(stacked.tolist())
        last_epoch_loss = float(stacked.mean())

        val_loss, val_metric = evaluate(raw_model, valid_data, spec)
        if monitor is None:
            monitor = policy.metric if math.isfinite(val_metric) else "validation_loss"
        # Sign-adjusted so that higher is better whatever the metric; nan (a diverged run) never counts as
        # best.
        score = -val_loss if monitor == "validation_loss" else improvement(policy.metric, val_metric, 0.0)
        score = -math.inf if math.isnan(score) else score
        # An epoch counts as better only when it beats the best by more than min_delta: noise-level gains
        # neither reset the patience nor replace the best weights.
        improved = (
            best_state is None or score > best_score + policy.early_stopping_min_delta or not len(valid_data)
        )
        # Rank 0 decides for all: float noise between ranks must not make one rank stop while another trains
        # on.
        decision = torch.tensor([float(improved)], device=device)
        if world > 1:
            dist.broadcast(decision, src=0)
        if decision.item() > 0:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy(raw_model.state_dict())
            best_optimizer = copy.deepcopy(optimizer.state_dict())
            best_metrics = {policy.metric: val_metric, "validation_loss": val_loss}
        else:
            bad_epochs += 1
        if rank == 0:
            samples_per_s = epoch_rows / max(epoch_seconds, 1e-9)
            report(
                Progress(
                    "epoch", step, epoch, last_epoch_loss, samples_per_s, policy.metric, val_metric, val_loss
                )
            )
        if bad_epochs >= policy.early_stopping_patience:
            stopped_early = True
            break
        if max_steps is not None and step >= max_steps:
            break

    if best_state is not None:
        raw_model.load_state_dict(best_state)
    final_optimizer = best_optimizer if best_optimizer is not None else optimizer.state_dict()
    return TrainResult(
        metric_name=policy.metric,
        metrics={**best_metrics, "train_loss_last_epoch": last_epoch_loss},
        initial_validation_loss=initial_validation_loss,
        loss_first=losses[0],
        loss_last=losses[-1],
        loss_min=min(losses),
        loss_curve=[(start_step + s + 1, v) for s, v in _downsample(losses)],
        samples_per_s=rows_trained / max(train_seconds, 1e-9),
        steps=step,
        total_steps=start_step + step,
        epochs=epochs_run,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        train_rows=len(train_data),
        validation_rows=len(valid_data),
        train_seconds=train_seconds,
        device=str(device),
        world_size=world,
        tokens_per_s=int(tokens_trained) * world / max(train_seconds, 1e-9) if lm_field else None,
        grown=grown,
        model=raw_model.eval(),
        optimizer_state=final_optimizer,
        state=state,
    )
