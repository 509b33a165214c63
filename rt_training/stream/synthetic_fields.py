"""How the synthetic stream draws each schema field: per-event random variates and one plan per field.

Used by :class:`rt_training.stream.synthetic.EventGenerator`, whose docstring describes the distributions.
Each plan reads the variate columns it was handed at construction, so an event's values depend only on its own
variates, its time and whether it comes after the drift point, never on how the stream is cut into batches.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from rt_training.spec.models import FieldSpec, NumericFeature, _Vocabulary
from rt_training.stream.synthetic_text import MAX_WORDS, GroupTrend, HeadlineText, pseudo_words

BLOCK = 4096
ZIPF_EXPONENT = 1.0  # vocabularies and free strings
POOL_ZIPF_EXPONENT = 0.7  # id pools: a few popular users/items, no single one dominating
POOL_PER_BUCKET = 4
TOKEN_POOL = 50
DEFAULT_SCALE = 10.0  # spread of a number with no bounds and no spec statistics
LEARNED_POOL = 50  # values of a learned vocabulary before the drift point
LEARNED_NEW = 25  # values it gains after the drift point
INT_POOL_SPAN = 1_000_000  # where an int field without bounds takes its values
CLASS_POOL = 4  # classes of a multiclass label with no allowed values
GROUP_POOL = 8  # groups of a mixture field with no declared values
LIST_LENGTH = 8  # most elements of a list field without max_length
LIST_MAX = 16  # most elements ever drawn for a list (its variates are fixed per event)
VECTOR_RANK = 8  # vectors are drawn from this many normals per event (a seeded low-rank basis)
MULTICLASS_LOGIT_SCALE = 2.0
REGRESSION_NOISE = 0.5
SAFE_INT = 2.0**53

# -- random variates --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draws:
    """What a batch of events is drawn from: its variates, times, drift flags and stream positions."""

    normal: np.ndarray  # (n, normal columns)
    uniform: np.ndarray  # (n, uniform columns)
    id_bytes: np.ndarray  # (n, 16) uint8
    times: np.ndarray  # (n,) int64 epoch ms
    drifted: np.ndarray  # (n,) bool
    index: np.ndarray  # (n,) int64 position in the stream
    group: np.ndarray | None = None  # (n,) intp topic group (see synthetic_text), when the spec has groups


class Variates:
    """Fixed per-event random variates drawn in blocks, so the stream does not depend on batch boundaries."""

    def __init__(self, rng: np.random.Generator, n_normal: int, n_uniform: int):
        self._rng = rng
        self._shape = (n_normal, n_uniform)
        self._pos = BLOCK
        self._block: tuple[np.ndarray, np.ndarray, np.ndarray] = ()  # type: ignore[assignment]

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normal variates, uniform variates and 16 random bytes for each of the next ``n`` events."""
        parts: list[tuple[np.ndarray, ...]] = []
        while n > 0:
            if self._pos == BLOCK:
                raw = np.frombuffer(self._rng.bytes(16 * BLOCK), dtype=np.uint8).reshape(BLOCK, 16)
                self._block = (
                    self._rng.standard_normal((BLOCK, self._shape[0])),
                    self._rng.random((BLOCK, self._shape[1])),
                    raw,
                )
                self._pos = 0
            k = min(n, BLOCK - self._pos)
            parts.append(tuple(a[self._pos : self._pos + k] for a in self._block))
            self._pos += k
            n -= k
        if not parts:
            return np.empty((0, self._shape[0])), np.empty((0, self._shape[1])), np.empty((0, 16), np.uint8)
        return tuple(np.concatenate(col) for col in zip(*parts, strict=True))  # type: ignore[return-value]


class Columns:
    """Hands out variate columns to the fields that need them, at construction time."""

    def __init__(self) -> None:
        self.normal = 0
        self.uniform = 0

    def next_normal(self) -> int:
        self.normal += 1
        return self.normal - 1

    def next_uniform(self) -> int:
        self.uniform += 1
        return self.uniform - 1


# -- value helpers ----------------------------------------------------------------------------------------------


