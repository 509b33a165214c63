"""Daily-partitioned rebuild: re-derive silver and dead letters from bronze for chosen days.

A job over ingestion days rather than a partitioned ``silver_events`` asset: micro-batches append to silver
outside any partition, and a rebuild is an operation on days of it. Each run records materializations of
``silver_events`` and ``dead_letters`` with the day's numbers.
"""

import os
from datetime import date

import dagster as dg

from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec

REBUILD_START_ENV_VAR = "RT_TRAINING_REBUILD_START"


def definitions(spec: PipelineSpec) -> dg.Definitions:
    days = dg.DailyPartitionsDefinition(
        start_date=os.environ.get(REBUILD_START_ENV_VAR, "2026-01-01"), end_offset=1
    )

    @dg.op(name="rebuild_silver_day", description="Replace one day's silver and dead letters, cleaned anew.")
    def rebuild_silver_day(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        from rt_training.ingest.rebuild import rebuild_day

        day = date.fromisoformat(context.partition_key)
        report = rebuild_day(spec, lake.location(), day, context.run.run_id)
        meta = report.metadata()
        context.log.info(
            f"{day}: {report.bronze_rows} bronze rows -> {report.silver_rows} silver + "
            f"{report.dead_letter_rows} dead letters"
        )
        for key in ("silver_events", "dead_letters"):
            context.log_event(dg.AssetMaterialization(asset_key=key, metadata={**meta, "rebuild": True}))

    @dg.job(
        name="rebuild_silver_job",
        partitions_def=days,
        tags={PIPELINE_TAG: spec.name},
        executor_def=dg.in_process_executor,
        description="Re-derive silver and dead letters from bronze for the selected days (after a cleaning change).",
    )
    def rebuild_silver_job() -> None:
        rebuild_silver_day()

    return dg.Definitions(jobs=[rebuild_silver_job])
