"""Vocabularies: values to embedding rows, learned from the data, fixed by the spec, or hashed.

Layout of every vocabulary-coded input (categorical features, the ids of string/int sequences)::

    0                         null, missing, padding
    1 .. oov_buckets          values outside the vocabulary: 1 + stable_hash64(value) % oov_buckets
    oov_buckets + 1 ..        the vocabulary entries, in order

so growing a vocabulary appends rows and never moves an old one. With ``hash_buckets`` alone there is no
vocabulary: every value goes to ``1 + stable_hash64(value) % hash_buckets``. With ``oov_buckets: 0`` a value
outside the vocabulary gets row 0, like a null. Values are compared as text: ints as ``str(int)``, booleans as
``true``/``false`` (as cleaning writes them and the spec's ``vocabulary`` reads them).

A learned vocabulary keeps the values seen at least ``min_count`` times, most frequent first, ties in value
order (UTF-8 bytes, the same as Python's ``str`` order), at most ``max_size``. Every function here works on
the distinct values of a column (Arrow ``value_counts``, ``dictionary_encode``, ``index_in``), so each distinct
value is hashed or looked up once, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.clean.features import stable_hash64


def as_text(values: pa.Array) -> pa.Array:
    """``values`` as an Arrow string array: ints as decimal text, booleans as ``true``/``false``."""
    if values.type == pa.string():
        return values
    return pc.cast(values, pa.string())


def ranked_values(text: pa.Array, min_count: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """Distinct non-null values seen at least ``min_count`` times, by count descending then value ascending.

    Values in ``exclude`` (an existing vocabulary being grown) are left out.
    """
    counts = pc.value_counts(text.drop_null())
    ranked = pa.table({"value": counts.field("values"), "count": counts.field("counts")})
    keep = pc.greater_equal(ranked["count"], min_count)
    if exclude:
        keep = pc.and_(keep, pc.invert(pc.is_in(ranked["value"], value_set=pa.array(exclude, pa.string()))))
    ranked = ranked.filter(keep).sort_by([("count", "descending"), ("value", "ascending")])
    return ranked["value"].to_pylist()


@dataclass(frozen=True)
class Vocabulary:
    """Rows of one vocabulary-coded input (see the module docstring for the layout).

    ``entries`` is empty and ``hash_buckets`` set for a hashed input; ``learned`` says whether the entries came
    from the data (and so may grow).
    """

    entries: tuple[str, ...] = ()
    oov_buckets: int = 1
    hash_buckets: int | None = None
    learned: bool = False
    _value_set: pa.Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_value_set", pa.array(self.entries, pa.string()))

    @property
    def size(self) -> int:
        """Number of rows, index 0 included: the embedding table a model needs."""
        if self.hash_buckets is not None:
            return 1 + self.hash_buckets
        return 1 + self.oov_buckets + len(self.entries)

    @classmethod
    def fixed(cls, entries: list[str], oov_buckets: int) -> Vocabulary:
        """The spec's own ``vocabulary``, in its order."""
        return cls(entries=tuple(entries), oov_buckets=oov_buckets)

    @classmethod
    def hashed(cls, buckets: int) -> Vocabulary:
        """No vocabulary: every value hashed into ``buckets`` rows after row 0."""
        return cls(oov_buckets=0, hash_buckets=buckets)

    @classmethod
    def learn(cls, values: pa.Array, *, min_count: int, max_size: int, oov_buckets: int) -> Vocabulary:
        """The vocabulary of ``values`` (string, int or bool; nulls ignored)."""
        entries = ranked_values(as_text(values), min_count)[:max_size]
        return cls(entries=tuple(entries), oov_buckets=oov_buckets, learned=True)

    def grow(self, values: pa.Array, *, min_count: int, max_size: int) -> tuple[Vocabulary, int]:
        """This vocabulary with the new values of ``values`` that reach ``min_count`` appended (same order
        rule), until it holds ``max_size`` entries; and the number appended. A fixed or hashed vocabulary is
        returned as it is."""
        room = max_size - len(self.entries)
        if not self.learned or room <= 0:
            return self, 0
        added = ranked_values(as_text(values), min_count, exclude=self.entries)[:room]
        if not added:
            return self, 0
        return Vocabulary(self.entries + tuple(added), self.oov_buckets, None, True), len(added)

    def encode(self, values: pa.Array) -> np.ndarray:
        """int64 row of each value (nulls: 0)."""
        encoded = pc.dictionary_encode(as_text(values))
        per_value = self._rows(encoded.dictionary)
        out = np.zeros(len(values), dtype=np.int64)
        if len(per_value):
            indices = encoded.indices
            out = per_value[indices.fill_null(0).to_numpy(zero_copy_only=False)]
            if indices.null_count:
                out[indices.is_null().to_numpy(zero_copy_only=False)] = 0
        return out

    def _rows(self, distinct: pa.Array) -> np.ndarray:
        if self.hash_buckets is not None:
            return (stable_hash64(distinct) % np.uint64(self.hash_buckets)).astype(np.int64) + 1
        position = pc.index_in(distinct, value_set=self._value_set)
        known = position.is_valid().to_numpy(zero_copy_only=False)
        rows = np.zeros(len(distinct), dtype=np.int64)
        rows[known] = position.drop_null().to_numpy().astype(np.int64) + 1 + self.oov_buckets
        if self.oov_buckets and not known.all():
            unknown = distinct.filter(pa.array(~known))
            rows[~known] = (stable_hash64(unknown) % np.uint64(self.oov_buckets)).astype(np.int64) + 1
        return rows

    @property
    def kind(self) -> str:
        """``learned``, ``fixed`` or ``hashed``."""
        if self.hash_buckets is not None:
            return "hashed"
        return "learned" if self.learned else "fixed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see :meth:`from_dict`)."""
        return {
            "entries": list(self.entries),
            "oov_buckets": self.oov_buckets,
            "hash_buckets": self.hash_buckets,
            "learned": self.learned,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """The vocabulary :meth:`to_dict` wrote."""
        return cls(tuple(d["entries"]), int(d["oov_buckets"]), d["hash_buckets"], bool(d["learned"]))
