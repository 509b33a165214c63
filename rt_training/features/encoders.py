"""One encoder per feature: what was fitted for it, and how it turns a silver column into batch arrays.

Each encoder keeps its feature's spec and field (so a saved state featurizes without the spec), the fitted
parts (statistics, vocabulary), and names the spec settings those parts depend on (``signature_keys``, see
:func:`spec_signature`): when a new spec changes one of them, the fitted parts no longer apply and the feature is
fitted again from scratch. Settings outside the signature (``max_length``, ``truncation``, ``min_count``,
``max_size``, ``missing_indicator``) are taken from the newest spec at every fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.features.inputs import MASK_SUFFIX, MISSING_SUFFIX, InputInfo
from rt_training.features.lists import pad_lists, vector_block
from rt_training.features.vocabulary import Vocabulary
from rt_training.spec.models import (
    CategoricalFeature,
    FieldSpec,
    NumericFeature,
    SequenceFeature,
    VectorFeature,
)

Group = Literal["numeric", "categorical", "text", "sequence", "vector"]
Statistics = Literal["fitted", "refitted", "kept", "spec"]
_FIELD_KEYS = ("type", "items", "dim")


@dataclass(frozen=True)
class FitNote:
    """What one fit did to one feature's fitted parts.

    ``statistics``: ``fitted`` (first fit of this feature), ``refitted`` (the refit policy asked for it),
    ``kept`` (the previous state's), ``spec`` (all given by the spec); None for an input with no statistics.
    ``added``: vocabulary entries appended by growth, for a learned vocabulary grown from a previous state.
    """

    statistics: Statistics | None = None
    added: int | None = None


def _statistics(previous: object | None, refit: bool) -> Statistics:
    if previous is None:
        return "fitted"
    return "refitted" if refit else "kept"


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Population mean and std (numpy's, ``ddof=0``) of ``values``; std 1.0 where 0 or undefined, and
    ``(0.0, 1.0)`` for no values."""
    if values.size == 0:
        return 0.0, 1.0
    mean = float(np.mean(values))
    std = float(np.std(values))
    return mean, (std if math.isfinite(std) and std > 0 else 1.0)


def spec_signature(feature: Any, field: FieldSpec, keys: tuple[str, ...]) -> dict[str, Any]:
    """The settings ``keys`` of ``feature`` and the field's type, items and dim: what fitted parts depend on."""
    spec = feature.model_dump(mode="json")
    fld = field.model_dump(mode="json")
    return {**{k: spec[k] for k in keys}, **{f"field.{k}": fld[k] for k in _FIELD_KEYS}}


def _vocabulary_for(
    feature: CategoricalFeature | SequenceFeature, values: pa.Array, previous: Vocabulary | None
) -> tuple[Vocabulary, int | None]:
    """The vocabulary the spec asks for: fixed, hashed, learned, or the previous one grown."""
    if feature.vocabulary is not None:
        return Vocabulary.fixed(feature.vocabulary, feature.oov_buckets), None
    if feature.hash_buckets is not None:
        return Vocabulary.hashed(feature.hash_buckets), None
    if previous is None:
        return (
            Vocabulary.learn(
                values,
                min_count=feature.min_count,
                max_size=feature.max_size,
                oov_buckets=feature.oov_buckets,
            ),
            None,
        )
    return previous.grow(values, min_count=feature.min_count, max_size=feature.max_size)


# -- numeric ------------------------------------------------------------------------------------------


def _transformed(values: pa.Array, feature: NumericFeature) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``transform(x)`` (nulls: NaN) and the bool null mask.

    Raises
    ------
    ValueError
        A non-null value whose transform is not finite (cleaning rejects those as ``out_of_range``).
    """
    x = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    if feature.transform == "log1p":
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(x > -1.0, np.log1p(x), np.nan)
    elif feature.transform == "clip":
        lo = -np.inf if feature.clip_min is None else feature.clip_min
        hi = np.inf if feature.clip_max is None else feature.clip_max
        x = np.clip(x, lo, hi)
    bad = ~nulls & ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"numeric feature {feature.name!r}: {int(bad.sum())} values have no finite {feature.transform} "
            f"transform (first: row {row}, value {values[row].as_py()!r}); cleaning sends such records to dead "
            "letters as out_of_range, so featurize rows that passed cleaning"
        )
    return x, nulls


@dataclass(frozen=True)
class NumericEncoder:
    """``(transform(x) - mean) / std`` as float32 ``[N]`` (nulls: 0.0), plus ``name + "__missing"``."""

    group: ClassVar[Group] = "numeric"
    signature_keys: ClassVar[tuple[str, ...]] = ("transform", "clip_min", "clip_max", "mean", "std")
    feature: NumericFeature
    field: FieldSpec
    mean: float
    std: float

    @classmethod
    def fit(
        cls,
        feature: NumericFeature,
        field: FieldSpec,
        column: pa.Array,
        previous: NumericEncoder | None,
        *,
        refit: bool,
        seed: int,
    ) -> tuple[NumericEncoder, FitNote]:
        """Fit mean/std on the transformed non-null values (or keep ``previous``'s); the spec's win."""
        if previous is not None and not refit:
            mean, std = previous.mean, previous.std
        else:
            x, nulls = _transformed(column, feature)
            mean, std = _mean_std(x[~nulls])
        given = feature.mean is not None and feature.std is not None
        encoder = cls(
            feature,
            field,
            mean if feature.mean is None else feature.mean,
            std if feature.std is None else feature.std,
        )
        return encoder, FitNote(statistics="spec" if given else _statistics(previous, refit))

    def featurize(self, column: pa.Array) -> dict[str, np.ndarray]:
        x, nulls = _transformed(column, self.feature)
        out = ((x - self.mean) / self.std).astype(np.float32)
        out[nulls] = 0.0
        arrays = {self.feature.name: out}
        if self.feature.missing_indicator:
            arrays[self.feature.name + MISSING_SUFFIX] = nulls.astype(np.float32)
        return arrays

    @property
    def input_info(self) -> InputInfo:
        return InputInfo(self.feature.name, "numeric", missing_indicator=self.feature.missing_indicator)

    def fitted_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_parts(cls, feature: NumericFeature, field: FieldSpec, d: dict[str, Any]) -> NumericEncoder:
        return cls(feature, field, float(d["mean"]), float(d["std"]))

    def describe(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}


# -- categorical --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoricalEncoder:
    """int64 ``[N]`` vocabulary rows (see :mod:`rt_training.features.vocabulary` for the layout)."""

    group: ClassVar[Group] = "categorical"
    signature_keys: ClassVar[tuple[str, ...]] = ("vocabulary", "hash_buckets", "oov_buckets")
    feature: CategoricalFeature
    field: FieldSpec
    vocabulary: Vocabulary

    @classmethod
    def fit(
        cls,
        feature: CategoricalFeature,
        field: FieldSpec,
        column: pa.Array,
        previous: CategoricalEncoder | None,
        *,
        refit: bool,
        seed: int,
    ) -> tuple[CategoricalEncoder, FitNote]:
        """Learn (or grow ``previous``'s) vocabulary; a fixed or hashed one comes from the spec."""
        vocabulary, added = _vocabulary_for(
            feature, column, None if previous is None else previous.vocabulary
        )
        return cls(feature, field, vocabulary), FitNote(added=added)

    def featurize(self, column: pa.Array) -> dict[str, np.ndarray]:
        return {self.feature.name: self.vocabulary.encode(column)}

    @property
    def input_info(self) -> InputInfo:
        return InputInfo(self.feature.name, "categorical", size=self.vocabulary.size)

    def fitted_dict(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary.to_dict()}

    @classmethod
    def from_parts(
        cls, feature: CategoricalFeature, field: FieldSpec, d: dict[str, Any]
    ) -> CategoricalEncoder:
        return cls(feature, field, Vocabulary.from_dict(d["vocabulary"]))

    def describe(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary.kind, "vocabulary_size": self.vocabulary.size}


# -- sequence -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceEncoder:
    """A list field as ``[N, max_length]``: int64 vocabulary rows (string/int items) or float32 standardized
    values (float items), with the bool mask. Rows are left-aligned, padding (0) at the end."""

    group: ClassVar[Group] = "sequence"
    signature_keys: ClassVar[tuple[str, ...]] = ("vocabulary", "hash_buckets", "oov_buckets")
    feature: SequenceFeature
    field: FieldSpec
    vocabulary: Vocabulary | None = None
    mean: float = 0.0
    std: float = 1.0

    @property
    def ids(self) -> bool:
        """Whether the elements are vocabulary-coded (string or int items) rather than float values."""
        return self.field.items != "float"

    @classmethod
    def fit(
        cls,
        feature: SequenceFeature,
        field: FieldSpec,
        column: pa.Array,
        previous: SequenceEncoder | None,
        *,
        refit: bool,
        seed: int,
    ) -> tuple[SequenceEncoder, FitNote]:
        """Learn (or grow) the vocabulary of all elements, or fit (or keep) the elements' mean/std."""
        elements = column.flatten()
        if field.items != "float":
            vocabulary, added = _vocabulary_for(
                feature, elements, None if previous is None else previous.vocabulary
            )
            return cls(feature, field, vocabulary=vocabulary), FitNote(added=added)
        if previous is not None and not refit:
            mean, std = previous.mean, previous.std
        else:
            mean, std = _mean_std(elements.drop_null().to_numpy(zero_copy_only=False).astype(np.float64))
        return cls(feature, field, mean=mean, std=std), FitNote(statistics=_statistics(previous, refit))

    def featurize(self, column: pa.Array) -> dict[str, np.ndarray]:
        padded = pad_lists(column, self.feature.max_length, self.feature.truncation)
        shape = (padded.rows, padded.max_length)
        if self.vocabulary is not None:
            out = np.zeros(shape, dtype=np.int64)
            out[padded.row, padded.position] = self.vocabulary.encode(padded.values)
        else:
            out = np.zeros(shape, dtype=np.float32)
            x = pc.cast(padded.values, pa.float64()).to_numpy(zero_copy_only=False)
            z = ((x - self.mean) / self.std).astype(np.float32)
            z[~padded.mask[padded.row, padded.position]] = 0.0
            out[padded.row, padded.position] = z
        return {self.feature.name: out, self.feature.name + MASK_SUFFIX: padded.mask}

    @property
    def input_info(self) -> InputInfo:
        if self.vocabulary is not None:
            return InputInfo(
                self.feature.name,
                "sequence_ids",
                size=self.vocabulary.size,
                max_length=self.feature.max_length,
            )
        return InputInfo(self.feature.name, "sequence_values", max_length=self.feature.max_length)

    def fitted_dict(self) -> dict[str, Any]:
        if self.vocabulary is not None:
            return {"vocabulary": self.vocabulary.to_dict()}
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_parts(cls, feature: SequenceFeature, field: FieldSpec, d: dict[str, Any]) -> SequenceEncoder:
        if "vocabulary" in d:
            return cls(feature, field, vocabulary=Vocabulary.from_dict(d["vocabulary"]))
        return cls(feature, field, mean=float(d["mean"]), std=float(d["std"]))

    def describe(self) -> dict[str, Any]:
        if self.vocabulary is not None:
            return {"vocabulary": self.vocabulary.kind, "vocabulary_size": self.vocabulary.size}
        return {"mean": self.mean, "std": self.std}


# -- vector ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorEncoder:
    """float32 ``[N, dim]``: as it is, L2-normalized (a zero vector stays zero), or standardized per dimension
    with a fitted mean/std. A null vector is all zeros."""

    group: ClassVar[Group] = "vector"
    signature_keys: ClassVar[tuple[str, ...]] = ("normalize",)
    feature: VectorFeature
    field: FieldSpec
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def dim(self) -> int:
        return int(self.field.dim or 0)

    @classmethod
    def fit(
        cls,
        feature: VectorFeature,
        field: FieldSpec,
        column: pa.Array,
        previous: VectorEncoder | None,
        *,
        refit: bool,
        seed: int,
    ) -> tuple[VectorEncoder, FitNote]:
        """Fit the per-dimension mean/std for ``normalize: zscore`` (or keep ``previous``'s)."""
        if feature.normalize != "zscore":
            return cls(feature, field), FitNote()
        if previous is not None and not refit:
            return cls(feature, field, previous.mean, previous.std), FitNote(statistics="kept")
        dim = int(field.dim or 0)
        block, valid = vector_block(column, dim, feature.name)
        rows = block[valid].astype(np.float64)
        if len(rows):
            mean = rows.mean(axis=0)
            std = rows.std(axis=0)
            std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        else:
            mean, std = np.zeros(dim), np.ones(dim)
        encoder = cls(feature, field, tuple(float(v) for v in mean), tuple(float(v) for v in std))
        return encoder, FitNote(statistics=_statistics(previous, refit))

    def featurize(self, column: pa.Array) -> dict[str, np.ndarray]:
        block, valid = vector_block(column, self.dim, self.feature.name)
        if self.feature.normalize == "l2":
            norm = np.linalg.norm(block, axis=1, keepdims=True)
            block = block / np.where(norm > 0, norm, 1.0).astype(np.float32)
        elif self.feature.normalize == "zscore":
            block = ((block - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)
            block[~valid] = 0.0
        return {self.feature.name: block}

    @property
    def input_info(self) -> InputInfo:
        return InputInfo(self.feature.name, "vector", size=self.dim)

    def fitted_dict(self) -> dict[str, Any]:
        if self.mean is None or self.std is None:
            return {}
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_parts(cls, feature: VectorFeature, field: FieldSpec, d: dict[str, Any]) -> VectorEncoder:
        if "mean" not in d:
            return cls(feature, field)
        return cls(feature, field, tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def describe(self) -> dict[str, Any]:
        return {"normalize": self.feature.normalize, "dim": self.dim}
