"""A table's commit history: when it last changed, its versions, reading an old version (time travel)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from rt_training.lake.exactly_once import GAPS_KEY, RANGES_KEY
from rt_training.lake.tables import open_table

DATA_OPERATIONS = frozenset({"WRITE", "CREATE TABLE", "MERGE", "DELETE", "UPDATE", "STREAMING UPDATE"})
"""Operations that change rows (maintenance — OPTIMIZE, VACUUM — does not)."""

_COMMIT_KEYS = frozenset(
    {
        "timestamp",
        "operation",
        "operationParameters",
        "operationMetrics",
        "readVersion",
        "engineInfo",
        "clientVersion",
        "isolationLevel",
        "isBlindAppend",
        "userId",
        "userName",
        "version",
    }
)


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history."""

    version: int
    timestamp: datetime
    operation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    """Custom metadata of the commit (offset ranges, data-loss gaps, run id, ...)."""

    @property
    def ranges(self) -> list[dict[str, Any]]:
        return list(self.custom.get(RANGES_KEY, []))

    @property
    def data_loss(self) -> list[dict[str, Any]]:
        """Gaps recorded when the reader skipped offsets deleted by retention."""
        return list(self.custom.get(GAPS_KEY, []))


def commits(
    table_uri: str, storage_options: Mapping[str, str] | None = None, limit: int | None = None
) -> list[Commit]:
    """Commits, newest first (at most ``limit``); empty when there is no table."""
    dt = open_table(table_uri, storage_options)
    if dt is None:
        return []
    return [_commit(info) for info in dt.history(limit)]


def versions(table_uri: str, storage_options: Mapping[str, str] | None = None) -> list[int]:
    """The table's versions still in its log, oldest first."""
    return sorted(c.version for c in commits(table_uri, storage_options))


def last_commit_time(
    table_uri: str, storage_options: Mapping[str, str] | None = None, *, data_only: bool = False
) -> datetime | None:
    """When the table last changed (with ``data_only``: last changed rows); None when there is no such commit."""
    dt = open_table(table_uri, storage_options)
    if dt is None:
        return None
    limit = 20
    while True:
        page = dt.history(limit)
        for info in page:
            if not data_only or info.get("operation") in DATA_OPERATIONS:
                return _commit(info).timestamp
        if len(page) < limit:
            return None
        limit *= 4


def read_version(
    table_uri: str,
    version: int | None = None,
    *,
    columns: list[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pa.Table:
    """The table's rows as of ``version`` (latest when None)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    options = dict(storage_options) if storage_options else None
    try:
        dt = DeltaTable(table_uri, version=version, storage_options=options)
    except DeltaError as exc:
        raise LookupError(
            f"cannot read version {version} of Delta table {table_uri} (removed by log cleanup, or not written "
            f"yet?): {exc}"
        ) from exc
    return dt.to_pyarrow_table(columns=columns)


def recorded_data_loss(
    table_uri: str, storage_options: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every data-loss gap recorded in the table's history, oldest first, each with the commit's version."""
    out = []
    for c in reversed(commits(table_uri, storage_options)):
        out.extend({**gap, "version": c.version} for gap in c.data_loss)
    return out


def _commit(info: Mapping[str, Any]) -> Commit:
    return Commit(
        version=int(info["version"]),
        timestamp=datetime.fromtimestamp(int(info["timestamp"]) / 1000, UTC),
        operation=str(info.get("operation", "")),
        metrics=dict(info.get("operationMetrics") or {}),
        custom={k: v for k, v in info.items() if k not in _COMMIT_KEYS},
    )
