"""What every reservoir sampler shares: the update contract, id and time arrays, and a serializable RNG.

A sampler keeps at most ``capacity`` members of an unbounded stream. Each member carries its id, its event
time (float seconds), its position in the stream (0-based arrival index) and a key. The sampler's whole
future depends only on its state, so :meth:`Reservoir.state` is everything a restarted process needs:
``from_state(s.state())`` continues the exact same sample.

The random generator is numpy's PCG64. Its 128-bit state is written as decimal strings so that the state is
plain JSON that any parser reads without losing digits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np

IdKind = Literal["int", "str"]
STATE_FORMAT = 1


@dataclass(frozen=True)
class UpdateResult:
    """The net change of membership caused by one batch.

    An item of the batch that entered and left again within the same batch appears in neither array: the
    result says how the member set before the batch differs from the member set after it.

    Attributes
    ----------
    added_ids
        Ids of batch items that are members after the update, in batch order.
    added_index
        Their positions in the batch arrays (``ids[added_index] == added_ids``), to pick their rows.
    evicted_ids
        Ids of members from before the batch that are no longer members.
    evicted_times
        The event times of the evicted members (a replay buffer feeds on them).
    """

    added_ids: np.ndarray
    added_index: np.ndarray
    evicted_ids: np.ndarray
    evicted_times: np.ndarray


def id_kind_of(ids: np.ndarray) -> IdKind:
    """Classify an id array as integer or string ids; anything else is a ``TypeError``."""
    if ids.dtype.kind in "iu":
        return "int"
    if ids.dtype.kind == "U" or ids.dtype == object:
        return "str"
    raise TypeError(f"ids must be an int64 or str array, got dtype {ids.dtype}")


def as_stored_ids(ids: np.ndarray, kind: IdKind) -> np.ndarray:
    """Convert (a selection of) batch ids to the member array dtype: int64, or object holding Python ``str``."""
    if kind == "int":
        if ids.dtype.kind == "u" and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
            raise ValueError("ids do not fit in int64")
        return ids.astype(np.int64, copy=False)
    out = ids.astype(object)
    for value in out:
        if not isinstance(value, str):
            raise TypeError(f"string ids must all be str, found {type(value).__name__} {value!r}")
    return out


def empty_ids(kind: IdKind | None) -> np.ndarray:
    return np.empty(0, dtype=np.int64 if kind in (None, "int") else object)


def check_batch(
    ids: Any, times: Any, weights: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate one batch: equal lengths, finite times, finite non-negative weights.

    Raises
    ------
    ValueError
        Naming the first offending position and value, so the caller can find the row.
    """
    ids = np.asarray(ids)
    times = np.asarray(times, dtype=np.float64)
    if ids.ndim != 1 or times.ndim != 1 or len(ids) != len(times):
        raise ValueError(
            f"ids and times must be 1-d arrays of equal length, got {ids.shape} and {times.shape}"
        )
    if not np.isfinite(times).all():
        bad = ~np.isfinite(times)
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"times must be finite seconds; position {i} holds {times[i]!r} ({int(bad.sum())} bad)"
        )
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != times.shape:
            raise ValueError(f"weights must match ids in length, got {weights.shape} for {times.shape}")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            bad = ~np.isfinite(weights) | (weights < 0)
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"weights must be finite and >= 0; position {i} holds {weights[i]!r} ({int(bad.sum())} bad)"
            )
    return ids, times, weights


def make_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state as JSON-safe values (128-bit integers become decimal strings)."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators are serializable here, got {s['bit_generator']}")
    return {
        "bit_generator": "PCG64",
        "state": str(s["state"]["state"]),
        "inc": str(s["state"]["inc"]),
        "has_uint32": int(s["has_uint32"]),
        "uinteger": int(s["uinteger"]),
    }


def rng_from_json(data: dict[str, Any]) -> np.random.Generator:
    """Inverse of :func:`rng_to_json`."""
    if data.get("bit_generator") != "PCG64":
        raise ValueError(f"RNG state must be PCG64, got {data.get('bit_generator')!r}")
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(data["state"]), "inc": int(data["inc"])},
        "has_uint32": int(data["has_uint32"]),
        "uinteger": int(data["uinteger"]),
    }
    return np.random.Generator(bit_generator)


