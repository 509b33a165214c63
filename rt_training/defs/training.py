"""Continual training: the training set, a candidate trained through Dagster Pipes, and the validation gate.

Assets (group ``training``): ``training_set`` (a new sample snapshot per silver version,
:mod:`rt_training.sampling.training_set`) → ``model_candidate`` (the entry point
:mod:`rt_training.training.entrypoint` in a subprocess, or under torchrun, through ``PipesSubprocessClient``;
the checkpoint is registered) → ``champion_model`` (the gate promotes or rejects it in the model registry),
with the asset check ``champion_loads_and_scores``.

Jobs: ``training_set_job`` (the sample alone), ``training_job`` and ``retraining_job`` (all three steps). Both
training jobs carry the GPU tags: a Kubernetes GPU request for the run's pod and ``rt_training/gpu_pool``, which
``dagster.yaml`` limits to one run per value, so one training runs at a time per GPU pool. Without a GPU the entry
point trains on the CPU (device ``auto``). The training jobs use the in-process executor: the three steps run one
after another and the heavy work runs in the Pipes subprocess, so a process per step would only add start-up
time.

``first_champion_sensor`` trains the first champion once enough silver rows have event time up to the holdout
cut (the watermark minus ``training.holdout_window_s``) and the held-out window has the rows the gate needs, with
no manual step; ``periodic_retraining_schedule`` launches ``retraining_job`` on ``spec.training.schedule_cron``
(wall clock), and ``periodic_retraining_sensor`` (:mod:`rt_training.defs.periodic`) every
``training.retrain_every_s`` of event time or ``retrain_every_rows`` new rows. A retraining launched because of
drift names the drift report in the run tag ``rt_training/drift_report`` (kept in the checkpoint's lineage) and
shortens the sampler's recency half-life for that run through the ``training_set`` run config
(``recency_half_life_s``). When the spec adapts to drift, ``refresh_job`` leaves the training set alone
(:mod:`rt_training.defs.drift`), so the retraining's training set is the one that takes the new rows under the
drift half-life.
"""

import json
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from rt_training.defs.ingest import IN_FLIGHT, PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec
from rt_training.spec.durations import format_duration
from rt_training.training.launch import min_rows_for_first_champion

GPU_POOL_TAG = "rt_training/gpu_pool"
DRIFT_REPORT_TAG = "rt_training/drift_report"
TRIGGER_TAG = "rt_training/trigger_reason"
TRAINING_ASSETS = ("training_set", "model_candidate", "champion_model")
GPU_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "limits": {"nvidia.com/gpu": "1"},
                "requests": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "8Gi"},
            }
        }
    },
    GPU_POOL_TAG: "default",
}


class TrainingSetConfig(dg.Config):
    """How one ``training_set`` run samples (its cut is event time: silver's watermark minus the holdout)."""

    recency_half_life_s: float | None = Field(
        default=None,
        gt=0,
        description="Recency half-life for this run's new rows (while drift is detected: the spec's "
        "drift.on_drift_recency_half_life_s); the saved sampling policy is not changed.",
    )


class TrainingRunConfig(dg.Config):
    """How ``model_candidate`` trains."""

    nproc_per_node: int = Field(
        default=1, ge=1, description="Processes (DDP ranks) on this node; >1 uses torchrun."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: the GPU when there is one."
    )
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    threads: int = Field(default=1, ge=1, description="torch intra-op threads per rank.")
    warm_start: bool = Field(
        default=True,
        description="Start from the champion's weights and optimizer state; False trains from scratch.",
    )
    log_every: int = Field(default=50, ge=0, description="Progress line every this many steps.")


def build_training_set_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name="training_set",
        group_name="training",
        deps=["silver_events"],
        kinds={"deltalake"},
        description=(
            f"A {spec.sampling.strategy} sample of silver ({spec.sampling.capacity} rows, replay share "
            f"{spec.sampling.replay_share}); each silver row is offered once, when its event time is more than "
            f"{format_duration(spec.training.holdout_window_s)} behind the pipeline's event-time watermark (the "
            "newer rows are held out for the gate). One Delta snapshot per silver version."
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeResource
    ) -> dg.MaterializeResult:
        from rt_training.sampling.training_set import update_training_set
        from rt_training.training.champion import champion_losses, registry_for

        location = lake.location()
        losses = champion_losses(spec, registry_for(spec, location)) if spec.sampling.importance else None
        update = update_training_set(
            spec, location, losses_fn=losses, half_life_override=config.recency_half_life_s
        )
        if update.recovered:
            context.log.warning("wrote the snapshot of a sampler state saved by an interrupted run first")
        context.log.info(update.reason)
        version = None if update.current is None else dg.DataVersion(str(update.current.version))
        return dg.MaterializeResult(metadata=update.metadata(), data_version=version)

    return training_set


