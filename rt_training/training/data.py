"""Training data: a Delta table version → Arrow → torch tensors, and seeded, rank-sharded batches.

The hot path never touches pandas: ``DeltaTable(uri, version=v).to_pyarrow_table(columns=...)`` reads only the
feature, label and weight columns, and each column becomes a numpy view (zero-copy for a single chunk without
nulls) that is copied once into a row-major feature matrix. A training set of the sampling policy's capacity
(tens of thousands of rows) fits in memory many times over, so batching is in-memory indexing: no DataLoader
and no worker processes. If you add DataLoader workers, use ``multiprocessing_context="spawn"``: deltalake in
a forked process panics (its tokio runtime does not survive ``fork``).

Sharding for DDP: every epoch draws one permutation from ``(seed, epoch)``, identical on all ranks; each rank
takes a disjoint, equal-size block of it (the ``n % world_size`` rows left over change every epoch), so all
ranks run the same number of steps and no gradient all-reduce waits for a rank that ran out of data.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rt_training.spec import PipelineSpec
from rt_training.training.models import FeatureInfo

if TYPE_CHECKING:
    from deltalake import DeltaTable

SAMPLE_WEIGHT_COLUMN = "_sample_weight"
"""Optional per-row weight written by the sampler (importance / class-balance correction)."""


class TrainingDataError(ValueError):
    """A training set or holdout that cannot become tensors; the message names the table and column."""


@dataclass
class TrainingTensors:
    """Model inputs and targets for ``n`` rows, on one device.

    ``numeric`` float32 ``[n, n_numeric]``, ``categorical`` int64 ``[n, n_categorical]``, ``label`` float32
    ``[n]`` and ``weight`` float32 ``[n]`` or ``None`` (all rows weigh 1).
    """

    numeric: torch.Tensor
    categorical: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: torch.Tensor) -> TrainingTensors:
        """Rows at ``index`` (a LongTensor on the same device)."""
        return TrainingTensors(
            self.numeric.index_select(0, index),
            self.categorical.index_select(0, index),
            self.label.index_select(0, index),
            None if self.weight is None else self.weight.index_select(0, index),
        )

    def rows(self, start: int, stop: int) -> TrainingTensors:
        """Rows ``start:stop`` as views (no copy)."""
        return TrainingTensors(
            self.numeric[start:stop],
            self.categorical[start:stop],
            self.label[start:stop],
            None if self.weight is None else self.weight[start:stop],
        )

    def to(self, device: torch.device | str) -> TrainingTensors:
        return TrainingTensors(
            self.numeric.to(device),
            self.categorical.to(device),
            self.label.to(device),
            None if self.weight is None else self.weight.to(device),
        )

    def split(self, valid_fraction: float, seed: int) -> tuple[TrainingTensors, TrainingTensors]:
        """A seeded random (train, validation) split; the same on every rank, so validation needs no sync."""
        n = len(self)
        n_valid = round(n * valid_fraction) if n > 1 else 0
        perm = torch.from_numpy(np.random.default_rng((seed, 0x5EED)).permutation(n)).to(self.label.device)
        return self.take(perm[n_valid:]), self.take(perm[:n_valid])


def columns_needed(spec: PipelineSpec, features: FeatureInfo | None = None) -> list[str]:
    """Feature and label columns the model reads (the sample-weight column is added when the table has it)."""
    features = features or FeatureInfo.from_spec(spec)
    return [*features.numeric_columns, *features.categorical_columns, spec.label.field]


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray:
    col = table.column(name)
    if col.null_count:
        raise TrainingDataError(
            f"{where}: column {name!r} has {col.null_count} null values; features, label and weights must be "
            "complete (check the cleaning step that writes silver)"
        )
    return col


def _as_numpy(col: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if pa.types.is_boolean(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(dtype)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)


def tensors_from_arrow(
    table: pa.Table, spec: PipelineSpec, features: FeatureInfo | None = None, where: str = "table"
) -> TrainingTensors:
    """Turn an Arrow table with silver feature columns into :class:`TrainingTensors` (CPU).

    Raises :class:`TrainingDataError` for a missing column, a null, a categorical index outside
    ``[0, cardinality)``, a binary label other than 0/1, or a negative or non-finite sample weight.
    """
    features = features or FeatureInfo.from_spec(spec)
    missing = [c for c in columns_needed(spec, features) if c not in table.column_names]
    if missing:
        raise TrainingDataError(
            f"{where}: missing columns {missing} that spec {spec.name!r} needs (has {table.column_names})"
        )
    n = table.num_rows
    numeric = np.empty((n, len(features.numeric)), dtype=np.float32)
    for j, name in enumerate(features.numeric_columns):
        numeric[:, j] = _as_numpy(_column(table, name, where), np.float32)
    categorical = np.empty((n, len(features.categorical)), dtype=np.int64)
    for j, (name, card) in enumerate(zip(features.categorical_columns, features.cardinalities, strict=True)):
        categorical[:, j] = _as_numpy(_column(table, name, where), np.int64)
        if n and (categorical[:, j].min() < 0 or categorical[:, j].max() >= card):
            bad = categorical[:, j][(categorical[:, j] < 0) | (categorical[:, j] >= card)][0]
            raise TrainingDataError(
                f"{where}: column {name!r} holds index {bad}, outside [0, {card}) for the spec's "
                "vocabulary or hash buckets; was silver written with a different spec?"
            )
    label = _as_numpy(_column(table, spec.label.field, where), np.float32)
    if spec.label.kind == "binary" and n and not np.isin(label, (0.0, 1.0)).all():
        bad = label[~np.isin(label, (0.0, 1.0))][0]
        raise TrainingDataError(f"{where}: binary label {spec.label.field!r} holds {bad}; expected 0 or 1")
    weight = None
    if SAMPLE_WEIGHT_COLUMN in table.column_names:
        weight = _as_numpy(_column(table, SAMPLE_WEIGHT_COLUMN, where), np.float32)
        if n and (not np.isfinite(weight).all() or weight.min() < 0):
            raise TrainingDataError(f"{where}: {SAMPLE_WEIGHT_COLUMN!r} must be finite and >= 0")
    return TrainingTensors(
        torch.from_numpy(numeric),
        torch.from_numpy(categorical),
        _shared_tensor(label),
        None if weight is None else _shared_tensor(weight),
    )


def _shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array``'s memory, even when it is a read-only view of an Arrow buffer.

    Training never writes into these tensors in place (batches are gathered copies), so sharing the
    Arrow buffer is safe and torch's warning about non-writable arrays does not apply.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _open_delta(uri: str, version: int | None, storage_options: dict[str, str] | None) -> DeltaTable:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, version=version, storage_options=storage_options)
    except TableNotFoundError as exc:
        raise TrainingDataError(f"no Delta table at {uri!r}: {exc}") from exc
    except Exception as exc:
        raise TrainingDataError(f"cannot open Delta table {uri!r} at version {version}: {exc}") from exc


def read_training_table(
    uri: str,
    version: int | None,
    columns: list[str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> pa.Table:
    """One version of a Delta table as Arrow (time travel: the rows exactly as that version held them)."""
    return _open_delta(uri, version, storage_options).to_pyarrow_table(columns=columns)


def read_training_set(
    uri: str,
    version: int | None,
    spec: PipelineSpec,
    features: FeatureInfo | None = None,
    storage_options: dict[str, str] | None = None,
) -> TrainingTensors:
    """Tensors for one training-set version, reading only the columns the model needs."""
    features = features or FeatureInfo.from_spec(spec)
    table = _open_delta(uri, version, storage_options)
    present = set(table.schema().to_arrow().names)
    wanted = [*columns_needed(spec, features), SAMPLE_WEIGHT_COLUMN]
    arrow = table.to_pyarrow_table(columns=[c for c in wanted if c in present])
    return tensors_from_arrow(arrow, spec, features, where=f"training set {uri} version {table.version()}")


def read_holdout(
    uri: str,
    spec: PipelineSpec,
    after: dt.datetime | None = None,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pa.Table:
    """Silver rows with event time after ``after`` (all rows when ``None``): the gate's held-out window."""
    table = _open_delta(uri, version, storage_options)
    cols = [*columns_needed(spec), spec.time_field]
    dataset = table.to_pyarrow_dataset()
    if after is None:
        return dataset.to_table(columns=cols)
    if after.tzinfo is None:
        raise ValueError(f"holdout 'after' time {after} needs a timezone (use UTC)")
    ts_type = dataset.schema.field(spec.time_field).type
    return dataset.to_table(columns=cols, filter=pc.field(spec.time_field) > pa.scalar(after, type=ts_type))


