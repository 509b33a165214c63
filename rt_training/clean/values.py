"""One field's decoded values across a batch, split by JSON kind into typed numpy/Arrow columns.

Validation needs to know, per value, whether JSON gave a string, a number, a boolean, ``null`` or something
else, and then wants typed arrays to compare whole columns at once. The common case, a column whose values all
have one kind, is converted by Arrow in C++ (``pa.array`` infers the type). A column with mixed kinds (a batch
holding a bad record) is split by the values' Python types (one C-level pass), and Arrow converts the values of
each kind with the others masked out: still no per-value Python code, except for integers beyond int64, which
only a malformed producer sends.

A parser that checked most records against the schema's types names the others (``loose`` rows). Then a bad
record does not send its whole column down the split: Arrow converts the column with the loose rows set aside,
and only the loose values are split by kind. The hint only saves time: the other rows are still classified by
Arrow's own inference, as a column without bad values is, so a wrong hint changes no validation result (when Arrow
cannot convert the other rows, the whole column is split as without a hint).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from itertools import chain, compress
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL, BOOL, INT, FLOAT, STRING, OTHER, BIGINT = range(7)
"""Kinds of a JSON value. ``BIGINT`` is an integer outside int64; ``OTHER`` an object or an array."""

_KIND_OF_TYPE: defaultdict[type, int] = defaultdict(
    lambda: OTHER, {type(None): NULL, bool: BOOL, int: INT, float: FLOAT, str: STRING}
)
_KIND_OF_ARROW = {
    pa.null(): NULL,
    pa.bool_(): BOOL,
    pa.int64(): INT,
    pa.float64(): FLOAT,
    pa.string(): STRING,
}


def show(value: Any, limit: int = 80) -> str:
    """A value as a person reads it in a dead-letter detail: JSON-like, cut at ``limit`` characters."""
    if isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except ValueError:
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_kind_name(value: Any) -> str:
    """The JSON name of a Python value's kind, for details."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


