"""Reading a user's JSON-lines and CSV records (no Kafka): exact values, keys and event times, bad lines by line
number, whole-input errors, and event times read as the pipeline reads them."""

from __future__ import annotations

import doctest
import io
import json

import pyarrow as pa
import pytest

import rt_training.stream.file_source as file_source
from rt_training.clean.parse import JsonParser
from rt_training.clean.timestamps import parse_iso8601
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.file_source import (
    BadLine,
    FileSourceError,
    SourceRecord,
    detect_format,
    encode_key,
    event_time_ms,
    read_records,
)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()


def read(data: bytes, fmt: str, spec: PipelineSpec, key_field: str | None = None) -> list:
    return list(read_records(io.BytesIO(data), fmt, spec, key_field))  # type: ignore[arg-type]


def test_doctests():
    assert doctest.testmod(file_source).failed == 0


def test_jsonl_records_are_sent_byte_for_byte_and_bad_lines_named(spec):
    data = (
        b'\xef\xbb\xbf{"event_id": "a", "event_time": 1714564800000.5, "extra": [1, 2]}\r\n'
        b"\n"
        b'  {"event_id":"b","event_time":"2024-05-01T12:00:00+02:00","price":1e2}  \n'
        b'\t {"event_id": "c", "event_time": \n'
        b"[1, 2]\n"
        b'{"event_id": "d\xff"}\n'
        b'{"event_time": "late", "price": NaN}\n'
        b'{"event_id": 7}'
    )
    assert read(data, "jsonl", spec) == [
        SourceRecord(
            1, b"a", b'{"event_id": "a", "event_time": 1714564800000.5, "extra": [1, 2]}', 1714564800000.5
        ),
        SourceRecord(
            3,
            b"b",
            b'{"event_id":"b","event_time":"2024-05-01T12:00:00+02:00","price":1e2}',
            "2024-05-01T12:00:00+02:00",
        ),
        BadLine(4, "invalid JSON: Expecting value at column 34"),
        BadLine(5, "expected a JSON object, got an array"),
        BadLine(6, "not valid UTF-8: invalid start byte at byte 15"),
        SourceRecord(7, None, b'{"event_time": "late", "price": NaN}', "late"),
        SourceRecord(8, b"7", b'{"event_id": 7}', None),
    ]
    # Another key field; a record without it has no key.
    keys = [r.key for r in read(b'{"user_id": "u1"}\n{"user_id": 3}\n{}\n', "jsonl", spec, "user_id")]
    assert keys == [b"u1", b"3", None]


def test_csv_cells_take_their_field_types(spec):
    data = (
        b"event_id,event_time,price,position,clicked,device,note\n"
        b'e1,2024-05-01T12:00:00Z,9.5,3,1,mobile,"a, b"\n'
        b"e2,1714564800000,, 4 ,0.0,,x\n"
        b"\n"
        b'e3,1714564800000.25,-1e3,+5,1,"tab\n'
        b'let",7\n'
        b"e4,2024-05-01 12:00,inf,2.0,1,desktop,\n"
    )
    records = read(data, "csv", spec)
    assert [r.line for r in records] == [2, 3, 5, 7]
    assert [json.loads(r.value) for r in records] == [
        {
            "event_id": "e1",
            "event_time": "2024-05-01T12:00:00Z",
            "price": 9.5,
            "position": 3,
            "clicked": 1,
            "device": "mobile",
            "note": "a, b",
        },
        {"event_id": "e2", "event_time": 1714564800000, "position": 4, "clicked": 0, "note": "x"},
        {
            "event_id": "e3",
            "event_time": 1714564800000.25,
            "price": -1000.0,
            "position": 5,
            "clicked": 1,
            "device": "tab\nlet",
            "note": "7",
        },
        {
            "event_id": "e4",
            "event_time": "2024-05-01 12:00",
            "price": float("inf"),
            "position": 2,
            "clicked": 1,
            "device": "desktop",
        },
    ]
    assert [r.key for r in records] == [b"e1", b"e2", b"e3", b"e4"]
    assert [r.event_time for r in records] == [
        "2024-05-01T12:00:00Z",
        1714564800000,
        1714564800000.25,
        "2024-05-01 12:00",
    ]
    assert records[3].value.endswith(b'"price":Infinity,"position":2,"clicked":1,"device":"desktop"}')


