"""How the synthetic stream draws each schema field: per-event random variates and one plan per field.

Used by :class:`rt_training.stream.synthetic.EventGenerator`, whose docstring describes the distributions.
Each plan reads the variate columns it was handed at construction, so an event's values depend only on its own
variates, its time and whether it comes after the drift point, never on how the stream is cut into batches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from rt_training.spec.models import FieldSpec, NumericFeature

BLOCK = 4096
ZIPF_EXPONENT = 1.0  # vocabularies and free strings
POOL_ZIPF_EXPONENT = 0.7  # id pools: a few popular users/items, no single one dominating
POOL_PER_BUCKET = 4
TOKEN_POOL = 50
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

    ``order[rank]`` is the value at popularity rank ``rank``; after the drift point a share ``mix_share`` of
    events draws from ``drift_order`` instead, which changes the category mix without new values.
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
        weights = 1.0 / np.arange(1, len(values) + 1) ** exponent
        self.cdf = np.cumsum(weights) / weights.sum()
        self.cdf[-1] = 1.0
        self.order = np.arange(len(values)) if order is None else order
        self.drift_order = drift_order
        self.rank_col = cols.next_uniform()
        self.mix_col = cols.next_uniform()

    def draw(self, d: Draws, mix_share: float) -> np.ndarray:
        """Value indices, one per event."""
        rank = np.searchsorted(self.cdf, d.uniform[:, self.rank_col], side="right")
        if self.drift_order is None:
            return self.order[rank]
        use_drift = d.drifted & (d.uniform[:, self.mix_col] < mix_share)
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
        if spec.type == "bool":
            p = feature.mean if 0.0 < feature.mean < 1.0 else 0.5
            self.threshold = NormalDist().inv_cdf(1.0 - p)
        typical = (
            math.expm1(feature.mean) if feature.transform == "log1p" else max(abs(feature.mean), feature.std)
        )
        self.decimals = _decimals(abs(typical))

    def draw(self, d: Draws) -> np.ndarray:
        eps = d.normal[:, self.col] + np.where(d.drifted, self.shift, 0.0)
        if self.spec.type == "bool":
            return eps > self.threshold
        z = self.feature.mean + self.feature.std * eps
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
        return (x - f.mean) / f.std


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
        if spec.type == "string":
            pair = spec.allowed if spec.allowed is not None and len(spec.allowed) == 2 else ["0", "1"]
            self.string_tokens = np.array([json.dumps(v).encode() for v in pair], dtype=object)
            self.string_values = np.array(pair, dtype=object)
        lo, hi = spec.min, spec.max
        self.offset, self.spread = (
            ((lo + hi) / 2, (hi - lo) / 8) if lo is not None and hi is not None else (0.0, 1.0)
        )
        self.decimals = _decimals(max(abs(self.offset), self.spread))

    def expectation(self, signal: np.ndarray) -> np.ndarray:
        """The label's expectation from the model's signal (a logit for binary labels)."""
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-signal))
        return self.offset + self.spread * signal

    def draw_label(self, mean: np.ndarray, d: Draws) -> np.ndarray:
        """Labels around the expectation ``mean``: Bernoulli draws, or Gaussian noise for regression."""
        if self.kind == "binary":
            hit = d.uniform[:, self.u_col] < mean
            return hit if self.spec.type in ("bool", "string") else _finish_number(hit * 1.0, self.spec, 1)
        noisy = mean + self.spread * REGRESSION_NOISE * d.normal[:, self.noise_col]
        return _finish_number(noisy, self.spec, self.decimals)

    def template_args(self, values: np.ndarray) -> list:
        if self.spec.type == "bool":
            return _BOOL_TOKENS[values.astype(np.intp)].tolist()
        if self.spec.type == "string":
            return self.string_tokens[values.astype(np.intp)].tolist()
        return values.tolist()

    def column(self, values: np.ndarray) -> np.ndarray:
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
