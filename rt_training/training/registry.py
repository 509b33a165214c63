"""The model registry: an append-only Delta table of events; the champion is a pointer replayed from it.

Table ``<lake>/<pipeline>/model_registry``, one row per event: ``registered`` (a checkpoint exists and was
scored), ``promoted`` (it became champion), ``rejected`` (the gate said no, and why) and ``rolled_back`` (the
champion moved back to the one before). Each event is one Delta commit, so a champion move is atomic and the
whole history stays readable (and time-travelable).

The pointer: replay ``promoted`` (push) and ``rolled_back`` (pop) events in order; the top of the stack is the
champion and the entries below it are the earlier champions a rollback returns to.

Ordering and concurrency: each commit carries a Delta app transaction ``(model_registry, seq)`` next to a
``seq`` column. A writer reads the last ``seq`` and commits ``seq + 1`` through the same table handle, so two
concurrent writers cannot both append the same ``seq``: the second gets ``CommitFailedError`` (and should
re-read and retry).

Errors: :class:`RegistryError` for an unknown checkpoint, promoting the current champion, a rollback with no
earlier champion, or no loadable champion at all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from rt_training.training.checkpoints import CheckpointError, SavedCheckpoint, load_checkpoint
from rt_training.training.metrics import HOLDOUT, METRIC_SPLIT_KEY, VALIDATION

log = logging.getLogger(__name__)

REGISTRY_TABLE = "model_registry"
_APP_ID = "rt_training/model_registry"

Event = Literal["registered", "promoted", "rejected", "rolled_back"]

SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("event", pa.string()),
        ("checkpoint_id", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("metric_name", pa.string()),
        ("metric_value", pa.float64()),
        ("champion_metric_value", pa.float64()),
        ("reason", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("lineage", pa.string()),
    ]
)


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message names the table and the checkpoint."""


@dataclass(frozen=True)
class Candidate:
    """A checkpoint offered to the registry: where it is, its hash, its metric and lineage."""

    checkpoint_id: str
    path: str
    sha256: str
    metric_name: str
    metric_value: float | None
    lineage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_saved(
        cls, saved: SavedCheckpoint, metric_name: str, metric_value: float | None, lineage: dict[str, Any]
    ) -> Candidate:
        return cls(saved.id, saved.path, saved.sha256, metric_name, metric_value, lineage)


@dataclass(frozen=True)
class RegistryEvent:
    """One row of the registry's history."""

    seq: int
    event: Event
    checkpoint_id: str
    path: str
    sha256: str
    metric_name: str | None
    metric_value: float | None
    champion_metric_value: float | None
    reason: str
    timestamp: dt.datetime
    lineage: dict[str, Any]


@dataclass(frozen=True)
class LoadedChampion:
    """The champion's verified checkpoint; ``fell_back`` when the current champion could not be loaded and an
    earlier one was, with ``problems`` saying what was wrong with each one skipped."""

    entry: RegistryEvent
    checkpoint: dict[str, Any]
    fell_back: bool
    problems: list[str]