def build_model_candidate_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name="model_candidate",
        group_name="training",
        deps=["training_set"],
        kinds={"pytorch"},
        description=(
            f"A {spec.model.builtin or 'custom'} model trained on the newest training set, warm-started from the "
            "champion, through Dagster Pipes (torchrun for several processes); registered in the model registry."
        ),
    )
    def model_candidate(
        context: dg.AssetExecutionContext,
        config: TrainingRunConfig,
        lake: LakeResource,
        pipes_subprocess_client: dg.PipesSubprocessClient,
    ) -> dg.MaterializeResult:
        from rt_training.sampling.training_set import current_training_set
        from rt_training.training.champion import register_candidate, registry_for
        from rt_training.training.launch import WarmStart, plan_training_run

        location = lake.location()
        info = current_training_set(spec, location)
        if info is None:
            raise dg.Failure(
                f"pipeline {spec.name!r} has no training set yet: materialize training_set first "
                "(training_job runs both)"
            )
        registry = registry_for(spec, location)
        warm = None
        if config.warm_start:
            loaded = registry.load_champion()
            if loaded is not None:
                if loaded.fell_back:
                    context.log.warning(
                        f"champion not loadable, starting from an earlier one: {loaded.problems}"
                    )
                warm = WarmStart(loaded.entry.checkpoint_id, loaded.entry.path, loaded.entry.sha256)
        drift_report = context.run.tags.get(DRIFT_REPORT_TAG)
        plan = plan_training_run(
            spec,
            location,
            training_set=info,
            warm_start=warm,
            run_id=context.run.run_id,
            drift_report=drift_report,
            nproc_per_node=config.nproc_per_node,
            device=config.device,
            max_steps=config.max_steps,
            threads=config.threads,
            log_every=config.log_every,
            asset_key="model_candidate",
        )
        context.log.info(f"training on {info.uri} version {info.version}: {plan.command_line()}")
        try:
            invocation = pipes_subprocess_client.run(command=plan.command, context=context, env=plan.env)
        except dg.DagsterPipesExecutionError as exc:
            raise dg.Failure(
                description=f"training failed ({exc}); the entry point's error is in this step's stderr. "
                f"Job config: {plan.config_path}; run it by hand with: {plan.command_line()}"
            ) from exc
        reported = invocation.get_materialize_result()
        result = json.loads(plan.result_path.read_text())
        event = register_candidate(registry, spec, result, plan, context.run.run_id)
        train = result["train"]
        lineage = result["lineage"]
        metadata: dict[str, Any] = {
            **(reported.metadata or {}),
            "registry_seq": event.seq,
            "metric_name": spec.training.metric,
            "loss_min": train["loss_min"],
            "loss_curve": dg.MetadataValue.json({"step_loss": train["loss_curve"]}),
            "train_seconds": train["train_seconds"],
            "train_rows": train["train_rows"],
            "validation_rows": train["validation_rows"],
            "stopped_early": train["stopped_early"],
            "silver_version": info.silver_version,
            "holdout_silver_version": plan.holdout_silver_version,
            "holdout_after": info.cut.isoformat(),
            "kafka_offsets": dg.MetadataValue.json(lineage["kafka_offsets"]),
            "nproc_per_node": config.nproc_per_node,
            "warm_start_from": "none" if warm is None else warm.checkpoint_id,
            "drift_report": drift_report or "none",
            "job_config_path": str(plan.config_path),
        }
        return dg.MaterializeResult(metadata=metadata, data_version=reported.data_version)

    return model_candidate


def build_champion_model_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name="champion_model",
        group_name="training",
        deps=["model_candidate"],
        kinds={"pytorch"},
        description=(
            f"The validation gate: the newest candidate replaces the champion when its {spec.training.metric} on "
            f"the held-out window is at least the champion's (tolerance {spec.training.promotion_tolerance:g}); "
            "promotions and rejections are atomic registry commits, with the reason."
        ),
    )
    def champion_model(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from rt_training.training.champion import decide_latest_candidate, registry_for

        verdict = decide_latest_candidate(spec, registry_for(spec, lake.location()))
        if verdict is None:
            raise dg.Failure(
                f"pipeline {spec.name!r} has no registered candidate: materialize model_candidate first"
            )
        context.log.info(f"{verdict.decision} {verdict.candidate_id}: {verdict.reason}")
        return dg.MaterializeResult(
            metadata=verdict.metadata(), data_version=dg.DataVersion(verdict.champion_id or "none")
        )

    return champion_model


def build_champion_check(spec: PipelineSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset="champion_model",
        name="champion_loads_and_scores",
        description="The champion loads as serving would (sha256 verified) and scores the held-out window with a "
        f"finite {spec.training.metric}.",
    )
    def champion_loads_and_scores(lake: LakeResource) -> dg.AssetCheckResult:
        from rt_training.training.champion import score_champion
        from rt_training.training.checkpoints import CheckpointError
        from rt_training.training.registry import RegistryError

        try:
            score = score_champion(spec, lake.location())
        except (RegistryError, CheckpointError) as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc))
        if score.champion_id is None:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, description="no champion yet"
            )
        metadata: dict[str, Any] = {
            "champion_id": score.champion_id,
            "holdout_rows": score.holdout_rows,
            "fell_back": score.fell_back,
        }
        if score.holdout_after is not None:
            metadata["holdout_after"] = score.holdout_after
        for key, value in ((score.metric_name, score.metric), ("loss", score.loss)):
            if value == value:  # nan has no metadata type
                metadata[key] = value
        if score.fell_back:
            description = f"the champion did not load; an earlier one did: {'; '.join(score.problems)}"
        elif not score.ok:
            description = f"{score.metric_name} is not finite on {score.holdout_rows} held-out rows"
        else:
            description = (
                f"{score.champion_id}: {score.metric_name} {score.metric:.4f} on {score.holdout_rows} rows"
            )
        return dg.AssetCheckResult(passed=score.ok, metadata=metadata, description=description)

    return champion_loads_and_scores


