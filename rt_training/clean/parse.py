"""Record bytes → per-field values: size check, UTF-8 check and JSON decoding, behind a pluggable interface.

A parser turns the ``value`` column of a bronze batch into one Python list per schema field (a columnar
hand-off: validation then works a field at a time on whole columns) and the rows it could not decode, each
with a reason and a detail. :class:`JsonParser` is the default; another wire format (Avro, Protobuf) plugs in by
implementing :class:`Parser`.

Why msgspec: measured on 200k demo events (about 310 bytes each) on this project's 2-core machine,
``json.loads`` decodes 102k docs/s, ujson 224k/s, msgspec into dicts 440k/s and msgspec into a
``Struct`` of the schema's fields 940k/s (it skips unknown keys and builds no dicts).
``pyarrow.json.read_json`` (614k/s) was rejected: one value of an unexpected type aborts the whole block
without saying which record, and the batch must be split record by record anyway. msgspec is strict JSON, so a
record it refuses is decoded again with ``json.loads`` to tell the reason: ``NaN``, ``Infinity`` and numbers
beyond float range (``1e400``) are accepted there and become ``not_finite`` for their field in validation, as
the reason a producer can act on, rather than ``malformed_json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.clean.reasons import Reason, unparseable_detail


@dataclass(frozen=True)
class ParsedBatch:
    """What a parser returns for ``n`` records.

    ``columns`` maps each schema field to a list of ``n`` Python values (``None`` where the field is absent or
    JSON ``null``, and in every field of a record that failed). ``errors`` maps the row of each failed record
    to its reason and a detail for a person.
    """

    columns: dict[str, list[Any]]
    errors: dict[int, tuple[Reason, str]] = field(default_factory=dict)
    loose: np.ndarray | None = None
    """Optional speed hint, a bool per record: True where the parser did not check the values against the schema's
    types (a record with a value of an unexpected kind is among them). Validation then classifies only these
    rows' values one by one. It finds the same either way; ``None`` treats every row as loose."""
    duplicate_keys: Callable[[np.ndarray], dict[int, tuple[Reason, str]]] | None = None
    """Optional, the parser's check for records that give a schema field more than once (JSON's duplicated keys),
    run after validation: called with how many schema fields each record gives a value (neither absent nor null),
    it returns the failing rows, ``duplicate_key`` with a detail naming the key (or ``unparseable`` if the check
    raised on the record). The count lets a parser rule out most records without decoding them again. ``None``:
    the parser's format has no such ambiguity."""


class Parser(Protocol):
    """Decodes the record values of a batch; must return ``len(values)`` entries for every schema field.

    ``values`` may hold nulls: Kafka tombstones, and records already rejected as oversized (masked out so they
    are never decoded; whatever the parser reports for them is ignored).
    """

    def parse(self, values: pa.BinaryArray) -> ParsedBatch: ...


def oversized_mask(values: pa.BinaryArray, max_bytes: int) -> np.ndarray:
    """Rows whose value is longer than ``max_bytes`` (a null value has length 0 here)."""
    lengths = pc.binary_length(values).fill_null(0)
    return np.asarray(pc.greater(lengths, max_bytes).to_numpy(zero_copy_only=False), dtype=bool)


def invalid_utf8(values: pa.BinaryArray, raw: Sequence[bytes | None]) -> dict[int, str]:
    """Rows whose value is not valid UTF-8, with what is wrong and where.

    Arrow validates the whole column in C++ first; only when that fails are the rows holding a byte >= 0x80
    (found with numpy on the data buffer) decoded one by one to name the culprits.
    """
    try:
        values.cast(pa.string())
        return {}
    except pa.ArrowInvalid:
        pass
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
        values.offset : values.offset + len(values) + 1
    ]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)
    high = np.flatnonzero(data[offsets[0] : offsets[-1]] >= 0x80) + offsets[0]
    candidates = np.unique(np.searchsorted(offsets, high, side="right") - 1)
    errors = {}
    for row in candidates.tolist():
        value = raw[row]
        if value is None:  # masked out (oversized): its bytes stay in the buffer but are never decoded
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors[row] = f"value is not valid UTF-8: {exc.reason} at byte {exc.start}"
    return errors