class Reservoir(ABC):
    """A fixed-capacity sample of a stream, updated one batch at a time.

    Parameters
    ----------
    capacity
        Maximum number of members.
    seed
        Seed of the PCG64 generator; the same seed and the same stream give the same sample.
    """

    kind: ClassVar[str]

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self._rng = make_rng(seed)
        self._id_kind: IdKind | None = None
        self._ids = empty_ids(None)
        self._times = np.empty(0, dtype=np.float64)
        self._positions = np.empty(0, dtype=np.int64)
        self._keys = np.empty(0, dtype=np.float64)
        self._items_seen = 0
        self._total_weight = 0.0

    # -- read-only views -------------------------------------------------------------------
    @property
    def members(self) -> np.ndarray:
        """Ids of the current members (int64, or object array of str)."""
        return self._ids.copy()

    @property
    def times(self) -> np.ndarray:
        """Event time (seconds) of each member, aligned with :attr:`members`."""
        return self._times.copy()

    @property
    def positions(self) -> np.ndarray:
        """0-based arrival index of each member in the stream, aligned with :attr:`members`."""
        return self._positions.copy()

    @property
    def keys(self) -> np.ndarray:
        """The ordering key of each member, aligned with :attr:`members` (see the subclass for its meaning)."""
        return self._keys.copy()

    @property
    def items_seen(self) -> int:
        """Number of stream items offered so far."""
        return self._items_seen

    @property
    def total_weight(self) -> float:
        """Sum of the weights offered so far (each item counts 1 when no weights are given)."""
        return self._total_weight

    @property
    def rng_state(self) -> dict[str, Any]:
        return rng_to_json(self._rng)

    def __len__(self) -> int:
        return len(self._ids)

    # -- updates ---------------------------------------------------------------------------
    def update(self, ids: Any, times: Any, weights: Any | None = None) -> UpdateResult:
        """Offer a batch of items to the sample.

        Parameters
        ----------
        ids
            int64 or str ids, unique across the stream.
        times
            Event times in seconds (finite floats).
        weights
            Optional non-negative finite weights (how a sampler uses them is its own business).

        Returns
        -------
        UpdateResult
            The net change of membership.
        """
        ids, times, weights = self.check(ids, times, weights)
        if len(ids) == 0:
            empty = empty_ids(self._id_kind)
            return UpdateResult(empty, np.empty(0, np.int64), empty.copy(), np.empty(0, np.float64))
        if self._id_kind is None:
            self._id_kind = id_kind_of(ids)
            self._ids = empty_ids(self._id_kind)
        result = self._update(ids, times, weights)
        self._items_seen += len(ids)
        self._total_weight += float(weights.sum()) if weights is not None else float(len(ids))
        return result

    def check(
        self, ids: Any, times: Any, weights: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validate a batch as :meth:`update` would, changing nothing; returns the arrays it would use.

        Raises
        ------
        ValueError, TypeError
            For unequal lengths, non-finite times or weights, negative weights, or ids of another kind
            than the sample's.
        """
        ids, times, weights = check_batch(ids, times, weights)
        if len(ids):
            kind = id_kind_of(ids)
            if self._id_kind is not None and kind != self._id_kind:
                raise TypeError(
                    f"this sample holds {self._id_kind} ids; a batch of {kind} ids cannot join it"
                )
        return ids, times, weights

    @abstractmethod
    def _update(self, ids: np.ndarray, times: np.ndarray, weights: np.ndarray | None) -> UpdateResult:
        """Apply a validated, non-empty batch; counters are advanced by the caller afterwards."""

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue this exact sample, as JSON-safe values."""
        return {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "capacity": self.capacity,
            "id_kind": self._id_kind,
            "ids": self._ids.tolist(),
            "times": self._times.tolist(),
            "positions": self._positions.tolist(),
            "keys": self._keys.tolist(),
            "items_seen": self._items_seen,
            "total_weight": self._total_weight,
            "rng": rng_to_json(self._rng),
            **self._extra_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a sampler from :meth:`state`; raises ``ValueError`` when the state is for another sampler."""
        if state.get("kind") != cls.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} sampler, not {cls.kind!r}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"sampler state format {state.get('format')!r} is not supported ({STATE_FORMAT})"
            )
        self = cls.__new__(cls)
        self.capacity = int(state["capacity"])
        self._id_kind = state["id_kind"]
        self._ids = (
            np.array(state["ids"], dtype=np.int64)
            if self._id_kind in (None, "int")
            else np.array(state["ids"], dtype=object)
        )
        self._times = np.array(state["times"], dtype=np.float64)
        self._positions = np.array(state["positions"], dtype=np.int64)
        self._keys = np.array(state["keys"], dtype=np.float64)
        self._items_seen = int(state["items_seen"])
        self._total_weight = float(state["total_weight"])
        self._rng = rng_from_json(state["rng"])
        self._restore_extra(state)
        return self

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _restore_extra(self, state: dict[str, Any]) -> None:
        return None
