"""Arrow schemas of the tables cleaning reads (bronze) and writes (silver, dead letters)."""

from __future__ import annotations

import pyarrow as pa

from rt_training.clean.validate import ARROW_TYPES
from rt_training.spec.columns import CATEGORICAL_PREFIX, META_COLUMNS, NUMERIC_PREFIX
from rt_training.spec.models import PipelineSpec

BRONZE_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
    ]
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
    ]
)

_META_TYPES = (pa.string(), pa.int32(), pa.int64(), pa.timestamp("us", tz="UTC"))
META_SOURCES = ("topic", "partition", "offset", "ingested_at")
"""The bronze column each silver meta column (``META_COLUMNS``) is copied from."""


def silver_schema(spec: PipelineSpec) -> pa.Schema:
    """Meta columns, every schema field (spec order), ``num__`` features, then ``cat__`` features (spec order)."""
    fields = [pa.field(name, t) for name, t in zip(META_COLUMNS, _META_TYPES, strict=True)]
    fields += [pa.field(name, ARROW_TYPES[f.type]) for name, f in spec.schema_.fields.items()]
    fields += [pa.field(NUMERIC_PREFIX + name, pa.float32()) for name in spec.numeric_feature_names]
    fields += [pa.field(CATEGORICAL_PREFIX + name, pa.int32()) for name in spec.categorical_feature_names]
    return pa.schema(fields)
