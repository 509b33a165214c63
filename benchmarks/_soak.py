"""Plain-data helpers of the soak benchmark (``bench_soak.py``), kept apart so that they can be tested alone.

- :func:`reconcile`: Kafka offsets per partition against the offsets a lake table holds, each exactly once;
- :func:`growth_per_hour`: the slope of a least-squares line through samples, per hour;
- :func:`growth_by_part`: that slope in each consecutive part of a period (a bounded growth slows down);
- :func:`process_kinds`: which part of Dagster each process of a process tree is;
- :func:`rss_bytes`: a process's resident memory;
- :func:`recovery_seconds`: how long after a broker came back the lake first reached an offset target;
- :func:`failure_causes`: failed runs grouped by job and the first line of their error;
- :func:`user_error`: the exception a run's code raised, inside Dagster's wrappers.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reconciled:
    """Offsets of ``[earliest, end)`` per partition missing from a table (``lost``), rows beyond the first for one
    offset (``duplicated``), and rows whose offset lies outside ``[earliest, end)`` (``outside``)."""

    lost: int
    duplicated: int
    outside: int
    by_partition: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.outside == 0


def reconcile(bounds: Mapping[int, tuple[int, int]], offsets: Mapping[int, np.ndarray]) -> Reconciled:
    """Check that each offset of ``bounds`` (partition -> ``(earliest, end)``) is in ``offsets`` (partition -> the
    offsets of the table's rows) exactly once.

    Every offset of ``[earliest, end)`` is a record here: the soak's producer is idempotent but not transactional
    and its topic is not compacted, so Kafka leaves no gaps. Rows of a partition not in ``bounds`` count as
    outside.

    >>> r = reconcile({0: (0, 4)}, {0: np.array([0, 1, 1, 3, 7])})
    >>> r.lost, r.duplicated, r.outside
    (1, 1, 1)
    """
    lost = duplicated = outside = 0
    by_partition: dict[int, dict[str, int]] = {}
    for partition in sorted(set(bounds) | set(offsets)):
        rows = np.asarray(offsets.get(partition, np.empty(0, dtype=np.int64)), dtype=np.int64)
        earliest, end = bounds.get(partition, (0, 0))
        inside = rows[(rows >= earliest) & (rows < end)]
        counts = np.bincount(inside - earliest, minlength=end - earliest)
        row = {
            "lost": int((counts == 0).sum()),
            "duplicated": int((counts[counts > 1] - 1).sum()),
            "outside": int(len(rows) - len(inside)),
        }
        by_partition[partition] = row
        lost += row["lost"]
        duplicated += row["duplicated"]
        outside += row["outside"]
    return Reconciled(lost, duplicated, outside, by_partition)


def growth_per_hour(times_s: Sequence[float], values: Sequence[float]) -> float | None:
    """Slope of the least-squares line through ``(time, value)``, in value units per hour; None with fewer than
    three samples or no spread in time.

    >>> growth_per_hour([0, 1800, 3600], [100, 150, 200])
    100.0
    """
    if len(times_s) < 3 or len(set(times_s)) < 2:
        return None
    slope = np.polyfit(np.asarray(times_s, dtype=float), np.asarray(values, dtype=float), 1)[0]
    return round(float(slope) * 3600.0, 1)


def growth_by_part(
    times_s: Sequence[float], values: Sequence[float], start: float, end: float, parts: int = 3
) -> list[float | None]:
    """:func:`growth_per_hour` in each of ``parts`` equal, consecutive spans of ``[start, end]``. A cache filling
    up or an allocator reaching its high-water mark slows down from part to part; a leak keeps its pace.

    >>> growth_by_part([0, 1, 2, 3, 4, 5, 6], [0, 10, 20, 30, 31, 32, 33], start=0, end=6, parts=2)
    [36000.0, 3600.0]
    """
    width = (end - start) / parts
    out = []
    for i in range(parts):
        lo, hi = start + i * width, start + (i + 1) * width
        inside = [(t, v) for t, v in zip(times_s, values, strict=True) if lo <= t <= hi]
        out.append(growth_per_hour([t for t, _ in inside], [v for _, v in inside]))
    return out


# Kinds of the processes under ``dagster dev``, told by command line; the first marker found wins.
KIND_MARKERS = (
    ("run", "execute_run"),
    ("run launcher", "rt_training.ops.run_zygote"),
    ("daemon", "dagster-daemon"),
    ("daemon", "dagster._daemon"),
    ("webserver", "dagster-webserver"),
    ("webserver", "dagster_webserver"),
    ("code server", "api grpc"),
    ("code server", "code-server"),
)


def process_kinds(tree: Mapping[int, tuple[int, str]], root: int) -> dict[int, str]:
    """Kind of every process under ``root`` (``tree``: pid -> (parent pid, command line)).

    ``root`` is ``dagster dev``. A process forked from the run launcher's warm process is a run (it keeps the warm
    process's command line); any other process takes the kind its command line names, else the kind of its
    parent, so a run's own children (a ``torchrun``) count as the run.

    >>> process_kinds({1: (0, "dagster dev"), 2: (1, "dagster-daemon run"), 3: (2, "python -m rt_training.ops.run_zygote"),
    ...                4: (3, "python -m rt_training.ops.run_zygote"), 5: (4, "torchrun")}, 1)
    {1: 'dagster dev', 2: 'daemon', 3: 'run launcher', 4: 'run', 5: 'run'}
    """
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in tree.items():
        children.setdefault(parent, []).append(pid)
    kinds = {root: "dagster dev"}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        parent = tree[pid][0]
        command = tree[pid][1]
        if kinds[parent] == "run launcher":
            kinds[pid] = "run"
        else:
            named = [kind for kind, marker in KIND_MARKERS if marker in command]
            kinds[pid] = named[0] if named else kinds[parent]
        todo.extend(children.get(pid, []))
    return dict(sorted(kinds.items()))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``/proc/<pid>/statm``); OSError when it cannot be read (it exited)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recovery_seconds(samples: Sequence[tuple[float, int | None]], since: float, target: int) -> float | None:
    """Seconds from ``since`` to the first sample ``(time, committed offsets)`` at or after it whose committed
    offsets reach ``target``; None when none does (a sample taken while the broker was down carries None).

    >>> recovery_seconds([(0.0, 5), (10.0, None), (15.0, 8), (20.0, 12)], since=9.0, target=10)
    11.0
    """
    for t, committed in samples:
        if t >= since and committed is not None and committed >= target:
            return round(t - since, 1)
    return None


def failure_causes(failures: Iterable[tuple[str, str]]) -> list[dict[str, object]]:
    """Failed runs ``(job, error message)`` grouped by job and the error's first non-empty line, most first.

    >>> failure_causes([("ingest_job", "KafkaUnreachableError: no broker\\nat ..."), ("ingest_job", "KafkaUnreachableError: no broker")])
    [{'job': 'ingest_job', 'cause': 'KafkaUnreachableError: no broker', 'runs': 2}]
    """
    counts = Counter((job, first_line(message)) for job, message in failures)
    return [
        {"job": job, "cause": cause, "runs": n}
        for (job, cause), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def user_error(error: Any) -> Any:
    """The outermost error in a chain of Dagster ``SerializableErrorInfo`` (``cls_name``, ``cause``) that Dagster
    did not raise itself: the exception the run's code raised.

    Dagster wraps an op's exception (``DagsterExecutionStepExecutionError``); the exception's own causes are the
    details it chose to carry (``KafkaUnreachableError`` raised from kafka-python's ``KafkaConnectionError``), so
    the walk stops at the first class not named ``Dagster*``.

    >>> from types import SimpleNamespace as E
    >>> raw = E(cls_name="KafkaConnectionError", cause=None)
    >>> ours = E(cls_name="KafkaUnreachableError", cause=raw)
    >>> user_error(E(cls_name="DagsterExecutionStepExecutionError", cause=ours)).cls_name
    'KafkaUnreachableError'
    """
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error


def first_line(message: str, limit: int = 300) -> str:
    """The first non-empty line of ``message``, cut at ``limit`` characters."""
    for line in message.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return "(no error message)"
