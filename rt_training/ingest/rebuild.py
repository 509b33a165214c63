"""Re-derive silver and dead letters from bronze for one day, after a change to cleaning or to the spec.

A day is a UTC day of ingestion time (bronze ``ingested_at``, which silver keeps as ``_ingested_at``). Each of
silver and dead letters gets that day's rows replaced in one Delta commit (an overwrite with a predicate), so a
reader sees the old day or the new day, never a mix; older versions stay readable by time travel, and the Kafka
offsets (app transactions) are untouched, so ingestion goes on exactly once afterwards. Duplicates are judged
against silver rows ingested before the day, so rebuilding a day twice gives the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import UTC_US, open_table, silver_schema
from rt_training.spec import PipelineSpec

REBUILD_KEY = "rt_training.rebuild"


@dataclass(frozen=True)
class RebuildReport:
    day: date
    bronze_rows: int
    silver_rows: int
    dead_letter_rows: int
    reasons: dict[str, int]
    silver_version: int
    dead_letters_version: int

    def metadata(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "bronze_rows": self.bronze_rows,
            "silver_rows": self.silver_rows,
            "dead_letter_rows": self.dead_letter_rows,
            "silver_version": self.silver_version,
            "dead_letters_version": self.dead_letters_version,
            **{f"dead_letters_{k}": v for k, v in self.reasons.items() if v},
        }


def _day_filter(column: str, start: datetime, end: datetime):
    import pyarrow.compute as pc

    return (pc.field(column) >= pa.scalar(start, UTC_US)) & (pc.field(column) < pa.scalar(end, UTC_US))


def rebuild_day(spec: PipelineSpec, lake: LakeLocation, day: date, run_id: str) -> RebuildReport:
    """Replace ``day``'s silver and dead-letter rows with what cleaning makes of that day's bronze rows now."""
    from deltalake import CommitProperties, write_deltalake

    from rt_training.clean.pipeline import clean_batch
    from rt_training.lake.tables import DEAD_LETTER_SCHEMA, ensure_table

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    bronze_dt = open_table(lake.uri(spec.name, "bronze"), lake.storage_options)
    if bronze_dt is None:
        raise FileNotFoundError(
            f"no bronze table at {lake.uri(spec.name, 'bronze')}: nothing to rebuild from"
        )
    bronze = bronze_dt.to_pyarrow_dataset().to_table(filter=_day_filter("ingested_at", start, end))
    bronze = bronze.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
    silver_uri = lake.uri(spec.name, "silver")
    silver_dt = ensure_table(silver_uri, silver_schema(spec), lake.storage_options)
    history_start = start - timedelta(seconds=spec.ingest.dedup_history_s)
    seen = (
        silver_dt.to_pyarrow_dataset()
        .to_table(columns=[spec.id_field], filter=_day_filter("_ingested_at", history_start, start))
        .column(spec.id_field)
        .combine_chunks()
    )
    cleaned = clean_batch(bronze, spec, seen_ids=seen, now=end)
    properties = CommitProperties(
        custom_metadata={REBUILD_KEY: json.dumps({"day": day.isoformat(), "run_id": run_id})}
    )
    bounds = f"'{start.isoformat()}' AND {{col}} < '{end.isoformat()}'"
    write_deltalake(
        silver_dt, cleaned.silver, mode="overwrite", commit_properties=properties,
        predicate=f"_ingested_at >= {bounds.format(col='_ingested_at')}",
    )  # fmt: skip
    dead_dt = ensure_table(lake.uri(spec.name, "dead_letters"), DEAD_LETTER_SCHEMA, lake.storage_options)
    write_deltalake(
        dead_dt, cleaned.dead_letters, mode="overwrite", commit_properties=properties,
        predicate=f"ingested_at >= {bounds.format(col='ingested_at')}",
    )  # fmt: skip
    return RebuildReport(
        day=day,
        bronze_rows=bronze.num_rows,
        silver_rows=cleaned.silver_rows,
        dead_letter_rows=cleaned.dead_letter_rows,
        reasons=dict(cleaned.reason_counts),
        silver_version=silver_dt.version(),
        dead_letters_version=dead_dt.version(),
    )
