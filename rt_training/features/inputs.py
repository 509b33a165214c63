"""What a model builder knows about its inputs: one :class:`InputInfo` per feature of the batch dict.

A :class:`~rt_training.features.state.FeatureState` lists them in input order (``state.inputs``); built-in
models and user factories size their embeddings and layers from them, never from the spec alone, because
learned vocabularies and tokenizers get their sizes from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InputKind = Literal["numeric", "categorical", "text", "sequence_ids", "sequence_values", "vector"]

MASK_SUFFIX = "__mask"
"""``batch[name + MASK_SUFFIX]``: bool ``[B, max_length]``, True where a text or sequence position holds a value."""
MISSING_SUFFIX = "__missing"
"""``batch[name + MISSING_SUFFIX]``: float ``[B]``, 1.0 where a numeric value was missing (``missing_indicator``)."""


@dataclass(frozen=True)
class InputInfo:
    """One input of the batch dict.

    ``name`` is the feature's field name and its key in the batch. ``size`` is the number of embedding rows for
    ``categorical`` and ``sequence_ids`` (index 0 is null/padding), the tokenizer's vocabulary for ``text``, the
    dimension for ``vector`` and 1 otherwise. ``max_length`` is the padded length of ``text`` and sequences
    (their batch entry is ``[B, max_length]`` with a mask under ``name + "__mask"``). ``missing_indicator``: a
    numeric input that also has ``name + "__missing"``.
    """

    name: str
    kind: InputKind
    size: int = 1
    max_length: int | None = None
    missing_indicator: bool = False

    @property
    def masked(self) -> bool:
        """Whether the batch carries ``name + "__mask"`` for this input."""
        return self.kind in ("text", "sequence_ids", "sequence_values")
