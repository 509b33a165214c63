"""detect_drift's inputs and outputs: window types, missing values, prediction/label columns, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rt_training.drift import DriftInputError, detect_drift
from rt_training.spec.models import DriftPolicy


def test_missing_values_are_dropped_per_column_and_side() -> None:
    ref = pa.table(
        {
            "x": pa.array([1.0, None, float("nan"), float("inf"), 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
            "c": pa.array(["a", None, "b", "a", "b", "a", None, "b", "a", "b"]),
        }
    )
    cur = pa.table({"x": pa.array([1.5, 2.5, -float("inf"), 3.5, 4.5, 5.5, 6.5]), "c": pa.array(["a"] * 7)})
    result = detect_drift(ref, cur, ["x"], ["c"])
    x, c = result.columns
    assert (x.reference_count, x.current_count, x.n_values) == (7, 6, None)
    assert (c.reference_count, c.current_count, c.n_values) == (8, 7, 2)
    assert (result.reference_rows, result.current_rows) == (10, 7)


def test_numeric_column_with_few_values_is_tested_as_frequencies() -> None:
    ref = {"x": np.array([0, 1, 2] * 100)}
    cur = {"x": np.array([0, 1, 2, 2] * 50)}
    col = detect_drift(ref, cur, ["x"]).columns[0]
    assert (col.stattest, col.n_values) == ("chisquare", 3)


def test_prediction_scores_and_label_are_columns_like_any_other() -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"prediction": rng.beta(2, 5, 4000), "label": rng.binomial(1, 0.2, 4000)})
    current = pd.DataFrame({"prediction": rng.beta(2, 3, 3000), "label": rng.binomial(1, 0.45, 3000)})
    result = detect_drift(reference, current, numeric_columns=["prediction"], categorical_columns=["label"])
    assert [(c.column, c.type, c.stattest, c.drifted) for c in result.columns] == [
        ("prediction", "numeric", "wasserstein", True),
        ("label", "categorical", "jensenshannon", True),
    ]
    assert result.dataset_drift


def test_threshold_override_and_drift_share_come_from_the_policy() -> None:
    rng = np.random.default_rng(9)
    ref = {"a": rng.normal(size=3000), "b": rng.normal(size=3000)}
    cur = {"a": rng.normal(0.15, size=3000), "b": rng.normal(size=3000)}
    default = detect_drift(ref, cur, ["a", "b"])
    assert default.drifted_columns == ["a"] and default.dataset_drift
    strict = detect_drift(ref, cur, ["a", "b"], policy=DriftPolicy(stattest_threshold=0.2, drift_share=0.5))
    assert [c.threshold for c in strict.columns] == [0.2, 0.2]
    assert strict.drifted_columns == [] and not strict.dataset_drift
    assert not detect_drift(ref, cur, ["a", "b"], policy=DriftPolicy(drift_share=0.75)).dataset_drift


def test_dictionary_and_differently_typed_arrow_strings_are_compared_by_value() -> None:
    ref = pa.table({"c": pa.array(["x", "y", "z"] * 40).dictionary_encode()})
    cur = pa.table({"c": pa.array(["z", "y", "x"] * 30, type=pa.large_string())})
    col = detect_drift(ref, cur, categorical_columns=["c"]).columns[0]
    assert (col.stattest, col.n_values, col.score, col.drifted) == ("chisquare", 3, 1.0, False)


def test_result_to_dict_is_json() -> None:
    rng = np.random.default_rng(1)
    result = detect_drift(
        {"x": rng.normal(size=50), "c": rng.choice(["a", "b"], 50)},
        {"x": rng.normal(size=40), "c": rng.choice(["a", "b"], 40)},
        ["x"],
        ["c"],
    )
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["n_columns"] == 2
    assert [c["column"] for c in payload["columns"]] == ["x", "c"]
    assert [(c["stattest"], c["score_kind"]) for c in payload["columns"]] == [
        ("ks", "p_value"),
        ("z", "p_value"),
    ]


@pytest.mark.parametrize(
    ("reference", "current", "numeric", "categorical", "message"),
    [
        (
            {"x": [1.0]},
            {"y": [1.0]},
            ["x"],
            [],
            r"column 'x' is not in the current data \(columns there: \['y'\]\)",
        ),
        (
            {"x": ["a"]},
            {"x": ["b"]},
            ["x"],
            [],
            "column 'x' is declared numeric but has type <U1 in the reference",
        ),
        (
            {"x": [np.nan, np.inf]},
            {"x": [1.0]},
            ["x"],
            [],
            "column 'x' has no non-missing value in the reference",
        ),
        ({"c": ["a"]}, {"c": [None]}, [], ["c"], "column 'c' has no non-missing value in the current data"),
        ({"x": [1.0]}, {"x": [1.0]}, ["x"], ["x"], r"listed more than once .*\['x'\]"),
        ({"x": [1.0]}, {"x": [1.0]}, [], [], "no columns to compare"),
    ],
)
def test_unusable_input_is_refused_with_the_column_and_side(
    reference: dict, current: dict, numeric: list[str], categorical: list[str], message: str
) -> None:
    as_arrays = (
        {k: np.asarray(v) for k, v in reference.items()},
        {k: np.asarray(v) for k, v in current.items()},
    )
    with pytest.raises(DriftInputError, match=message):
        detect_drift(*as_arrays, numeric, categorical)


def test_arrow_string_column_declared_numeric_is_refused() -> None:
    table = pa.table({"x": ["1", "2"]})
    with pytest.raises(DriftInputError, match="declared numeric but has type string in the reference data"):
        detect_drift(table, table, ["x"])