def _decimals(scale: float) -> int:
    """Decimal places that keep about four significant digits for values of magnitude ``scale``."""
    if not math.isfinite(scale) or scale <= 0:
        return 3
    return int(min(10, max(0, 3 - math.floor(math.log10(scale)))))


def _finish_number(raw: np.ndarray, field: FieldSpec, decimals: int) -> np.ndarray:
    """Round to the field's type and clip to its bounds (after rounding, so the text stays in range)."""
    raw = np.clip(np.nan_to_num(raw, nan=0.0), -SAFE_INT, SAFE_INT)
    if field.type == "int":
        lo = -SAFE_INT if field.min is None else math.ceil(field.min)
        hi = SAFE_INT if field.max is None else math.floor(field.max)
        return np.clip(np.rint(raw), lo, hi).astype(np.int64)
    lo = -np.inf if field.min is None else field.min
    hi = np.inf if field.max is None else field.max
    return np.clip(np.round(raw, decimals), lo, hi)


def legal_strings(name: str, field: FieldSpec, candidates: list[str]) -> list[str]:
    """Candidates the schema accepts (``allowed`` values first in candidate order), or a clear error."""
    if field.allowed is not None:
        candidates = [c for c in candidates if c in field.allowed] + [
            a for a in field.allowed if a not in candidates
        ]
    if field.max_length is not None:
        candidates = [c for c in candidates if len(c) <= field.max_length]
    if not candidates:
        raise ValueError(
            f"schema field {name!r}: no value satisfies its allowed/max_length rules to generate from"
        )
    return candidates


class Choice:
    """A Zipf-like choice over values, with a second popularity order mixed in after the drift point.

    ``order[rank]`` is the value at popularity rank ``rank`` (ranks: ``len(order)``, at most ``len(values)``);
    after the drift point a share ``mix_share`` of events draws from ``drift_order`` instead, which changes the
    category mix and may bring values that ``order`` never names (new values).
    """

    def __init__(
        self,
        values: list[str],
        cols: Columns,
        order: np.ndarray | None = None,
        drift_order: np.ndarray | None = None,
        exponent: float = ZIPF_EXPONENT,
    ):
        self.values = np.array(values, dtype=object)
        self.tokens = np.array([json.dumps(v).encode() for v in values], dtype=object)
        self.order = np.arange(len(values)) if order is None else order
        weights = 1.0 / np.arange(1, len(self.order) + 1) ** exponent
        self.cdf = np.cumsum(weights) / weights.sum()
        self.cdf[-1] = 1.0
        self.drift_order = drift_order
        self.rank_col = cols.next_uniform()
        self.mix_col = cols.next_uniform()

    def draw(self, d: Draws, mix_share: float) -> np.ndarray:
        """Value indices, one per event."""
        return self.pick(d.uniform[:, self.rank_col], d.drifted & (d.uniform[:, self.mix_col] < mix_share))

    def pick(self, u: np.ndarray, use_drift: np.ndarray) -> np.ndarray:
        """Value indices for rank variates ``u``, from the drift order where ``use_drift`` (and one exists)."""
        rank = np.searchsorted(self.cdf, u, side="right")
        if self.drift_order is None:
            return self.order[rank]
        return np.where(use_drift, self.drift_order[rank], self.order[rank])


# -- fields -----------------------------------------------------------------------------------------------------


class FieldPlan:
    """How one schema field is drawn and written. ``fmt`` is its %-format in the record template."""

    fmt = b"%s"

    def __init__(self, name: str, spec: FieldSpec):
        self.name = name
        self.spec = spec

    def draw(self, d: Draws) -> np.ndarray:
        raise NotImplementedError

    def template_args(self, values: np.ndarray) -> list:
        """Per event, what the record template's placeholder of this field receives."""
        return values.tolist()

    def token(self, arg: object) -> bytes:
        """One template argument as its JSON token."""
        return self.fmt % arg

    def column(self, values: np.ndarray) -> np.ndarray:
        return values


