"""Daily-partitioned rebuild: re-derive silver and dead letters from bronze for chosen days.

``rebuild_silver_job`` is an op job over UTC ingestion days, not a partitioned asset. ``silver_events`` and
``dead_letters`` are written by micro-batch runs that are not partitions (a batch every few seconds would be
thousands of partitions a day), so partitioning them would clash with every ingest run; a rebuild is instead an
operation on one day of those tables (:func:`rt_training.ingest.rebuild.rebuild_day`). Each run records a
materialization of both assets with the day's numbers, so their history shows the rebuild and its table version.

Select days in the job's Partitions tab and launch a backfill (or ``dagster job backfill``); rebuild days oldest
first, as a day's duplicate history is the rebuilt day before it. The partitions run from
``$RT_TRAINING_REBUILD_START`` (default 2026-01-01) through today: ``end_offset=1`` makes the current, still
growing day selectable, and rebuilding it while ingestion runs replaces only the rows already committed.
"""

import os
from datetime import date

import dagster as dg

from rt_training.defs.ingest import PIPELINE_TAG
from rt_training.defs.resources import LakeResource
from rt_training.spec import PipelineSpec

REBUILD_START_ENV_VAR = "RT_TRAINING_REBUILD_START"
DEFAULT_REBUILD_START = "2026-01-01"


def ingestion_days() -> dg.DailyPartitionsDefinition:
    """UTC days from ``$RT_TRAINING_REBUILD_START`` through today."""
    return dg.DailyPartitionsDefinition(
        start_date=os.environ.get(REBUILD_START_ENV_VAR) or DEFAULT_REBUILD_START,
        timezone="UTC",
        end_offset=1,
    )


def definitions(spec: PipelineSpec) -> dg.Definitions:
    @dg.op(
        name="rebuild_silver_day",
        description="Clean one day's bronze rows again and replace that day in silver and dead letters.",
    )
    def rebuild_silver_day(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output[None]:
        from rt_training.ingest.rebuild import rebuild_day

        day = date.fromisoformat(context.partition_key)
        report = rebuild_day(spec, lake.location(), day, context.run.run_id)
        context.log.info(report.summary())
        meta = report.metadata()
        if report.committed:
            for key, version in (
                ("silver_events", report.silver_version),
                ("dead_letters", report.dead_letters_version),
            ):
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=key,
                        description=f"rebuilt day {day} (table version {version})",
                        metadata={**meta, "rebuilt_day": day.isoformat(), "table_version": version},
                    )
                )
        return dg.Output(None, metadata=meta)

    @dg.job(
        name="rebuild_silver_job",
        partitions_def=ingestion_days(),
        tags={PIPELINE_TAG: spec.name},
        executor_def=dg.in_process_executor,
        description=(
            "Re-derive silver and dead letters from bronze for the selected UTC ingestion days, after a change "
            "to cleaning or to the spec; offsets and older table versions are kept."
        ),
    )
    def rebuild_silver_job() -> None:
        rebuild_silver_day()

    return dg.Definitions(jobs=[rebuild_silver_job])
