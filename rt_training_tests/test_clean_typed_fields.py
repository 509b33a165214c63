"""Text, list and vector fields end to end: bronze -> clean_batch -> typed silver columns and dead letters with
exact reasons, and through real Delta tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from clean_support import DROP, TYPED_SPEC, TYPED_VALID, bronze, document
from deltalake import DeltaTable

from rt_training.clean import clean_batch
from rt_training.lake.exactly_once import append_exactly_once
from rt_training.lake.tables import DEAD_LETTER_SCHEMA, ensure_table, silver_schema
from rt_training.spec import parse_spec
from rt_training.stream.bad_records import BadRecordMaker
from rt_training.stream.planner import OffsetRange

TYPED = parse_spec(TYPED_SPEC)

DEFECTS: list[tuple[dict, str, str]] = [
    ({"body": "x" * 21}, "out_of_range", "field 'body' has 21 characters, more than max_length 20"),
    ({"body": 5}, "wrong_type", "field 'body' expected a string, got number 5"),
    ({"tags": "a"}, "wrong_type", "field 'tags' expected an array of strings, got string \"a\""),
    ({"tags": {"a": 1}}, "wrong_type", "field 'tags' expected an array of strings, got object {\"a\": 1}"),
    ({"tags": ["a", 3]}, "wrong_type", "field 'tags' element 1 expected a string, got number 3"),
    ({"tags": ["a", None]}, "wrong_type", "field 'tags' element 1 expected a string, got null"),
    ({"tags": ["a", "b", "c", "d"]}, "out_of_range", "field 'tags' has 4 elements, more than max_length 3"),
    (
        {"counts": [1, 2.5]},
        "wrong_type",
        "field 'counts' element 1 expected an integer, got non-integral number 2.5",
    ),
    ({"counts": [True]}, "wrong_type", "field 'counts' element 0 expected an integer, got boolean true"),
    ({"counts": [1, 101]}, "out_of_range", "field 'counts' element 1 value 101 is outside [0, 100]"),
    (
        {"counts": [2**64]},
        "out_of_range",
        "field 'counts' element 0 value 18446744073709551616 is outside the int64 range",
    ),
    ({"scores": [0.5, math.nan]}, "not_finite", "field 'scores' element 1 is NaN, not a finite number"),
    ({"scores": [0.5, True]}, "wrong_type", "field 'scores' element 1 expected a number, got boolean true"),
    ({"scores": [0.5, 1.5]}, "out_of_range", "field 'scores' element 1 value 1.5 is outside [-1, 1]"),
    ({"emb": [1, 2]}, "wrong_dimension", "field 'emb' has 2 elements, expected dim 3"),
    ({"emb": []}, "wrong_dimension", "field 'emb' has 0 elements, expected dim 3"),
    ({"emb": [1, "x", 3]}, "wrong_type", "field 'emb' element 1 expected a number, got string \"x\""),
    ({"emb": [1, 2, 11]}, "out_of_range", "field 'emb' element 2 value 11 is outside [-10, 10]"),
    ({"emb": [-math.inf, 0, 0]}, "not_finite", "field 'emb' element 0 is -Infinity, not a finite number"),
    ({"emb": None}, "missing_field", "required field 'emb' is missing or null"),
    # precedence: a wrong element type (tags) beats a wrong dimension (emb), which beats an element out of range
    (
        {"tags": [1], "emb": [1, 2, 3, 4]},
        "wrong_type",
        "field 'tags' element 0 expected a string, got number 1",
    ),
    ({"emb": [99, 2, 3, 4]}, "wrong_dimension", "field 'emb' has 4 elements, expected dim 3"),
    # within one row the detail names the first failing element
    ({"counts": [1, -1, 200]}, "out_of_range", "field 'counts' element 1 value -1 is outside [0, 100]"),
]


def test_each_defect_of_the_new_field_types_gets_its_reason_and_detail() -> None:
    values = [document(doc_id=f"d-{i}", **changes) for i, (changes, _, _) in enumerate(DEFECTS)]
    values.insert(0, document(doc_id="ok-0"))
    values.append(document(doc_id="ok-1", counts=[1.0, 2], scores=DROP, tags=[]))
    result = clean_batch(bronze(values, topic="docs"), TYPED)
    assert result.silver.column("doc_id").to_pylist() == ["ok-0", "ok-1"]
    assert result.dead_letters.select(["offset", "reason", "detail"]).to_pylist() == [
        {"offset": i + 1, "reason": reason, "detail": detail} for i, (_, reason, detail) in enumerate(DEFECTS)
    ]
    assert (result.rows_in, result.silver_rows, result.dead_letter_rows) == (
        len(DEFECTS) + 2,
        2,
        len(DEFECTS),
    )
    counts = {reason: sum(r == reason for _, r, _ in DEFECTS) for reason in {r for _, r, _ in DEFECTS}}
    assert {k: v for k, v in result.reason_counts.items() if v} == counts
    assert result.metadata()["dead_letters_wrong_dimension"] == 3


def test_silver_columns_have_the_declared_arrow_types_and_values() -> None:
    values = [document(), document(doc_id="d-2", counts=[1.0, 2], scores=DROP, flag=False, emb=[1, 0, -3])]
    silver = clean_batch(bronze(values, topic="docs"), TYPED).silver
    assert silver.schema == silver_schema(TYPED)
    types = {f.name: f.type for f in silver.schema}
    assert (types["body"], types["tags"], types["counts"], types["scores"], types["emb"]) == (
        pa.string(),
        pa.list_(pa.string()),
        pa.list_(pa.int64()),
        pa.list_(pa.float64()),
        pa.list_(pa.float32()),
    )
    assert (types["bucket"], types["flag"]) == (pa.int64(), pa.bool_())
    rows = silver.to_pylist()
    assert [r["tags"] for r in rows] == [["news", "sport"]] * 2
    assert [r["counts"] for r in rows] == [[1, 2, 3], [1, 2]]
    assert [r["scores"] for r in rows] == [[0.5, -0.25], []]  # the default of the absent optional list
    assert [r["emb"] for r in rows] == [[0.5, -1.5, 2.0], [1.0, 0.0, -3.0]]
    assert [(r["bucket"], r["flag"]) for r in rows] == [(7, True), (7, False)]
    assert not [n for n in silver.column_names if n.startswith(("num__", "cat__"))]


def test_a_vector_element_beyond_float32_is_out_of_range() -> None:
    fields = {**TYPED_SPEC["schema"]["fields"], "emb": {"type": "vector", "dim": 2}}
    spec = parse_spec({**TYPED_SPEC, "schema": {**TYPED_SPEC["schema"], "fields": fields}})
    values = [document(emb=[1e38, -3e38]), document(doc_id="d-2", emb=[0.0, -1e39])]
    result = clean_batch(bronze(values, topic="docs"), spec)
    assert result.silver.column("emb").to_pylist() == [
        [pytest.approx(1e38, rel=1e-7), pytest.approx(-3e38, rel=1e-7)]
    ]
    assert result.dead_letters.select(["reason", "detail"]).to_pylist() == [
        {
            "reason": "out_of_range",
            "detail": "field 'emb' element 1 value -1e+39 is beyond float32's largest magnitude 3.40282e+38",
        }
    ]


def test_an_invalid_list_default_is_a_spec_error() -> None:
    fields = {**TYPED_SPEC["schema"]["fields"]}
    fields["scores"] = {**fields["scores"], "default": [0.5, 2.0]}
    spec = parse_spec({**TYPED_SPEC, "schema": {**TYPED_SPEC["schema"], "fields": fields}})
    with pytest.raises(
        ValueError, match=r"schema\.fields\.scores\.default \[0\.5, 2\.0\] is not a valid list"
    ):
        clean_batch(bronze([document(scores=DROP)], topic="docs"), spec)


def test_silver_and_dead_letters_through_delta_tables_keep_the_types(tmp_path: Path) -> None:
    values = [document(), document(doc_id="d-2", emb=[1, 2]), document(doc_id="d-3", tags=["a", 7])]
    result = clean_batch(bronze(values, topic="docs"), TYPED)
    ranges = [OffsetRange("docs", 0, 0, 3)]
    for name, table, schema in (
        ("silver", result.silver, silver_schema(TYPED)),
        ("dead_letters", result.dead_letters, DEAD_LETTER_SCHEMA),
    ):
        uri = str(tmp_path / name)
        ensure_table(uri, schema)
        outcome = append_exactly_once(uri, table, ranges, TYPED.name, earliest={("docs", 0): 0})
        assert (outcome.committed, outcome.rows) == (True, table.num_rows)
    silver = DeltaTable(str(tmp_path / "silver")).to_pyarrow_table()
    types = {f.name: f.type for f in silver.schema}
    assert [
        (pa.types.is_list(types[n]), types[n].value_type) for n in ("tags", "counts", "scores", "emb")
    ] == [
        (True, pa.string()),
        (True, pa.int64()),
        (True, pa.float64()),
        (True, pa.float32()),
    ]
    assert types["body"] == pa.string()
    row = silver.to_pylist()[0]
    assert (row["doc_id"], row["tags"], row["counts"], row["emb"]) == (
        "d-1",
        ["news", "sport"],
        [1, 2, 3],
        [0.5, -1.5, 2.0],
    )
    dead = DeltaTable(str(tmp_path / "dead_letters")).to_pyarrow_table().sort_by("offset")
    assert dead.select(["offset", "reason", "detail"]).to_pylist() == [
        {"offset": 1, "reason": "wrong_dimension", "detail": "field 'emb' has 2 elements, expected dim 3"},
        {
            "offset": 2,
            "reason": "wrong_type",
            "detail": "field 'tags' element 1 expected a string, got number 7",
        },
    ]


def test_synthetic_bad_records_of_every_kind_get_exactly_their_reason() -> None:
    maker = BadRecordMaker(TYPED)
    assert "wrong_dimension" in maker.kinds
    items = {name: json.dumps(value).encode() for name, value in TYPED_VALID.items()}
    first = document(doc_id="first")
    records, kinds = [first], []
    variates = [(0.1, 0.2, 0.3), (0.5, 0.7, 0.9), (0.95, 0.4, 0.6), (0.3, 0.1, 0.5), (0.7, 0.6, 0.2)]
    for kind in maker.kinds:
        for i, u in enumerate(variates):
            changed = {**items, "doc_id": json.dumps(f"{kind}-{i}").encode()}
            value, _ = maker.make(kind, changed, set(), b"k", u, earlier=(b'"first"', b"k"))
            records.append(value)
            kinds.append(kind)
    result = clean_batch(bronze(records, topic="docs"), TYPED)
    assert result.silver.column("doc_id").to_pylist() == ["first"]
    assert result.dead_letters.column("reason").to_pylist() == kinds