def _json_type(doc: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(doc), "number")


def _has_lone_surrogate(doc: dict[str, Any]) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def decode_strict(raw: bytes | None) -> tuple[dict[str, Any] | None, Reason | None, str]:
    """Decode one UTF-8 record with ``json.loads``: the document, or why it is not a usable JSON object."""
    if raw is None:
        return None, Reason.MALFORMED_JSON, "value is null (a tombstone), not a JSON document"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        return None, Reason.MALFORMED_JSON, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return None, Reason.MALFORMED_JSON, f"invalid JSON: {exc}"
    except RecursionError as exc:
        return None, Reason.UNPARSEABLE, unparseable_detail(exc)
    if not isinstance(doc, dict):
        return None, Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(doc)}"
    if _has_lone_surrogate(doc):
        return (
            None,
            Reason.MALFORMED_JSON,
            "invalid JSON: a \\u escape is a lone UTF-16 surrogate, not a character",
        )
    return doc, None, ""


_JSON_KINDS: dict[str, Any] = {
    "string": str | None,
    "int": int | None,
    "float": int | float | None,
    "bool": bool | None,
    "timestamp": int | float | str | None,
    "text": str | None,
    "list": list | None,
    "vector": list[int | float] | None,
}
"""The JSON kinds a record of each spec field type may hold without being loose (see :class:`ParsedBatch`).
A list's elements are not typed here: validation checks list fields element by element whatever the hint."""


