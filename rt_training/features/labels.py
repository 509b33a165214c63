"""The label as the objective reads it.

``binary`` and ``regression``: float32 ``[N]`` (a null label is NaN). ``multiclass``: int64 ``[N]`` class
index; classes are learned from the data (most frequent first, ties in value order, values as text like a
vocabulary), grown by appending new ones at a warm start so an old class keeps its output row; a class the
state does not know (or a null) is -1. ``language_model``: no label array, the objective reads the text
feature's ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.features.vocabulary import as_text, ranked_values
from rt_training.spec.models import LabelSpec


@dataclass(frozen=True)
class LabelEncoder:
    """The label spec and, for ``multiclass``, the learned classes in index order."""

    spec: LabelSpec
    classes: tuple[str, ...] | None = None

    @classmethod
    def fit(
        cls, spec: LabelSpec, column: pa.Array | None, previous: LabelEncoder | None
    ) -> tuple[LabelEncoder, int]:
        """Learn the classes of ``column`` (multiclass), or append the new ones to ``previous``'s; and the
        number appended (0 without ``previous``). ``previous`` must be for the same field and kind; ``column``
        is only read for ``multiclass``."""
        if spec.kind != "multiclass" or column is None:
            return cls(spec), 0
        known = () if previous is None or previous.classes is None else previous.classes
        added = tuple(ranked_values(as_text(column), 1, exclude=known))
        return cls(spec, known + added), 0 if previous is None else len(added)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (multiclass), None for other kinds."""
        return None if self.classes is None else len(self.classes)

    def encode(self, column: pa.Array) -> np.ndarray | None:
        """The label array of ``column`` (see the module docstring)."""
        if self.spec.kind == "language_model":
            return None
        if self.classes is not None:
            index = pc.index_in(as_text(column), value_set=pa.array(self.classes, pa.string()))
            return index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see :meth:`from_dict`)."""
        return {
            "spec": self.spec.model_dump(mode="json"),
            "classes": None if self.classes is None else list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelEncoder:
        """The label encoder :meth:`to_dict` wrote."""
        classes = d["classes"]
        return cls(LabelSpec.model_validate(d["spec"]), None if classes is None else tuple(classes))
