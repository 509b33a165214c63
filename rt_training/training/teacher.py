"""Silver-like rows labelled by a random teacher model: a known answer for a spec's model to learn.

:class:`LinearTeacher` draws, for any tabular spec, one weight per numeric feature and one effect per value of
each small categorical feature (large hash-bucket pools carry no signal: a few thousand rows cannot learn
thousands of effects). :meth:`LinearTeacher.table` then samples rows with the silver layout that training
reads: the Kafka coordinates and ``_ingested_at``, the id, event-time and label fields, and each feature's raw
field (numeric values whose standardized feature is a standard normal under the spec's transform and
statistics, categorical values from the vocabulary, a pool of ``<field>_<n>`` names, or small ints). Tests and the training benchmark use it to exercise
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
from rt_training.spec.models import CategoricalFeature, NumericFeature

_SIGNAL_MAX_CARDINALITY = 64
_LEARNED_POOL = 16
_HASHED_POOL_PER_BUCKET = 2
_ARROW = {"int": pa.int64(), "bool": pa.bool_(), "float": pa.float64(), "string": pa.string()}


def _inverse_transform(z: np.ndarray, feature: NumericFeature) -> np.ndarray:
    """A raw value whose feature (transform, then the spec's or a unit scaling) is ``z``."""
    x = (feature.mean or 0.0) + (feature.std or 1.0) * z
    return np.expm1(x) if feature.transform == "log1p" else x


class LinearTeacher:
    """A random linear model over the spec's numeric and categorical features:
    ``logit = w·z + Σ effect[category] + bias``, where ``z`` is each numeric feature's standardized value."""

    def __init__(self, spec: PipelineSpec, seed: int = 0, scale: float = 1.0) -> None:
        self.spec = spec
        rng = np.random.default_rng((seed, 1))
        self.numeric = list(spec.features.numeric)
        self.categorical = list(spec.features.categorical)
        self.pools = [self._pool(c) for c in self.categorical]
        self.weights = rng.normal(0.0, scale, len(self.numeric))
        self.effects = [
            rng.normal(0.0, scale, len(pool)) if len(pool) <= _SIGNAL_MAX_CARDINALITY else np.zeros(len(pool))
            for pool in self.pools
        ]
        self.bias = 0.0

    def _pool(self, feature: CategoricalFeature) -> list[object]:
        """The values a categorical field takes here, typed like the schema field."""
        kind = self.spec.schema_.fields[feature.name].type
        if kind == "bool":
            return [False, True]
        if feature.vocabulary is not None:
            values: list[str] = list(feature.vocabulary)
        elif feature.hash_buckets is not None:
            values = [f"{feature.name}_{k}" for k in range(_HASHED_POOL_PER_BUCKET * feature.hash_buckets)]
        else:
            values = [f"{feature.name}_{k}" for k in range(_LEARNED_POOL)]
        if kind == "int":
            return [int(v) if v.lstrip("-").isdigit() else k for k, v in enumerate(values)]
        return values

    def logits(self, z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        out = z.astype(np.float64) @ self.weights + self.bias
        for j, effect in enumerate(self.effects):
            out += effect[codes[:, j]]
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
        fields = spec.schema_.fields
        z = rng.normal(0.0, 1.0, (rows, len(self.numeric))).astype(np.float32)
        codes = np.zeros((rows, len(self.pools)), dtype=np.int64)
        for j, pool in enumerate(self.pools):
            codes[:, j] = rng.integers(0, len(pool), rows)
        logits = self.logits(z, codes)
        if spec.label.kind == "binary":
            label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
        else:
            label = logits + rng.normal(0.0, 0.5, rows)
        i = np.arange(rows)
        times = np.datetime64(start_time.replace(tzinfo=None), "us") + i * np.timedelta64(interval, "us")
        columns: dict[str, pa.Array] = {
            "_topic": pa.array([topic or spec.source.topic] * rows, pa.string()),
            "_partition": pa.array(i % partitions, pa.int32()),
            "_offset": pa.array(start_offset + i // partitions, pa.int64()),
            "_ingested_at": pa.array(times, pa.timestamp("us", tz="UTC")),
            spec.id_field: self._ids(rows, seed, start_offset),
            spec.time_field: pa.array(times, pa.timestamp("us", tz="UTC")),
            spec.label.field: pa.array(label).cast(_ARROW[fields[spec.label.field].type]),
        }
        for j, feature in enumerate(self.numeric):
            raw = _inverse_transform(z[:, j].astype(np.float64), feature)
            kind = fields[feature.name].type
            if kind == "int":
                raw = np.round(raw)
            columns[feature.name] = pa.array(raw > 0 if kind == "bool" else raw).cast(_ARROW[kind])
        for j, feature in enumerate(self.categorical):
            values = [self.pools[j][k] for k in codes[:, j]]
            columns[feature.name] = pa.array(values, _ARROW[fields[feature.name].type])
        return pa.table(columns)

    def _ids(self, rows: int, seed: int, start_offset: int) -> pa.Array:
        if self.spec.schema_.fields[self.spec.id_field].type == "int":
            return pa.array(seed * 1_000_000_000 + start_offset + np.arange(rows), pa.int64())
        return pa.array([f"{seed}-{start_offset + k}" for k in range(rows)], pa.string())
