"""Drift of the fields that are not one value per row: text, lists and vectors.

Each field gives two verdicts, named ``<field>.<aspect>``, with the shape of a column's
(:class:`~rt_training.drift.detector.ColumnDrift`) and counted in the drift share like a column; the numbers
behind them go into the verdict's ``details``.

``<field>.tokens`` (text), ``jensenshannon``
    Tokens: the text lowercased, cut at every run of characters that are not Unicode letters or digits
    (``"Don't stop!"`` gives ``don``, ``t``, ``stop``), empty pieces dropped. A cheap, vectorized rule that
    needs no fitted tokenizer, so the reference and the current window are cut the same way whatever model
    is trained. The most frequent reference tokens (:func:`top_k`, at most :data:`TOP_K`) plus one "other"
    bucket are compared with the Jensen-Shannon distance at the categorical threshold (0.1, or
    ``DriftPolicy.stattest_threshold``).
    Never chi-squared: the tokens of one row are not independent draws, so a p-value over token counts
    would flag windows of one distribution; the distance has no such assumption.
``<field>.oov``, ``oov_rate``
    The share of current tokens never seen in the reference window; drift at :data:`OOV_RATE_THRESHOLD`.
``<field>.length`` (list), Evidently's numeric rule
    The number of elements per row, compared like a numeric column (K-S or Wasserstein; chi-squared/Z when at
    most five lengths occur). Rows are independent, so Evidently's choice applies unchanged.
``<field>.elements`` (list)
    All elements of all rows together: string and int elements like tokens (top-K Jensen-Shannon), float
    elements with the normed Wasserstein distance (a distance, not K-S, for the same reason as tokens).
    Left out for hash-bucketed lists (ids: see :mod:`rt_training.drift.reports`).
``<field>.mean_shift`` (vector), ``mean_shift``
    :func:`rt_training.drift.stattests.mean_shift`: distance of the mean vectors over the reference's RMS spread.
``<field>.domain_auc`` (vector), ``domain_auc``
    :func:`rt_training.drift.domain.domain_classifier_auc`: held-out AUC of a seeded logistic regression telling
    current rows from reference rows, against a threshold that grows as the windows shrink.

Null rows (and vectors with a non-finite value) are missing and dropped on each side, as in a column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.drift import domain, stattests
from rt_training.drift.detector import (
    ColumnDrift,
    ColumnType,
    DriftInputError,
    Frame,
    numeric_drift,
    raw_column,
    threshold_for,
)
from rt_training.spec.models import DriftPolicy

TOP_K = 200
"""Most frequent reference tokens (or list elements) compared one by one at most; the rest share one bucket."""
MIN_TOP_K = 10
"""Fewest values compared one by one, however small the windows."""
NOISE_SHARE = 1.0 / 3.0
"""Share of the threshold the distance between two samples of one distribution may reach (:func:`top_k`)."""
OOV_RATE_THRESHOLD = stattests.OOV_RATE.default_threshold
"""Drift when at least this share of current tokens never occurs in the reference (10%)."""
TOKEN_SEPARATOR = r"[^\pL\pN]+"
"""Runs of characters that are neither letters nor digits (RE2 Unicode classes) separate tokens."""


def tokens(texts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Every token of every non-null text, in order (see the module docstring for the rule).

    >>> tokens(pa.array(["Don't stop!", None, "STOP  now"])).to_pylist()
    ['don', 't', 'stop', 'stop', 'now']
    """
    spaced = pc.replace_substring_regex(pc.utf8_lower(texts), TOKEN_SEPARATOR, " ")
    pieces = pc.list_flatten(pc.utf8_split_whitespace(spaced))
    if isinstance(pieces, pa.ChunkedArray):
        pieces = pieces.combine_chunks()
    return pieces.filter(pc.not_equal(pc.utf8_length(pieces), 0))


def top_k(reference_count: int, current_count: int, threshold: float) -> int:
    """How many values get their own bucket: as many as keep the no-drift distance at a third of the threshold.

    The Jensen-Shannon distance between two samples of one distribution over ``K + 1`` buckets is about
    ``sqrt(K / 8 * (1 / n_reference + 1 / n_current))`` (its squared bias), so ``K`` is the largest value
    keeping that at ``NOISE_SHARE * threshold``, within ``[MIN_TOP_K, TOP_K]``: 128 for 36,000 and 24,000
    tokens, 13 for 3,000 a side (short texts in a small window), where 200 buckets would reach 0.13 and flag
    drift on windows of one distribution.

    >>> top_k(36_000, 24_000, 0.1), top_k(3000, 3000, 0.1)
    (128, 13)
    """
    budget = 8.0 * (NOISE_SHARE * threshold) ** 2 / (1.0 / reference_count + 1.0 / current_count)
    return int(min(TOP_K, max(MIN_TOP_K, np.floor(budget))))


