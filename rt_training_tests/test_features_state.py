"""FeatureState: fitted statistics, vocabularies, sequences, vectors, labels, warm starts, save/restore."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from rt_training.clean.features import stable_hash64
from rt_training.features.inputs import InputInfo
from rt_training.features.state import FEATURE_STATE_FORMAT, FeatureState, fit_feature_state
from rt_training.spec import PipelineSpec, parse_spec

FIELDS: dict[str, dict[str, Any]] = {
    "id": {"type": "string"},
    "t": {"type": "timestamp"},
    "x": {"type": "float", "required": False},
    "n": {"type": "int", "required": False},
    "flag": {"type": "bool", "required": False},
    "c": {"type": "string", "required": False},
    "ci": {"type": "int", "required": False},
    "tags": {"type": "list", "items": "string", "required": False},
    "clicks": {"type": "list", "items": "int", "required": False},
    "prices": {"type": "list", "items": "float", "required": False},
    "emb": {"type": "vector", "dim": 3, "required": False},
    "body": {"type": "text", "required": False},
    "y": {"type": "int"},
    "cls": {"type": "string"},
}


def make_spec(features: dict[str, Any], label: dict[str, Any] | None = None) -> PipelineSpec:
    label = label or {"field": "y"}
    return parse_spec(
        {
            "name": "fs",
            "source": {"topic": "fs"},
            "schema": {"id_field": "id", "time_field": "t", "fields": FIELDS},
            "features": features,
            "label": label,
            "model": {"builtin": "causal_lm" if label.get("kind") == "language_model" else "mlp"},
        }
    )


def fit(spec: PipelineSpec, table: pa.Table, previous: FeatureState | None = None, cold_start: bool = True):
    return fit_feature_state(spec, table, previous, cold_start=cold_start, seed=0)


def with_label(columns: dict[str, Any]) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({**columns, "y": pa.array([0] * n, pa.int64())})


# -- numeric -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "transform"),
    [
        ({"name": "x"}, lambda v: v),
        ({"name": "x", "transform": "log1p"}, np.log1p),
        (
            {"name": "x", "transform": "clip", "clip_min": -1.0, "clip_max": 2.0},
            lambda v: np.clip(v, -1.0, 2.0),
        ),
    ],
)
def test_numeric_statistics_are_numpys_on_the_transformed_non_null_values(feature, transform) -> None:
    rng = np.random.default_rng(7)
    x = rng.exponential(2.0, 500)
    nulls = rng.random(500) < 0.2
    column = pa.array(x, mask=nulls)
    spec = make_spec({"numeric": [{**feature, "missing_indicator": True}]})
    state = fit(spec, with_label({"x": column}))

    expected = transform(x[~nulls])
    fitted = state.describe()
    assert fitted["mean.x"] == float(np.mean(expected))
    assert fitted["std.x"] == float(np.std(expected))
    assert fitted["statistics.x"] == "fitted"
    batch = state.featurize(pa.table({"x": column}))
    want = ((transform(x) - np.mean(expected)) / np.std(expected)).astype(np.float32)
    want[nulls] = 0.0
    np.testing.assert_array_equal(batch["x"], want)
    assert batch["x"].dtype == np.float32
    np.testing.assert_array_equal(batch["x__missing"], nulls.astype(np.float32))
    assert state.inputs == (InputInfo("x", "numeric", 1, None, True),)


def test_numeric_spec_values_override_each_statistic_on_its_own() -> None:
    table = with_label({"x": pa.array([1.0, 2.0, 6.0])})
    mean_given = fit(make_spec({"numeric": [{"name": "x", "mean": 10.0}]}), table).describe()
    assert (mean_given["mean.x"], mean_given["std.x"]) == (10.0, float(np.std([1.0, 2.0, 6.0])))
    assert mean_given["statistics.x"] == "fitted"
    std_given = fit(make_spec({"numeric": [{"name": "x", "std": 4.0}]}), table).describe()
    assert (std_given["mean.x"], std_given["std.x"]) == (3.0, 4.0)
    both = fit(make_spec({"numeric": [{"name": "x", "mean": 1.0, "std": 0.5}]}), table)
    assert both.describe()["statistics.x"] == "spec"
    np.testing.assert_array_equal(both.featurize(table)["x"], np.array([0.0, 2.0, 10.0], np.float32))


def test_numeric_constant_or_empty_column_scales_by_one() -> None:
    spec = make_spec({"numeric": [{"name": "x"}]})
    constant = fit(spec, with_label({"x": pa.array([5.0, 5.0, None])})).describe()
    assert (constant["mean.x"], constant["std.x"]) == (5.0, 1.0)
    empty = fit(spec, with_label({"x": pa.array([None, None], pa.float64())})).describe()
    assert (empty["mean.x"], empty["std.x"]) == (0.0, 1.0)


def test_int_and_bool_numeric_fields() -> None:
    spec = make_spec({"numeric": [{"name": "n"}, {"name": "flag"}]})
    table = with_label({"n": pa.array([1, 3, None], pa.int64()), "flag": pa.array([True, False, True])})
    state = fit(spec, table)
    batch = state.featurize(table)
    np.testing.assert_array_equal(batch["n"], np.array([-1.0, 1.0, 0.0], np.float32))
    flag = np.array([1.0, 0.0, 1.0])
    np.testing.assert_array_equal(batch["flag"], ((flag - flag.mean()) / flag.std()).astype(np.float32))


def test_numeric_value_outside_the_transform_domain_is_refused_with_its_row() -> None:
    spec = make_spec({"numeric": [{"name": "x", "transform": "log1p"}]})
    state = fit(spec, with_label({"x": pa.array([0.0, 1.0])}))
    with pytest.raises(ValueError, match=r"numeric feature 'x': 1 values .* row 1, value -2.0.*out_of_range"):
        state.featurize(pa.table({"x": [0.5, -2.0]}))


# -- categorical --------------------------------------------------------------------------------------


def test_learned_vocabulary_min_count_max_size_and_order() -> None:
    values = ["b"] * 3 + ["a"] * 3 + ["d"] * 5 + ["c"] * 2 + ["e"] + [None] * 4
    spec = make_spec({"categorical": [{"name": "c", "min_count": 2, "max_size": 3, "oov_buckets": 2}]})
    state = fit(spec, with_label({"c": pa.array(values, pa.string())}))
    # counts: d 5, a 3, b 3, c 2, e 1 -> min_count 2 drops e, max_size 3 drops c; ties by value.
    assert state.to_dict()["features"][0]["fitted"]["vocabulary"]["entries"] == ["d", "a", "b"]
    assert state.inputs == (InputInfo("c", "categorical", size=1 + 2 + 3),)
    batch = state.featurize(pa.table({"c": pa.array(["d", "a", "b", None], pa.string())}))
    np.testing.assert_array_equal(batch["c"], np.array([3, 4, 5, 0], np.int64))


def test_values_outside_the_vocabulary_land_in_their_hashed_oov_bucket() -> None:
    spec = make_spec({"categorical": [{"name": "c", "oov_buckets": 4}]})
    state = fit(spec, with_label({"c": pa.array(["k1", "k2"])}))
    unseen = [f"new-{i}" for i in range(40)]
    codes = state.featurize(pa.table({"c": pa.array([*unseen, "k2"])}))["c"]
    buckets = 1 + (stable_hash64(pa.array(unseen)) % np.uint64(4)).astype(np.int64)
    np.testing.assert_array_equal(codes[:-1], buckets)
    assert set(codes[:-1].tolist()) == {1, 2, 3, 4}
    assert codes[-1] == 1 + 4 + 1


def test_no_oov_buckets_sends_unknown_values_to_row_zero() -> None:
    spec = make_spec({"categorical": [{"name": "c", "oov_buckets": 0}]})
    state = fit(spec, with_label({"c": pa.array(["a", "b", "b"])}))
    np.testing.assert_array_equal(state.featurize(pa.table({"c": ["b", "a", "zz"]}))["c"], [1, 2, 0])


def test_fixed_vocabulary_and_hash_buckets_layouts() -> None:
    spec = make_spec(
        {
            "categorical": [
                {"name": "c", "vocabulary": ["x", "y"], "oov_buckets": 3},
                {"name": "ci", "hash_buckets": 5},
            ]
        }
    )
    table = with_label({"c": pa.array(["y", "q", None, "x"]), "ci": pa.array([7, None, 12, 7], pa.int64())})
    state = fit(spec, table)
    batch = state.featurize(table)
    q_bucket = 1 + int(stable_hash64(pa.array(["q"]))[0] % np.uint64(3))
    np.testing.assert_array_equal(batch["c"], [5, q_bucket, 0, 4])
    hashed = 1 + (stable_hash64(pa.array(["7", "12"])) % np.uint64(5)).astype(np.int64)
    np.testing.assert_array_equal(batch["ci"], [hashed[0], 0, hashed[1], hashed[0]])
    assert [i.size for i in state.inputs] == [1 + 3 + 2, 1 + 5]
    assert state.describe()["vocabulary.c"] == "fixed"
    assert state.describe()["vocabulary.ci"] == "hashed"


def test_int_and_bool_categoricals_compare_as_text() -> None:
    fields = {**FIELDS, "b": {"type": "bool"}}
    spec = parse_spec(
        {
            "name": "fs",
            "source": {"topic": "fs"},
            "schema": {"id_field": "id", "time_field": "t", "fields": fields},
            "features": {
                "categorical": [
                    {"name": "ci", "vocabulary": [3, 10]},
                    {"name": "b", "vocabulary": [False, True]},
                ]
            },
            "label": {"field": "y"},
        }
    )
    table = with_label({"ci": pa.array([10, 3, 4], pa.int64()), "b": pa.array([True, False, True])})
    batch = fit(spec, table).featurize(table)
    four = 1 + int(stable_hash64(pa.array(["4"]))[0] % np.uint64(1))
    np.testing.assert_array_equal(batch["ci"], [3, 2, four])
    np.testing.assert_array_equal(batch["b"], [3, 2, 3])
    learned = fit(
        make_spec({"categorical": [{"name": "ci"}]}), with_label({"ci": pa.array([10, 10, 3], pa.int64())})
    )
    assert learned.to_dict()["features"][0]["fitted"]["vocabulary"]["entries"] == ["10", "3"]


def test_growth_on_a_warm_start_keeps_every_old_row_and_appends_new_values() -> None:
    spec = make_spec({"categorical": [{"name": "c", "min_count": 2, "max_size": 5}]})
    first = fit(spec, with_label({"c": pa.array(["a", "a", "b", "b", "b", "z"])}))
    probe = pa.table({"c": ["a", "b", "n1", "n2", "n3", "z"]})
    before = first.featurize(probe)["c"]
    # n2 x3, n1 x2, n3 x2, a x1 (already known), z x1 (below min_count); room for 3 more (max_size 5).
    second_rows = ["n2"] * 3 + ["n3", "n1"] * 2 + ["a", "z", "n4"]
    second = fit(spec, with_label({"c": pa.array(second_rows)}), previous=first, cold_start=False)
    assert second.to_dict()["features"][0]["fitted"]["vocabulary"]["entries"] == ["b", "a", "n2", "n1", "n3"]
    after = second.featurize(probe)["c"]
    np.testing.assert_array_equal(after[:2], before[:2])
    np.testing.assert_array_equal(after, [3, 2, 5, 4, 6, 1])
    assert second.describe()["vocabulary_added.c"] == 3
    assert second.inputs[0].size == 1 + 1 + 5
    third = fit(spec, with_label({"c": pa.array(["m"] * 9)}), previous=second, cold_start=False)
    assert third.describe()["vocabulary_added.c"] == 0
    assert third.to_dict()["features"][0]["fitted"] == second.to_dict()["features"][0]["fitted"]


# -- warm starts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "cold_start", "statistics"),
    [
        ("never", True, "kept"),
        ("never", False, "kept"),
        ("on_cold_start", False, "kept"),
        ("on_cold_start", True, "refitted"),
        ("every_retrain", False, "refitted"),
    ],
)
def test_refit_policy_decides_whether_statistics_are_refitted(policy, cold_start, statistics) -> None:
    spec = make_spec(
        {
            "refit": policy,
            "numeric": [{"name": "x"}],
            "sequence": [{"name": "prices"}],
            "vector": [{"name": "emb", "normalize": "zscore"}],
        }
    )
    old = {
        "x": pa.array([1.0, 3.0]),
        "prices": pa.array([[1.0], [3.0]]),
        "emb": pa.array([[0, 0, 0], [2, 2, 2]], pa.list_(pa.float32())),
    }
    new = {
        "x": pa.array([10.0, 30.0]),
        "prices": pa.array([[10.0], [30.0]]),
        "emb": pa.array([[0, 0, 0], [20, 20, 20]], pa.list_(pa.float32())),
    }
    first = fit(spec, with_label(old))
    second = fit(spec, with_label(new), previous=first, cold_start=cold_start)
    described = second.describe()
    assert [described[f"statistics.{n}"] for n in ("x", "prices", "emb")] == [statistics] * 3
    refitted = statistics == "refitted"
    assert (described["mean.x"], described["std.x"]) == ((20.0, 10.0) if refitted else (2.0, 1.0))
    assert (described["mean.prices"], described["std.prices"]) == ((20.0, 10.0) if refitted else (2.0, 1.0))
    emb = second.to_dict()["features"][2]["fitted"]
    assert emb == (
        {"mean": [10.0] * 3, "std": [10.0] * 3} if refitted else {"mean": [1.0] * 3, "std": [1.0] * 3}
    )
    assert described["warm_start"] is True


def test_a_changed_added_or_removed_feature_is_fitted_from_scratch_and_reported() -> None:
    first_spec = make_spec(
        {"numeric": [{"name": "x"}, {"name": "n"}], "categorical": [{"name": "c"}]},
        label={"field": "cls", "kind": "multiclass"},
    )
    table = pa.table(
        {
            "x": [1.0, 3.0],
            "n": pa.array([1, 2], pa.int64()),
            "c": ["a", "b"],
            "ci": pa.array([5, 6], pa.int64()),
            "cls": ["p", "q"],
            "y": pa.array([0, 1], pa.int64()),
        }
    )
    first = fit(first_spec, table)
    second_spec = make_spec(
        {
            "refit": "never",
            "numeric": [{"name": "x", "transform": "log1p"}],
            "categorical": [{"name": "c", "oov_buckets": 2}, {"name": "ci"}],
        },
        label={"field": "y", "kind": "binary"},
    )
    later = pa.table({**{k: table[k] for k in table.column_names}, "x": [e - 1 for e in (1.0, 3.0)]})
    second = fit(second_spec, later, previous=first, cold_start=False)
    described = second.describe()
    assert described["feature.x"] == "changed: transform"
    assert described["statistics.x"] == "fitted"
    assert (described["mean.x"], described["std.x"]) == (
        float(np.mean(np.log1p([0.0, 2.0]))),
        float(np.std(np.log1p([0.0, 2.0]))),
    )
    assert described["feature.c"] == "changed: oov_buckets"
    assert described["feature.ci"] == "added"
    assert described["feature.n"] == "removed"
    assert described["label"] == "changed: was multiclass on 'cls'"
    assert "num_classes" not in described
    assert [i.name for i in second.inputs] == ["x", "c", "ci"]


# -- sequences ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("truncation", "first_row"),
    [("right", ["s1", "s2", "s3"]), ("left", ["s3", "s4", "s5"])],
)
def test_string_sequence_truncation_padding_and_mask(truncation, first_row) -> None:
    spec = make_spec(
        {"sequence": [{"name": "tags", "max_length": 3, "truncation": truncation, "oov_buckets": 1}]}
    )
    fitted_on = pa.array([["s1", "s2", "s3", "s4", "s5"]])
    state = fit(spec, with_label({"tags": fitted_on}))
    entries = state.to_dict()["features"][0]["fitted"]["vocabulary"]["entries"]
    assert entries == ["s1", "s2", "s3", "s4", "s5"]
    row = {value: 2 + i for i, value in enumerate(entries)}
    column = pa.array(
        [["s1", "s2", "s3", "s4", "s5"], ["s2"], None, [], ["s5", None, "s1"]], pa.list_(pa.string())
    )
    batch = state.featurize(pa.table({"tags": column}))
    expected_ids = np.array(
        [[row[v] for v in first_row], [row["s2"], 0, 0], [0, 0, 0], [0, 0, 0], [row["s5"], 0, row["s1"]]]
    )
    np.testing.assert_array_equal(batch["tags"], expected_ids)
    np.testing.assert_array_equal(
        batch["tags__mask"],
        [[True] * 3, [True, False, False], [False] * 3, [False] * 3, [True, False, True]],
    )
    assert state.inputs == (InputInfo("tags", "sequence_ids", size=1 + 1 + 5, max_length=3),)


def test_int_sequence_and_a_sliced_list_column() -> None:
    spec = make_spec({"sequence": [{"name": "clicks", "max_length": 2}]})
    column = pa.array([[9, 9, 7], [7, 9], [8]], pa.list_(pa.int64()))
    state = fit(spec, with_label({"clicks": column}))
    assert state.to_dict()["features"][0]["fitted"]["vocabulary"]["entries"] == ["9", "7", "8"]
    sliced = column.slice(1, 2)
    batch = state.featurize(pa.table({"clicks": sliced}))
    np.testing.assert_array_equal(batch["clicks"], [[3, 2], [4, 0]])
    np.testing.assert_array_equal(batch["clicks__mask"], [[True, True], [True, False]])


def test_float_sequence_is_standardized_with_mean_std_over_all_elements() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 6, 200)
    flat = rng.normal(5.0, 2.0, int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    spec = make_spec({"sequence": [{"name": "prices", "max_length": 4, "truncation": "left"}]})
    state = fit(spec, with_label({"prices": column}))
    described = state.describe()
    assert (described["mean.prices"], described["std.prices"]) == (float(np.mean(flat)), float(np.std(flat)))
    batch = state.featurize(pa.table({"prices": column}))
    assert batch["prices"].dtype == np.float32
    for i in (0, 1, 2, 50, 199):
        row = flat[offsets[i] : offsets[i + 1]][-4:]
        want = np.zeros(4, np.float32)
        want[: len(row)] = ((row - np.mean(flat)) / np.std(flat)).astype(np.float32)
        np.testing.assert_array_equal(batch["prices"][i], want)
        np.testing.assert_array_equal(batch["prices__mask"][i], np.arange(4) < len(row))
    assert state.inputs == (InputInfo("prices", "sequence_values", max_length=4),)


# -- vectors ----------------------------------------------------------------------------------------------


def test_vectors_none_l2_and_zscore() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(1.0, 3.0, (50, 3)).astype(np.float32)
    values[4] = 0.0
    nulls = np.zeros(50, bool)
    nulls[[7, 8]] = True
    column = pa.array([None if nulls[i] else values[i].tolist() for i in range(50)], pa.list_(pa.float32()))
    fields = {**FIELDS, "emb2": {"type": "vector", "dim": 3}, "emb3": {"type": "vector", "dim": 3}}
    spec = parse_spec(
        {
            "name": "fs",
            "source": {"topic": "fs"},
            "schema": {"id_field": "id", "time_field": "t", "fields": fields},
            "features": {
                "vector": [
                    {"name": "emb"},
                    {"name": "emb2", "normalize": "l2"},
                    {"name": "emb3", "normalize": "zscore"},
                ]
            },
            "label": {"field": "y"},
        }
    )
    table = with_label({"emb": column, "emb2": column, "emb3": column})
    state = fit(spec, table)
    batch = state.featurize(table)
    kept = values.copy()
    kept[nulls] = 0.0
    np.testing.assert_array_equal(batch["emb"], kept)
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    np.testing.assert_allclose(batch["emb2"], kept / np.where(norms > 0, norms, 1.0), rtol=1e-6)
    np.testing.assert_array_equal(batch["emb2"][4], [0.0, 0.0, 0.0])
    valid = values[~nulls].astype(np.float64)
    mean, std = valid.mean(axis=0), valid.std(axis=0)
    assert state.to_dict()["features"][2]["fitted"] == {"mean": mean.tolist(), "std": std.tolist()}
    want = ((values - mean) / std).astype(np.float32)
    want[nulls] = 0.0
    np.testing.assert_array_equal(batch["emb3"], want)
    assert all(
        b.dtype == np.float32 and b.shape == (50, 3) for b in (batch["emb"], batch["emb2"], batch["emb3"])
    )
    assert state.inputs[2] == InputInfo("emb3", "vector", size=3)


def test_a_vector_of_the_wrong_length_is_refused() -> None:
    spec = make_spec({"vector": [{"name": "emb"}]})
    state = fit(spec, with_label({"emb": pa.array([[1, 2, 3]], pa.list_(pa.float32()))}))
    with pytest.raises(ValueError, match=r"vector feature 'emb': row 1 has 2 values, the field's dim is 3"):
        state.featurize(pa.table({"emb": pa.array([[1, 2, 3], [1, 2]], pa.list_(pa.float32()))}))


# -- labels -----------------------------------------------------------------------------------------------


def test_multiclass_classes_grow_by_append_and_unknown_is_minus_one() -> None:
    spec = make_spec({"numeric": [{"name": "x"}]}, label={"field": "cls", "kind": "multiclass"})
    first = fit(spec, pa.table({"x": [0.0] * 5, "cls": ["b", "a", "b", "c", "a"]}))
    assert first.classes == ("a", "b", "c")
    assert first.num_classes == 3
    probe = pa.table({"cls": pa.array(["c", "a", "d", None, "b"])})
    np.testing.assert_array_equal(first.encode_label(probe), [2, 0, -1, -1, 1])
    second = fit(
        spec, pa.table({"x": [0.0] * 4, "cls": ["d", "e", "e", "a"]}), previous=first, cold_start=True
    )
    assert second.classes == ("a", "b", "c", "e", "d")
    np.testing.assert_array_equal(second.encode_label(probe), [2, 0, 4, -1, 1])
    described = second.describe()
    assert (described["num_classes"], described["classes"], described["classes_added"]) == (
        5,
        "a, b, c, e, d",
        2,
    )
    assert second.encode_label(probe).dtype == np.int64


def test_binary_regression_and_language_model_labels() -> None:
    table = pa.table({"x": [1.0, 2.0], "y": pa.array([1, None], pa.int64())})
    binary = fit(make_spec({"numeric": [{"name": "x"}]}), table)
    label = binary.encode_label(table)
    assert label.dtype == np.float32
    np.testing.assert_array_equal(label, [1.0, np.nan])
    assert binary.num_classes is None and binary.label_kind == "binary"
    regression = fit(
        make_spec({"numeric": [{"name": "n"}]}, label={"field": "x", "kind": "regression"}),
        pa.table({"n": pa.array([1, 2], pa.int64()), "x": [0.5, 2.5]}),
    )
    np.testing.assert_array_equal(
        regression.encode_label(pa.table({"x": [0.5, 2.5]})), np.array([0.5, 2.5], np.float32)
    )


# -- text ---------------------------------------------------------------------------------------------------

NEWS = [
    "rates rose again as markets fell",
    "markets rallied after rates held",
    "storm closes roads across the north",
    "the north braces for another storm",
    "rates and storms lead the news",
] * 8


def test_text_featurize_uses_the_byte_tokenizer_layout() -> None:
    spec = make_spec({"text": [{"name": "body", "max_length": 6}]})
    state = fit(spec, with_label({"body": pa.array(["ab", "abcdefgh", None])}))
    batch = state.featurize(pa.table({"body": pa.array(["hi", "abcdefgh", None])}))
    a = 4 + ord("a")
    np.testing.assert_array_equal(
        batch["body"],
        [[2, 4 + ord("h"), 4 + ord("i"), 3, 0, 0], [2, a, a + 1, a + 2, a + 3, 3], [0] * 6],
    )
    np.testing.assert_array_equal(batch["body__mask"], [[True] * 4 + [False] * 2, [True] * 6, [False] * 6])
    assert state.inputs == (InputInfo("body", "text", size=260, max_length=6),)
    assert state.describe()["tokenizer.body"] == "byte"


def test_a_trained_tokenizer_is_kept_on_warm_starts_and_saved_with_the_state() -> None:
    spec = make_spec(
        {
            "refit": "every_retrain",
            "text": [{"name": "body", "max_length": 12, "tokenizer": {"kind": "bpe", "vocab_size": 300}}],
        },
        label={"field": "body", "kind": "language_model"},
    )
    first = fit(spec, pa.table({"body": NEWS}))
    tokenizer = first.tokenizer("body")
    assert first.inputs == (InputInfo("body", "text", size=tokenizer.vocab_size, max_length=12),)
    probe = pa.table({"body": ["rates rose in the north", None]})
    ids, mask = tokenizer.encode_batch(probe["body"].combine_chunks(), 12, "right")
    batch = first.featurize(probe)
    np.testing.assert_array_equal(batch["body"], ids)
    np.testing.assert_array_equal(batch["body__mask"], mask)
    assert first.encode_label(probe) is None and first.label_kind == "language_model"
    described = first.describe()
    assert (described["tokenizer.body"], described["tokenizer_vocab_size.body"]) == (
        "bpe",
        tokenizer.vocab_size,
    )

    other_texts = pa.table({"body": ["completely different words zebra quokka"] * 20})
    second = fit(spec, other_texts, previous=first, cold_start=True)
    assert second.to_dict()["features"] == first.to_dict()["features"]
    np.testing.assert_array_equal(second.featurize(probe)["body"], batch["body"])

    restored = FeatureState.from_dict(json.loads(first.to_json()))
    assert restored.to_json() == first.to_json()
    np.testing.assert_array_equal(restored.featurize(probe)["body"], batch["body"])

    wordpiece = make_spec(
        {"text": [{"name": "body", "max_length": 12, "tokenizer": {"kind": "wordpiece", "vocab_size": 300}}]},
        label={"field": "body", "kind": "language_model"},
    )
    changed = fit(wordpiece, pa.table({"body": NEWS}), previous=first, cold_start=False)
    assert changed.describe()["feature.body"] == "changed: tokenizer"
    assert changed.describe()["tokenizer.body"] == "wordpiece"
    with pytest.raises(
        KeyError, match=r"'x' is not a text feature of this state \(text features: \['body'\]\)"
    ):
        changed.tokenizer("x")


# -- save / restore, scale, imports --------------------------------------------------------------------


def mixed_spec() -> PipelineSpec:
    return make_spec(
        {
            "numeric": [{"name": "x", "transform": "log1p", "missing_indicator": True}, {"name": "flag"}],
            "categorical": [
                {"name": "c", "oov_buckets": 3, "min_count": 2},
                {"name": "ci", "hash_buckets": 16},
            ],
            "sequence": [{"name": "tags", "max_length": 4}, {"name": "prices", "max_length": 3}],
            "vector": [{"name": "emb", "normalize": "zscore"}],
        },
        label={"field": "cls", "kind": "multiclass"},
    )


def mixed_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 7, n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    total = int(lengths.sum())
    words = np.array([f"w{i}" for i in range(300)], dtype=object)
    return pa.table(
        {
            "x": pa.array(rng.exponential(3.0, n), mask=rng.random(n) < 0.1),
            "flag": pa.array(rng.random(n) < 0.3),
            "c": pa.array(words[rng.zipf(1.5, n) % 300], mask=rng.random(n) < 0.05),
            "ci": pa.array(rng.integers(0, 1000, n)),
            "tags": pa.ListArray.from_arrays(offsets, pa.array(words[rng.integers(0, 300, total)])),
            "prices": pa.ListArray.from_arrays(offsets, pa.array(rng.normal(10.0, 4.0, total))),
            "emb": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.normal(0, 1, n * 3).astype(np.float32)), 3
            ).cast(pa.list_(pa.float32())),
            "cls": pa.array(np.array(["k0", "k1", "k2", "k3"], dtype=object)[rng.integers(0, 4, n)]),
            "body": pa.array(
                np.array(NEWS[:5], dtype=object)[rng.integers(0, 5, n)], mask=rng.random(n) < 0.1
            ),
        }
    )


def test_save_and_restore_is_bit_for_bit() -> None:
    table = mixed_table(2000, seed=1)
    state = fit(mixed_spec(), table)
    restored = FeatureState.from_dict(json.loads(state.to_json()))
    assert restored.to_json() == state.to_json()
    assert restored.sha256 == state.sha256
    assert restored.inputs == state.inputs
    assert restored.describe() == state.describe()
    probe = mixed_table(500, seed=2)
    original, again = state.featurize(probe), restored.featurize(probe)
    assert list(original) == list(again)
    for key in original:
        assert original[key].dtype == again[key].dtype
        assert original[key].tobytes() == again[key].tobytes(), key
    np.testing.assert_array_equal(state.encode_label(probe), restored.encode_label(probe))
    assert json.loads(state.to_json())["format"] == FEATURE_STATE_FORMAT == "rt_training.features/1"


def test_from_dict_refuses_another_format() -> None:
    d = fit(make_spec({"numeric": [{"name": "x"}]}), with_label({"x": [1.0]})).to_dict()
    with pytest.raises(ValueError, match=r"feature state format 'other/9' is not 'rt_training.features/1'"):
        FeatureState.from_dict({**d, "format": "other/9"})


def test_featurize_names_a_missing_column() -> None:
    state = fit(make_spec({"numeric": [{"name": "x"}]}), with_label({"x": [1.0]}))
    with pytest.raises(
        ValueError, match=r"feature 'x' needs column 'x', which the table lacks \(columns: z\)"
    ):
        state.featurize(pa.table({"z": [1.0]}))


def test_featurize_100k_rows_agrees_with_featurizing_slices() -> None:
    table = mixed_table(100_000, seed=4)
    state = fit(mixed_spec(), table)
    batch = state.featurize(table)
    assert batch["tags"].shape == (100_000, 4) and batch["emb"].shape == (100_000, 3)
    assert list(batch) == [
        "x",
        "x__missing",
        "flag",
        "c",
        "ci",
        "tags",
        "tags__mask",
        "prices",
        "prices__mask",
        "emb",
    ]
    for start in (0, 31_337, 99_990):
        part = state.featurize(table.slice(start, 10))
        for key, values in part.items():
            np.testing.assert_array_equal(values, batch[key][start : start + 10], err_msg=key)


def test_importing_the_state_module_does_not_import_torch() -> None:
    code = "import sys, rt_training.features.state; print('torch' in sys.modules, 'dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
