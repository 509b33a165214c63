"""Lake root and table locations, the shared table schemas, create-if-missing."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from clean_support import TYPED_SPEC
from deltalake import DeltaTable

from rt_training.lake.tables import (
    BRONZE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    LAKE_ENV_VAR,
    LakeSchemaError,
    as_stored,
    checkpoints_dir,
    ensure_table,
    lake_root,
    open_table,
    silver_schema,
    table_schema,
    table_uri,
)
from rt_training.spec import load_spec, parse_spec

US = pa.timestamp("us", tz="UTC")


def test_lake_root_from_argument_env_or_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(LAKE_ENV_VAR, raising=False)
    assert lake_root() == str(tmp_path / ".data" / "lake")
    monkeypatch.setenv(LAKE_ENV_VAR, "relative/lake")
    assert lake_root() == str(tmp_path / "relative" / "lake")
    monkeypatch.setenv(LAKE_ENV_VAR, "s3://bucket/lake/")
    assert lake_root() == "s3://bucket/lake"
    assert lake_root("gs://b/x") == "gs://b/x"
    assert lake_root(tmp_path / "given") == str(tmp_path / "given")


def test_table_uris(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(LAKE_ENV_VAR, str(tmp_path))
    assert table_uri("clickstream", "bronze") == os.path.join(str(tmp_path), "clickstream", "bronze")
    assert table_uri("clickstream", "silver", "s3://bucket/lake") == "s3://bucket/lake/clickstream/silver"
    assert checkpoints_dir("clickstream", "az://c/l") == "az://c/l/clickstream/checkpoints"
    with pytest.raises(ValueError, match="table name 'a/b' must be one non-empty path segment"):
        table_uri("clickstream", "a/b")
    with pytest.raises(ValueError, match=r"pipeline name '\.\.'"):
        table_uri("..", "bronze")


def test_bronze_and_dead_letter_columns() -> None:
    assert [(f.name, f.type) for f in BRONZE_SCHEMA] == [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("ingested_at", US),
        ("run_id", pa.string()),
    ]
    assert DEAD_LETTER_SCHEMA.names == [*BRONZE_SCHEMA.names[:6], "reason", "detail", "ingested_at", "run_id"]
    assert all(f.nullable for f in [*BRONZE_SCHEMA, *DEAD_LETTER_SCHEMA])


def test_silver_schema_of_demo_spec() -> None:
    schema = silver_schema(load_spec())
    assert schema.names[:4] == ["_topic", "_partition", "_offset", "_ingested_at"]
    assert [schema.field(n).type for n in schema.names[:4]] == [pa.string(), pa.int32(), pa.int64(), US]
    assert schema.field("event_time").type == US
    assert schema.field("price").type == pa.float64()
    assert schema.field("position").type == pa.int64()
    assert schema.field("device").type == pa.string()
    assert not [n for n in schema.names if n.startswith(("num__", "cat__"))]
    assert len(schema) == 4 + 13


def test_silver_schema_follows_another_spec() -> None:
    spec = parse_spec(
        {
            "name": "sensors",
            "source": {"topic": "readings"},
            "schema": {
                "id_field": "reading",
                "time_field": "at",
                "fields": {
                    "reading": {"type": "string"},
                    "at": {"type": "timestamp"},
                    "ok": {"type": "bool"},
                    "celsius": {"type": "float"},
                    "site": {"type": "string"},
                    "alarm": {"type": "int", "min": 0, "max": 1},
                },
            },
            "features": {
                "numeric": [{"name": "celsius"}, {"name": "ok"}],
                "categorical": [{"name": "site", "hash_buckets": 16}],
            },
            "label": {"field": "alarm", "kind": "binary"},
        }
    )
    assert [(f.name, f.type) for f in silver_schema(spec)] == [
        ("_topic", pa.string()),
        ("_partition", pa.int32()),
        ("_offset", pa.int64()),
        ("_ingested_at", US),
        ("reading", pa.string()),
        ("at", US),
        ("ok", pa.bool_()),
        ("celsius", pa.float64()),
        ("site", pa.string()),
        ("alarm", pa.int64()),
    ]


def test_silver_schema_of_text_list_and_vector_fields() -> None:
    spec = parse_spec(TYPED_SPEC)
    assert [(f.name, f.type) for f in silver_schema(spec)][4:] == [
        ("doc_id", pa.string()),
        ("ts", US),
        ("body", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("counts", pa.list_(pa.int64())),
        ("scores", pa.list_(pa.float64())),
        ("emb", pa.list_(pa.float32())),
        ("bucket", pa.int64()),
        ("flag", pa.bool_()),
        ("y", pa.int64()),
    ]


def test_ensure_table_creates_once_and_checks_columns(tmp_path: Path) -> None:
    uri = str(tmp_path / "dead_letters")
    assert open_table(uri) is None
    created = ensure_table(uri, DEAD_LETTER_SCHEMA)
    assert created.version() == 0
    again = ensure_table(uri, DEAD_LETTER_SCHEMA)
    assert again.version() == 0 and len(DeltaTable(uri).history()) == 1
    # Delta keeps timestamps in microseconds: Kafka's millisecond timestamp comes back as us.
    assert table_schema(again) == as_stored(DEAD_LETTER_SCHEMA)
    assert table_schema(again).field("timestamp").type == US
    retyped = DEAD_LETTER_SCHEMA.set(2, pa.field("offset", pa.string()))
    with pytest.raises(LakeSchemaError, match=r"other types: offset: int64 \(expected string\)") as err:
        ensure_table(uri, retyped)
    assert uri in str(err.value)
