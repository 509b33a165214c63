"""Where the lake's Delta tables live and what their columns are.

The lake root is ``$RT_TRAINING_LAKE`` (default ``.data/lake`` under the current directory), a local folder or an
object-store URI (``s3://``, ``gs://``, ``az://``, ...); object-store credentials and options travel as
``storage_options``, handed to deltalake unchanged. A pipeline's tables are ``<root>/<pipeline>/<table>``.

The schemas here are the single definition every writer and reader uses: bronze and dead letters are fixed,
silver is derived from the pipeline spec by :func:`silver_schema`. Every column is nullable: Kafka allows a null
value (a tombstone) and a null key, and one nullability rule for all columns keeps tables created by different
writers identical.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from rt_training.spec.columns import META_COLUMNS

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.spec.models import FieldSpec, PipelineSpec

LAKE_ENV_VAR = "RT_TRAINING_LAKE"
DEFAULT_LAKE = os.path.join(".data", "lake")
TABLES = (
    "bronze",
    "silver",
    "dead_letters",
    "training_set",
    "sampler_state",
    "model_registry",
    "drift_reports",
    "run_events",
)
"""The tables of one pipeline, each at ``<root>/<pipeline>/<table>``."""
OFFSET_TABLES = ("bronze", "silver", "dead_letters")
"""The tables that carry Kafka offsets as Delta app transactions (each is exactly-once on its own)."""
CHECKPOINTS = "checkpoints"

UTC_MS = pa.timestamp("ms", tz="UTC")
UTC_US = pa.timestamp("us", tz="UTC")

RECORD_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", UTC_MS),
        ("key", pa.binary()),
        ("value", pa.binary()),
    ]
)
"""A Kafka record as read: coordinates, Kafka's timestamp, raw key and value bytes."""

RUN_COLUMNS = pa.schema([("ingested_at", UTC_US), ("run_id", pa.string())])
"""When and by which run a row was written."""

BRONZE_SCHEMA = pa.schema([*RECORD_SCHEMA, *RUN_COLUMNS])

DEAD_LETTER_SCHEMA = pa.schema(
    [*RECORD_SCHEMA, ("reason", pa.string()), ("detail", pa.string()), *RUN_COLUMNS]
)
"""Rejected records: the raw record, a machine ``reason`` code and a human ``detail`` (field and value)."""

FIELD_TYPES: Mapping[str, pa.DataType] = {
    "string": pa.string(),
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": UTC_US,
    "vector": pa.list_(pa.float32()),
}
"""Silver column type of each spec field type but ``list``, whose type depends on its items (:func:`field_type`)."""
LIST_ITEM_TYPES: Mapping[str, pa.DataType] = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}
"""Element type of a ``list`` field's silver column, by the field's ``items``."""

_META_TYPES = (pa.string(), pa.int32(), pa.int64(), UTC_US)


class LakeSchemaError(ValueError):
    """A table or a batch does not have the columns it must have."""


def lake_root(root: str | os.PathLike[str] | None = None) -> str:
    """The lake root: ``root`` if given, else ``$RT_TRAINING_LAKE``, else ``.data/lake``.

    Local folders come back absolute (a run launched from another directory must find the same tables);
    object-store URIs come back as given, without a trailing slash.
    """
    chosen = os.fspath(root) if root is not None else (os.environ.get(LAKE_ENV_VAR) or DEFAULT_LAKE)
    if is_object_store(chosen):
        return chosen.rstrip("/")
    return os.path.abspath(chosen)


def is_object_store(uri: str) -> bool:
    """True for ``scheme://`` URIs other than ``file://``."""
    return "://" in uri and not uri.startswith("file://")


def table_uri(pipeline: str, table: str, root: str | os.PathLike[str] | None = None) -> str:
    """``<root>/<pipeline>/<table>`` for a local folder or an object-store URI."""
    for part, what in ((pipeline, "pipeline"), (table, "table")):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise ValueError(f"{what} name {part!r} must be one non-empty path segment")
    return _join(lake_root(root), pipeline, table)


def checkpoints_dir(pipeline: str, root: str | os.PathLike[str] | None = None) -> str:
    """``<root>/<pipeline>/checkpoints``, where model checkpoints are written."""
    return _join(lake_root(root), pipeline, CHECKPOINTS)