class EpochBatches:
    """Seeded batches of row indices for one rank: a fresh permutation every epoch, sharded across ranks.

    ``batch_size`` is the global batch; each of ``world_size`` ranks takes ``batch_size // world_size`` rows
    per step, so one step sees the same number of rows whatever the number of ranks.
    """

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n_rows < world_size:
            raise TrainingDataError(f"{n_rows} training rows cannot be shared by {world_size} ranks")
        self.n_rows, self.seed, self.rank, self.world_size = n_rows, seed, rank, world_size
        self.shard_rows = n_rows // world_size
        self.local_batch = max(1, batch_size // world_size)

    def __len__(self) -> int:
        """Steps per epoch (the last batch may be short; it is the same length on every rank)."""
        return -(-self.shard_rows // self.local_batch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of all rows, identical on every rank."""
        return torch.from_numpy(np.random.default_rng((self.seed, epoch)).permutation(self.n_rows))

    def shard(self, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """This rank's rows for ``epoch``, in the order its batches take them (on ``device``)."""
        start = self.rank * self.shard_rows
        return self.permutation(epoch)[start : start + self.shard_rows].to(device)

    def batches(self, epoch: int, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        """Index tensors of this rank's batches for ``epoch``: ``local_batch``-row slices of its shard."""
        yield from self.shard(epoch, device).split(self.local_batch)
