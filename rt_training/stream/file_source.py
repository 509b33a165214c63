"""A user's own records from a JSON-lines or CSV file (or stdin), as Kafka messages for a pipeline spec.

:func:`read_records` turns a binary stream into :class:`SourceRecord` (key, JSON value bytes, line number, event
time as given) and :class:`BadLine` (line number and reason) in file order. It checks only what is needed to
encode a record; whether the record fits the schema is the pipeline's cleaning to decide, which dead-letters what
does not, with the reason.

JSON lines
    One JSON object per line, sent byte for byte as written (surrounding whitespace removed), so event times,
    number formats and unknown keys arrive exactly as given. Blank lines are skipped. A line that is not UTF-8,
    not JSON, or not an object is bad.
CSV
    A header row names the columns; each later row is one record. Cells of schema fields are converted to the
    field's type: ``int`` (an integer, or a float with no fraction such as ``3.0``), ``float`` (a decimal
    number, ``nan`` or ``inf``), ``bool`` (``true/false``, ``t/f``, ``yes/no``, ``1/0``, any case), ``string``
    as is, and ``timestamp`` as epoch milliseconds when the cell is a number, else the string as given (an
    ISO-8601 date-time). An empty cell leaves the field out of the record (absent, so the spec's default or the
    ``missing_required`` dead letter applies). Columns outside the schema are sent as strings. A row with another
    cell count than the header, a cell that does not convert, or bytes that are not UTF-8 make a bad line.
    Blank lines are skipped; a quoted cell may span lines, and the record is then numbered by its first line.

Keys are the value of one field (by default the spec's id field) as UTF-8 text: a string as is, a number or
boolean as its JSON text; ``None`` when the record lacks the field, as for the synthetic stream. Messages of one
key share a partition, so each entity's records stay in file order.

Examples
--------
>>> import io
>>> from rt_training.spec import load_spec
>>> spec = load_spec()
>>> data = b'event_id,event_time,position\\ne1,2024-05-01T12:00:00Z,3\\ne2,1714564800000,x\\n'
>>> for item in read_records(io.BytesIO(data), "csv", spec):
...     print(item)
SourceRecord(line=2, key=b'e1', value=b'{"event_id":"e1","event_time":"2024-05-01T12:00:00Z","position":3}', \
event_time='2024-05-01T12:00:00Z')
line 3: column 'position' (int): 'x' is not an integer
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any, BinaryIO, Literal

from rt_training.spec.models import FieldType, PipelineSpec

SourceFormat = Literal["jsonl", "csv"]
FORMATS: tuple[SourceFormat, ...] = ("jsonl", "csv")
EXTENSIONS: dict[str, SourceFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
STDIN = "-"

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
_BOOLS = {
    "true": True,
    "t": True,
    "yes": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "0": False,
}
_BOM = b"\xef\xbb\xbf"
_MAX_KAFKA_MS = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12]\d|3[01])[T ](?P<h>[01]\d|2[0-3]):(?P<mi>[0-5]\d)"
    r"(:(?P<s>[0-5]\d)(\.(?P<f>\d+))?)?(Z|(?P<sign>[+-])(?P<zh>\d{2})(:?(?P<zm>\d{2}))?)?"
)


class FileSourceError(ValueError):
    """The input as a whole cannot be read: unknown format, a CSV without a usable header, a key column missing."""


@dataclass(frozen=True)
class SourceRecord:
    """One record to send: its line number in the input (1-based), message key and value, and the event time
    exactly as the record gives it (``None`` when absent)."""

    line: int
    key: bytes | None
    value: bytes
    event_time: Any


@dataclass(frozen=True)
class BadLine:
    """A line that cannot be sent as a record, with the reason for a person."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def detect_format(path: str, given: SourceFormat | None) -> SourceFormat:
    """The format to read ``path`` with: ``given`` when set, else from the extension; stdin (``-``) defaults to
    JSON lines.

    >>> detect_format("events.csv", None), detect_format("-", None), detect_format("dump.txt", "csv")
    ('csv', 'jsonl', 'csv')
    """
    if given is not None:
        return given
    if path == STDIN:
        return "jsonl"
    suffix = PurePath(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise FileSourceError(
            f"cannot tell the format of {path!r} from its extension {suffix or '(none)'!r}: name it "
            f"{', '.join(EXTENSIONS)}, or pass --format {'|'.join(FORMATS)}"
        )
    return EXTENSIONS[suffix]


def read_records(
    stream: BinaryIO, fmt: SourceFormat, spec: PipelineSpec, key_field: str | None = None
) -> Iterator[SourceRecord | BadLine]:
    """The records and bad lines of ``stream`` in input order (see the module docstring for both formats).

    Parameters
    ----------
    stream
        Binary input, read once, front to back (stdin works).
    fmt
        ``jsonl`` or ``csv``.
    spec
        Gives the field types (CSV conversion) and the event-time field.
    key_field
        The field whose value keys each message; default the spec's id field.

    Raises
    ------
    FileSourceError
        When iteration starts: a CSV input has no header, a duplicate or empty column name, or no column ``key_field``.
    """
    key_field = key_field or spec.schema_.id_field
    if fmt == "jsonl":
        return _read_jsonl(stream, spec.schema_.time_field, key_field)
    if fmt == "csv":
        types = {name: f.type for name, f in spec.schema_.fields.items()}
        return _read_csv(stream, types, spec.schema_.time_field, key_field)
    raise FileSourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def event_time_ms(value: Any) -> int | None:
    """The Kafka timestamp (epoch milliseconds) for an event time as a record gives it.

    A number is epoch milliseconds (floored); a string is an ISO-8601 date-time in the forms the pipeline accepts
    (:mod:`rt_training.clean.timestamps`: ``T`` or a space, optional seconds and fraction, zone ``Z``, ``+HH``,
    ``+HHMM`` or ``+HH:MM``, none meaning UTC). ``None`` where there is no usable time: absent, not a date-time,
    not finite, or before 1970 (Kafka timestamps are not negative).

    >>> [event_time_ms(v) for v in (1714564800123.9, "2024-05-01T12:00:00.1239Z", "2024-05-01 14:00+02", "soon")]
    [1714564800123, 1714564800123, 1714564800000, None]
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return math.floor(value) if math.isfinite(value) and 0 <= value <= _MAX_KAFKA_MS else None
    if not isinstance(value, str):
        return None
    m = _ISO.fullmatch(value.upper())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m[g] or 0) for g in ("y", "mo", "d", "h", "mi", "s"))
    micros = int((m["f"] or "")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if m["zh"] is not None:
        offset = (-1 if m["sign"] == "-" else 1) * timedelta(hours=int(m["zh"]), minutes=int(m["zm"] or 0))
    try:
        instant = datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC) - offset
    except (ValueError, OverflowError):
        return None
    ms = (instant - _EPOCH) // timedelta(milliseconds=1)
    return ms if ms >= 0 else None


def encode_key(value: Any) -> bytes | None:
    """A message key from a field value: strings as UTF-8, other JSON values as their compact JSON text.

    >>> encode_key("u-1"), encode_key(42), encode_key(True), encode_key(None)
    (b'u-1', b'42', b'true', None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _read_jsonl(stream: BinaryIO, time_field: str, key_field: str) -> Iterator[SourceRecord | BadLine]:
    for number, raw in enumerate(stream, start=1):
        unstripped = raw.removeprefix(_BOM) if number == 1 else raw
        line = unstripped.strip()
        indent = len(unstripped) - len(unstripped.lstrip())
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadLine(number, f"not valid UTF-8: {exc.reason} at byte {exc.start}")
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            yield BadLine(number, f"invalid JSON: {exc.msg} at column {exc.colno + indent}")
            continue
        except (ValueError, RecursionError) as exc:
            yield BadLine(number, f"invalid JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            yield BadLine(number, f"expected a JSON object, got {_json_kind(doc)}")
            continue
        try:
            key = encode_key(doc.get(key_field))
        except UnicodeEncodeError:
            yield BadLine(number, f"key field {key_field!r} holds a lone UTF-16 surrogate, not text")
            continue
        yield SourceRecord(number, key, line, doc.get(time_field))


def _json_kind(doc: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(doc), "a number")


def _read_csv(
    stream: BinaryIO, types: Mapping[str, FieldType], time_field: str, key_field: str
) -> Iterator[SourceRecord | BadLine]:
    # surrogateescape keeps a non-UTF-8 byte as a lone surrogate, so it is found in its row, not fatal to the file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text), types, time_field, key_field)
    finally:
        text.detach()  # the caller's stream stays open (a checked file is read again; stdin is not ours)


def _csv_rows(
    reader: Any, types: Mapping[str, FieldType], time_field: str, key_field: str
) -> Iterator[SourceRecord | BadLine]:
    header = _header(reader, key_field)
    converters = [_CONVERTERS[types.get(name, "string")] for name in header]
    kinds = [types.get(name, "string") for name in header]
    previous_end = reader.line_num
    for row in reader:
        number, previous_end = previous_end + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            yield BadLine(number, f"{len(row)} cells, but the header has {len(header)} columns")
            continue
        record: dict[str, Any] = {}
        problem = ""
        for name, kind, convert, cell in zip(header, kinds, converters, row, strict=True):
            if _has_surrogate(cell):
                problem = f"column {name!r}: not valid UTF-8"
                break
            if cell == "":
                continue
            try:
                record[name] = convert(cell)
            except ValueError as exc:
                problem = f"column {name!r} ({kind}): {cell!r} is not {exc}"
                break
        if problem:
            yield BadLine(number, problem)
            continue
        value = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        yield SourceRecord(number, encode_key(record.get(key_field)), value, record.get(time_field))


def _header(reader: Any, key_field: str) -> list[str]:
    header = next(reader, None)
    if not header:
        raise FileSourceError("the CSV input is empty: its first line must be a header naming the columns")
    names = [name.strip() for name in header]
    if any(not name or _has_surrogate(name) for name in names):
        raise FileSourceError(f"the CSV header has an empty or non-UTF-8 column name: {header!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise FileSourceError(f"the CSV header names columns more than once: {duplicates}")
    if key_field not in names:
        raise FileSourceError(
            f"the CSV header has no column {key_field!r} to key messages by (columns: {names}); "
            "add it, or pick another with --key-field"
        )
    return names


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _to_int(cell: str) -> int:
    s = cell.strip()
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        number = float(s)
        if math.isfinite(number) and number.is_integer():
            return int(number)
    raise ValueError("an integer")


def _to_float(cell: str) -> float:
    s = cell.strip()
    if not _FLOAT.fullmatch(s):
        raise ValueError("a number")
    return float(s)


def _to_bool(cell: str) -> bool:
    try:
        return _BOOLS[cell.strip().lower()]
    except KeyError:
        raise ValueError("a boolean (true/false, t/f, yes/no, 1/0)") from None


def _to_timestamp(cell: str) -> int | float | str:
    s = cell.strip()
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s)
    return cell


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "timestamp": _to_timestamp,
}
