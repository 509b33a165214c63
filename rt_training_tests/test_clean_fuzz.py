"""Fuzzing the real cleaning path: whatever bytes arrive, every record lands in exactly one of silver or dead
letters, and the batch never raises."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from clean_support import KAFKA_TS, SENSOR_SPEC, TYPED_SPEC, TYPED_VALID, bronze, event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rt_training.clean import clean_batch
from rt_training.clean.pipeline import _prepare
from rt_training.spec import load_spec, parse_spec

DEMO = load_spec()
SENSORS = parse_spec(SENSOR_SPEC)
TYPED = parse_spec(TYPED_SPEC)

# every Unicode code point, lone surrogates and NUL included
TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
HUGE_INTS = st.integers(min_value=-(10**40), max_value=10**40) | st.sampled_from(
    [2**63, -(2**63) - 1, 2**64, 10**400]
)
EXTREME_TIMES = st.sampled_from(
    [0, -1, -62_135_596_800_000, 253_402_300_799_999, 946_684_800_000, 4_102_444_800_000, 1_704_113_999_000]
) | st.sampled_from(
    ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-01-01T13:00Z"]
)
"""Event times at and around the bounds: the epoch, before it, years 0001 and 9999, time.min_event_time's default
2000-01-01, 2100, and 1 h ahead of the bronze batches' Kafka timestamp."""
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
RIGHT_TYPED: dict[str, st.SearchStrategy[Any]] = {
    "string": TEXT,
    "int": HUGE_INTS | st.integers(min_value=-5, max_value=5),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "timestamp": st.integers(min_value=-(10**16), max_value=10**16) | EXTREME_TIMES | TEXT,
    "text": TEXT,
}
NUMBERS = (
    st.integers(min_value=-200, max_value=200) | HUGE_INTS | st.floats(allow_nan=True, allow_infinity=True)
)
RIGHT_TYPED |= {
    "list[string]": st.lists(TEXT | SCALARS, max_size=5),
    "list[int]": st.lists(st.integers(min_value=-5, max_value=120) | NUMBERS | st.booleans(), max_size=5),
    "list[float]": st.lists(NUMBERS | st.booleans() | st.none(), max_size=5),
    "vector": st.lists(NUMBERS | st.floats(-1e40, 1e40) | st.booleans(), min_size=2, max_size=4),
}


def _kind(field: Any) -> str:
    """The key of :data:`RIGHT_TYPED` for a schema field."""
    return f"list[{field.items}]" if field.type == "list" else field.type


def _documents(spec_fields: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects over the spec's fields: each field absent, of its type, or any JSON value; plus stray keys."""
    absent = object()
    per_field = {
        name: st.sampled_from([absent]) | RIGHT_TYPED[kind] | JSON_VALUES
        for name, kind in spec_fields.items()
    }
    return st.builds(
        lambda fields, extra: {**extra, **{k: v for k, v in fields.items() if v is not absent}},
        st.fixed_dictionaries(per_field),
        st.dictionaries(TEXT, JSON_VALUES, max_size=2),
    )


def _encode(doc: dict[str, Any], ascii_only: bool) -> bytes:
    # NaN / Infinity become their non-standard JSON text; lone surrogates \\u escapes or raw (invalid) UTF-8
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = opener * depth + closer * depth if opener == b"[" else b'{"a":' * depth + b"1" + closer * depth
    return b'{"event_id": "deep", "payload": ' + inner + b"}"


def _records(spec_fields: dict[str, str], valid: bytes) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.builds(_encode, _documents(spec_fields), st.booleans()),
        st.just(valid),
        st.binary(max_size=64),
        st.builds(_nested, st.sampled_from([10, 600, 1100, 5000, 8000]), st.sampled_from([b"[", b"{"])),
        st.builds(lambda b, at: b[:at] + b"\x00" + b[at:], st.just(valid), st.integers(0, len(valid))),
        st.builds(lambda digits: b'{"price": ' + b"9" * digits + b"}", st.integers(300, 5000)),
        st.sampled_from(
            [
                b'{"price": 1e400}',
                b'{"price": NaN, "event_id": "n"}',
                b'{"price": -Infinity}',
                b'{"event_id": "a", "event_id": "b"}',
                b'"\\ud800"',
                b'{"event_id": "\\udc00"}',
                b"[]",
                b"",
                b"null",
            ]
        ),
        st.builds(
            _repeat_key,
            _documents(spec_fields),
            st.sampled_from(sorted(spec_fields)),
            JSON_VALUES,
            st.booleans(),
        ),
        st.none(),
    )


