"""Training data: a Delta table version → Arrow → the feature state's arrays → torch tensors, and seeded,
rank-sharded batches.

The hot path never touches pandas: ``DeltaTable(uri, version=v).to_pyarrow_table(columns=...)`` reads only the
fields the features, label and weights come from, and :meth:`FeatureState.featurize` turns them into one numpy
array per batch key (vectorized over Arrow buffers), each shared with a tensor without a copy. A training set of the sampling policy's capacity
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rt_training.features.inputs import MASK_SUFFIX
from rt_training.spec import PipelineSpec

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.features.state import FeatureState

SAMPLE_WEIGHT_COLUMN = "_sample_weight"
"""Optional per-row weight written by the sampler (importance / class-balance correction)."""


class TrainingDataError(ValueError):
    """A training set or holdout that cannot become tensors; the message names the table and column."""


@dataclass
class TrainingTensors:
    """Model inputs and targets for ``n`` rows, on one device.

    ``inputs`` is the batch dict a model's ``forward`` takes: one entry per feature key of
    :meth:`FeatureState.featurize <rt_training.features.state.FeatureState.featurize>` (``[n]`` or ``[n, ...]``).
    ``label`` is float32 ``[n]`` (binary, regression), int64 ``[n]`` (multiclass class index, -1 for a class
    the feature state does not know) or ``None`` (a language model's target is its text input).
    ``weight`` is float32 ``[n]`` or ``None`` (all rows weigh 1).
    """

    inputs: dict[str, torch.Tensor]
    label: torch.Tensor | None
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        if self.label is not None:
            return int(self.label.shape[0])
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TrainingTensors:
        return TrainingTensors(
            {k: fn(v) for k, v in self.inputs.items()},
            None if self.label is None else fn(self.label),
            None if self.weight is None else fn(self.weight),
        )

    def take(self, index: torch.Tensor) -> TrainingTensors:
        """Rows at ``index`` (a LongTensor on the same device)."""
        return self._map(lambda t: t.index_select(0, index))

    def rows(self, start: int, stop: int) -> TrainingTensors:
        """Rows ``start:stop`` as views (no copy)."""
        return self._map(lambda t: t[start:stop])

    def to(self, device: torch.device | str) -> TrainingTensors:
        return self._map(lambda t: t.to(device))

    def tokens(self, text_field: str) -> int:
        """Real (unmasked) tokens of ``text_field`` in these rows."""
        return int(self.inputs[text_field + MASK_SUFFIX].sum())

    def split(self, valid_fraction: float, seed: int) -> tuple[TrainingTensors, TrainingTensors]:
        """A seeded random (train, validation) split; the same on every rank, so validation needs no sync."""
        n = len(self)
        n_valid = round(n * valid_fraction) if n > 1 else 0
        device = next(iter(self.inputs.values())).device
        perm = torch.from_numpy(np.random.default_rng((seed, 0x5EED)).permutation(n)).to(device)
        return self.take(perm[n_valid:]), self.take(perm[:n_valid])


def columns_needed(spec: PipelineSpec) -> list[str]:
    """Silver columns the model's inputs and target are computed from (the sample-weight column is added when
    the table has it)."""
    label = [] if spec.label.field in spec.feature_fields else [spec.label.field]
    return [*spec.feature_fields, *label]


def _as_numpy(col: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if pa.types.is_boolean(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(dtype)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)


def tensors_from_arrow(
    table: pa.Table, spec: PipelineSpec, state: FeatureState, where: str = "table"
) -> TrainingTensors:
    """Turn an Arrow table of silver rows (the raw typed fields) into :class:`TrainingTensors` (CPU) with
    ``state``'s features.

    Raises :class:`TrainingDataError` for a missing column, a null label, a binary label other than 0/1, or a
    negative or non-finite sample weight.
    """
    missing = [c for c in columns_needed(spec) if c not in table.column_names]
    if missing:
        raise TrainingDataError(
            f"{where}: missing columns {missing} that spec {spec.name!r} needs (has {table.column_names})"
        )
    n = table.num_rows
    inputs = {name: _shared_tensor(values) for name, values in state.featurize(table).items()}
    label_values = None
    if spec.label.kind != "language_model":
        col = table.column(spec.label.field)
        if col.null_count:
            raise TrainingDataError(
                f"{where}: label {spec.label.field!r} has {col.null_count} null values; every training row "
                "needs a label (declare the label field required in the schema)"
            )
        label_values = state.encode_label(table)
        if spec.label.kind == "binary" and n and not np.isin(label_values, (0.0, 1.0)).all():
            bad = label_values[~np.isin(label_values, (0.0, 1.0))][0]
            raise TrainingDataError(
                f"{where}: binary label {spec.label.field!r} holds {bad}; expected 0 or 1"
            )
    weight = None
    if SAMPLE_WEIGHT_COLUMN in table.column_names:
        col = table.column(SAMPLE_WEIGHT_COLUMN)
        weight = _as_numpy(col, np.float32)
        if n and (col.null_count or not np.isfinite(weight).all() or weight.min() < 0):
            raise TrainingDataError(f"{where}: {SAMPLE_WEIGHT_COLUMN!r} must be finite and >= 0")
    return TrainingTensors(
        inputs,
        None if label_values is None else _shared_tensor(label_values),
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


def read_training_rows(
    uri: str, version: int | None, spec: PipelineSpec, storage_options: dict[str, str] | None = None
) -> pa.Table:
    """One training-set version as Arrow, only the columns the model needs (and the sample weights)."""
    table = _open_delta(uri, version, storage_options)
    present = set(table.schema().to_arrow().names)
    wanted = [*columns_needed(spec), SAMPLE_WEIGHT_COLUMN]
    missing = [c for c in columns_needed(spec) if c not in present]
    if missing:
        raise TrainingDataError(
            f"training set {uri} version {table.version()}: missing columns {missing} that spec {spec.name!r} "
            "needs; was it written with a different spec?"
        )
    return table.to_pyarrow_table(columns=[c for c in wanted if c in present])


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
