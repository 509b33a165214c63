"""Model-ready features from validated columns, as the spec declares them.

Numeric ``num__<field>`` (float32): the transform (``none``, ``log1p``, or ``clip`` to ``[clip_min, clip_max]``),
then ``(x - mean) / std``. A null (an optional field without default) becomes 0.0, the feature's mean. A value
whose feature is not finite (``log1p`` of a value <= -1; float32 overflow) rejects the record as
``out_of_range``, so every silver feature is finite.

Categorical ``cat__<field>`` (int32): with a vocabulary, the 1-based position of the value, 0 for unknown
values and nulls; with ``hash_buckets``, :func:`stable_hash64` of the value modulo the bucket count (nulls: 0).
The column is dictionary-encoded first, so each distinct value is hashed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.spec.columns import CATEGORICAL_PREFIX, NUMERIC_PREFIX
from rt_training.spec.models import CategoricalFeature, NumericFeature, PipelineSpec

_MULTIPLIER = np.uint64(0x100000001B3)
_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class FeatureFailure:
    """Rows whose feature of ``field`` is not finite, and how to describe each."""

    field: str
    mask: np.ndarray
    describe: Callable[[np.ndarray], list[str]]


def stable_hash64(strings: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes, the same in every process, platform and release.

    For bytes ``b_0 .. b_(L-1)``: ``h = sum((b_i + 1) * M**(L-1-i)) mod 2**64`` with ``M = 0x100000001B3``
    (Horner: ``h = h * M + b + 1``), then ``h ^= L * 0x9E3779B97F4A7C15`` and MurmurHash3's fmix64 finalizer
    so every input bit reaches the low bits used by ``% buckets``. The sum form is computed for all bytes of
    all strings at once with numpy (no loop over strings or positions). Changing any constant here re-buckets
    every categorical feature and invalidates trained models; tests pin known values. Nulls hash as "".
    """
    strings = strings.cast(pa.string()) if strings.type != pa.string() else strings
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + n + 1
    ].astype(np.int64)
    lengths = np.diff(offsets)
    if strings.null_count:
        lengths[strings.is_null().to_numpy(zero_copy_only=False)] = 0
    starts = offsets[:-1]
    total = int(lengths.sum())
    sums = np.zeros(n, dtype=np.uint64)
    if total:
        data = np.frombuffer(strings.buffers()[2], dtype=np.uint8)
        row_end = np.repeat(starts + lengths, lengths)
        position = (
            np.arange(total, dtype=np.int64)
            - np.repeat(np.cumsum(lengths) - lengths, lengths)
            + np.repeat(starts, lengths)
        )
        powers = np.ones(int(lengths.max()), dtype=np.uint64)
        powers[1:] = np.cumprod(np.full(len(powers) - 1, _MULTIPLIER, dtype=np.uint64))
        terms = (data[position].astype(np.uint64) + np.uint64(1)) * powers[row_end - 1 - position]
        running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(terms, dtype=np.uint64)])
        ends = np.cumsum(lengths)
        sums = running[ends] - running[ends - lengths]
    return _fmix64(sums ^ (lengths.astype(np.uint64) * _LENGTH_MIX))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def hash_buckets(values: pa.Array, buckets: int) -> np.ndarray:
    """Bucket in ``[0, buckets)`` of each string (nulls: 0), hashing each distinct value once."""
    encoded = pc.dictionary_encode(values)
    per_value = (stable_hash64(encoded.dictionary) % np.uint64(buckets)).astype(np.int32)
    indices = encoded.indices
    out = (
        per_value[indices.fill_null(0).to_numpy(zero_copy_only=False)]
        if len(per_value)
        else np.zeros(len(values), np.int32)
    )
    if indices.null_count:
        out[indices.is_null().to_numpy(zero_copy_only=False)] = 0
    return out


def vocabulary_index(values: pa.Array, vocabulary: list[str]) -> np.ndarray:
    """1-based position of each value in ``vocabulary``; 0 for values not in it and for nulls."""
    index = pc.index_in(values, value_set=pa.array(vocabulary, pa.string()))
    return pc.add(index, 1).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)


def categorical_feature(values: pa.Array, feature: CategoricalFeature) -> np.ndarray:
    """int32 codes of one categorical feature."""
    if feature.vocabulary is not None:
        return vocabulary_index(values, feature.vocabulary)
    return hash_buckets(values, int(feature.hash_buckets or 0))


def numeric_feature(values: pa.Array, feature: NumericFeature) -> tuple[np.ndarray, np.ndarray]:
    """float32 feature and the mask of non-null values whose feature is not finite."""
    x = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if feature.transform == "log1p":
            x = np.where(x > -1.0, np.log1p(x), np.nan)
        elif feature.transform == "clip":
            x = np.clip(x, feature.clip_min, feature.clip_max)
        out = ((x - feature.mean) / feature.std).astype(np.float32)
    bad = ~np.isfinite(out) & ~nulls
    out[nulls | bad] = 0.0
    return out, bad


def build_features(
    columns: dict[str, pa.Array], spec: PipelineSpec
) -> tuple[dict[str, pa.Array], list[FeatureFailure]]:
    """All feature columns (numeric first, then categorical, each in spec order) and the failures."""
    features: dict[str, pa.Array] = {}
    failures = []
    for feature in spec.features.numeric:
        values = columns[feature.name]
        out, bad = numeric_feature(values, feature)
        features[NUMERIC_PREFIX + feature.name] = pa.array(out, type=pa.float32())
        if bad.any():
            failures.append(FeatureFailure(feature.name, bad, _describe_numeric(feature, values)))
    for feature in spec.features.categorical:
        features[CATEGORICAL_PREFIX + feature.name] = pa.array(
            categorical_feature(columns[feature.name], feature), type=pa.int32()
        )
    return features, failures


def _describe_numeric(feature: NumericFeature, values: pa.Array) -> Callable[[np.ndarray], list[str]]:
    domain = (
        "> -1, the domain of log1p"
        if feature.transform == "log1p"
        else "small enough for a finite float32 feature"
    )

    def describe(rows: np.ndarray) -> list[str]:
        return [f"field {feature.name!r} value {values[int(r)].as_py()!r} must be {domain}" for r in rows]

    return describe