def text_drift(reference: Frame, current: Frame, name: str, policy: DriftPolicy) -> list[ColumnDrift]:
    """``<name>.tokens`` and ``<name>.oov`` verdicts of a text column."""
    ref_col = _arrow_column(reference, name, "reference", pa.types.is_string, "string")
    cur_col = _arrow_column(current, name, "current", pa.types.is_string, "string")
    ref_tokens, cur_tokens = tokens(ref_col), tokens(cur_col)
    for found, side in ((ref_tokens, "reference"), (cur_tokens, "current")):
        if len(found) == 0:
            raise DriftInputError(
                f"text column {name!r} has no token in the {side} data (every value null, empty or punctuation); "
                "drop it from the drift columns or fix the data feeding that window"
            )
    ref_rows = len(ref_col) - ref_col.null_count
    cur_rows = len(cur_col) - cur_col.null_count
    distribution = _top_k_divergence(f"{name}.tokens", "text", ref_tokens, cur_tokens, policy)
    oov = _oov(f"{name}.oov", "text", ref_tokens, cur_tokens)
    per_row = {
        "reference_tokens_per_row": len(ref_tokens) / ref_rows,
        "current_tokens_per_row": len(cur_tokens) / cur_rows,
    }
    return [
        replace(distribution, details={**distribution.details, **per_row}),
        replace(oov, details={**oov.details, **per_row}),
    ]


def list_drift(
    reference: Frame, current: Frame, name: str, policy: DriftPolicy, *, elements: bool = True
) -> list[ColumnDrift]:
    """``<name>.length`` and (with ``elements``) ``<name>.elements`` verdicts of a list column."""
    ref_col = _arrow_column(reference, name, "reference", _is_list, "list")
    cur_col = _arrow_column(current, name, "current", _is_list, "list")
    ref_lengths = pc.drop_null(pc.list_value_length(ref_col)).to_numpy()
    cur_lengths = pc.drop_null(pc.list_value_length(cur_col)).to_numpy()
    label = f"{name}.length"
    length = numeric_drift({label: ref_lengths}, {label: cur_lengths}, label, policy)
    length = replace(
        length,
        type="list",
        details={
            "reference_mean_length": float(ref_lengths.mean()),
            "current_mean_length": float(cur_lengths.mean()),
            "reference_p95_length": float(np.quantile(ref_lengths, 0.95)),
            "current_p95_length": float(np.quantile(cur_lengths, 0.95)),
            "reference_max_length": float(ref_lengths.max()),
            "current_max_length": float(cur_lengths.max()),
        },
    )
    if not elements:
        return [length]
    ref_values = pc.drop_null(pc.list_flatten(ref_col))
    cur_values = pc.drop_null(pc.list_flatten(cur_col))
    label = f"{name}.elements"
    if pa.types.is_floating(ref_values.type):
        return [length, _float_elements(label, ref_values, cur_values, policy)]
    for found, side in ((ref_values, "reference"), (cur_values, "current")):
        if len(found) == 0:
            raise DriftInputError(
                f"list column {name!r} has no element in the {side} data (every list null or empty); "
                "drop it from the drift columns or fix the data feeding that window"
            )
    if cur_values.type != ref_values.type:
        cur_values = cur_values.cast(ref_values.type)
    divergence = _top_k_divergence(label, "list", _combined(ref_values), _combined(cur_values), policy)
    oov_rate = _oov(label, "list", _combined(ref_values), _combined(cur_values)).score
    return [length, replace(divergence, details={**divergence.details, "oov_rate": oov_rate})]


def vector_drift(reference: Frame, current: Frame, name: str, seed: int = 0) -> list[ColumnDrift]:
    """``<name>.mean_shift`` and ``<name>.domain_auc`` verdicts of a vector column."""
    ref = _vectors(reference, name, "reference")
    cur = _vectors(current, name, "current")
    if ref.shape[1] != cur.shape[1]:
        raise DriftInputError(
            f"vector column {name!r} has {ref.shape[1]} values a row in the reference data and {cur.shape[1]} "
            "in the current data; compare windows of one embedding"
        )
    for rows, side in ((ref, "reference"), (cur, "current")):
        if len(rows) < domain.MIN_ROWS_PER_SIDE:
            raise DriftInputError(
                f"vector column {name!r} has {len(rows)} usable rows in the {side} data, fewer than the "
                f"{domain.MIN_ROWS_PER_SIDE} the domain classifier needs; use a larger drift window"
            )
    shift_threshold = stattests.MEAN_SHIFT.default_threshold
    shift = stattests.mean_shift(ref, cur, shift_threshold)
    spread = max(float(np.sqrt(ref.var(axis=0, dtype=np.float64).sum())), stattests.MIN_NORM)
    classifier = domain.domain_classifier_auc(ref, cur, seed=seed)
    dim = ref.shape[1]
    return [
        ColumnDrift(
            f"{name}.mean_shift",
            "vector",
            stattests.MEAN_SHIFT.name,
            shift.score,
            shift_threshold,
            shift.drifted,
            len(ref),
            len(cur),
            None,
            {
                "dim": dim,
                "reference_spread": spread,
                "mean_distance": shift.score * spread,
                "noise_level": float(np.sqrt(1.0 / len(ref) + 1.0 / len(cur))),
            },
        ),
        ColumnDrift(
            f"{name}.domain_auc",
            "vector",
            stattests.DOMAIN_AUC.name,
            classifier.auc,
            classifier.threshold,
            classifier.drifted,
            len(ref),
            len(cur),
            None,
            {
                "dim": dim,
                "fit_rows": classifier.fit_rows,
                "scored_reference_rows": classifier.scored_reference_rows,
                "scored_current_rows": classifier.scored_current_rows,
            },
        ),
    ]