class JsonParser:
    """One JSON object per record; keys outside the schema are ignored.

    A record giving a schema field twice at its top level (``{"id": "a", "id": "b"}``: JSON leaves its meaning
    open, and decoders keep the last value) is ``duplicate_key``, neither value taken; keys outside the schema may
    repeat, as they are ignored anyway. msgspec, which decodes every record, keeps the last value silently, so
    the duplicates are found afterwards (:attr:`ParsedBatch.duplicate_keys`) in three steps, each looking only at
    what the one before could not rule out: a record with no more colons than the schema fields it gives a value
    cannot repeat a key (every key is followed by a colon, whatever the white space); then one with no more
    quoted field names (``"price"``) than that and no ``\\u00`` escape (the only way to spell a field name
    otherwise); the rest are decoded again with ``json.loads``, which hands over the top-level pairs in order.

    Parameters
    ----------
    field_names
        The schema's fields, in spec order: the columns returned.
    field_types
        Optional, the spec type of each field (``string``, ``int``, ...). With them, each record is first decoded
        against those types, in the same pass (measured free), and the records that fail it are decoded again
        without types and reported as ``loose``.
    """

    def __init__(self, field_names: Sequence[str], field_types: Mapping[str, str] | None = None):
        self.field_names = list(field_names)
        attrs = [f"f{i}" for i in range(len(self.field_names))]
        self._attrs = dict(zip(self.field_names, attrs, strict=True))
        self._getters = {name: attrgetter(a) for name, a in self._attrs.items()}
        self._record = self._struct("Record", {a: Any for a in attrs})
        self._decode_any = msgspec.json.Decoder(self._record).decode
        self._decode_typed = None
        if field_types is not None:
            kinds = {self._attrs[name]: _JSON_KINDS[field_types[name]] for name in self.field_names}
            self._decode_typed = msgspec.json.Decoder(self._struct("TypedRecord", kinds)).decode
        self._empty = self._record()
        self._quoted = [b'"%s"' % name.encode() for name in self.field_names]

    def _struct(self, name: str, kinds: Mapping[str, Any]) -> type[msgspec.Struct]:
        # Positional attribute names, renamed to the JSON keys: any key is safe, even one clashing with Python.
        return msgspec.defstruct(
            name,
            [(a, kind, None) for a, kind in kinds.items()],
            rename={a: name for name, a in self._attrs.items()},
            gc=False,
        )

    def parse(self, values: pa.BinaryArray) -> ParsedBatch:
        """Decode every record; see :class:`ParsedBatch`."""
        raw = values.to_pylist()
        errors: dict[int, tuple[Reason, str]] = {
            row: (Reason.NOT_UTF8, detail) for row, detail in invalid_utf8(values, raw).items()
        }
        decode, empty = self._decode_typed or self._decode_any, self._empty
        records = [empty] * len(raw)
        loose = np.zeros(len(raw), dtype=bool)
        for i, value in enumerate(raw):
            try:
                records[i] = decode(value)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                if i not in errors:
                    loose[i] = True
                    records[i] = self._untyped(i, value, errors)
            except Exception as exc:  # any other failure is the record's, never the batch's
                errors.setdefault(i, (Reason.UNPARSEABLE, unparseable_detail(exc)))
        for row in errors:
            records[row] = empty
        columns = {name: list(map(getter, records)) for name, getter in self._getters.items()}
        return ParsedBatch(
            columns=columns,
            errors=errors,
            loose=loose if self._decode_typed else None,
            duplicate_keys=partial(self._duplicate_keys, raw, values.null_count > 0, frozenset(errors)),
        )

    def _duplicate_keys(
        self, raw: list[bytes | None], has_nulls: bool, skip: frozenset[int], present: np.ndarray
    ) -> dict[int, tuple[Reason, str]]:
        """The records giving a schema field twice at the top level (see the class docstring)."""
        filled = [b"" if value is None else value for value in raw] if has_nulls else raw
        colons = np.fromiter(map(bytes.count, filled, repeat(b":")), dtype=np.int64, count=len(raw))
        found: dict[int, tuple[Reason, str]] = {}
        for row in np.flatnonzero(colons > present).tolist():
            value = filled[row]
            if row in skip or (sum(map(value.count, self._quoted)) <= present[row] and b"\\u00" not in value):
                continue
            try:
                detail = _top_level_duplicate(value, self.field_names)
            except Exception as exc:  # any failure is the record's, never the batch's
                found[row] = (Reason.UNPARSEABLE, unparseable_detail(exc))
                continue
            if detail is not None:
                found[row] = (Reason.DUPLICATE_KEY, detail)
        return found

    def _untyped(self, row: int, value: bytes | None, errors: dict[int, tuple[Reason, str]]) -> Any:
        try:
            return self._lenient(row, value, errors)
        except Exception as exc:  # any other failure is the record's, never the batch's
            errors[row] = (Reason.UNPARSEABLE, unparseable_detail(exc))
            return self._empty

    def _lenient(self, row: int, value: bytes | None, errors: dict[int, tuple[Reason, str]]) -> Any:
        if self._decode_typed is not None:
            try:
                return self._decode_any(value)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                pass
        doc, reason, detail = decode_strict(value)
        if doc is None:
            errors[row] = (reason or Reason.MALFORMED_JSON, detail)
            return self._empty
        return self._record(**{attr: doc.get(name) for name, attr in self._attrs.items()})


def _top_level_duplicate(value: bytes, field_names: Sequence[str]) -> str | None:
    """What a person reads about the first schema field ``value`` gives twice at its top level, or None."""
    last: list[list[tuple[str, Any]]] = [[]]

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        last[0] = pairs  # the top-level object is the last one to close
        return dict(pairs)

    doc = json.loads(value, object_pairs_hook=keep_pairs)
    if not isinstance(doc, dict):
        return None
    counts: dict[str, int] = {}
    for key, _ in last[0]:
        counts[key] = counts.get(key, 0) + 1
    for name in field_names:
        if counts.get(name, 0) > 1:
            return (
                f"key {name!r} appears {counts[name]} times at the top level of the record; which value is meant "
                "is unknown, so none is taken: send each field once"
            )
    return None
