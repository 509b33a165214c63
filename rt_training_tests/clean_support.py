"""Builders for the cleaning tests: demo events as JSON bytes, and bronze batches holding them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from rt_training.clean import BRONZE_SCHEMA
from rt_training.spec import parse_spec

INGESTED_AT = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
KAFKA_TS = datetime(2024, 1, 1, 11, 59, 59, tzinfo=UTC)

VALID: dict[str, Any] = {
    "event_id": "e-1",
    "event_time": 1_704_110_400_000,  # 2024-01-01T12:00:00Z
    "user_id": "u-1",
    "item_id": "i-1",
    "price": 10.0,
    "dwell_time_s": 3.0,
    "position": 2,
    "user_tenure_days": 100.0,
    "discount": 0.2,
    "device": "mobile",
    "category": "books",
    "country": "US",
    "clicked": 1,
}
TINY_SPEC = parse_spec(
    {
        "name": "tiny",
        "source": {"topic": "tiny"},
        "schema": {
            "id_field": "id",
            "time_field": "t",
            "fields": {"id": {"type": "string"}, "t": {"type": "timestamp"}},
        },
        "time": {"min_event_time": None},
        "features": {"text": [{"name": "id"}]},
        "label": {"field": "id", "kind": "language_model"},
        "model": {"builtin": "causal_lm"},
    }
)
"""A two-field spec (string id, timestamp) for parsers and faults that need no demo fields (the smallest valid
spec on two fields: a language model of the id). Its parsers' records carry times of 1970 (a few seconds of epoch
milliseconds), so it has no ``time.min_event_time``."""

DROP = object()
"""Pass as a field value to :func:`event` to leave the field out."""


def event(**changes: Any) -> bytes:
    """A valid demo event as JSON bytes, with fields changed (``DROP`` removes one)."""
    doc = {k: v for k, v in {**VALID, **changes}.items() if v is not DROP}
    return json.dumps(doc).encode()


def bronze(
    values: list[bytes | None],
    *,
    topic: str = "clickstream",
    partitions: list[int] | None = None,
    offsets: list[int] | None = None,
    ingested_at: datetime = INGESTED_AT,
) -> pa.Table:
    """A bronze batch of ``values`` (partition 0, offsets 0.. unless given)."""
    n = len(values)
    return pa.Table.from_pydict(
        {
            "topic": [topic] * n,
            "partition": partitions if partitions is not None else [0] * n,
            "offset": offsets if offsets is not None else list(range(n)),
            "timestamp": [KAFKA_TS] * n,
            "key": [b"k%d" % i for i in range(n)],
            "value": values,
            "ingested_at": [ingested_at] * n,
            "run_id": ["run-1"] * n,
        },
        schema=BRONZE_SCHEMA,
    )


SENSOR_SPEC: dict[str, Any] = {
    "name": "sensors",
    "source": {"topic": "readings"},
    "schema": {
        "id_field": "reading_id",
        "time_field": "ts",
        "max_record_bytes": 512,
        "fields": {
            "reading_id": {"type": "int"},
            "ts": {"type": "timestamp"},
            "site": {"type": "string", "allowed": ["north", "south", "east"], "max_length": 5},
            "temperature": {"type": "float", "min": -50, "max": 60},
            "is_weekend": {"type": "bool"},
            "load": {"type": "float", "required": False},
            "serial": {"type": "string", "required": False, "default": "unknown", "max_length": 12},
            "count": {"type": "int", "required": False, "default": 7},
            "kwh": {"type": "float"},
        },
    },
    "features": {
        "numeric": [
            {
                "name": "temperature",
                "transform": "clip",
                "clip_min": -10,
                "clip_max": 40,
                "mean": 15,
                "std": 10,
            },
            {"name": "is_weekend", "mean": 0.25, "std": 0.5},
            {"name": "load", "transform": "log1p", "mean": 1.0, "std": 2.0},
        ],
        "categorical": [
            {"name": "site", "vocabulary": ["north", "south"]},
            {"name": "serial", "hash_buckets": 16},
        ],
    },
    "label": {"field": "kwh", "kind": "regression"},
    "training": {"metric": "rmse"},
}
"""A second, different pipeline: int ids, a bool feature, clip/log1p transforms, regression label, defaults."""

SENSOR_VALID: dict[str, Any] = {
    "reading_id": 1,
    "ts": "2024-01-01T12:00:00Z",
    "site": "north",
    "temperature": 20.5,
    "is_weekend": True,
    "load": 3.0,
    "serial": "SN-1",
    "count": 2,
    "kwh": 1.5,
}


def reading(**changes: Any) -> bytes:
    """A valid sensor reading as JSON bytes, with fields changed (``DROP`` removes one)."""
    doc = {k: v for k, v in {**SENSOR_VALID, **changes}.items() if v is not DROP}
    return json.dumps(doc).encode()


TYPED_SPEC: dict[str, Any] = {
    "name": "typed",
    "source": {"topic": "docs"},
    "schema": {
        "id_field": "doc_id",
        "time_field": "ts",
        "fields": {
            "doc_id": {"type": "string"},
            "ts": {"type": "timestamp"},
            "body": {"type": "text", "max_length": 20},
            "tags": {"type": "list", "items": "string", "max_length": 3},
            "counts": {"type": "list", "items": "int", "min": 0, "max": 100},
            "scores": {
                "type": "list",
                "items": "float",
                "min": -1,
                "max": 1,
                "required": False,
                "default": [],
            },
            "emb": {"type": "vector", "dim": 3, "min": -10, "max": 10},
            "bucket": {"type": "int"},
            "flag": {"type": "bool"},
            "y": {"type": "int", "min": 0, "max": 1},
        },
    },
    "features": {
        "text": [{"name": "body"}],
        "sequence": [{"name": "tags"}, {"name": "counts"}, {"name": "scores"}],
        "vector": [{"name": "emb"}],
        "categorical": [{"name": "bucket"}, {"name": "flag", "vocabulary": [True, False]}],
    },
    "label": {"field": "y", "kind": "binary"},
}
"""Every new field type: text, lists of strings, ints and floats, a vector; categorical int and bool fields."""

TYPED_VALID: dict[str, Any] = {
    "doc_id": "d-1",
    "ts": 1_704_110_400_000,
    "body": "hello world",
    "tags": ["news", "sport"],
    "counts": [1, 2, 3],
    "scores": [0.5, -0.25],
    "emb": [0.5, -1.5, 2.0],
    "bucket": 7,
    "flag": True,
    "y": 1,
}


def document(**changes: Any) -> bytes:
    """A valid typed document as JSON bytes, with fields changed (``DROP`` removes one)."""
    doc = {k: v for k, v in {**TYPED_VALID, **changes}.items() if v is not DROP}
    return json.dumps(doc).encode()
