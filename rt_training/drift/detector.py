"""Per-column and dataset drift between a reference window and a current window, with Evidently's verdicts.

The decision is Evidently 0.7's ``DataDriftPreset`` with its defaults, computed directly on numpy arrays so a
sensor can afford it on every tick (``benchmarks/bench_drift.py``: more than ten times faster than Evidently's
report on 100k rows, with the same verdicts):

* missing values (null, NaN, +-inf) are dropped per column, on each side;
* the test is picked per column from the reference's non-missing count and the number of distinct values in
  both windows together (``n``):

  ==========================  ========================  ==========================
  column                      reference <= 1000 values  reference > 1000 values
  ==========================  ========================  ==========================
  numeric, n > 5              ``ks``                    ``wasserstein``
  numeric or categorical,     ``chisquare`` (n > 2),    ``jensenshannon``
  otherwise                   ``z`` (n <= 2)
  ==========================  ========================  ==========================

* ``DriftPolicy.stattest_threshold`` replaces every test's default threshold (a p-value level for ``ks``,
  ``chisquare``, ``z``; a distance for ``wasserstein``, ``jensenshannon``), as Evidently's ``threshold`` does;
* the dataset drifts when the share of drifted columns reaches ``DriftPolicy.drift_share``.

A model's output or the label is one more column: pass prediction scores among ``numeric_columns`` and a
class label among ``categorical_columns`` (both windows must carry them).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> reference = {"x": rng.normal(size=5000), "colour": rng.choice(["red", "blue"], 5000)}
>>> current = {"x": rng.normal(0.5, size=5000), "colour": rng.choice(["red", "blue"], 5000)}
>>> result = detect_drift(reference, current, numeric_columns=["x"], categorical_columns=["colour"])
>>> [(c.column, c.stattest, c.drifted) for c in result.columns]
[('x', 'wasserstein', True), ('colour', 'jensenshannon', False)]
>>> result.summary()
'1/2 columns drifted (share 0.5 >= 0.5)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.drift import stattests
from rt_training.drift.stattests import StatTest
from rt_training.spec.models import DriftPolicy

Frame = pd.DataFrame | pa.Table | Mapping[str, np.ndarray]
"""A window of rows: a pandas DataFrame, a pyarrow Table, or a mapping of column name to 1-D numpy array."""

ColumnType = Literal["numeric", "categorical", "text", "list", "vector"]

#: Up to this many reference values the p-value tests are used, above it the distances (Evidently's rule).
SMALL_REFERENCE_MAX = 1000
#: A numeric column with at most this many distinct values is tested like a categorical one.
NUMERIC_AS_CATEGORICAL_MAX_VALUES = 5
#: A categorical column with at most this many distinct values gets the Z-test rather than chi-squared.
BINARY_MAX_VALUES = 2


class DriftInputError(ValueError):
    """The windows given to :func:`detect_drift` cannot be compared (missing column, wrong type, no values)."""


@dataclass(frozen=True)
class ColumnDrift:
    """The drift verdict for one column.

    ``reference_count``/``current_count`` are the values compared, after dropping missing ones. ``n_values`` is
    the number of distinct values in both windows together, which decides the test; for a numeric column with
    more than five it is ``None`` (only that fact matters, and counting would cost a pass over both windows).
    Text, list and vector fields give verdicts named ``<field>.<aspect>`` (:mod:`rt_training.drift.fields`),
    whose ``details`` hold the numbers behind them (OOV rate, list lengths, vector spread); a tabular column's
    ``details`` are empty.
    """

    column: str
    type: ColumnType
    stattest: str
    score: float
    threshold: float
    drifted: bool
    reference_count: int
    current_count: int
    n_values: int | None
    details: dict[str, float] = field(default_factory=dict)

    @property
    def stattest_display_name(self) -> str:
        """The test's name as Evidently's report shows it (e.g. ``"K-S p_value"``)."""
        return stattests.STATTESTS[self.stattest].display_name

    @property
    def score_kind(self) -> str:
        """``"p_value"`` (small means drift) or ``"distance"`` (large means drift)."""
        return stattests.STATTESTS[self.stattest].kind


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts and the dataset-level decision for one reference/current pair of windows."""

    columns: tuple[ColumnDrift, ...]
    n_drifted: int
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int

    def column(self, name: str) -> ColumnDrift:
        """The verdict of column ``name``."""
        for col in self.columns:
            if col.column == name:
                return col
        raise KeyError(f"column {name!r} was not compared; compared: {[c.column for c in self.columns]}")

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns whose test detected drift, in the order they were given."""
        return [c.column for c in self.columns if c.drifted]

    def detail_numbers(self) -> dict[str, float]:
        """Every verdict's details as ``{"<column>:<name>": value}`` (e.g. ``"body.oov:oov_rate"``), for metadata."""
        return {f"{c.column}:{key}": float(value) for c in self.columns for key, value in c.details.items()}

    def summary(self) -> str:
        """One line for logs and trigger reasons, e.g. ``"3/5 columns drifted (share 0.6 >= 0.5)"``."""
        op = ">=" if self.dataset_drift else "<"
        return (
            f"{self.n_drifted}/{len(self.columns)} columns drifted "
            f"(share {self.drift_share:.3g} {op} {self.drift_share_threshold:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (lists, str, int, float, bool)."""
        return {
            "dataset_drift": self.dataset_drift,
            "n_drifted": self.n_drifted,
            "n_columns": len(self.columns),
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": [
                {**asdict(c), "stattest_display_name": c.stattest_display_name, "score_kind": c.score_kind}
                for c in self.columns
            ],
        }


