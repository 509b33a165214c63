"""The feature checks cleaning makes so every silver row can be featurized, and the stable hash of categories.

Silver holds typed fields, not features: a fitted feature state (``rt_training.features``) computes the model's
inputs from silver's columns at training and scoring time. Cleaning still rejects a record whose numeric feature
would not be finite, as ``out_of_range``: ``log1p`` of a value <= -1, and, when the spec fixes both ``mean`` and
``std``, a standardized value beyond float32's range. A value a feature clips, or a null (an optional field
without default), always gives a finite feature.

:func:`stable_hash64` is the hash of categorical values to OOV and hash buckets, shared with the feature state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.spec.models import NumericFeature, PipelineSpec

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


def numeric_failures(values: pa.Array, feature: NumericFeature) -> np.ndarray:
    """Mask of the non-null values whose feature is not finite (see the module's docstring)."""
    x = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if feature.transform == "log1p":
            x = np.where(x > -1.0, np.log1p(x), np.nan)
        elif feature.transform == "clip":
            x = np.clip(x, feature.clip_min, feature.clip_max)
        if feature.mean is not None and feature.std is not None:
            x = ((x - feature.mean) / feature.std).astype(np.float32)
    return ~np.isfinite(x) & ~nulls


def check_features(columns: dict[str, pa.Array], spec: PipelineSpec) -> list[FeatureFailure]:
    """The numeric features (in spec order) of validated ``columns`` that are not finite for some rows."""
    failures = []
    for feature in spec.features.numeric:
        values = columns[feature.name]
        bad = numeric_failures(values, feature)
        if bad.any():
            failures.append(FeatureFailure(feature.name, bad, _describe_numeric(feature, values)))
    return failures


def _describe_numeric(feature: NumericFeature, values: pa.Array) -> Callable[[np.ndarray], list[str]]:
    domain = (
        "> -1, the domain of log1p"
        if feature.transform == "log1p"
        else "small enough for a finite float32 feature"
    )

    def describe(rows: np.ndarray) -> list[str]:
        return [f"field {feature.name!r} value {values[int(r)].as_py()!r} must be {domain}" for r in rows]

    return describe