class RawColumn:
    """Values of one field for every record of a batch.

    Parameters
    ----------
    values
        One Python value per record (``None`` for absent or ``null``).
    exact_ints
        Keep integers exact when the column mixes integers and floats (Arrow would infer float64 and round
        integers above 2**53); int and timestamp fields need this.
    loose
        Optional, a bool per value: the rows most likely to hold a value of an unexpected kind (see the module's
        docstring).
    """

    def __init__(self, values: list[Any], *, exact_ints: bool = False, loose: np.ndarray | None = None):
        self.values = values
        self._n = len(values)
        self._loose: RawColumn | None = None
        loose_rows = np.flatnonzero(loose) if loose is not None else np.empty(0, dtype=np.int64)
        if 0 < len(loose_rows) < self._n:
            self._arrow = self._infer(_with_nulls(values, loose_rows), exact_ints)
            if self._arrow is not None:
                self._loose_rows = loose_rows
                self._loose = RawColumn([values[r] for r in loose_rows.tolist()], exact_ints=exact_ints)
        else:
            self._arrow = self._infer(values, exact_ints)
        if self._arrow is not None:
            kind = _KIND_OF_ARROW[self._arrow.type]
            nulls = self._arrow.is_null().to_numpy(zero_copy_only=False)
            self.kind = np.where(nulls, NULL, kind).astype(np.int8)
            if self._loose is not None:
                self.kind[self._loose_rows] = self._loose.kind
        else:
            # One pass in C: type() of each value, then its kind through the dict's __getitem__.
            self.kind = np.fromiter(
                map(_KIND_OF_TYPE.__getitem__, map(type, values)), dtype=np.int8, count=self._n
            )
            self._integers = self._split_integers()

    @property
    def split_count(self) -> int:
        """How many values were split by kind one by one: the loose ones, or all when Arrow could not convert."""
        if self._arrow is None:
            return self._n
        return 0 if self._loose is None else len(self._loose_rows)

    @staticmethod
    def _infer(values: list[Any], exact_ints: bool) -> pa.Array | None:
        try:
            arr = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            return None
        if arr.type not in _KIND_OF_ARROW or (exact_ints and arr.type == pa.float64()):
            return None
        if arr.type == pa.float64() and bool in set(map(type, values)):
            return (
                None  # Arrow reads true as 1.0 after a float ([1.5, true] is float64): split by kind instead
            )
        return arr

    def _typed(self, arrow_type: pa.DataType, *kinds: int) -> pa.Array:
        """The values of ``kinds`` converted by Arrow (the others are masked, so never converted), null elsewhere."""
        return pa.array(self.values, type=arrow_type, mask=~self.mask(*kinds))

    def _split_integers(self) -> np.ndarray:
        """int64 values of the INT rows (0 elsewhere); integers that do not fit become BIGINT."""
        try:
            return self._typed(pa.int64(), INT).fill_null(0).to_numpy(zero_copy_only=False)
        except (OverflowError, pa.ArrowInvalid):
            pass
        for row in np.flatnonzero(self.kind == INT).tolist():
            if not -(2**63) <= self.values[row] < 2**63:
                self.kind[row] = BIGINT
        return self._typed(pa.int64(), INT).fill_null(0).to_numpy(zero_copy_only=False)

    def mask(self, *kinds: int) -> np.ndarray:
        """Rows whose value has one of ``kinds``."""
        wanted = np.zeros(BIGINT + 1, dtype=bool)
        wanted[list(kinds)] = True
        return wanted[self.kind]

    def _patched(self, out: np.ndarray, loose_values: Callable[[RawColumn], np.ndarray]) -> np.ndarray:
        """``out`` (typed values of the Arrow-converted rows) with the loose rows' values written in."""
        if self._loose is None:
            return out
        out = out if out.flags.writeable else out.copy()
        out[self._loose_rows] = loose_values(self._loose)
        return out

    def number(self) -> np.ndarray:
        """float64 of every numeric value (integers included; BIGINT may be +-inf), NaN elsewhere."""
        if self._arrow is not None:
            if self._arrow.type in (pa.int64(), pa.float64()):
                out = pc.cast(self._arrow, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            else:
                out = np.full(self._n, np.nan)
            return self._patched(out, RawColumn.number)
        out = self._typed(pa.float64(), FLOAT).to_numpy(zero_copy_only=False, writable=True)
        ints = self.kind == INT
        out[ints] = self._integers[ints]
        for row in np.flatnonzero(self.kind == BIGINT).tolist():
            big = self.values[row]
            try:
                out[row] = float(big)
            except OverflowError:
                out[row] = math.inf if big > 0 else -math.inf
        return out

    def integer(self) -> np.ndarray:
        """int64 of the INT values, 0 elsewhere."""
        if self._arrow is not None:
            if self._arrow.type == pa.int64():
                out = self._arrow.fill_null(0).to_numpy(zero_copy_only=False)
            else:
                out = np.zeros(self._n, dtype=np.int64)
            return self._patched(out, RawColumn.integer)
        return self._integers

    def strings(self) -> pa.StringArray:
        """The STRING values, null elsewhere."""
        if self._arrow is not None:
            out = self._arrow if self._arrow.type == pa.string() else pa.nulls(self._n, pa.string())
            if self._loose is None:
                return out
            at_loose = np.zeros(self._n, dtype=bool)
            at_loose[self._loose_rows] = True
            return pc.replace_with_mask(out, pa.array(at_loose), self._loose.strings())
        return self._typed(pa.string(), STRING)

    def boolean(self) -> np.ndarray:
        """The BOOL values, False elsewhere."""
        if self._arrow is not None:
            if self._arrow.type == pa.bool_():
                out = self._arrow.fill_null(False).to_numpy(zero_copy_only=False)
            else:
                out = np.zeros(self._n, dtype=bool)
            return self._patched(out, RawColumn.boolean)
        return self._typed(pa.bool_(), BOOL).fill_null(False).to_numpy(zero_copy_only=False)


_NULL_SHAPE, _ARRAY_SHAPE = 1, 2
_SHAPE_OF_TYPE: defaultdict[type, int] = defaultdict(int, {type(None): _NULL_SHAPE, list: _ARRAY_SHAPE})


class ListColumn:
    """Values of one list or vector field for every record of a batch: which hold a JSON array, and the elements
    of all the arrays as one :class:`RawColumn`, so elements are checked a column at a time like scalar fields.

    The arrays are measured and flattened by C-level iteration (``map(len, ...)``,
    ``itertools.chain.from_iterable``); element ``e`` belongs to row ``row_of[e]`` at index ``position[e]`` of its
    array.

    Parameters
    ----------
    values
        One Python value per record (``None`` for absent or ``null``).
    exact_ints
        As for :class:`RawColumn`, for the elements (lists of ints).
    """

    def __init__(self, values: list[Any], *, exact_ints: bool = False):
        self.values = values
        n = len(values)
        shape = np.fromiter(map(_SHAPE_OF_TYPE.__getitem__, map(type, values)), dtype=np.int8, count=n)
        self.is_null = shape == _NULL_SHAPE
        self.is_array = shape == _ARRAY_SHAPE
        arrays = list(compress(values, self.is_array))
        self.lengths = np.zeros(n, dtype=np.int64)
        self.lengths[self.is_array] = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.row_of = np.repeat(np.arange(n), self.lengths)
        self.position = np.arange(len(self.row_of)) - self.offsets[self.row_of]
        self.elements = RawColumn(list(chain.from_iterable(arrays)), exact_ints=exact_ints)


def _with_nulls(values: list[Any], rows: np.ndarray) -> list[Any]:
    """A copy of ``values`` with ``None`` at ``rows``."""
    out = list(values)
    for row in rows.tolist():
        out[row] = None
    return out
