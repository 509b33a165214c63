"""List columns as padded ``[N, max_length]`` blocks and vector columns as ``[N, dim]`` blocks.

Everything works on the list offsets and the flat child values, so the cost is a few numpy operations over
all elements, never a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

Truncation = Literal["right", "left"]


@dataclass(frozen=True)
class Padded:
    """Where each kept element of a list column goes in its ``[rows, max_length]`` block.

    ``values[k]`` (the kept elements, in order) belongs at ``[row[k], position[k]]``. ``mask`` is True where a
    position holds a non-null element. Rows are left-aligned: padding is at the end whichever side was cut.
    """

    rows: int
    max_length: int
    row: np.ndarray
    position: np.ndarray
    values: pa.Array
    mask: np.ndarray


def _row_bounds(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Start (into ``lists.values``) and length of each row; null rows have length 0."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    if lists.null_count:
        lengths[lists.is_null().to_numpy(zero_copy_only=False)] = 0
    return offsets[:-1], lengths


def pad_lists(lists: pa.Array, max_length: int, truncation: Truncation) -> Padded:
    """Lay a list column out in ``[len(lists), max_length]``.

    A list longer than ``max_length`` keeps its first elements with ``truncation: right`` (the end is cut) or
    its last ones with ``truncation: left``.
    """
    starts, lengths = _row_bounds(lists)
    keep = np.minimum(lengths, max_length)
    first = starts if truncation == "right" else starts + lengths - keep
    row = np.repeat(np.arange(len(lists), dtype=np.int64), keep)
    position = np.arange(int(keep.sum()), dtype=np.int64) - np.repeat(np.cumsum(keep) - keep, keep)
    values = lists.values.take(pa.array(np.repeat(first, keep) + position))
    mask = np.zeros((len(lists), max_length), dtype=bool)
    mask[row, position] = values.is_valid().to_numpy(zero_copy_only=False)
    return Padded(len(lists), max_length, row, position, values, mask)


def vector_block(vectors: pa.Array, dim: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[N, dim]`` of a vector column (null rows: zeros) and the bool ``[N]`` mask of non-null rows.

    Raises
    ------
    ValueError
        A non-null value whose length is not ``dim`` (cleaning refuses those, so the rows did not come from
        silver).
    """
    starts, lengths = _row_bounds(vectors)
    valid = vectors.is_valid().to_numpy(zero_copy_only=False)
    wrong = valid & (lengths != dim)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ValueError(
            f"vector feature {name!r}: row {row} has {int(lengths[row])} values, the field's dim is {dim} "
            f"({int(wrong.sum())} such rows); featurize rows that passed cleaning, which checks the length"
        )
    flat = vectors.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    out = np.zeros((len(vectors), dim), dtype=np.float32)
    out[valid] = flat[starts[valid][:, None] + np.arange(dim, dtype=np.int64)]
    return out, valid