def build_training_jobs(spec: PipelineSpec) -> tuple[Any, Any, Any]:
    """``training_set_job``, ``training_job`` and ``retraining_job``."""
    selection = dg.AssetSelection.assets(*TRAINING_ASSETS)
    pipeline = {PIPELINE_TAG: spec.name}
    training_set_job = dg.define_asset_job(
        "training_set_job",
        selection=dg.AssetSelection.assets("training_set"),
        executor_def=dg.in_process_executor,
        tags=pipeline,
        description="Offer the new silver rows to the sample and write the training-set snapshot.",
    )
    training_job = dg.define_asset_job(
        "training_job",
        selection=selection,
        executor_def=dg.in_process_executor,
        tags={**GPU_TAGS, **pipeline},
        description="Sample, train a candidate and gate it (the first champion, or by hand).",
    )
    retraining_job = dg.define_asset_job(
        "retraining_job",
        selection=selection,
        executor_def=dg.in_process_executor,
        tags={**GPU_TAGS, **pipeline},
        description="Sample, train a candidate from the champion and gate it (on drift or on schedule).",
    )
    return training_set_job, training_job, retraining_job


def build_first_champion_sensor(
    spec: PipelineSpec, training_job: Any, other_jobs: list[str]
) -> dg.SensorDefinition:
    needed = min_rows_for_first_champion(spec)

    @dg.sensor(
        name="first_champion_sensor",
        job=training_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launches training_job once while there is no champion and silver holds at least {needed} rows "
            f"whose event time is more than {format_duration(spec.training.holdout_window_s)} behind the "
            f"event-time watermark and at least {spec.training.min_holdout_rows} newer ones for the gate (at most "
            "once per silver version, never while a training run is in flight)."
        ),
    )
    def first_champion_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        from rt_training.lake.tables import open_table
        from rt_training.training.launch import champion_exists, first_champion_check
        from rt_training.training.registry import REGISTRY_TABLE

        location = lake.location()
        options = dict(location.storage_options) if location.storage_options else None
        if champion_exists(location.uri(spec.name, REGISTRY_TABLE), options):
            return dg.SkipReason("a champion exists; retraining is up to the drift sensor and the schedule")
        for name in (training_job.name, *other_jobs):
            runs = context.instance.get_run_records(
                dg.RunsFilter(job_name=name, statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}), limit=1
            )
            if runs:
                return dg.SkipReason(f"{name} run {runs[0].dagster_run.run_id} is in flight")
        silver = open_table(location.uri(spec.name, "silver"), options)
        check = first_champion_check(spec, silver)
        if silver is None or check.waiting is not None:
            return dg.SkipReason(check.reason)
        version = silver.version()
        if context.cursor == str(version):
            return dg.SkipReason(f"training_job already requested for silver version {version}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"first-champion-silver-{version}",
                    tags={TRIGGER_TAG: check.reason},
                )
            ],
            cursor=str(version),
        )

    return first_champion_sensor


def definitions(spec: PipelineSpec) -> dg.Definitions:
    training_set_job, training_job, retraining_job = build_training_jobs(spec)
    schedules = []
    if spec.training.schedule_cron:
        schedules.append(
            dg.ScheduleDefinition(
                name="periodic_retraining_schedule",
                job=retraining_job,
                cron_schedule=spec.training.schedule_cron,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                tags={TRIGGER_TAG: f"schedule {spec.training.schedule_cron}"},
                description="Retrains on the spec's training.schedule_cron.",
            )
        )
    return dg.Definitions(
        assets=[
            build_training_set_asset(spec),
            build_model_candidate_asset(spec),
            build_champion_model_asset(spec),
        ],
        asset_checks=[build_champion_check(spec)],
        jobs=[training_set_job, training_job, retraining_job],
        sensors=[build_first_champion_sensor(spec, training_job, [retraining_job.name])],
        schedules=schedules,
        resources={"pipes_subprocess_client": dg.PipesSubprocessClient()},
    )
