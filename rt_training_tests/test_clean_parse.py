"""Record bytes: size, UTF-8 and JSON defects get their reason and an exact detail; good records become columns."""

from __future__ import annotations

import pyarrow as pa
import pytest
from clean_support import bronze, event

from rt_training.clean import JsonParser, Reason, clean_batch
from rt_training.clean.parse import invalid_utf8, oversized_mask
from rt_training.spec import load_spec

SPEC = load_spec()


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (
            b'{"event_id": "\xe9"}',
            "not_utf8",
            "value is not valid UTF-8: invalid continuation byte at byte 14",
        ),
        (b"\xff{}", "not_utf8", "value is not valid UTF-8: invalid start byte at byte 0"),
        (b'{"event_id": ', "malformed_json", "invalid JSON: Expecting value at line 1 column 14"),
        (b"{} x", "malformed_json", "invalid JSON: Extra data at line 1 column 4"),
        (b"", "malformed_json", "invalid JSON: Expecting value at line 1 column 1"),
        (
            b"{'a': 1}",
            "malformed_json",
            "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        (None, "malformed_json", "value is null (a tombstone), not a JSON document"),
        (
            b'{"a": "\\ud800"}',
            "malformed_json",
            "invalid JSON: a \\u escape is a lone UTF-16 surrogate, not a character",
        ),
        (
            b"\xef\xbb\xbf{}",
            "malformed_json",
            "invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) at line 1 column 1",
        ),
        (b"[1, 2]", "not_an_object", "expected a JSON object, got array"),
        (b'"x"', "not_an_object", "expected a JSON object, got string"),
        (b"42", "not_an_object", "expected a JSON object, got number"),
        (b"null", "not_an_object", "expected a JSON object, got null"),
        (b"true", "not_an_object", "expected a JSON object, got boolean"),
    ],
)
def test_parse_defect_reason_and_detail(value: bytes | None, reason: str, detail: str) -> None:
    result = clean_batch(bronze([event(), value]), SPEC)
    assert result.silver_rows == 1
    assert result.dead_letters.select(["offset", "reason", "detail"]).to_pylist() == [
        {"offset": 1, "reason": reason, "detail": detail}
    ]


def test_oversized_is_checked_on_bytes_before_anything_else() -> None:
    limit = SPEC.schema_.max_record_bytes
    valid_but_big = event()[:-1] + b" " * (limit + 1 - len(event())) + b"}"
    assert len(valid_but_big) == limit + 1
    exactly_limit = event()[:-1] + b" " * (limit - len(event())) + b"}"
    bad_and_big = b"\xff" * (limit + 10)
    result = clean_batch(bronze([valid_but_big, exactly_limit, bad_and_big]), SPEC)
    assert result.silver.column("_offset").to_pylist() == [1]
    assert result.dead_letters.select(["offset", "reason", "detail"]).to_pylist() == [
        {
            "offset": 0,
            "reason": "oversized",
            "detail": f"value is {limit + 1} bytes, more than max_record_bytes {limit}",
        },
        {
            "offset": 2,
            "reason": "oversized",
            "detail": f"value is {limit + 10} bytes, more than max_record_bytes {limit}",
        },
    ]


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (b"NaN", "field 'price' is NaN, not a finite number"),
        (b"Infinity", "field 'price' is Infinity, not a finite number"),
        (b"-Infinity", "field 'price' is -Infinity, not a finite number"),
        (b"1e400", "field 'price' is Infinity, not a finite number"),
        (b"-1e400", "field 'price' is -Infinity, not a finite number"),
    ],
)
def test_non_finite_tokens_are_not_finite_not_malformed(token: bytes, detail: str) -> None:
    value = event(price=0.0).replace(b'"price": 0.0', b'"price": ' + token)
    result = clean_batch(bronze([value]), SPEC)
    assert result.dead_letters.select(["reason", "detail"]).to_pylist() == [
        {"reason": "not_finite", "detail": detail}
    ]


def test_json_parser_columns_ignore_unknown_keys_and_treat_null_as_absent() -> None:
    parser = JsonParser(["a", "class", "b"])
    values = pa.array(
        [b'{"a": 1, "class": "x", "zz": [1]}', b'{"b": null}', b"[]", b'{"a": {"k": 1}, "a": 2.5}'],
        pa.binary(),
    )
    parsed = parser.parse(values)
    assert parsed.columns == {
        "a": [1, None, None, 2.5],
        "class": ["x", None, None, None],
        "b": [None, None, None, None],
    }
    assert parsed.errors == {2: (Reason.NOT_AN_OBJECT, "expected a JSON object, got array")}


def test_typed_json_parser_marks_records_with_values_of_other_kinds_as_loose() -> None:
    types = {"s": "string", "i": "int", "f": "float", "b": "bool", "t": "timestamp"}
    values = pa.array(
        [
            b'{"s": "a", "i": 1, "f": 2, "b": true, "t": "2026-01-01T00:00:00Z"}',  # every kind it may hold
            b'{"s": "a", "i": 1, "f": 2.5, "b": false, "t": 1000.5}',
            b'{"s": null, "t": 1000}',
            b'{"i": 3.0}',  # an integral float: valid, but not an int to the typed decode
            b'{"s": 5}',
            b'{"b": 1}',
            b'{"f": NaN}',
            b"not json",
        ],
        pa.binary(),
    )
    typed = JsonParser(list(types), types).parse(values)
    untyped = JsonParser(list(types)).parse(values)
    assert typed.loose.tolist() == [False, False, False, True, True, True, True, True]
    assert untyped.loose is None
    assert typed.columns == untyped.columns and typed.errors == untyped.errors
    assert typed.columns["f"][0] == 2 and isinstance(typed.columns["f"][0], int)  # kept as JSON gave it


def test_json_parser_fallback_keeps_nan_records_as_columns() -> None:
    parsed = JsonParser(["x", "y"]).parse(pa.array([b'{"x": NaN, "y": "a"}', b'{"x": 1e999}'], pa.binary()))
    assert parsed.errors == {}
    assert parsed.columns["y"] == ["a", None]
    assert [str(v) for v in parsed.columns["x"]] == ["nan", "inf"]


def test_invalid_utf8_finds_rows_in_a_sliced_array() -> None:
    values = pa.array([b"ok", b"\xe9t\xe9", b"caf\xc3\xa9", b"x\xc3", b"fine"], pa.binary()).slice(1)
    assert invalid_utf8(values, values.to_pylist()) == {
        0: "value is not valid UTF-8: invalid continuation byte at byte 0",
        2: "value is not valid UTF-8: unexpected end of data at byte 1",
    }


def test_oversized_mask_counts_bytes_and_treats_null_as_empty() -> None:
    mask = oversized_mask(pa.array([b"1234", b"12345", None, "é".encode() * 3], pa.binary()), 5)
    assert mask.tolist() == [False, False, False, True]
