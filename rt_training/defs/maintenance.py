"""Lake maintenance: a scheduled job that compacts, checkpoints and vacuums every table of the pipeline.

Compaction and vacuum keep the Delta app transactions, so the Kafka offsets the tables hold are unchanged.
"""

import os

import dagster as dg

from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec

MAINTENANCE_CRON_ENV_VAR = "RT_TRAINING_MAINTENANCE_CRON"


class MaintenanceConfig(dg.Config):
    retention_hours: int = 168
    """Vacuum removes files unreferenced for longer than this (Delta's default: 7 days)."""


def definitions(spec: PipelineSpec) -> dg.Definitions:
    @dg.op(name="maintain_lake_tables", description="Compact, checkpoint and vacuum each existing table.")
    def maintain_lake_tables(
        context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource
    ) -> dg.Output[None]:
        from rt_training.lake.maintenance import maintain
        from rt_training.lake.tables import TABLES, open_table

        location = lake.location()
        summary: dict = {}
        for table in TABLES:
            uri = location.uri(spec.name, table)
            if open_table(uri, location.storage_options) is None:
                continue
            report = maintain(uri, location.storage_options, retention_hours=config.retention_hours)
            meta = report.metadata()
            context.log.info(
                f"{table}: files {meta['files_before']} -> {meta['files_after']}, vacuumed {meta['vacuumed_files']}"
            )
            for key in ("files_before", "files_after", "bytes_after", "vacuumed_files", "seconds"):
                summary[f"{table}.{key}"] = meta[key]
        return dg.Output(None, metadata=summary)

    @dg.job(name="maintenance_job", tags={PIPELINE_TAG: spec.name}, executor_def=dg.in_process_executor)
    def maintenance_job() -> None:
        maintain_lake_tables()

    schedule = dg.ScheduleDefinition(
        name="maintenance_schedule",
        job=maintenance_job,
        cron_schedule=os.environ.get(MAINTENANCE_CRON_ENV_VAR, "0 3 * * *"),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily lake maintenance (RT_TRAINING_MAINTENANCE_CRON).",
    )
    return dg.Definitions(jobs=[maintenance_job], schedules=[schedule])
