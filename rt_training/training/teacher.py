"""Silver-like feature rows labelled by a random teacher model: a known answer for a spec's model to learn.

:class:`LinearTeacher` draws, for any spec, one weight per numeric feature and one effect per category of each
small-vocabulary categorical feature (large hash-bucket features carry no signal: a few thousand rows cannot
learn thousands of effects). :meth:`LinearTeacher.table` then samples rows with the silver layout that
training reads: the Kafka coordinates and ``_ingested_at``, the id, event-time and label fields, ``num__*``
(float32, already standardized) and ``cat__*`` (int32). Tests and the training benchmark use it to exercise
training without the stream: for raw events that go through parsing and cleaning, see
:mod:`rt_training.stream.synthetic`.

Examples
--------
>>> from rt_training.spec import load_spec
>>> table = LinearTeacher(load_spec(), seed=1).table(rows=4, seed=2)
>>> table.num_rows, table.schema.field("_offset").type
(4, DataType(int64))
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from rt_training.spec import PipelineSpec
from rt_training.training.models import FeatureInfo

_SIGNAL_MAX_CARDINALITY = 64
_ARROW_LABEL = {"int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}


class LinearTeacher:
    """A random linear model over the spec's features: ``logit = w·num + Σ effect[cat] + bias``."""

    def __init__(self, spec: PipelineSpec, seed: int = 0, scale: float = 1.0) -> None:
        self.spec = spec
        self.features = FeatureInfo.from_spec(spec)
        rng = np.random.default_rng((seed, 1))
        self.weights = rng.normal(0.0, scale, len(self.features.numeric))
        self.effects = [
            rng.normal(0.0, scale, card) if card <= _SIGNAL_MAX_CARDINALITY else np.zeros(card)
            for card in self.features.cardinalities
        ]
        self.bias = 0.0

    def logits(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        out = numeric.astype(np.float64) @ self.weights + self.bias
        for j, effect in enumerate(self.effects):
            out += effect[categorical[:, j]]
        return out

    def table(
        self,
        rows: int,
        seed: int,
        *,
        start_offset: int = 0,
        start_time: dt.datetime = dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        interval: dt.timedelta = dt.timedelta(milliseconds=100),
        partitions: int = 1,
        topic: str | None = None,
    ) -> pa.Table:
        """``rows`` silver-like rows; offsets count from ``start_offset`` per partition, times from
        ``start_time``."""
        spec, rng = self.spec, np.random.default_rng((seed, 2))
        numeric = rng.normal(0.0, 1.0, (rows, len(self.features.numeric))).astype(np.float32)
        categorical = np.zeros((rows, len(self.features.cardinalities)), dtype=np.int64)
        for j, card in enumerate(self.features.cardinalities):
            categorical[:, j] = rng.integers(0, card, rows)
        logits = self.logits(numeric, categorical)
        if spec.label.kind == "binary":
            label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
        else:
            label = logits + rng.normal(0.0, 0.5, rows)
        i = np.arange(rows)
        times = np.datetime64(start_time.replace(tzinfo=None), "us") + i * np.timedelta64(interval, "us")
        label_type = _ARROW_LABEL[spec.schema_.fields[spec.label.field].type]
        columns: dict[str, pa.Array] = {
            "_topic": pa.array([topic or spec.source.topic] * rows, pa.string()),
            "_partition": pa.array(i % partitions, pa.int32()),
            "_offset": pa.array(start_offset + i // partitions, pa.int64()),
            "_ingested_at": pa.array(times, pa.timestamp("us", tz="UTC")),
            spec.id_field: self._ids(rows, seed, start_offset),
            spec.time_field: pa.array(times, pa.timestamp("us", tz="UTC")),
            spec.label.field: pa.array(label).cast(label_type),
        }
        for j, name in enumerate(self.features.numeric_columns):
            columns[name] = pa.array(numeric[:, j], pa.float32())
        for j, name in enumerate(self.features.categorical_columns):
            columns[name] = pa.array(categorical[:, j].astype(np.int32), pa.int32())
        return pa.table(columns)

    def _ids(self, rows: int, seed: int, start_offset: int) -> pa.Array:
        if self.spec.schema_.fields[self.spec.id_field].type == "int":
            return pa.array(seed * 1_000_000_000 + start_offset + np.arange(rows), pa.int64())
        return pa.array([f"{seed}-{start_offset + k}" for k in range(rows)], pa.string())