def _repeat_key(doc: dict[str, Any], name: str, other: Any, escaped: bool) -> bytes:
    """``doc`` with field ``name`` given once more at the top level, after the others (its name spelled with a
    ``\\u`` escape when ``escaped``)."""
    key = "".join(f"\\u{ord(c):04x}" for c in name) if escaped else name
    text = json.dumps(doc)
    extra = f'"{key}": {json.dumps(other)}'
    return (text[:-1] + (", " if doc else "") + extra + "}").encode()


def _assert_each_row_lands_once(values: list[bytes | None], spec: Any) -> None:
    table = bronze(values, topic=spec.source.topic)
    # the vectorized path alone must hold too: the bisection guard would hide a bug behind `unparseable`
    _prepare(table, spec, None)
    result = clean_batch(table, spec)
    silver = result.silver.column("_offset").to_pylist()
    dead = result.dead_letters.column("offset").to_pylist()
    assert not set(silver) & set(dead)
    assert sorted(silver + dead) == list(range(len(values)))
    assert (result.rows_in, result.silver_rows + result.dead_letter_rows) == (len(values), len(values))
    assert sum(result.reason_counts.values()) == result.dead_letter_rows
    assert all(result.dead_letters.column("reason").is_valid().to_pylist())
    # what silver holds is plausible: ids not blank, event times inside the spec's bounds
    ids = result.silver.column(spec.id_field).to_pylist()
    assert not [i for i in ids if isinstance(i, str) and not i.strip()]
    times = result.silver.column(spec.time_field).to_pylist()
    if spec.time.min_event_time is not None:
        assert all(t >= spec.time.min_event_time for t in times)
    if spec.time.max_future_skew is not None:
        assert all(t <= KAFKA_TS + timedelta(seconds=spec.time.max_future_skew) for t in times)
    # a record giving a schema field twice never reaches silver, whichever value the decoder would keep
    for offset in silver:
        assert _repeated_fields(values[offset], spec) == []


def _repeated_fields(value: bytes | None, spec: Any) -> list[str]:
    pairs: list[list[tuple[str, Any]]] = [[]]

    def keep(found: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs[0] = found
        return dict(found)

    json.loads(value or b"{}", object_pairs_hook=keep)
    keys = [key for key, _ in pairs[0]]
    return [name for name in spec.schema_.fields if keys.count(name) > 1]


DEMO_FIELDS = {name: _kind(f) for name, f in DEMO.schema_.fields.items()}
SENSOR_FIELDS = {name: _kind(f) for name, f in SENSORS.schema_.fields.items()}
TYPED_FIELDS = {name: _kind(f) for name, f in TYPED.schema_.fields.items()}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(_records(DEMO_FIELDS, event()), min_size=1, max_size=12))
def test_demo_every_fuzzed_record_lands_in_exactly_one_output(values: list[bytes | None]) -> None:
    _assert_each_row_lands_once(values, DEMO)


@FUZZ
@given(st.lists(_records(SENSOR_FIELDS, json.dumps({"reading_id": 1}).encode()), min_size=1, max_size=12))
def test_sensors_every_fuzzed_record_lands_in_exactly_one_output(values: list[bytes | None]) -> None:
    _assert_each_row_lands_once(values, SENSORS)


@FUZZ
@given(st.lists(_records(TYPED_FIELDS, json.dumps(TYPED_VALID).encode()), min_size=1, max_size=12))
def test_typed_fields_every_fuzzed_record_lands_in_exactly_one_output(values: list[bytes | None]) -> None:
    _assert_each_row_lands_once(values, TYPED)
