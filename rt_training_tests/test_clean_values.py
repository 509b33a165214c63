"""RawColumn: a parser's loose-row hint changes how values are classified, never the result."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rt_training.clean.values import BIGINT, BOOL, FLOAT, INT, NULL, OTHER, STRING, RawColumn

COLUMNS = {
    "floats with a string": ([1.5, None, "x", 2.0, 7, 3.25], False),
    "ints with a float and a bool": ([1, 2, 3.0, True, None, 5], True),
    "ints with a big int": ([1, 2**70, 3, None, -4, 5], True),
    "strings with an array and a number": (["a", ["b"], "c", None, 4, "d"], False),
    "bools with a string": ([True, False, "yes", None, True, False], False),
    "timestamps as ints, floats and strings": (
        [1000, 2000.5, "2026-01-01T00:00:00Z", None, 4000, 5000],
        True,
    ),
    "nulls with one number": ([None, None, 1.5, None, None, None], False),
}


def described(column: RawColumn) -> dict[str, list]:
    """Everything validation reads from a column, as plain values (NaN as a string, so equal compares equal)."""
    return {
        "kind": column.kind.tolist(),
        "number": ["nan" if math.isnan(x) else x for x in column.number().tolist()],
        "integer": column.integer().tolist(),
        "strings": column.strings().to_pylist(),
        "boolean": column.boolean().tolist(),
    }


@pytest.mark.parametrize("name", COLUMNS)
@pytest.mark.parametrize(
    "loose",
    [
        "the odd rows",  # what a typed parser reports
        "the odd rows and a good one",
        "a good row only",  # a wrong hint: inference sees the odd values and splits the whole column
        "every row",
    ],
)
def test_a_loose_row_hint_gives_what_the_split_of_every_value_gives(name: str, loose: str) -> None:
    values, exact_ints = COLUMNS[name]
    expected = RawColumn(values, exact_ints=exact_ints)
    kinds = np.array(expected.kind)
    odd = ~np.isin(kinds, [NULL, kinds[np.flatnonzero(kinds != NULL)[0]]])
    hint = {
        "the odd rows": odd,
        "the odd rows and a good one": odd | (np.arange(len(values)) == 0),
        "a good row only": np.arange(len(values)) == 0,
        "every row": np.ones(len(values), dtype=bool),
    }[loose]
    hinted = RawColumn(values, exact_ints=exact_ints, loose=hint)
    assert described(hinted) == described(expected)
    if loose == "the odd rows":
        # Only the odd values are split one by one; without the hint, every value of a column holding one.
        assert hinted.split_count == odd.sum()
        assert expected.split_count == (len(values) if odd.any() else 0)


def test_the_split_kinds_of_a_hinted_column() -> None:
    values = [1, 2**70, 2.5, "x", True, None, [1], 3]
    loose = np.array([False, True, True, True, True, False, True, False])
    column = RawColumn(values, exact_ints=True, loose=loose)
    assert column.kind.tolist() == [INT, BIGINT, FLOAT, STRING, BOOL, NULL, OTHER, INT]
    assert column.integer().tolist() == [1, 0, 0, 0, 0, 0, 0, 3]
    assert column.strings().to_pylist() == [None, None, None, "x", None, None, None, None]
    assert column.number()[:3].tolist() == [1.0, float(2**70), 2.5]
    assert column.boolean().tolist() == [False, False, False, False, True, False, False, False]


def test_a_hinted_column_of_nulls_and_strings_converts_in_arrow() -> None:
    values = ["a", None, "b", 5]
    column = RawColumn(values, loose=np.array([False, False, False, True]))
    assert column.kind.tolist() == [STRING, NULL, STRING, INT]
    assert column.strings().equals(pa.array(["a", None, "b", None], pa.string()))