def _join(root: str, *parts: str) -> str:
    if is_object_store(root):
        return "/".join([root, *parts])
    return os.path.join(root, *parts)


def field_type(field: FieldSpec) -> pa.DataType:
    """The silver column type of one schema field: :data:`FIELD_TYPES`, or ``list<T>`` with ``T`` from
    :data:`LIST_ITEM_TYPES` for a ``list`` field."""
    if field.type == "list":
        return pa.list_(LIST_ITEM_TYPES[field.items or "string"])
    return FIELD_TYPES[field.type]


def silver_schema(spec: PipelineSpec) -> pa.Schema:
    """Silver's columns for ``spec``.

    ``_topic``, ``_partition``, ``_offset``, ``_ingested_at``; then every schema field in spec order with its
    declared type (:func:`field_type`): string and text ``string``, int ``int64``, float ``float64``, bool
    ``bool``, timestamp ``timestamp[us, UTC]``, list ``list<string | int64 | float64>``, vector
    ``list<float32>`` (every value exactly ``dim`` long). Silver holds no feature columns: features are computed
    from these fields when a model trains or scores, with a fitted feature state.
    """
    fields = [pa.field(name, t) for name, t in zip(META_COLUMNS, _META_TYPES, strict=True)]
    fields += [pa.field(name, field_type(f)) for name, f in spec.schema_.fields.items()]
    return pa.schema(fields)


def open_table(uri: str, storage_options: Mapping[str, str] | None = None) -> DeltaTable | None:
    """The Delta table at ``uri`` at its latest version, or None when there is none (yet)."""
    from deltalake import DeltaTable

    options = dict(storage_options) if storage_options else None
    if not DeltaTable.is_deltatable(uri, options):
        return None
    return DeltaTable(uri, storage_options=options)


def ensure_table(
    uri: str,
    schema: pa.Schema,
    storage_options: Mapping[str, str] | None = None,
    *,
    partition_by: list[str] | None = None,
    configuration: Mapping[str, str | None] | None = None,
) -> DeltaTable:
    """Open the table at ``uri``, creating it with ``schema`` when missing, and check its columns.

    Two processes may create the same table at once. With deltalake 1.6.6 either the loser gets "table already
    exists" (it then opens the winner's table), or — measured — both succeed and the loser's CREATE lands as
    version 1, rewriting the same metadata. Both outcomes are harmless because every creator passes the same
    schema, which this function verifies: a table whose columns differ from ``schema`` raises
    :class:`LakeSchemaError` naming them.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    options = dict(storage_options) if storage_options else None
    dt = open_table(uri, options)
    if dt is None:
        try:
            dt = DeltaTable.create(
                uri,
                schema=schema,
                mode="error",
                partition_by=partition_by,
                configuration=dict(configuration) if configuration else None,
                storage_options=options,
            )
        except DeltaError:
            dt = open_table(uri, options)
            if dt is None:
                raise
    check_columns(uri, table_schema(dt), schema)
    return dt


def table_schema(dt: DeltaTable) -> pa.Schema:
    """The table's schema as a pyarrow schema."""
    return pa.schema(dt.schema().to_arrow())


def as_stored(schema: pa.Schema) -> pa.Schema:
    """``schema`` as a Delta table stores it (Delta keeps timestamps in microseconds, for one)."""
    from deltalake import Schema

    return pa.schema(Schema.from_arrow(schema).to_arrow())


def check_columns(uri: str, actual: pa.Schema, expected: pa.Schema) -> None:
    """Raise :class:`LakeSchemaError` unless the table schema ``actual`` has exactly the column names and types
    of ``expected`` as Delta stores them."""
    want = {f.name: f.type for f in as_stored(expected)}
    have = {f.name: f.type for f in actual}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    retyped = [f"{n}: {have[n]} (expected {want[n]})" for n in want if n in have and have[n] != want[n]]
    if missing or extra or retyped:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"unexpected columns {extra}")
        if retyped:
            problems.append(f"other types: {'; '.join(retyped)}")
        raise LakeSchemaError(
            f"Delta table {uri} does not have the expected columns: {', '.join(problems)}. "
            "If the pipeline spec changed, write to a new lake root or pipeline name, or migrate the table."
        )
