"""Sampler state in a Delta table, saved once per silver version.

The table ``<lake root>/<pipeline>/sampler_state`` holds one row per saved state: the silver version the state
covers (every silver row up to and including that table version has been offered to the sampler), the state
as JSON (members, keys, counters, RNG state; see :meth:`rt_training.sampling.base.Reservoir.state`), its
sha256, and when it was saved.

Exactly once: each commit also carries a Delta app transaction ``(app_id, silver_version)``. :meth:`save` reads
that version and commits through the same ``DeltaTable`` handle; a state for a silver version the table
already covers is not written again (a retried run recomputes the same state from the same inputs, so the
stored one stands). A concurrent writer of the same table then fails its commit instead of duplicating it.

Rows accumulate (a full state per version); :meth:`SamplerStateStore.prune` deletes all but the newest ones and
the lake's vacuum reclaims their files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TABLE_NAME = "sampler_state"


def sampler_state_uri(pipeline: str, lake_root: str | Path | None = None) -> str:
    """``<lake root>/<pipeline>/sampler_state``, the root as :func:`rt_training.lake.tables.lake_root` resolves it.

    Examples
    --------
    >>> sampler_state_uri("orders", "/lake")
    '/lake/orders/sampler_state'
    """
    from rt_training.lake.tables import table_uri

    return table_uri(pipeline, TABLE_NAME, lake_root)


@dataclass(frozen=True)
class StoredState:
    """One saved state: the silver version it covers, the state, when it was saved, the Delta version."""

    silver_version: int
    state: dict[str, Any]
    saved_at: datetime
    table_version: int


@dataclass(frozen=True)
class SaveResult:
    """Outcome of :meth:`SamplerStateStore.save`: ``saved`` is False when the version was already covered."""

    saved: bool
    silver_version: int
    covered_version: int | None
    table_version: int | None


class SamplerStateStore:
    """Saves and loads sampler states in a Delta table, at most once per silver version.

    Parameters
    ----------
    table_uri
        The Delta table (a local path or an object-store URI).
    app_id
        The Delta app transaction id that records the covered silver version.
    storage_options
        Passed to deltalake for object stores.
    """

    def __init__(
        self,
        table_uri: str | Path,
        *,
        app_id: str = TABLE_NAME,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.table_uri = str(table_uri)
        self.app_id = app_id
        self.storage_options = storage_options

    @classmethod
    def for_pipeline(
        cls,
        pipeline: str,
        lake_root: str | Path | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> SamplerStateStore:
        """The store at the lake layout's place for ``pipeline``, app id ``<pipeline>/sampler_state``."""
        return cls(
            sampler_state_uri(pipeline, lake_root),
            app_id=f"{pipeline}/{TABLE_NAME}",
            storage_options=storage_options,
        )

    def _open(self) -> Any | None:
        from rt_training.lake.tables import open_table

        return open_table(self.table_uri, self.storage_options)

    def covered_version(self) -> int | None:
        """The newest silver version with a saved state, or ``None`` when nothing is saved yet."""
        table = self._open()
        return None if table is None else table.transaction_version(self.app_id)

    def save(self, state: dict[str, Any], silver_version: int) -> SaveResult:
        """Append ``state`` as covering ``silver_version``, unless the table already covers that version.

        Raises
        ------
        ValueError
            When the state is not JSON (NaN or infinity included) or the version is negative.
        """
        import pyarrow as pa
        from deltalake import CommitProperties, Transaction, write_deltalake

        if int(silver_version) < 0:
            raise ValueError(f"silver_version must be >= 0, got {silver_version}")
        try:
            text = json.dumps(state, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sampler state for {self.table_uri} is not plain JSON: {exc}") from exc
        table = self._open()
        covered = None if table is None else table.transaction_version(self.app_id)
        if covered is not None and silver_version <= covered:
            return SaveResult(False, int(silver_version), covered, None)
        row = pa.table(
            {
                "silver_version": pa.array([int(silver_version)], pa.int64()),
                "saved_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
                "state_sha256": pa.array([hashlib.sha256(text.encode()).hexdigest()], pa.string()),
                "state_json": pa.array([text], pa.string()),
            }
        )
        commit = CommitProperties(app_transactions=[Transaction(self.app_id, int(silver_version))])
        write_deltalake(
            table if table is not None else self.table_uri,
            row,
            mode="append",
            commit_properties=commit,
            storage_options=None if table is not None else self.storage_options,
        )
        written = self._open()
        assert written is not None
        return SaveResult(True, int(silver_version), covered, written.version())

    def load_latest(self) -> StoredState | None:
        """The state with the highest silver version, or ``None`` when the table does not exist yet.

        Raises
        ------
        ValueError
            When the stored JSON does not match its sha256 (a damaged row: restore the table to an earlier
            version or delete the row, then rerun).
        """
        import pyarrow.compute as pc

        table = self._open()
        if table is None:
            return None
        version = table.transaction_version(self.app_id)
        if version is None:
            versions = table.to_pyarrow_table(columns=["silver_version"]).column("silver_version")
            if len(versions) == 0:
                return None
            version = pc.max(versions).as_py()
        rows = table.to_pyarrow_table(filters=[("silver_version", "=", int(version))])
        if rows.num_rows == 0:
            return None
        row = rows.slice(rows.num_rows - 1).to_pylist()[0]
        text = row["state_json"]
        if hashlib.sha256(text.encode()).hexdigest() != row["state_sha256"]:
            raise ValueError(
                f"sampler state for silver version {version} in {self.table_uri} does not match its sha256"
            )
        return StoredState(int(version), json.loads(text), row["saved_at"], table.version())

    def prune(self, keep_last: int = 3) -> int:
        """Delete all but the ``keep_last`` newest states; returns the number of rows deleted."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        table = self._open()
        if table is None:
            return 0
        column = table.to_pyarrow_table(columns=["silver_version"]).column("silver_version")
        versions = sorted(set(column.to_pylist()), reverse=True)
        if len(versions) <= keep_last:
            return 0
        metrics = table.delete(predicate=f"silver_version < {int(versions[keep_last - 1])}")
        return int(metrics.get("num_deleted_rows", 0))
