"""Lake maintenance: a scheduled job that compacts, checkpoints and vacuums every table of the pipeline.

One op per table (``maintain_<table>``), so each table's step shows its own numbers and a failing table does not
hold the others back; a table that does not exist yet is skipped. The work is
:func:`rt_training.lake.maintenance.maintain`, which keeps the Delta app transactions: the Kafka offsets the
tables hold are unchanged. ``maintenance_schedule`` runs the job daily at ``$RT_TRAINING_MAINTENANCE_CRON``
(default ``0 3 * * *``, UTC). Compaction does not conflict with micro-batch appends, so ingestion keeps running.
"""

import os

import dagster as dg
from pydantic import Field

from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.lake.tables import TABLES
from rt_training.spec import PipelineSpec

MAINTENANCE_CRON_ENV_VAR = "RT_TRAINING_MAINTENANCE_CRON"
DEFAULT_MAINTENANCE_CRON = "0 3 * * *"
REPORTED = (
    "files_before",
    "files_after",
    "bytes_before",
    "bytes_after",
    "rows",
    "files_removed_by_compaction",
    "files_added_by_compaction",
    "vacuumed_files",
    "log_files_removed",
    "version_before",
    "version_after",
    "checkpoint_version",
    "seconds",
)


class MaintenanceConfig(dg.Config):
    retention_hours: int = Field(
        default=168,
        ge=0,
        description="Vacuum deletes unreferenced files older than this; below the table's "
        "delta.deletedFileRetentionDuration (7 days by default) it is refused, since a write still running "
        "may be about to commit such a file.",
    )
    target_size_mb: int | None = Field(
        default=None, ge=1, description="Size of compacted files (default: the table's, or 100 MB)."
    )


def build_maintain_op(spec: PipelineSpec, table: str) -> dg.OpDefinition:
    @dg.op(
        name=f"maintain_{table}",
        description=f"Compact, checkpoint and vacuum the {table} table (skipped while it does not exist).",
        tags={"kind": "deltalake"},
    )
    def maintain_table(
        context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource
    ) -> dg.Output[None]:
        from rt_training.lake.maintenance import maintain
        from rt_training.lake.tables import open_table

        location = lake.location()
        uri = location.uri(spec.name, table)
        if open_table(uri, location.storage_options) is None:
            context.log.info(f"no {table} table at {uri} yet: nothing to maintain")
            return dg.Output(None, metadata={"table": uri, "exists": False})
        target = None if config.target_size_mb is None else config.target_size_mb * 1_000_000
        report = maintain(
            uri, location.storage_options, target_size=target, retention_hours=config.retention_hours
        )
        meta = report.metadata()
        context.log.info(
            f"{table}: files {meta['files_before']} -> {meta['files_after']}, bytes {meta['bytes_before']} -> "
            f"{meta['bytes_after']}, vacuumed {meta['vacuumed_files']} files, checkpoint at version "
            f"{meta['checkpoint_version']}"
        )
        return dg.Output(
            None,
            metadata={"table": uri, "exists": True, **{k: meta[k] for k in REPORTED if meta[k] is not None}},
        )

    return maintain_table


def definitions(spec: PipelineSpec) -> dg.Definitions:
    ops = [build_maintain_op(spec, table) for table in TABLES]

    @dg.job(
        name="maintenance_job",
        tags={PIPELINE_TAG: spec.name},
        executor_def=dg.in_process_executor,
        description=(
            "Compact small files, write a checkpoint and vacuum unreferenced files of every lake table of "
            f"pipeline {spec.name}; Kafka offsets (Delta app transactions) are kept."
        ),
    )
    def maintenance_job() -> None:
        for maintain_table in ops:
            maintain_table()

    schedule = dg.ScheduleDefinition(
        name="maintenance_schedule",
        job=maintenance_job,
        cron_schedule=os.environ.get(MAINTENANCE_CRON_ENV_VAR) or DEFAULT_MAINTENANCE_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily lake maintenance (cron from ${MAINTENANCE_CRON_ENV_VAR}).",
    )
    return dg.Definitions(jobs=[maintenance_job], schedules=[schedule])