def choose_stattest(column_type: ColumnType, reference_count: int, n_values: int) -> StatTest:
    """Evidently's default test for a column: by type, reference size and distinct values in both windows."""
    many_values = column_type == "numeric" and n_values > NUMERIC_AS_CATEGORICAL_MAX_VALUES
    if reference_count <= SMALL_REFERENCE_MAX:
        if many_values:
            return stattests.KS
        return stattests.CHISQUARE if n_values > BINARY_MAX_VALUES else stattests.Z
    return stattests.WASSERSTEIN if many_values else stattests.JENSENSHANNON


def detect_drift(
    reference: Frame,
    current: Frame,
    numeric_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    policy: DriftPolicy | None = None,
    *,
    text_columns: Sequence[str] = (),
    list_columns: Sequence[str] = (),
    list_length_columns: Sequence[str] = (),
    vector_columns: Sequence[str] = (),
    seed: int = 0,
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column and decide dataset drift.

    Parameters
    ----------
    reference
        The data the model was trained on (or a sample of it).
    current
        A recent window of the stream.
    numeric_columns, categorical_columns
        The columns to compare and how to treat them; the result lists them in this order, numeric first.
    policy
        Threshold override and dataset drift share; ``None`` uses :class:`DriftPolicy`'s defaults.
    text_columns, list_columns, list_length_columns, vector_columns
        Fields judged by :mod:`rt_training.drift.fields`, two verdicts each (one for ``list_length_columns``:
        lists whose elements are ids, compared by length only), listed after the tabular ones in this order.
    seed
        Seed of the vector fields' domain classifier (its row sample, split and projection).

    Raises
    ------
    DriftInputError
        A column is missing from a window, listed twice, not numeric where declared numeric, not of its
        declared kind, or has no non-missing value in a window.
    """
    from rt_training.drift import fields  # fields builds on this module's verdicts

    policy = policy or DriftPolicy()
    validate_columns(
        numeric_columns,
        categorical_columns,
        [*text_columns, *list_columns, *list_length_columns, *vector_columns],
    )
    verdicts = [numeric_drift(reference, current, name, policy) for name in numeric_columns]
    verdicts += [_categorical_drift(reference, current, name, policy) for name in categorical_columns]
    for name in text_columns:
        verdicts += fields.text_drift(reference, current, name, policy)
    for name in list_columns:
        verdicts += fields.list_drift(reference, current, name, policy)
    for name in list_length_columns:
        verdicts += fields.list_drift(reference, current, name, policy, elements=False)
    for name in vector_columns:
        verdicts += fields.vector_drift(reference, current, name, seed)
    n_drifted = sum(v.drifted for v in verdicts)
    share = n_drifted / len(verdicts)
    return DriftResult(
        columns=tuple(verdicts),
        n_drifted=n_drifted,
        drift_share=share,
        drift_share_threshold=policy.drift_share,
        dataset_drift=share >= policy.drift_share,
        reference_rows=_n_rows(reference),
        current_rows=_n_rows(current),
    )


def validate_columns(
    numeric_columns: Sequence[str], categorical_columns: Sequence[str], other_columns: Sequence[str] = ()
) -> None:
    """Refuse an empty column list or a column listed twice (both would make the drift share meaningless)."""
    names = [*numeric_columns, *categorical_columns, *other_columns]
    if not names:
        raise DriftInputError("no columns to compare: pass numeric_columns and/or categorical_columns")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DriftInputError(f"columns listed more than once (numeric and categorical?): {twice}")


def numeric_drift(reference: Frame, current: Frame, name: str, policy: DriftPolicy) -> ColumnDrift:
    """The verdict on numeric column ``name``: Evidently's test for its size and distinct values."""
    ref = _finite(_numeric_values(reference, name, "reference"), name, "reference")
    cur = _finite(_numeric_values(current, name, "current"), name, "current")
    distinct = _distinct_if_few(ref, cur, NUMERIC_AS_CATEGORICAL_MAX_VALUES)
    if distinct is None:
        n_values = None
        test = choose_stattest("numeric", ref.size, NUMERIC_AS_CATEGORICAL_MAX_VALUES + 1)
        threshold = threshold_for(test, policy)
        test_fn = stattests.ks if test is stattests.KS else stattests.wasserstein_norm
        outcome = test_fn(ref, cur, threshold)
    else:
        n_values = distinct.size
        test = choose_stattest("numeric", ref.size, n_values)
        threshold = threshold_for(test, policy)
        ref_counts = np.bincount(np.searchsorted(distinct, ref), minlength=n_values)
        cur_counts = np.bincount(np.searchsorted(distinct, cur), minlength=n_values)
        outcome = _frequency_test(test, ref_counts, cur_counts, threshold)
    return ColumnDrift(
        name, "numeric", test.name, outcome.score, threshold, outcome.drifted, ref.size, cur.size, n_values
    )


def _categorical_drift(reference: Frame, current: Frame, name: str, policy: DriftPolicy) -> ColumnDrift:
    ref_codes, cur_codes, values = _shared_codes(
        raw_column(reference, name, "reference"), raw_column(current, name, "current"), name
    )
    ref_codes, cur_codes = ref_codes[ref_codes >= 0], cur_codes[cur_codes >= 0]
    for codes, side in ((ref_codes, "reference"), (cur_codes, "current")):
        if codes.size == 0:
            raise DriftInputError(_no_values_message(name, side))
    n_values = len(values)
    test = choose_stattest("categorical", ref_codes.size, n_values)
    threshold = threshold_for(test, policy)
    ref_counts = np.bincount(ref_codes, minlength=n_values)
    cur_counts = np.bincount(cur_codes, minlength=n_values)
    if test is stattests.Z and _descending(values):
        # Evidently takes the proportion of the larger of the two values; same |z|, and the same bits.
        ref_counts, cur_counts = ref_counts[::-1], cur_counts[::-1]
    outcome = _frequency_test(test, ref_counts, cur_counts, threshold)
    return ColumnDrift(
        name,
        "categorical",
        test.name,
        outcome.score,
        threshold,
        outcome.drifted,
        ref_codes.size,
        cur_codes.size,
        n_values,
    )


def _descending(values: list[Any]) -> bool:
    try:
        return len(values) == 2 and values[0] > values[1]
    except TypeError:  # values of two unorderable types: either order gives the same verdict
        return False


def _frequency_test(
    test: StatTest, ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float
) -> stattests.TestOutcome:
    if test is stattests.CHISQUARE:
        return stattests.chisquare(ref_counts, cur_counts, threshold)
    if test is stattests.Z:
        return stattests.z_test(ref_counts, cur_counts, threshold)
    return stattests.jensenshannon(ref_counts, cur_counts, threshold)


def threshold_for(test: StatTest, policy: DriftPolicy) -> float:
    """``policy.stattest_threshold`` when set (Evidently's override of every test), else the test's default."""
    return test.default_threshold if policy.stattest_threshold is None else policy.stattest_threshold


# -- reading columns out of the three accepted window types ------------------------------------------------


def _n_rows(frame: Frame) -> int:
    if isinstance(frame, pa.Table | pd.DataFrame):
        return len(frame)
    return max((len(v) for v in frame.values()), default=0)


def raw_column(frame: Frame, name: str, side: str) -> pa.ChunkedArray | np.ndarray:
    """Column ``name`` of a window as it is stored; a clear error naming the side when it is not there."""
    if isinstance(frame, pa.Table):
        if name in frame.column_names:
            return frame.column(name)
        available = frame.column_names
    elif isinstance(frame, pd.DataFrame):
        if name in frame.columns:
            return frame[name].to_numpy()
        available = [str(c) for c in frame.columns]
    else:
        if name in frame:
            return np.asarray(frame[name])
        available = list(frame)
    raise DriftInputError(
        f"column {name!r} is not in the {side} data (columns there: {sorted(available)}); "
        "pass only columns both windows carry"
    )


def _numeric_values(frame: Frame, name: str, side: str) -> np.ndarray:
    """The column as a numeric numpy array, missing values as NaN, float32 kept (Evidently keeps it too)."""
    if isinstance(frame, pd.DataFrame) and name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(
            series
        ):
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
    raw = raw_column(frame, name, side)
    if isinstance(raw, pa.ChunkedArray):
        if not (
            pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type) or pa.types.is_boolean(raw.type)
        ):
            raise _not_numeric(name, side, str(raw.type))
        return raw.to_numpy()
    if raw.dtype.kind not in "biuf":
        raise _not_numeric(name, side, str(raw.dtype))
    return raw


