"""Bronze batches with known contents for the lake tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from rt_training.lake.tables import BRONZE_SCHEMA
from rt_training.stream.planner import OffsetRange

TOPIC = "events"
PIPELINE = "demo"
INGESTED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def bronze(*ranges: OffsetRange, skip: frozenset[int] = frozenset(), run_id: str = "run-1") -> pa.Table:
    """One row per offset of each range (except offsets in ``skip``), value ``b"<partition>:<offset>"``."""
    rows = [
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": o,
            "timestamp": datetime.fromtimestamp(1_700_000_000 + o, UTC),
            "key": None,
            "value": f"{r.partition}:{o}".encode(),
            "ingested_at": INGESTED_AT,
            "run_id": run_id,
        }
        for r in ranges
        for o in range(r.start, r.end)
        if o not in skip
    ]
    return pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA)


def rng(partition: int, start: int, end: int, topic: str = TOPIC) -> OffsetRange:
    return OffsetRange(topic, partition, start, end)


def keys(table: pa.Table) -> list[tuple[int, int]]:
    """Sorted (partition, offset) pairs of a table's rows."""
    return sorted(zip(table.column("partition").to_pylist(), table.column("offset").to_pylist(), strict=True))
