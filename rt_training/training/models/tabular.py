"""The ``mlp`` and ``logistic`` built-ins: every input flattened to one vector per row, then an MLP head.

:class:`InputEncoder` turns the batch dict into ``[B, width]``, one slice per input in ``state.inputs`` order:

- numeric: the value (and its ``__missing`` indicator), one column each;
- categorical: an ``embedding_dim`` embedding of the index;
- text and id sequences: the mean of the ``embedding_dim`` embeddings of the positions the mask keeps (a bag
  of tokens or items), unless the model gives that text its own encoder (``text_classifier``);
- float sequences: the mean of the kept values and ``log1p`` of how many there are;
- vectors: as they are.

:class:`FeatureMLP` puts a head on it. For a spec with numeric and categorical inputs only, this is the
embedding-per-categorical MLP of the tabular demo, layer for layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rt_training.features.inputs import MASK_SUFFIX, MISSING_SUFFIX, InputInfo

_EMBEDDED = ("categorical", "text", "sequence_ids")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``values`` (``[B, L]`` or ``[B, L, D]``) where ``mask`` (bool ``[B, L]``) is True.

    A row with no position kept gives zeros.
    """
    weights = mask.to(values.dtype)
    if values.dim() == 3:
        weights = weights.unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class InputEncoder(nn.Module):
    """The batch dict as one ``[B, width]`` tensor (see the module docstring for each input kind).

    Parameters
    ----------
    inputs
        The inputs, in the order their slices appear.
    embedding_dim
        Width of the embedding of a categorical, and of the pooled embedding of a text or id sequence.
    text_encoders
        Optional encoder per text input name: a module taking ``(ids, mask)`` and returning ``[B, width]``, with
        its output width in ``text_widths``; those texts are not bag-of-token pooled.
    text_widths
        Output width of each module in ``text_encoders``.
    """

    def __init__(
        self,
        inputs: Sequence[InputInfo],
        embedding_dim: int,
        text_encoders: Mapping[str, nn.Module] | None = None,
        text_widths: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.inputs = tuple(inputs)
        text_encoders = dict(text_encoders or {})
        text_widths = dict(text_widths or {})
        self.embeddings = nn.ModuleDict(
            {
                i.name: nn.Embedding(i.size, embedding_dim)
                for i in self.inputs
                if i.kind in _EMBEDDED and i.name not in text_encoders
            }
        )
        self.text_encoders = nn.ModuleDict(text_encoders)
        width = 0
        for info in self.inputs:
            if info.name in text_encoders:
                width += text_widths[info.name]
            elif info.kind == "numeric":
                width += 2 if info.missing_indicator else 1
            elif info.kind in _EMBEDDED:
                width += embedding_dim
            elif info.kind == "sequence_values":
                width += 2
            elif info.kind == "vector":
                width += info.size
            else:
                raise ValueError(f"input {info.name!r} has kind {info.kind!r}, which no built-in model reads")
        self.width = width

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for info in self.inputs:
            name, kind = info.name, info.kind
            value = batch[name]
            if kind == "numeric":
                parts.append(value.unsqueeze(1))
                if info.missing_indicator:
                    parts.append(batch[name + MISSING_SUFFIX].unsqueeze(1))
            elif kind == "categorical":
                parts.append(self.embeddings[name](value))
            elif name in self.text_encoders:
                parts.append(self.text_encoders[name](value, batch[name + MASK_SUFFIX]))
            elif kind in ("text", "sequence_ids"):
                parts.append(masked_mean(self.embeddings[name](value), batch[name + MASK_SUFFIX]))
            elif kind == "sequence_values":
                mask = batch[name + MASK_SUFFIX]
                count = mask.sum(1, dtype=value.dtype)
                parts.append(torch.stack([masked_mean(value, mask), torch.log1p(count)], dim=1))
            else:
                parts.append(value)
        return torch.cat(parts, dim=1)


def mlp_head(width: int, hidden: Sequence[int], dropout: float, outputs: int) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden size, then a ``Linear`` to ``outputs``."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


class FeatureMLP(nn.Module):
    """:class:`InputEncoder`, then :func:`mlp_head`.

    ``num_classes`` None: one output per row, ``[B]`` (a logit for a binary label, the value for regression);
    else ``[B, num_classes]`` logits. With ``hidden=[]`` and ``embedding_dim=1`` this is logistic regression
    on one-hot categoricals (and bags of tokens) plus the numeric inputs: the ``logistic`` built-in.
    """

    def __init__(
        self,
        inputs: Sequence[InputInfo],
        hidden: Sequence[int],
        embedding_dim: int,
        dropout: float = 0.0,
        num_classes: int | None = None,
        text_encoders: Mapping[str, nn.Module] | None = None,
        text_widths: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = InputEncoder(inputs, embedding_dim, text_encoders, text_widths)
        self.squeeze = num_classes is None
        self.head = mlp_head(self.encoder.width, hidden, dropout, 1 if num_classes is None else num_classes)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.head(self.encoder(batch))
        return out.squeeze(-1) if self.squeeze else out
