"""Records the cleaning code raises on: each is dead-lettered as ``unparseable``, the batch never fails."""

from __future__ import annotations

import pyarrow as pa
import pytest
from clean_support import TINY_SPEC, bronze, event

from rt_training.clean import ParsedBatch, clean_batch
from rt_training.clean.pipeline import ParserContractError, _prepare, prepare_batch
from rt_training.spec import load_spec

DEMO = load_spec()
DEEP = b'{"event_id": "e-deep", "payload": ' + b"[" * 8000 + b"]" * 8000 + b"}"


def test_8000_nested_arrays_under_the_size_limit_is_one_unparseable_dead_letter() -> None:
    assert len(DEEP) <= DEMO.schema_.max_record_bytes
    values = [event(event_id=f"e-{i}") for i in range(6)]
    values.insert(3, DEEP)
    result = clean_batch(bronze(values), DEMO)
    assert result.silver.column("_offset").to_pylist() == [0, 1, 2, 4, 5, 6]
    assert result.silver.column("event_id").to_pylist() == [f"e-{i}" for i in range(6)]
    assert result.dead_letters.column("offset").to_pylist() == [3]
    assert result.dead_letters.column("reason").to_pylist() == ["unparseable"]
    assert result.dead_letters.column("detail").to_pylist() == [
        "RecursionError: maximum recursion depth exceeded while deserializing an object"
    ]
    assert result.reason_counts["unparseable"] == 1 and result.metadata()["dead_letters_unparseable"] == 1


def test_deep_nesting_in_a_field_of_the_wrong_type_is_unparseable_too() -> None:
    # the typed decode fails on the price's type first; the untyped decode then meets the nesting
    deep_price = b'{"price": "x", "payload": ' + b"[" * 8000 + b"]" * 8000 + b"}"
    deep_top = b"[" * 8000 + b"]" * 8000
    result = clean_batch(bronze([event(), deep_price, deep_top]), DEMO)
    assert result.silver.column("_offset").to_pylist() == [0]
    assert result.dead_letters.column("reason").to_pylist() == ["unparseable", "unparseable"]
    assert [d.split(":")[0] for d in result.dead_letters.column("detail").to_pylist()] == [
        "RecursionError",
        "RecursionError",
    ]


def test_an_oversized_record_with_non_ascii_bytes_beside_invalid_utf8_keeps_its_reason() -> None:
    # the oversized record is masked to null but its bytes stay in the buffer the UTF-8 check scans
    table = bronze([b"\xc3\xa9" * 10_000, b"\xff", event()])
    prepared = _prepare(table, DEMO, None)  # the vectorized path itself, without the bisection guard
    assert prepared.verdicts.reasons(prepared.verdicts.code.nonzero()[0]) == ["oversized", "not_utf8"]
    result = clean_batch(table, DEMO)
    assert result.dead_letters.column("reason").to_pylist() == ["oversized", "not_utf8"]
    assert result.silver.column("_offset").to_pylist() == [2]


class Opaque:
    """A value a plugged-in parser hands over that validation cannot describe: showing it raises."""

    def __repr__(self) -> str:
        raise LookupError("no text for this value")

    __str__ = __repr__


class OpaqueParser:
    """``id;time_ms`` text; a time of ``?`` becomes an :class:`Opaque` value."""

    def parse(self, values: pa.BinaryArray) -> ParsedBatch:
        ids, times = [], []
        for raw in values.to_pylist():
            record_id, time = raw.decode().split(";")
            ids.append(record_id)
            times.append(Opaque() if time == "?" else int(time))
        return ParsedBatch(columns={"id": ids, "t": times})


def test_a_record_that_validation_raises_on_is_bisected_out_of_the_batch() -> None:
    values = [f"r{i};{1000 * (i + 1)}".encode() for i in range(11)]
    values[2] = b"r2;?"
    values[9] = b"r9;?"
    table = bronze(values, topic="tiny")
    with pytest.raises(LookupError):  # the vectorized path alone fails the whole batch
        _prepare(table, TINY_SPEC, OpaqueParser())
    result = clean_batch(table, TINY_SPEC, parser=OpaqueParser())
    assert result.silver.column("_offset").to_pylist() == [0, 1, 3, 4, 5, 6, 7, 8, 10]
    assert result.silver.column("id").to_pylist() == [f"r{i}" for i in (0, 1, 3, 4, 5, 6, 7, 8, 10)]
    assert result.silver.column("t").null_count == 0
    assert result.dead_letters.column("offset").to_pylist() == [2, 9]
    assert result.dead_letters.column("reason").to_pylist() == ["unparseable", "unparseable"]
    assert result.dead_letters.column("detail").to_pylist() == ["LookupError: no text for this value"] * 2


def test_bisected_batch_keeps_the_other_reasons_of_its_good_halves() -> None:
    values = [b"a;1000", b"b;?", b"a;2000", b"c;3000"]
    result = clean_batch(bronze(values, topic="tiny"), TINY_SPEC, parser=OpaqueParser())
    assert result.silver.column("_offset").to_pylist() == [0, 3]
    assert list(
        zip(
            result.dead_letters.column("offset").to_pylist(),
            result.dead_letters.column("reason").to_pylist(),
            strict=True,
        )
    ) == [(1, "unparseable"), (2, "duplicate_id")]


def test_a_batch_whose_every_record_raises_alone_fails_with_the_cause() -> None:
    with pytest.raises(LookupError) as info:
        prepare_batch(bronze([b"a;?", b"b;?", b"c;?"], topic="tiny"), TINY_SPEC, parser=OpaqueParser())
    assert "every one of the 3 records of the batch raises this alone" in "".join(info.value.__notes__)
    single = clean_batch(bronze([b"a;?"], topic="tiny"), TINY_SPEC, parser=OpaqueParser())
    assert single.dead_letters.column("reason").to_pylist() == ["unparseable"]


class ShortParser:
    """Breaks the parser contract: one value too few."""

    def parse(self, values: pa.BinaryArray) -> ParsedBatch:
        return ParsedBatch(columns={"id": ["x"] * (len(values) - 1), "t": [1] * (len(values) - 1)})


def test_a_parser_breaking_its_contract_fails_the_batch_without_bisection() -> None:
    with pytest.raises(ParserContractError, match="returned 1 values for field 'id' of a batch of 2"):
        clean_batch(bronze([b"a", b"b"], topic="tiny"), TINY_SPEC, parser=ShortParser())
