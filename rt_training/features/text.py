"""Text features: token ids and mask from the feature's tokenizer (:mod:`rt_training.features.tokenizers`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from rt_training.features.encoders import FitNote, Group
from rt_training.features.inputs import MASK_SUFFIX, InputInfo
from rt_training.features.tokenizers import TextTokenizer, fit_tokenizer, tokenizer_from_dict
from rt_training.spec.models import FieldSpec, TextFeature


@dataclass(frozen=True)
class TextEncoder:
    """int64 ``[N, max_length]`` token ids (0: padding) and the bool mask, from the feature's tokenizer."""

    group: ClassVar[Group] = "text"
    signature_keys: ClassVar[tuple[str, ...]] = ("tokenizer",)
    feature: TextFeature
    field: FieldSpec
    tokenizer: TextTokenizer

    @classmethod
    def fit(
        cls,
        feature: TextFeature,
        field: FieldSpec,
        column: pa.Array,
        previous: TextEncoder | None,
        *,
        refit: bool,
        seed: int,
    ) -> tuple[TextEncoder, FitNote]:
        """Train the tokenizer on ``column`` (seeded), or keep ``previous``'s: a tokenizer is never refitted
        on a warm start, since that would renumber every token the model has learned."""
        tokenizer = (
            previous.tokenizer if previous is not None else fit_tokenizer(feature.tokenizer, column, seed)
        )
        return cls(feature, field, tokenizer), FitNote()

    def featurize(self, column: pa.Array) -> dict[str, np.ndarray]:
        ids, mask = self.tokenizer.encode_batch(column, self.feature.max_length, self.feature.truncation)
        return {self.feature.name: ids, self.feature.name + MASK_SUFFIX: mask}

    @property
    def input_info(self) -> InputInfo:
        return InputInfo(
            self.feature.name, "text", size=self.tokenizer.vocab_size, max_length=self.feature.max_length
        )

    def fitted_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    @classmethod
    def from_parts(cls, feature: TextFeature, field: FieldSpec, d: dict[str, Any]) -> TextEncoder:
        return cls(feature, field, tokenizer_from_dict(d["tokenizer"]))

    def describe(self) -> dict[str, Any]:
        return {"tokenizer": self.feature.tokenizer.kind, "tokenizer_vocab_size": self.tokenizer.vocab_size}