def _top_k_divergence(
    label: str, column_type: ColumnType, ref_values: pa.Array, cur_values: pa.Array, policy: DriftPolicy
) -> ColumnDrift:
    """Jensen-Shannon distance over the reference's :func:`top_k` most frequent values plus an "other" bucket."""
    counts = pc.value_counts(ref_values)
    table = pa.table({"values": counts.field("values"), "counts": counts.field("counts")})
    # Most frequent first, ties by value, so the buckets do not depend on the order rows arrived in.
    test = stattests.JENSENSHANNON
    threshold = threshold_for(test, policy)
    k = top_k(len(ref_values), len(cur_values), threshold)
    order = pc.sort_indices(table, sort_keys=[("counts", "descending"), ("values", "ascending")])[:k]
    top = table.column("values").take(order).combine_chunks()
    top_counts = table.column("counts").take(order).to_numpy()
    ref_counts = np.append(top_counts, len(ref_values) - top_counts.sum())
    slots = pc.fill_null(pc.index_in(cur_values, value_set=top), len(top)).to_numpy()
    cur_counts = np.bincount(slots, minlength=len(top) + 1)
    outcome = stattests.jensenshannon(ref_counts, cur_counts, threshold)
    return ColumnDrift(
        label,
        column_type,
        test.name,
        outcome.score,
        threshold,
        outcome.drifted,
        len(ref_values),
        len(cur_values),
        len(top) + 1,
        {
            "reference_distinct": len(table),
            "reference_other_share": float(ref_counts[-1] / len(ref_values)),
            "current_other_share": float(cur_counts[-1] / len(cur_values)),
        },
    )


def _oov(label: str, column_type: ColumnType, ref_values: pa.Array, cur_values: pa.Array) -> ColumnDrift:
    """Share of ``cur_values`` absent from ``ref_values``."""
    seen = pc.is_in(cur_values, value_set=pc.unique(ref_values)).to_numpy(zero_copy_only=False)
    unseen = int(len(seen) - seen.sum())
    rate = unseen / len(seen)
    return ColumnDrift(
        label,
        column_type,
        stattests.OOV_RATE.name,
        rate,
        OOV_RATE_THRESHOLD,
        rate >= OOV_RATE_THRESHOLD,
        len(ref_values),
        len(cur_values),
        None,
        {"oov_rate": rate, "oov_count": unseen},
    )


def _float_elements(
    label: str, ref_values: pa.Array, cur_values: pa.Array, policy: DriftPolicy
) -> ColumnDrift:
    ref, cur = _finite(ref_values, label, "reference"), _finite(cur_values, label, "current")
    test = stattests.WASSERSTEIN
    threshold = threshold_for(test, policy)
    outcome = stattests.wasserstein_norm(ref, cur, threshold)
    return ColumnDrift(
        label,
        "list",
        test.name,
        outcome.score,
        threshold,
        outcome.drifted,
        ref.size,
        cur.size,
        None,
        {
            "reference_mean": float(ref.mean()),
            "current_mean": float(cur.mean()),
            "reference_std": stattests.population_std(ref),
            "current_std": stattests.population_std(cur),
        },
    )


def _finite(values: pa.Array | pa.ChunkedArray, label: str, side: str) -> np.ndarray:
    array = np.asarray(values.to_numpy(), dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise DriftInputError(
            f"{label!r} has no finite element in the {side} data; drop the column from the drift columns or "
            "fix the data feeding that window"
        )
    return array


def _vectors(frame: Frame, name: str, side: str) -> np.ndarray:
    """The non-null vectors with only finite values, as a float64 ``[n, dim]`` array."""
    column = _arrow_column(frame, name, side, _is_list, "list of floats")
    column = column.filter(pc.is_valid(column))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return np.empty((0, 0))
    if (lengths != lengths[0]).any():
        raise DriftInputError(
            f"vector column {name!r} holds rows of {sorted(set(lengths.tolist()))[:5]} values in the {side} "
            "data; every vector of a field has its dim (cleaning checks it): read silver rows"
        )
    flat = pc.list_flatten(column)
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(lengths), -1)
    return values[np.isfinite(values).all(axis=1)]


def _is_list(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _arrow_column(
    frame: Frame, name: str, side: str, accepts: Callable[[pa.DataType], bool], expected: str
) -> pa.Array:
    raw = raw_column(frame, name, side)
    column = raw if isinstance(raw, pa.ChunkedArray) else pa.array(list(raw))
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    if not accepts(column.type):
        raise DriftInputError(
            f"column {name!r} has type {column.type} in the {side} data, not a {expected}; list it with the "
            "drift columns of its kind"
        )
    return column