class ModelRegistry:
    """Champion/candidate history for one pipeline, stored as a Delta table at ``uri``."""

    def __init__(self, uri: str | os.PathLike[str], storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri)
        self.storage_options = storage_options

    @classmethod
    def for_pipeline(cls, lake_root: str | os.PathLike[str], pipeline: str) -> ModelRegistry:
        return cls(Path(lake_root) / pipeline / REGISTRY_TABLE)

    # -- reading -------------------------------------------------------------------------------------------
    def _table(self) -> Any:
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options):
            return None
        return DeltaTable(self.uri, storage_options=self.storage_options)

    def history(self) -> list[RegistryEvent]:
        """All events, oldest first."""
        table = self._table()
        if table is None:
            return []
        rows = table.to_pyarrow_table().sort_by("seq").to_pylist()
        return [RegistryEvent(**{**r, "lineage": json.loads(r["lineage"] or "{}")}) for r in rows]

    @staticmethod
    def _champion_stack(events: list[RegistryEvent]) -> list[RegistryEvent]:
        stack: list[RegistryEvent] = []
        for e in events:
            if e.event == "promoted":
                stack.append(e)
            elif e.event == "rolled_back":
                stack.pop()
        return stack

    def champion_stack(self) -> list[RegistryEvent]:
        """The current champion (last) and the earlier champions a rollback would return to, in order."""
        return self._champion_stack(self.history())

    def champion(self) -> RegistryEvent | None:
        """The current champion's ``promoted`` event, or ``None`` before the first promotion."""
        stack = self.champion_stack()
        return stack[-1] if stack else None

    def registered(self, checkpoint_id: str) -> RegistryEvent:
        """The ``registered`` event of a checkpoint."""
        for e in self.history():
            if e.event == "registered" and e.checkpoint_id == checkpoint_id:
                return e
        raise RegistryError(
            f"checkpoint {checkpoint_id!r} is not registered in {self.uri}; register it first"
        )

    # -- writing -------------------------------------------------------------------------------------------
    def _append(
        self,
        event: Event,
        checkpoint_id: str,
        path: str,
        sha256: str,
        reason: str,
        metric_name: str | None = None,
        metric_value: float | None = None,
        champion_metric_value: float | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> RegistryEvent:
        from deltalake import CommitProperties, Transaction, write_deltalake

        table = self._table()
        last = table.transaction_version(_APP_ID) if table is not None else None
        seq = 0 if last is None else last + 1
        row = RegistryEvent(
            seq=seq,
            event=event,
            checkpoint_id=checkpoint_id,
            path=path,
            sha256=sha256,
            metric_name=metric_name,
            metric_value=metric_value,
            champion_metric_value=champion_metric_value,
            reason=reason,
            timestamp=dt.datetime.now(dt.UTC),
            lineage=lineage or {},
        )
        data = pa.Table.from_pylist(
            [{**row.__dict__, "lineage": json.dumps(row.lineage, sort_keys=True)}], schema=SCHEMA
        )
        commit = CommitProperties(app_transactions=[Transaction(app_id=_APP_ID, version=seq)])
        write_deltalake(
            table if table is not None else self.uri,
            data,
            mode="append",
            commit_properties=commit,
            storage_options=self.storage_options if table is None else None,
        )
        log.info("model registry %s: %s %s (%s)", self.uri, event, checkpoint_id, reason)
        return row

    def register(self, candidate: Candidate, reason: str = "trained") -> RegistryEvent:
        """Record a new checkpoint (its path, sha256, metric and lineage); it is not champion yet."""
        if any(
            e.event == "registered" and e.checkpoint_id == candidate.checkpoint_id for e in self.history()
        ):
            raise RegistryError(f"checkpoint {candidate.checkpoint_id!r} is already registered in {self.uri}")
        return self._append(
            "registered",
            candidate.checkpoint_id,
            candidate.path,
            candidate.sha256,
            reason,
            candidate.metric_name,
            candidate.metric_value,
            lineage=candidate.lineage,
        )

    def promote(
        self,
        checkpoint_id: str,
        reason: str,
        metric_value: float | None = None,
        champion_metric_value: float | None = None,
    ) -> RegistryEvent:
        """Make a registered checkpoint the champion (one commit).

        ``metric_value`` is the gate's, on its held-out window; without one (a hand promotion) the registered
        validation metric is kept. The event's lineage records which (``metric_split``).
        """
        reg = self.registered(checkpoint_id)
        current = self.champion()
        if current is not None and current.checkpoint_id == checkpoint_id:
            raise RegistryError(f"checkpoint {checkpoint_id!r} is already the champion in {self.uri}")
        return self._append(
            "promoted",
            checkpoint_id,
            reg.path,
            reg.sha256,
            reason,
            reg.metric_name,
            metric_value if metric_value is not None else reg.metric_value,
            champion_metric_value,
            {**reg.lineage, METRIC_SPLIT_KEY: HOLDOUT if metric_value is not None else VALIDATION},
        )

    def reject(
        self,
        checkpoint_id: str,
        reason: str,
        metric_value: float | None = None,
        champion_metric_value: float | None = None,
    ) -> RegistryEvent:
        """Record that the gate refused a registered checkpoint, and why; the champion does not move."""
        reg = self.registered(checkpoint_id)
        return self._append(
            "rejected",
            checkpoint_id,
            reg.path,
            reg.sha256,
            reason,
            reg.metric_name,
            metric_value,
            champion_metric_value,
            {**reg.lineage, METRIC_SPLIT_KEY: HOLDOUT} if metric_value is not None else reg.lineage,
        )

    def rollback(self, reason: str = "manual rollback") -> RegistryEvent:
        """Move the champion back to the previous one (one commit); raises when there is none."""
        stack = self.champion_stack()
        if len(stack) < 2:
            raise RegistryError(
                f"no previous champion to roll back to in {self.uri} "
                f"({'one champion' if stack else 'no champion'} so far)"
            )
        current, previous = stack[-1], stack[-2]
        return self._append(
            "rolled_back",
            previous.checkpoint_id,
            previous.path,
            previous.sha256,
            f"{reason} (from {current.checkpoint_id})",
            previous.metric_name,
            previous.metric_value,
            current.metric_value,
            previous.lineage,
        )

    # -- loading -------------------------------------------------------------------------------------------
    def load_champion(self, map_location: str = "cpu") -> LoadedChampion | None:
        """The champion's checkpoint, sha256-verified against the registry; falls back to earlier champions.

        A missing or corrupt file is skipped with a warning naming it, and the next champion down the stack is
        tried. The registry itself is not changed: call :meth:`rollback` to move the pointer for good.
        Returns ``None`` when there has never been a champion; raises :class:`RegistryError` if none loads.
        """
        stack = self.champion_stack()
        if not stack:
            return None
        problems: list[str] = []
        for entry in reversed(stack):
            try:
                checkpoint = load_checkpoint(
                    entry.path, expected_sha256=entry.sha256, map_location=map_location
                )
            except CheckpointError as exc:
                problems.append(f"{entry.checkpoint_id}: {exc}")
                log.warning(
                    "champion %s cannot be loaded, trying the previous one: %s", entry.checkpoint_id, exc
                )
                continue
            if problems:
                log.warning("fell back to earlier champion %s (%s)", entry.checkpoint_id, "; ".join(problems))
            return LoadedChampion(entry, checkpoint, fell_back=bool(problems), problems=problems)
        raise RegistryError(f"no champion in {self.uri} can be loaded: " + "; ".join(problems))