class IdField(FieldPlan):
    """uuid4-style strings from the event's 16 random bytes, or consecutive integers for an int id."""

    def __init__(self, name: str, spec: FieldSpec, first_int: int):
        if spec.type not in ("string", "int"):
            raise ValueError(f"id field {name!r}: the generator makes string or int ids, not {spec.type}")
        super().__init__(name, spec)
        self.first_int = first_int
        self.fmt = b"%s" if spec.type == "string" else b"%d"

    def draw(self, d: Draws) -> np.ndarray:
        if self.spec.type == "int":
            return self.first_int + d.index
        b = d.id_bytes.copy()
        b[:, 6] = (b[:, 6] & 0x0F) | 0x40  # uuid version 4
        b[:, 8] = (b[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
        hexed = _HEX[b].reshape(len(b), 32)
        text = np.concatenate(
            [hexed[:, :8], _dash(len(b)), hexed[:, 8:12], _dash(len(b)), hexed[:, 12:16], _dash(len(b)),
             hexed[:, 16:20], _dash(len(b)), hexed[:, 20:]], axis=1,
        )  # fmt: skip
        text = text[:, : self.spec.max_length] if self.spec.max_length else text
        return np.ascontiguousarray(text).view(f"S{text.shape[1]}").ravel()

    def template_args(self, values: np.ndarray) -> list:
        return [b'"%s"' % v for v in values.tolist()] if self.spec.type == "string" else values.tolist()

    def keys(self, values: np.ndarray) -> list[bytes]:
        """Message keys: the id as UTF-8 text."""
        return values.tolist() if self.spec.type == "string" else [b"%d" % v for v in values.tolist()]

    def column(self, values: np.ndarray) -> np.ndarray:
        return values.astype(str) if self.spec.type == "string" else values


_HEX = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint8).reshape(256, 2)


def _dash(n: int) -> np.ndarray:
    return np.full((n, 1), ord("-"), dtype=np.uint8)


class TimeField(FieldPlan):
    """The event time: epoch milliseconds from the generator's clock."""

    fmt = b"%d"

    def draw(self, d: Draws) -> np.ndarray:
        return d.times


class NumericFeatureField(FieldPlan):
    """A numeric feature drawn in feature space (``N(mean, std)`` after the transform), shifted after drift."""

    def __init__(self, name: str, spec: FieldSpec, feature: NumericFeature, cols: Columns, shift: float):
        super().__init__(name, spec)
        self.feature = feature
        self.col = cols.next_normal()
        self.shift = shift
        self.fmt = {"int": b"%d", "float": b"%a", "bool": b"%s"}[spec.type]
        self.mean, self.std = feature_moments(feature, spec)
        if spec.type == "bool":
            p = self.mean if 0.0 < self.mean < 1.0 else 0.5
            self.threshold = NormalDist().inv_cdf(1.0 - p)
        typical = math.expm1(self.mean) if feature.transform == "log1p" else max(abs(self.mean), self.std)
        self.decimals = _decimals(abs(typical))

    def draw(self, d: Draws) -> np.ndarray:
        eps = d.normal[:, self.col] + np.where(d.drifted, self.shift, 0.0)
        if self.spec.type == "bool":
            return eps > self.threshold
        z = self.mean + self.std * eps
        raw = np.expm1(np.minimum(z, 700.0)) if self.feature.transform == "log1p" else z
        return _finish_number(raw, self.spec, self.decimals)

    def template_args(self, values: np.ndarray) -> list:
        return _BOOL_TOKENS[values.astype(np.intp)].tolist() if self.spec.type == "bool" else values.tolist()

    def standardized(self, values: np.ndarray) -> np.ndarray:
        """The model feature cleaning computes: transform, then ``(x - mean) / std``."""
        f = self.feature
        x = values.astype(np.float64)
        if f.transform == "log1p":
            x = np.log1p(np.maximum(x, -1.0 + 1e-12))
        elif f.transform == "clip":
            x = np.clip(
                x, -np.inf if f.clip_min is None else f.clip_min, np.inf if f.clip_max is None else f.clip_max
            )
        return (x - self.mean) / self.std


def feature_moments(feature: NumericFeature, field: FieldSpec) -> tuple[float, float]:
    """The mean and std, in feature space (after the transform), that a numeric feature is drawn with.

    The spec's ``mean`` and ``std`` win. A missing one comes from the field's bounds (narrowed by ``clip_min``
    and ``clip_max`` for a clip transform, ``min`` raised to 0 for log1p), with ``t`` the transform:
    both bounds: ``mean = (t(lo) + t(hi)) / 2``, ``std = (t(hi) - t(lo)) / 6``; one bound: ``2 * scale``
    inside it with ``std = scale``; none: ``mean`` 0 (2 for log1p) and ``std = scale``, where ``scale`` is
    :data:`DEFAULT_SCALE` (1 for log1p, in log space). A boolean is true with probability ``mean``, default 0.5.
    """
    if field.type == "bool":
        return (0.5 if feature.mean is None else feature.mean), (0.5 if feature.std is None else feature.std)
    log = feature.transform == "log1p"
    lo, hi = field.min, field.max
    if feature.transform == "clip":
        lo = _tighter(lo, feature.clip_min, max)
        hi = _tighter(hi, feature.clip_max, min)
    if log:
        lo = 0.0 if lo is None else max(lo, 0.0)
    t = math.log1p if log else float
    scale = 1.0 if log else DEFAULT_SCALE
    if lo is not None and hi is not None:
        mean, std = (t(lo) + t(hi)) / 2, (t(hi) - t(lo)) / 6 if hi > lo else scale
    elif lo is not None:
        mean, std = t(lo) + 2 * scale, scale
    elif hi is not None:
        mean, std = t(hi) - 2 * scale, scale
    else:
        mean, std = 0.0, scale
    return (mean if feature.mean is None else feature.mean), (std if feature.std is None else feature.std)


def _tighter(bound: float | None, other: float | None, pick: Callable[[float, float], float]) -> float | None:
    if bound is None or other is None:
        return other if bound is None else bound
    return pick(bound, other)


_BOOL_TOKENS = np.array([b"false", b"true"], dtype=object)


class ChoiceField(FieldPlan):
    """A string field drawn from a :class:`Choice` (categorical features and other strings)."""

    def __init__(self, name: str, spec: FieldSpec, choice: Choice, mix_share: float):
        super().__init__(name, spec)
        self.choice = choice
        self.mix_share = mix_share

    def draw(self, d: Draws) -> np.ndarray:
        return self.choice.draw(d, self.mix_share)

    def template_args(self, values: np.ndarray) -> list:
        return self.choice.tokens[values].tolist()

    def column(self, values: np.ndarray) -> np.ndarray:
        return self.choice.values[values]


class GroupField(ChoiceField):
    """The field of ``sampling.mixture.by``: its value is the event's group, drawn by a trending
    :class:`~rt_training.stream.synthetic_text.GroupTrend` (value ``i`` of the choice is group ``i``)."""

    def __init__(self, name: str, spec: FieldSpec, choice: Choice, trend: GroupTrend):
        super().__init__(name, spec, choice, 0.0)
        self.trend = trend

    def assign(self, elapsed_s: np.ndarray, d: Draws) -> np.ndarray:
        """Group indices of the events ``d``, ``elapsed_s`` seconds of event time after the first event."""
        return self.trend.assign(elapsed_s, d.uniform[:, self.choice.rank_col])

    def draw(self, d: Draws) -> np.ndarray:
        return d.group  # type: ignore[return-value]


class TextField(FieldPlan):
    """A text field: a headline of the event's group (see :mod:`rt_training.stream.synthetic_text`)."""

    def __init__(self, name: str, spec: FieldSpec, text: HeadlineText, cols: Columns, new_share: float):
        super().__init__(name, spec)
        self.text = text
        self.new_share = new_share
        self.len_col = cols.next_uniform()
        self.word_cols = [cols.next_uniform() for _ in range(MAX_WORDS)]

    def draw(self, d: Draws) -> np.ndarray:
        group = d.group if d.group is not None else np.zeros(len(d.times), dtype=np.intp)
        u = d.uniform
        return self.text.draw(group, d.drifted, u[:, self.len_col], u[:, self.word_cols], self.new_share)

    def template_args(self, values: np.ndarray) -> list:
        return [json.dumps(v).encode() for v in values.tolist()]


class ListField(FieldPlan):
    """A list field: 1 to ``min(max_length or LIST_LENGTH, LIST_MAX)`` elements (uniform length).

    String and int elements are Zipf-like choices over :func:`value_pool` (a sequence feature's encoding picks
    the pool); after the drift point a drifting list draws a share ``drift`` of its events from the changed
    popularity order. Float elements are centred in their bounds like other numbers, shifted by ``drift``
    spreads after the drift point.
    """

    def __init__(
        self,
        name: str,
        spec: FieldSpec,
        cols: Columns,
        rng: np.random.Generator,
        encoding: _Vocabulary | None,
        drift: float,
    ):
        super().__init__(name, spec)
        self.max_items = min(spec.max_length or LIST_LENGTH, LIST_MAX)
        self.len_col = cols.next_uniform()
        self.drift = drift
        self.element = FieldSpec(type=spec.items or "string", min=spec.min, max=spec.max)
        if spec.items == "float":
            self.cols = [cols.next_normal() for _ in range(self.max_items)]
            self.centre, self.spread = _centre_spread(spec.min, spec.max)
            self.decimals = _decimals(max(abs(self.centre), self.spread))
        else:
            self.choice = categorical_choice(rng, name, self.element, encoding, cols)
            self.cols = [self.choice.rank_col] + [cols.next_uniform() for _ in range(self.max_items - 1)]

    def draw(self, d: Draws) -> np.ndarray:
        n = len(d.times)
        lengths = 1 + np.minimum(
            (d.uniform[:, self.len_col] * self.max_items).astype(np.intp), self.max_items - 1
        )
        if self.element.type == "float":
            e = d.normal[:, self.cols] + np.where(d.drifted, self.drift, 0.0)[:, None]
            items = _finish_number(self.centre + self.spread * e, self.element, self.decimals).tolist()
        else:
            use_drift = d.drifted & (d.uniform[:, self.choice.mix_col] < self.drift)
            idx = np.column_stack([self.choice.pick(d.uniform[:, c], use_drift) for c in self.cols])
            items = self.choice.values[idx].tolist()
        out = np.empty(n, dtype=object)
        out[:] = [row[:k] for row, k in zip(items, lengths.tolist(), strict=True)]
        return out

    def template_args(self, values: np.ndarray) -> list:
        return [json.dumps(v, separators=(",", ":")).encode() for v in values.tolist()]


class VectorField(FieldPlan):
    """A vector field: ``dim`` floats, ``centre + spread * (z @ basis)`` with ``z`` the event's
    ``min(dim, VECTOR_RANK)`` normals and a seeded basis of unit-variance coordinates; centre and spread from
    the element bounds (``(lo + hi) / 2`` and ``(hi - lo) / 6``, else 0 and 1), then clipped to them. After the
    drift point a drifting vector moves by ``drift`` spreads along each coordinate (seeded signs)."""

    def __init__(self, name: str, spec: FieldSpec, cols: Columns, rng: np.random.Generator, drift: float):
        super().__init__(name, spec)
        dim = int(spec.dim or 1)
        rank = min(dim, VECTOR_RANK)
        self.cols = [cols.next_normal() for _ in range(rank)]
        self.basis = rng.standard_normal((rank, dim)) / math.sqrt(rank)
        self.signs = np.where(rng.random(dim) < 0.5, -1.0, 1.0)
        self.drift = drift
        self.centre, self.spread = _centre_spread(spec.min, spec.max)
        self.element = FieldSpec(type="float", min=spec.min, max=spec.max)
        self.decimals = _decimals(max(abs(self.centre), self.spread))

    def draw(self, d: Draws) -> np.ndarray:
        z = d.normal[:, self.cols] @ self.basis
        z = z + np.where(d.drifted, self.drift, 0.0)[:, None] * self.signs
        values = _finish_number(self.centre + self.spread * z, self.element, self.decimals)
        out = np.empty(len(values), dtype=object)
        out[:] = values.tolist()
        return out

    def template_args(self, values: np.ndarray) -> list:
        return [json.dumps(v, separators=(",", ":")).encode() for v in values.tolist()]


def _centre_spread(lo: float | None, hi: float | None) -> tuple[float, float]:
    if lo is not None and hi is not None:
        return (lo + hi) / 2, (hi - lo) / 6
    if lo is not None:
        return lo + 3.0, 1.0
    if hi is not None:
        return hi - 3.0, 1.0
    return 0.0, 1.0


class OtherNumberField(FieldPlan):
    """A number that is neither feature nor label: inside its bounds, centred between them when both exist."""

    def __init__(self, name: str, spec: FieldSpec, cols: Columns):
        super().__init__(name, spec)
        self.col = cols.next_normal()
        self.fmt = b"%d" if spec.type == "int" else b"%a"
        lo, hi = spec.min, spec.max
        self.decimals = _decimals(max(abs(lo or 0.0), abs(hi or 0.0), 10.0))

    def draw(self, d: Draws) -> np.ndarray:
        e = d.normal[:, self.col]
        lo, hi = self.spec.min, self.spec.max
        if lo is not None and hi is not None:
            raw = (lo + hi) / 2 + (hi - lo) / 6 * e
        elif lo is not None:
            raw = lo + 10.0 * np.abs(e)
        elif hi is not None:
            raw = hi - 10.0 * np.abs(e)
        else:
            raw = 10.0 * e
        return _finish_number(raw, self.spec, self.decimals)


class OtherBoolField(FieldPlan):
    """A boolean that is neither feature nor label: a fair coin."""

    def __init__(self, name: str, spec: FieldSpec, cols: Columns):
        super().__init__(name, spec)
        self.col = cols.next_uniform()

    def draw(self, d: Draws) -> np.ndarray:
        return d.uniform[:, self.col] < 0.5

    def template_args(self, values: np.ndarray) -> list:
        return _BOOL_TOKENS[values.astype(np.intp)].tolist()


class OtherTimeField(FieldPlan):
    """A timestamp other than the event time: up to a day before it."""

    fmt = b"%d"

    def __init__(self, name: str, spec: FieldSpec, cols: Columns):
        super().__init__(name, spec)
        self.col = cols.next_uniform()

    def draw(self, d: Draws) -> np.ndarray:
        return d.times - np.floor(d.uniform[:, self.col] * 86_400_000).astype(np.int64)


class LabelField(FieldPlan):
    """The label, drawn from the hidden model's expectation."""

    def __init__(self, name: str, spec: FieldSpec, kind: str, cols: Columns):
        super().__init__(name, spec)
        self.kind = kind
        if kind == "binary" and spec.type not in ("int", "float", "bool", "string"):
            raise ValueError(f"label field {name!r} of type {spec.type} cannot hold a binary label")
        if kind == "regression" and spec.type not in ("int", "float"):
            raise ValueError(f"label field {name!r} of type {spec.type} cannot hold a regression label")
        self.u_col = cols.next_uniform()
        self.noise_col = cols.next_normal()
        self.fmt = {"int": b"%d", "float": b"%a"}.get(spec.type, b"%s")
        if kind == "multiclass":
            classes = class_values(name, spec)
            self.class_values = np.array(classes, dtype=object)
            self.class_tokens = np.array([json.dumps(v).encode() for v in classes], dtype=object)
        elif spec.type == "string":
            pair = spec.allowed if spec.allowed is not None and len(spec.allowed) == 2 else ["0", "1"]
            self.string_tokens = np.array([json.dumps(v).encode() for v in pair], dtype=object)
            self.string_values = np.array(pair, dtype=object)
        lo, hi = spec.min, spec.max
        self.offset, self.spread = (
            ((lo + hi) / 2, (hi - lo) / 8) if lo is not None and hi is not None else (0.0, 1.0)
        )
        self.decimals = _decimals(max(abs(self.offset), self.spread))

    @property
    def n_classes(self) -> int:
        """How many hidden models drive the label: one per class for multiclass, else one."""
        return len(self.class_values) if self.kind == "multiclass" else 1

    def expectation(self, signal: np.ndarray) -> np.ndarray:
        """The label's expectation from the model's signal (a logit for binary labels; for multiclass, one
        column per class and the class probabilities ``softmax(MULTICLASS_LOGIT_SCALE * signal)``)."""
        if self.kind == "multiclass":
            z = MULTICLASS_LOGIT_SCALE * signal
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-signal))
        return self.offset + self.spread * signal

    def draw_label(self, mean: np.ndarray, d: Draws) -> np.ndarray:
        """Labels around the expectation ``mean``: Bernoulli draws, a class index drawn from the class
        probabilities, or Gaussian noise for regression."""
        if self.kind == "multiclass":
            u = d.uniform[:, self.u_col][:, None]
            return np.minimum((np.cumsum(mean, axis=1) < u).sum(axis=1), mean.shape[1] - 1)
        if self.kind == "binary":
            hit = d.uniform[:, self.u_col] < mean
            return hit if self.spec.type in ("bool", "string") else _finish_number(hit * 1.0, self.spec, 1)
        noisy = mean + self.spread * REGRESSION_NOISE * d.normal[:, self.noise_col]
        return _finish_number(noisy, self.spec, self.decimals)

    def template_args(self, values: np.ndarray) -> list:
        if self.kind == "multiclass":
            return self.class_tokens[values].tolist()
        if self.spec.type == "bool":
            return _BOOL_TOKENS[values.astype(np.intp)].tolist()
        if self.spec.type == "string":
            return self.string_tokens[values.astype(np.intp)].tolist()
        return values.tolist()

    def column(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "multiclass":
            return self.class_values[values]
        return self.string_values[values.astype(np.intp)] if self.spec.type == "string" else values


def id_pool(name: str, spec: FieldSpec, size: int) -> list[str]:
    """Ids like ``sensor_17`` for a hash-bucket feature named ``sensor_id``: the field name is the prefix."""
    prefix = name.removesuffix("_id") + "_"
    if spec.max_length is not None and len(prefix) + len(str(size)) > spec.max_length:
        prefix = ""
    return legal_strings(name, spec, [f"{prefix}{i}" for i in range(size)])


def word_pool(rng: np.random.Generator, name: str, spec: FieldSpec) -> list[str]:
    """Short lowercase words for a free string field (or its allowed values)."""
    if spec.allowed is not None:
        return legal_strings(name, spec, list(spec.allowed))
    length = min(8, spec.max_length or 8)
    letters = rng.integers(ord("a"), ord("z") + 1, size=(TOKEN_POOL, length), dtype=np.uint8)
    words = sorted({bytes(row).decode() for row in letters})
    return legal_strings(name, spec, words)


def value_pool(
    rng: np.random.Generator, name: str, field: FieldSpec, encoding: _Vocabulary | None
) -> tuple[list, int]:
    """The values a categorical (or a list's element) of type ``field.type`` takes, and how many of them come
    before the drift point (the rest are new values that only drift brings).

    A fixed ``vocabulary`` gives its values; ``hash_buckets`` a pool of ``POOL_PER_BUCKET`` ids per bucket
    (``<name>_<n>`` strings, or seeded ints inside the bounds); otherwise (a learned vocabulary, or not a
    feature) the ``allowed`` values, or :data:`LEARNED_POOL` seeded pseudo-words or ints inside the bounds plus
    :data:`LEARNED_NEW` new ones. Booleans are ``false`` and ``true``.
    """
    vocab = encoding.vocabulary if encoding is not None else None
    buckets = encoding.hash_buckets if encoding is not None else None
    values: list
    if field.type == "bool":
        values = [v == "true" for v in vocab if v in ("true", "false")] if vocab else [False, True]
        before = len(values)
    elif field.type == "int":
        if vocab is not None:
            lo, hi = _int_bounds(field)
            values = [int(v) for v in vocab if re.fullmatch(r"-?\d+", v) and lo <= int(v) <= hi]
            before = len(values)
        elif buckets is not None:
            values = int_pool(rng, field, POOL_PER_BUCKET * buckets)
            before = len(values)
        else:
            values = int_pool(rng, field, LEARNED_POOL + LEARNED_NEW)
            before = min(len(values), LEARNED_POOL) if len(values) > LEARNED_POOL else len(values)
    elif vocab is not None:
        values = legal_strings(name, field, list(vocab))
        before = len(values)
    elif buckets is not None:
        values = id_pool(name, field, POOL_PER_BUCKET * buckets)
        before = len(values)
    elif field.allowed is not None:
        values = legal_strings(name, field, list(field.allowed))
        before = len(values)
    else:
        values = legal_strings(name, field, pseudo_words(rng, LEARNED_POOL + LEARNED_NEW))
        before = min(len(values), LEARNED_POOL)
    if not values:
        raise ValueError(
            f"schema field {name!r}: no value satisfies its vocabulary and bounds to generate from"
        )
    return values, before


def categorical_choice(
    rng: np.random.Generator, name: str, field: FieldSpec, encoding: _Vocabulary | None, cols: Columns
) -> Choice:
    """A :class:`Choice` over :func:`value_pool`: after the drift point a pool with new values draws from a
    seeded order over all of them, a hashed pool from another seeded order, any other from the reversed one."""
    values, before = value_pool(rng, name, field, encoding)
    if before < len(values):
        return Choice(values, cols, np.arange(before), rng.permutation(len(values))[:before])
    if encoding is not None and encoding.hash_buckets is not None:
        orders = rng.permutation(len(values)), rng.permutation(len(values))
        return Choice(values, cols, *orders, exponent=POOL_ZIPF_EXPONENT)
    return Choice(values, cols, drift_order=np.arange(len(values))[::-1].copy())


def group_values(rng: np.random.Generator, name: str, field: FieldSpec, encoding: _Vocabulary | None) -> list:
    """The groups of a mixture's ``by`` field: its fixed vocabulary or ``allowed`` values, else
    :data:`GROUP_POOL` values (consecutive ints from the lower bound, or seeded pseudo-words); booleans
    ``false`` and ``true``."""
    if field.type == "bool" or (encoding is not None and encoding.vocabulary is not None) or field.allowed:
        return value_pool(rng, name, field, encoding)[0]
    if field.type == "int":
        lo, hi = _int_bounds(field)
        return list(range(lo, min(lo + GROUP_POOL - 1, hi) + 1))
    return legal_strings(name, field, pseudo_words(rng, GROUP_POOL))


def class_values(name: str, field: FieldSpec) -> list:
    """The classes of a multiclass label: ``allowed`` values, else :data:`CLASS_POOL` of them (``<name>_<n>``
    strings, consecutive ints from the lower bound), or ``false`` and ``true``."""
    if field.type == "bool":
        return [False, True]
    if field.type == "int":
        lo, hi = _int_bounds(field)
        return list(range(lo, min(lo + CLASS_POOL - 1, hi) + 1))
    if field.allowed is not None:
        return legal_strings(name, field, list(field.allowed))
    return id_pool(name, field, CLASS_POOL)


def _int_bounds(field: FieldSpec) -> tuple[int, int]:
    lo = math.ceil(field.min) if field.min is not None else None
    hi = math.floor(field.max) if field.max is not None else None
    if lo is None:
        lo = 0 if hi is None or hi >= 0 else hi - INT_POOL_SPAN
    return lo, lo + INT_POOL_SPAN if hi is None else hi


def int_pool(rng: np.random.Generator, field: FieldSpec, size: int) -> list[int]:
    """``size`` distinct ints inside the field's bounds in a seeded order (all of them when fewer fit)."""
    lo, hi = _int_bounds(field)
    span = hi - lo + 1
    if span <= size:
        return list(range(lo, hi + 1))
    return (lo + rng.choice(span, size=size, replace=False)).tolist()
