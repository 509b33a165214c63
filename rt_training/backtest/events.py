"""A user's history as records in arrival order, and its split into replay steps.

Records are read in file order, which is taken as arrival order: a late event is simply one whose event time is
below the highest seen so far. Each record keeps its raw bytes (what is produced to Kafka, bad records included,
so they reach dead letters as they would live), its key (the id field, as the producer keys events) and its
event time in Unix seconds (``None`` when the record has no parsable time; such a record joins the current step).

Steps
-----
With ``step_s``, boundaries are ``first event time + k * step_s``; a step ends when the highest event time read
so far reaches its boundary, and the record that reaches it opens the next step. Spans without any event are
skipped (the next step starts at the boundary just below the record that opened it). With ``step_rows``, every
``step_rows`` records make a step.

Examples
--------
>>> recs = [Record(b"", None, t) for t in (0.0, 5.0, 3.0, 10.0, 12.0, 9.0, 31.0)]
>>> [(s.start_s, s.end_s, s.rows) for s in split_steps(recs, step_s=10.0)]
[(0.0, 10.0, 3), (10.0, 20.0, 3), (30.0, 40.0, 1)]
>>> [s.rows for s in split_steps(recs, step_rows=3)]
[3, 3, 1]
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class EventsFileError(ValueError):
    """The events file cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Record:
    """One event as it arrives: the message value, its key and its event time (Unix seconds or ``None``)."""

    value: bytes
    key: bytes | None
    time_s: float | None


@dataclass(frozen=True)
class Step:
    """The records of one replay step and its event-time span ``[start_s, end_s)`` (rows mode: min and max)."""

    index: int
    records: list[Record]
    start_s: float | None
    end_s: float | None

    @property
    def rows(self) -> int:
        return len(self.records)


def event_time_s(value: Any) -> float | None:
    """Unix seconds of an event-time value: epoch milliseconds (a number) or an ISO-8601 string (UTC if bare)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0
        return seconds if math.isfinite(seconds) else None
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    return None


def record_from_line(line: bytes, time_field: str, id_field: str) -> Record:
    """A record from one JSONL line: the line is the message value; time and key are read from it when it is an
    object (a malformed line is kept as it is and goes to dead letters when ingested)."""
    value = line.rstrip(b"\r\n")
    try:
        event = json.loads(value)
    except ValueError:
        return Record(value, None, None)
    if not isinstance(event, dict):
        return Record(value, None, None)
    key = event.get(id_field)
    return Record(
        value,
        None if key is None else str(key).encode(),
        event_time_s(event.get(time_field)),
    )


def read_jsonl(path: str | Path, time_field: str, id_field: str) -> Iterator[Record]:
    """Records of a JSONL file (one JSON event per line, blank lines skipped), in file order.

    Raises
    ------
    EventsFileError
        When the file cannot be opened.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EventsFileError(
            f"cannot read events file {path}: {exc}; pass a JSONL file with one event per line"
        ) from exc
    for line in data.splitlines():
        if line.strip():
            yield record_from_line(line, time_field, id_field)


def split_steps(
    records: Iterable[Record], *, step_s: float | None = None, step_rows: int | None = None
) -> Iterator[Step]:
    """Cut ``records`` into steps by event time (``step_s``) or by count (``step_rows``); exactly one is given."""
    if (step_s is None) == (step_rows is None):
        raise ValueError("give exactly one of step_s and step_rows")
    if step_rows is not None:
        if step_rows < 1:
            raise ValueError(f"step_rows must be at least 1, got {step_rows}")
        yield from _by_rows(records, step_rows)
        return
    assert step_s is not None
    if not step_s > 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    yield from _by_time(records, step_s)


def _by_rows(records: Iterable[Record], step_rows: int) -> Iterator[Step]:
    current: list[Record] = []
    index = 0
    for record in records:
        current.append(record)
        if len(current) == step_rows:
            yield _rows_step(index, current)
            index, current = index + 1, []
    if current:
        yield _rows_step(index, current)


def _rows_step(index: int, records: list[Record]) -> Step:
    times = [r.time_s for r in records if r.time_s is not None]
    return Step(index, records, min(times) if times else None, max(times) if times else None)


def _by_time(records: Iterable[Record], step_s: float) -> Iterator[Step]:
    first: float | None = None
    start = boundary = 0.0
    current: list[Record] = []
    index = 0
    for record in records:
        t = record.time_s
        if t is not None:
            if first is None:
                first, start, boundary = t, t, t + step_s
            elif t >= boundary:
                yield Step(index, current, start, boundary)
                index, current = index + 1, []
                k = math.floor((t - first) / step_s)
                start, boundary = first + k * step_s, first + (k + 1) * step_s
        current.append(record)
    if current:
        yield Step(index, current, None if first is None else start, None if first is None else boundary)