def test_csv_values_are_what_the_pipeline_parser_reads(spec):
    fields = spec.schema_.fields
    data = b"event_id,event_time,price,position,discount\ne1,2024-05-01T12:00:00Z,9.5,3,\n"
    (record,) = read(data, "csv", spec)
    parser = JsonParser(list(fields), {name: f.type for name, f in fields.items()})
    parsed = parser.parse(pa.array([record.value], type=pa.binary()))
    assert parsed.errors == {} and not parsed.loose[0]
    got = {name: column[0] for name, column in parsed.columns.items() if column[0] is not None}
    assert got == {"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "price": 9.5, "position": 3}


def test_csv_bad_lines_are_named_and_the_rest_read(spec):
    data = (
        b"event_id,position,clicked,price\n"
        b"e1,1,1,2.5\n"
        b"e2,1,1\n"
        b"e3,1.5,1,2\n"
        b"e4,1,maybe,2\n"
        b"e5,1,1,1_000\n"
        b"e6\xff,1,1,2\n"
        b"e7,1,1,2,9\n"
        b"e8,0,0,0\n"
    )
    items = read(data, "csv", spec)
    assert [i for i in items if isinstance(i, BadLine)] == [
        BadLine(3, "3 cells, but the header has 4 columns"),
        BadLine(4, "column 'position' (int): '1.5' is not an integer"),
        BadLine(5, "column 'clicked' (int): 'maybe' is not an integer"),
        BadLine(6, "column 'price' (float): '1_000' is not a number"),
        BadLine(7, "column 'event_id': not valid UTF-8"),
        BadLine(8, "5 cells, but the header has 4 columns"),
    ]
    good = [i for i in items if isinstance(i, SourceRecord)]
    assert [(r.line, json.loads(r.value)) for r in good] == [
        (2, {"event_id": "e1", "position": 1, "clicked": 1, "price": 2.5}),
        (9, {"event_id": "e8", "position": 0, "clicked": 0, "price": 0.0}),
    ]


def test_bool_cells(spec):
    raw = spec.model_dump(by_alias=True)
    raw["schema"]["fields"]["flag"] = {"type": "bool", "required": False}
    with_bool = PipelineSpec.model_validate(raw)
    data = b"event_id,flag\na,TRUE\nb,f\nc,yes\nd,0\ne,maybe\n"
    items = read(data, "csv", with_bool)
    assert [json.loads(i.value)["flag"] for i in items if isinstance(i, SourceRecord)] == [
        True,
        False,
        True,
        False,
    ]
    assert items[-1] == BadLine(
        6, "column 'flag' (bool): 'maybe' is not a boolean (true/false, t/f, yes/no, 1/0)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the CSV input is empty"),
        (b"event_id,a,a\n", r"more than once: \['a'\]"),
        (b"event_id,,b\n", "empty or non-UTF-8 column name"),
        (b"id,price\n1,2\n", "no column 'event_id' to key messages by"),
    ],
)
def test_csv_input_errors(spec, data, message):
    with pytest.raises(FileSourceError, match=message):
        read(data, "csv", spec)


def test_the_reader_leaves_the_stream_open(spec):
    stream = io.BytesIO(b"event_id\na\n")
    assert len(list(read_records(stream, "csv", spec))) == 1
    stream.seek(0)
    assert [r.key for r in read_records(stream, "csv", spec)] == [b"a"]


def test_detect_format():
    assert [detect_format(p, None) for p in ("a.jsonl", "b.NDJSON", "c.json", "d.csv", "-")] == [
        "jsonl",
        "jsonl",
        "jsonl",
        "csv",
        "jsonl",
    ]
    assert detect_format("-", "csv") == "csv" and detect_format("x.csv", "jsonl") == "jsonl"
    with pytest.raises(FileSourceError, match=r"'\.txt'.*--format jsonl\|csv"):
        detect_format("events.txt", None)


def test_encode_key():
    assert [encode_key(v) for v in ("é", 12, 1.5, False, None, [1, "a"])] == [
        "é".encode(),
        b"12",
        b"1.5",
        b"false",
        None,
        b'[1,"a"]',
    ]


ISO_CASES = [
    "2024-05-01T12:00:00Z",
    "2024-05-01t12:00:00.5z",
    "2024-05-01 12:00",
    "2024-05-01T12:00:00.123456789+02:00",
    "2024-05-01T12:00:00-0130",
    "2024-05-01T12:00:00+05",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-05-01T24:00:00Z",
    "2024-05-01",
    "2024-05-01T12:00:00 Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "yesterday",
]


def test_event_times_match_the_pipeline_reading():
    micros, ok = parse_iso8601(pa.array(ISO_CASES, type=pa.string()))
    pipeline = [us // 1000 if parsed and us >= 0 else None for us, parsed in zip(micros, ok, strict=True)]
    assert [event_time_ms(s) for s in ISO_CASES] == pipeline
    assert sum(v is not None for v in pipeline) == 9  # the cases above that parse and are not before 1970
    assert event_time_ms("2024-05-01T12:00:00.123456789+02:00") == 1714557600123


def test_event_time_numbers():
    values = [0, 1714564800123, 1714564800123.99, -1, float("nan"), float("inf"), True, None, [1]]
    assert [event_time_ms(v) for v in values] == [
        0,
        1714564800123,
        1714564800123,
        None,
        None,
        None,
        None,
        None,
        None,
    ]
