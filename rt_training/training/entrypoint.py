"""Train one model from a JSON job config, in one process or as DDP ranks under torchrun.

    python -m rt_training.training.entrypoint --config job.json
    torchrun --standalone --nproc-per-node 2 -m rt_training.training.entrypoint --config job.json

Under torchrun the process group is initialized here (gloo on CPU, nccl on CUDA, one GPU per local rank);
every rank reads the same training-set version and trains on its shard; rank 0 alone writes the checkpoint and
the result JSON. Launched through Dagster Pipes (``PipesSubprocessClient`` sets ``DAGSTER_PIPES_CONTEXT``),
rank 0 sends progress through ``pipes.log`` and reports the checkpoint as a materialization with its metrics
as metadata; otherwise progress goes to stdout.

Job config (JSON object; unknown keys are an error)::

    {
      "spec": "path/to/spec.yaml",                 # or an inline spec object, or null for the demo spec
      "training_set": {"uri": ".data/lake/<pipeline>/training_set", "version": 12},
      "holdout": {"uri": ".data/lake/<pipeline>/silver", "version": 40,      # optional: run the gate
                  "after": "2025-01-01T12:00:00Z"},                          # rows with event time > after
      "init_checkpoint": {"path": ".../ckpt-....pt", "sha256": "..."},      # optional: warm start (champion)
      "output_dir": ".data/lake/<pipeline>/checkpoints",
      "result_path": null,                          # default <output_dir>/<checkpoint id>.result.json
      "device": "auto",                             # auto | cpu | cuda
      "lineage": {"silver_versions": {"silver": 40},
                  "kafka_offsets": [{"topic": "<topic>", "partition": 0, "start": 0, "end": 5000}],
                  "drift_report": null},
      "validation_fraction": 0.1, "max_steps": null, "log_every": 50,
      "threads": null,                              # torch intra-op threads per rank (default 1)
      "asset_key": null                             # Pipes: which asset to report, when it has several
    }

The result JSON holds the checkpoint (id, path, sha256), the training summary (metrics, loss curve,
samples/s), the lineage, the gate decision (when a holdout is given; the init checkpoint is the champion it is
compared with) and a sha256 of the final weights from every rank (equal digests: the ranks stayed in sync).

Exit status: 0 on success; 2 for a bad config, spec, training set or checkpoint (the message says which and
why).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rt_training.spec import PipelineSpec, SpecError, load_spec, parse_spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSetRef(_Strict):
    uri: str
    version: int = Field(ge=0)


class HoldoutRef(_Strict):
    uri: str
    version: int | None = Field(default=None, ge=0)
    after: dt.datetime | None = None


class CheckpointRef(_Strict):
    path: str
    sha256: str | None = None


class LineageInput(_Strict):
    silver_versions: dict[str, int] = Field(default_factory=dict)
    kafka_offsets: list[dict[str, Any]] = Field(default_factory=list)
    drift_report: str | None = None
    parent_checkpoint_id: str | None = None


class JobConfig(_Strict):
    """A training job, as the Dagster asset (or a person) writes it."""

    spec: str | dict[str, Any] | None = None
    training_set: TrainingSetRef
    holdout: HoldoutRef | None = None
    init_checkpoint: CheckpointRef | None = None
    output_dir: str
    result_path: str | None = None
    device: str = "auto"
    lineage: LineageInput = Field(default_factory=LineageInput)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_steps: int | None = Field(default=None, ge=1)
    log_every: int = Field(default=50, ge=0)
    threads: int | None = Field(default=None, ge=1)
    asset_key: str | None = None

    def load_spec(self) -> PipelineSpec:
        if isinstance(self.spec, dict):
            return parse_spec(self.spec, source="job config 'spec'")
        return load_spec(self.spec)


def read_config(path: str | os.PathLike[str]) -> JobConfig:
    """Parse and validate a job config file; errors name the file and the field."""
    try:
        return JobConfig.model_validate_json(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read job config {path}: {exc}") from exc
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid job config {path}: {fields}") from None


class ConfigError(ValueError):
    """A job config that cannot be used."""


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[tuple[int, int, int]]:
    """Yield ``(rank, world_size, local_rank)``; initializes and tears down DDP when launched by torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, 1, 0
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size(), local_rank
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _pipes(rank: int) -> Iterator[Any]:
    """The Dagster Pipes context on rank 0 of a Pipes-launched process, else ``None``."""
    if rank != 0:
        yield None
        return
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:
        yield None
        return
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def _reportable(metadata: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` and nan/inf values: Dagster's metadata has no type for them."""
    return {
        k: v
        for k, v in metadata.items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }


def run_job(config: JobConfig, pipes: Any = None, rank: int = 0, world: int = 1) -> dict[str, Any] | None:
    """Train as configured; on rank 0 write the checkpoint and result JSON and return the result."""
    import torch
    import torch.distributed as dist

    from rt_training.features.state import FEATURE_STATE_FORMAT, fit_feature_state
    from rt_training.training.checkpoints import (
        Lineage,
        Restored,
        build_checkpoint,
        code_version,
        feature_state_of,
        load_checkpoint,
        new_checkpoint_id,
        restore_model,
        save_checkpoint,
        state_digest,
    )
    from rt_training.training.data import read_holdout, read_training_rows, tensors_from_arrow
    from rt_training.training.gate import run_gate
    from rt_training.training.loop import resolve_device, train

    def say(line: str) -> None:
        if rank != 0:
            return
        if pipes is not None:
            pipes.log.info(line)
        else:
            print(line, flush=True)

    # One intra-op thread per rank unless configured: the built-in models' matmuls are too small to gain from
    # more,
    # and on a shared 2-core machine two threads per process measured 5-7x slower (OpenMP threads spin-wait).
    torch.set_num_threads(config.threads or 1)
    spec = config.load_spec()
    device = resolve_device(config.device)
    ts = config.training_set
    say(f"training {spec.name!r} on {ts.uri} version {ts.version}, {world} rank(s) on {device}")
    rows = read_training_rows(ts.uri, ts.version, spec)
    init = previous = None
    if config.init_checkpoint is not None:
        init = load_checkpoint(config.init_checkpoint.path, config.init_checkpoint.sha256)
        previous = feature_state_of(init)
        say(f"warm start from {init['id']} (step {init.get('step', 0)})")
    # Every rank fits the same state from the same rows (deterministic for the seed), so no rank waits on another.
    state = fit_feature_state(spec, rows, previous, cold_start=init is None, seed=spec.training.seed)
    say(f"features: {json.dumps(state.describe(), default=str)}")
    data = tensors_from_arrow(rows, spec, state, where=f"training set {ts.uri} version {ts.version}")
    train_data, valid_data = data.split(config.validation_fraction, spec.training.seed)

    result = train(
        spec,
        state,
        train_data,
        valid_data,
        init_checkpoint=init,
        device=device,
        max_steps=config.max_steps,
        log_every=config.log_every,
        progress=lambda p: say(p.line()),
    )
    digest = state_digest(result.model)
    digests = [digest]
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, digest)
    if rank != 0:
        dist.barrier()
        return None

    decision = None
    metrics = dict(result.metrics)
    if config.holdout is not None:
        h = config.holdout
        holdout = read_holdout(h.uri, spec, after=h.after, version=h.version)
        champion = restore_model(init, spec) if init is not None else None
        decision = run_gate(spec, Restored(result.model, state), champion, holdout, device)
        # Held-out metrics (the gate's window) are prefixed, so they are never mistaken for validation ones.
        metrics[f"holdout_{decision.metric_name}"] = decision.candidate_metric
        metrics[f"holdout_baseline_{decision.metric_name}"] = decision.baseline_metric
        say(f"gate: {'promote' if decision.promote else 'keep champion'}: {decision.reason}")

    lineage = Lineage(
        training_set_uri=ts.uri,
        training_set_version=ts.version,
        silver_versions=config.lineage.silver_versions,
        kafka_offsets=config.lineage.kafka_offsets,
        spec_fingerprint=spec.fingerprint(),
        code_version=code_version(),
        metrics=metrics,
        parent_checkpoint_id=config.lineage.parent_checkpoint_id
        or (init["id"] if init is not None else None),
        drift_report=config.lineage.drift_report,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        feature_state={"sha256": state.sha256, "format": FEATURE_STATE_FORMAT, **state.describe()},
    )
    checkpoint_id = new_checkpoint_id()
    payload = build_checkpoint(
        checkpoint_id=checkpoint_id,
        model=result.model,
        optimizer_state=result.optimizer_state,
        spec=spec,
        state=state,
        step=result.total_steps,
        epoch=result.epochs,
        metrics=metrics,
        lineage=lineage,
    )
    saved = save_checkpoint(payload, config.output_dir)
    say(f"checkpoint {saved.id} written to {saved.path} (sha256 {saved.sha256})")

    out = {
        "checkpoint": saved.__dict__,
        "train": result.summary(),
        "metrics": metrics,
        "lineage": lineage.to_dict(),
        "gate": decision.to_dict() if decision is not None else None,
        "param_sha256_by_rank": digests,
        "world_size": world,
    }
    result_path = Path(config.result_path or Path(config.output_dir) / f"{saved.id}.result.json")
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(out, indent=2, default=str))
    say(f"result written to {result_path}")

    if pipes is not None:
        pipes.report_asset_materialization(
            asset_key=config.asset_key,
            data_version=saved.sha256,
            metadata=_reportable(
                {
                    **metrics,
                    "checkpoint_id": saved.id,
                    "checkpoint_path": saved.path,
                    "sha256": saved.sha256,
                    "training_set_version": ts.version,
                    "steps": result.steps,
                    "epochs": result.epochs,
                    "samples_per_s": result.samples_per_s,
                    "tokens_per_s": result.tokens_per_s,
                    "embeddings_grown": result.grown,
                    "feature_state_sha256": state.sha256,
                    **{f"features_{k}": v for k, v in state.describe().items()},
                    "loss_first": result.loss_first,
                    "loss_last": result.loss_last,
                    "world_size": world,
                    "device": result.device,
                    "promote": decision.promote if decision is not None else None,
                    "gate_reason": decision.reason if decision is not None else None,
                    "result_path": str(result_path),
                }
            ),
        )
    if world > 1:
        dist.barrier()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rt_training.training.entrypoint", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, help="path to the JSON job config")
    args = parser.parse_args(argv)

    try:
        config = read_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2

    from rt_training.training.checkpoints import CheckpointError
    from rt_training.training.data import TrainingDataError

    try:
        with _process_group(config.device) as (rank, world, _), _pipes(rank) as pipes:
            run_job(config, pipes, rank, world)
    except (SpecError, TrainingDataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