def _not_numeric(name: str, side: str, type_name: str) -> DriftInputError:
    return DriftInputError(
        f"column {name!r} is declared numeric but has type {type_name} in the {side} data; "
        "list it among categorical_columns or cast it to a number"
    )


def _finite(values: np.ndarray, name: str, side: str) -> np.ndarray:
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise DriftInputError(_no_values_message(name, side))
    return values


def _no_values_message(name: str, side: str) -> str:
    return (
        f"column {name!r} has no non-missing value in the {side} data (all null, NaN or infinite); "
        "drop it from the drift columns or fix the data feeding that window"
    )


def _distinct_if_few(ref: np.ndarray, cur: np.ndarray, limit: int) -> np.ndarray | None:
    """The sorted distinct values of both samples if there are at most ``limit``, else ``None``.

    A prefix is checked first: continuous data shows more than ``limit`` values within a few rows, so the full
    pass over both samples only happens for genuinely low-cardinality columns.
    """
    for sample in (ref, cur):
        if np.unique(sample[:1000]).size > limit:
            return None
    distinct = np.union1d(pd.unique(ref), pd.unique(cur))
    return distinct if distinct.size <= limit else None


def _shared_codes(
    ref: pa.ChunkedArray | np.ndarray, cur: pa.ChunkedArray | np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Integer codes into one dictionary of both windows' non-missing values (-1: missing), and that dictionary.

    Every dictionary entry occurs in at least one window, so no count vector has a value seen nowhere.
    """
    if (
        isinstance(ref, pa.ChunkedArray)
        and isinstance(cur, pa.ChunkedArray)
        and not pa.types.is_floating(ref.type)
    ):
        ref, cur = _decoded(ref), _decoded(cur)
        if cur.type != ref.type:
            try:
                cur = cur.cast(ref.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DriftInputError(
                    f"column {name!r} has type {ref.type} in the reference data and {cur.type} in the current "
                    "data; give both windows the same type"
                ) from exc
        encoded = pc.dictionary_encode(
            pa.chunked_array(ref.chunks + cur.chunks, type=ref.type).combine_chunks()
        )
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        return codes[: len(ref)], codes[len(ref) :], encoded.dictionary.to_pylist()
    ref_values, cur_values = _as_numpy(ref), _as_numpy(cur)
    codes, uniques = pd.factorize(np.concatenate([ref_values, cur_values]), use_na_sentinel=True)
    return codes[: len(ref_values)], codes[len(ref_values) :], list(uniques)


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _as_numpy(column: pa.ChunkedArray | np.ndarray) -> np.ndarray:
    values = column.to_numpy() if isinstance(column, pa.ChunkedArray) else column
    if values.dtype.kind == "f":
        # inf is missing too, as in Evidently; factorize already treats NaN as missing
        values = np.where(np.isfinite(values), values, np.nan)
    elif values.dtype.kind not in "biuf":
        values = values.astype(object)
    return values
