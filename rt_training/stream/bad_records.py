"""Bad records for the synthetic stream: each carries exactly one defect, named by its dead-letter reason code.

A bad record is built from a valid event (its fields as JSON tokens) by changing one thing, so cleaning must
dead-letter it with exactly that reason and no other:

============== ==============================================================================================
kind           defect
============== ==============================================================================================
malformed_json the JSON text cut short (every strict prefix of an object is invalid JSON); key ``None``
missing_field  one required field left out (the key is ``None`` when that field is the id)
wrong_type     one non-id field of the wrong JSON type: ``"n/a"`` for numbers and booleans, the value wrapped in a
               list (``["x"]``, ``[1700000000000]``) for strings and timestamps
not_finite     one float field set to the token ``NaN``, ``Infinity`` or ``-Infinity`` (Python's json emits them)
out_of_range   one int/float field with a declared min or max set outside it (by 1-10 for ints, by 10-100% of
               the bound's size plus 0.1-1 for floats), finite and of the field's own type
duplicate_id   a valid record that reuses the id (and key) of an earlier valid record of the stream
oversized      a valid record padded with JSON whitespace to just over ``schema.max_record_bytes``
not_utf8       a valid record whose last character of one string value is the Latin-1 byte ``0xE9``
============== ==============================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rt_training.spec.models import FieldSpec, PipelineSpec

BAD_KINDS = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "duplicate_id",
    "oversized",
    "not_utf8",
)
NOT_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity")
WRONG_TYPE_NUMBER_TOKEN = b'"n/a"'
NOT_UTF8_BYTE = b"\xe9"
# How many bytes an oversized record may exceed the limit by, beyond the first one.
OVERSIZE_SPREAD = 64

Items = dict[str, bytes]


def join_record(items: Mapping[str, bytes]) -> bytes:
    """The JSON object text of ``name -> JSON token`` items, in their order, without spaces."""
    return b"{" + b",".join(b'"%s":%s' % (name.encode(), tok) for name, tok in items.items()) + b"}"


class BadRecordMaker:
    """Turns a valid event of ``spec`` into a bad record of a given kind, using uniform variates for its choices.

    Parameters
    ----------
    spec
        The pipeline spec; which kinds are possible depends on it (``not_finite`` needs a float field,
        ``out_of_range`` a bounded number, ``not_utf8`` a string field).
    """

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        fields = spec.schema_.fields
        self.id_field = spec.id_field
        self.max_record_bytes = spec.schema_.max_record_bytes
        self._required = [n for n, f in fields.items() if f.required]
        self._typed = [n for n in fields if n != self.id_field]
        self._floats = [n for n, f in fields.items() if f.type == "float" and n != self.id_field]
        self._bounded = [
            n
            for n, f in fields.items()
            if f.type in ("int", "float") and (f.min is not None or f.max is not None) and n != self.id_field
        ]
        # Prefer strings without an allowed list, so the changed value is not also a disallowed one.
        strings = [n for n, f in fields.items() if f.type == "string" and n != self.id_field]
        free = [n for n in strings if fields[n].allowed is None]
        if not strings and fields[self.id_field].type == "string":
            strings = [self.id_field]
        self._strings = free or strings
        possible = {
            "wrong_type": bool(self._typed),
            "not_finite": bool(self._floats),
            "out_of_range": bool(self._bounded),
            "not_utf8": bool(self._strings),
        }
        self.kinds: tuple[str, ...] = tuple(k for k in BAD_KINDS if possible.get(k, True))

    def make(
        self,
        kind: str,
        items: Items,
        absent: set[str],
        key: bytes | None,
        u: tuple[float, float, float],
        earlier: tuple[bytes, bytes | None] | None = None,
    ) -> tuple[bytes, bytes | None]:
        """The record bytes and message key of a ``kind`` record made from one valid event.

        Parameters
        ----------
        kind
            One of :attr:`kinds`.
        items
            Every schema field of the valid event as a JSON token, in emission order (absent optional fields too).
        absent
            Optional fields the valid event leaves out; they stay out unless the defect is placed on them.
        key
            The valid event's message key.
        u
            Three uniform variates in [0, 1) that make the choices (field, position, token), for determinism.
        earlier
            For ``duplicate_id``: the id token and key of an earlier valid record.
        """
        pick = _picker(u[0])
        if kind == "malformed_json":
            text = join_record(_present(items, absent))
            return text[: 1 + int(u[1] * (len(text) - 2))], None
        if kind == "missing_field":
            name = pick(self._required)
            kept = _present(items, absent)
            del kept[name]
            return join_record(kept), None if name == self.id_field else key
        if kind == "duplicate_id":
            if earlier is None:
                raise ValueError("a duplicate_id record needs an earlier valid record to copy the id from")
            kept = _present(items, absent)
            kept[self.id_field] = earlier[0]
            return join_record(kept), earlier[1]
        if kind == "oversized":
            text = join_record(_present(items, absent))
            pad = self.max_record_bytes + 1 + int(u[1] * OVERSIZE_SPREAD) - len(text)
            return text[:-1] + b" " * max(pad, 0) + b"}", key
        candidates = {
            "wrong_type": self._typed,
            "not_finite": self._floats,
            "out_of_range": self._bounded,
            "not_utf8": self._strings,
        }
        if kind not in candidates:
            raise ValueError(f"unknown bad record kind {kind!r}; expected one of {BAD_KINDS}")
        name = pick(candidates[kind])
        field = self.spec.schema_.fields[name]
        if kind == "wrong_type":
            token = _wrong_type(field, items[name])
        elif kind == "not_finite":
            token = NOT_FINITE_TOKENS[int(u[1] * len(NOT_FINITE_TOKENS))]
        elif kind == "out_of_range":
            token = _out_of_range(field, u[1], u[2])
        else:
            token = _not_utf8(items[name])
        kept = _present(items, absent - {name})
        kept[name] = token
        return join_record(kept), key


def _picker(u: float):
    def pick(names: list[str]) -> str:
        return names[min(int(u * len(names)), len(names) - 1)]

    return pick


def _present(items: Items, absent: set[str]) -> Items:
    return {n: t for n, t in items.items() if n not in absent}


def _wrong_type(field: FieldSpec, token: bytes) -> bytes:
    """A token no reasonable parser coerces to the field's type."""
    if field.type in ("string", "timestamp"):
        return b"[" + token + b"]"
    return WRONG_TYPE_NUMBER_TOKEN


def _out_of_range(field: FieldSpec, side: float, size: float) -> bytes:
    """A finite value of the field's own type just outside its declared bounds."""
    above = field.max is not None and (field.min is None or side < 0.5)
    if field.type == "int":
        step = 1 + int(size * 10)
        value = math.floor(field.max) + step if above else math.ceil(field.min) - step  # type: ignore[arg-type]
        return b"%d" % value
    bound = float(field.max if above else field.min)  # type: ignore[arg-type]
    delta = (abs(bound) * 0.5 + 1.0) * (0.1 + 0.9 * size)
    return b"%a" % round(bound + delta if above else bound - delta, 4)


def _not_utf8(token: bytes) -> bytes:
    """The string token with its last character replaced by a byte that is not valid UTF-8.

    The length is kept unless the token holds a JSON escape (the byte is then added before the closing quote, so
    it never splits an escape sequence).
    """
    if len(token) <= 2 or b"\\" in token:
        return token[:-1] + NOT_UTF8_BYTE + b'"'
    return token[:-2] + NOT_UTF8_BYTE + b'"'
