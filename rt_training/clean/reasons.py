"""Dead-letter reason codes, their precedence, and the first-reason-wins bookkeeping of one batch.

A record with several defects is dead-lettered once, with the reason that comes first in :data:`PRECEDENCE`
(and, within one reason, the field that comes first in the spec). The order follows the pipeline: a record is
first bytes (``oversized``, ``not_utf8``), then a document (``malformed_json``, ``not_an_object``), then a
document the cleaning code raised on (``unparseable``: any exception while decoding, validating or checking
the features of it, such as a ``RecursionError`` from thousands of nested arrays; see :func:`unparseable_detail`),
then a document giving one schema field twice (``duplicate_key``: which value is meant is unknowable, so neither is
taken; see :class:`rt_training.clean.parse.JsonParser`), then a set of fields checked against the schema
(``missing_field`` ... ``not_allowed``: present, then of the right type, then of the right shape
(``wrong_dimension``: a vector with other than ``dim`` elements), then finite, in range and allowed; see
:mod:`rt_training.clean.validate`), then the plausibility of a well-formed record: an id that is empty or only
white space (``empty_id``), an event time before ``time.min_event_time`` (``before_min_event_time``) or more than
``time.max_future_skew`` ahead of its Kafka timestamp (``future_event_time``), all judged on the record alone;
then an event too far below the pipeline's watermark (``too_late``, only with ``time.max_lateness`` set), and
last a duplicate of a record that is kept (``duplicate_id``): a record that fails any earlier check never counts
as the first occurrence of an id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum

import numpy as np


class Reason(StrEnum):
    """Why a record went to the dead letters (the ``reason`` column)."""

    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNPARSEABLE = "unparseable"
    DUPLICATE_KEY = "duplicate_key"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    WRONG_DIMENSION = "wrong_dimension"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NOT_ALLOWED = "not_allowed"
    EMPTY_ID = "empty_id"
    BEFORE_MIN_EVENT_TIME = "before_min_event_time"
    FUTURE_EVENT_TIME = "future_event_time"
    TOO_LATE = "too_late"
    DUPLICATE_ID = "duplicate_id"


PRECEDENCE: tuple[Reason, ...] = tuple(Reason)
"""Reasons in the order they are checked; a record gets the first one that applies."""


class CleaningSetupError(ValueError):
    """A fault of the spec or of a plugged-in component, not of any record (an invalid default, a parser breaking
    its contract): it fails the batch, as dead-lettering records would hide it."""


_DETAIL_CHARS = 200


def unparseable_detail(exc: BaseException) -> str:
    """The ``unparseable`` detail of a record the cleaning code raised ``exc`` on: the exception's class, then its
    message (cut to 200 characters, as a message may quote the record)."""
    message = str(exc)
    if len(message) > _DETAIL_CHARS:
        message = message[:_DETAIL_CHARS] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_CODE = {reason: i + 1 for i, reason in enumerate(PRECEDENCE)}
_NAMES = np.array([None, *(r.value for r in PRECEDENCE)], dtype=object)


class Verdicts:
    """Per-row outcome of one batch: 0 while a row is still good, else the code of its first reason.

    Checks run in precedence order and call :meth:`reject`; a row already rejected keeps its first reason,
    so precedence is the order of the calls. ``describe`` is called only for the rows newly rejected, so the
    cost of formatting details is paid per dead letter, not per record.
    """

    def __init__(self, n: int):
        self.code = np.zeros(n, dtype=np.int8)
        self.detail = np.empty(n, dtype=object)

    def __len__(self) -> int:
        return len(self.code)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows not rejected so far."""
        return self.code == 0

    def reject(
        self, mask: np.ndarray, reason: Reason, describe: Callable[[np.ndarray], Iterable[str]]
    ) -> int:
        """Reject the rows of ``mask`` not already rejected; return how many were newly rejected."""
        rows = np.flatnonzero(mask & (self.code == 0))
        if rows.size:
            self.code[rows] = _CODE[reason]
            self.detail[rows] = list(describe(rows))
        return int(rows.size)

    def reject_rows(self, rows: np.ndarray, reason: Reason, details: list[str]) -> None:
        """Reject explicit row indices (not yet rejected) with one detail each."""
        if len(rows):
            self.code[rows] = _CODE[reason]
            self.detail[rows] = details

    def reasons(self, rows: np.ndarray) -> list[str]:
        """Reason names of the given (rejected) rows."""
        return _NAMES[self.code[rows]].tolist()

    def counts(self) -> dict[str, int]:
        """Rows per reason, every reason listed (zeros included) so metadata plots have stable series."""
        per_code = np.bincount(self.code, minlength=len(PRECEDENCE) + 1)
        return {reason.value: int(per_code[_CODE[reason]]) for reason in PRECEDENCE}
