"""Checks that the lake agrees with itself and with Kafka's offsets (run as Dagster asset checks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.history import commits
from rt_training.lake.tables import OFFSET_TABLES, open_table
from rt_training.spec import PipelineSpec
from rt_training.stream.planner import OffsetRange

_COORDS = {"bronze": ("topic", "partition", "offset"), "dead_letters": ("topic", "partition", "offset")}
_SILVER_COORDS = ("_topic", "_partition", "_offset")


@dataclass(frozen=True)
class Reconciliation:
    """Rows of some offset ranges in each table: bronze must equal silver + dead letters."""

    bronze: int
    silver: int
    dead_letters: int

    @property
    def ok(self) -> bool:
        return self.bronze == self.silver + self.dead_letters

    def describe(self) -> str:
        verdict = "=" if self.ok else "!="
        return f"bronze {self.bronze} {verdict} silver {self.silver} + dead letters {self.dead_letters}"


def rows_in_ranges(
    uri: str, coords: Sequence[str], ranges: Sequence[OffsetRange], storage_options=None
) -> int:
    """How many rows of the table at ``uri`` have coordinates inside ``ranges``."""
    import pyarrow.dataset as ds

    dt = open_table(uri, storage_options)
    if dt is None or not ranges:
        return 0
    topic, partition, offset = (ds.field(c) for c in coords)
    flt = None
    for r in ranges:
        cond = (topic == r.topic) & (partition == r.partition) & (offset >= r.start) & (offset < r.end)
        flt = cond if flt is None else flt | cond
    return dt.to_pyarrow_dataset().count_rows(filter=flt)


def reconcile(spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange]) -> Reconciliation:
    """Count the batch's rows in bronze, silver and dead letters by their Kafka coordinates."""
    counts = {
        table: rows_in_ranges(
            lake.uri(spec.name, table), _COORDS.get(table, _SILVER_COORDS), ranges, lake.storage_options
        )
        for table in OFFSET_TABLES
    }
    return Reconciliation(counts["bronze"], counts["silver"], counts["dead_letters"])


def offset_gaps(uri: str, storage_options=None, limit: int = 500) -> list[str]:
    """Breaks between consecutive commits' ranges of each partition (``start`` != the previous ``end``).

    Reads the ranges recorded in the last ``limit`` commits' metadata. Kafka's own gaps (transaction markers,
    compaction) lie inside ranges and are not breaks; offsets lost to retention are recorded separately.
    """
    last_end: dict[tuple[str, int], int] = {}
    problems = []
    for commit in reversed(commits(uri, storage_options, limit)):
        for r in commit.ranges:
            tp = (str(r["topic"]), int(r["partition"]))
            if tp in last_end and int(r["start"]) != last_end[tp]:
                problems.append(
                    f"{tp[0]}[{tp[1]}]: version {commit.version} starts at {r['start']}, "
                    f"the previous commit ended at {last_end[tp]}"
                )
            last_end[tp] = int(r["end"])
    return problems
