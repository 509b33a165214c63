"""The ``causal_lm`` built-in: a small decoder-only transformer over the label's text field.

``forward(batch)`` reads ``batch[field]`` (token ids ``[B, L]``) and returns logits ``[B, L, vocab]``; the
logits at position ``t`` predict token ``t + 1`` (the language-model objective shifts and masks).

Token and learned position embeddings (up to the text's ``max_length``), ``n_layers`` pre-norm blocks with
causal self-attention, a final norm, and an output head tied to the token embedding.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rt_training.features.inputs import InputInfo
from rt_training.training.models.transformer import Block, init_transformer


class CausalLM(nn.Module):
    """A decoder-only transformer on one text input (``text.size`` tokens, ``text.max_length`` positions)."""

    def __init__(
        self, text: InputInfo, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if text.kind != "text" or text.max_length is None:
            raise ValueError(
                f"causal_lm reads a text input with a max_length; {text.name!r} is {text.kind} "
                f"with max_length {text.max_length}"
            )
        self.field = text.name
        self.max_length = text.max_length
        self.tokens = nn.Embedding(text.size, d_model)
        self.positions = nn.Embedding(text.max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, is_causal=True) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        init_transformer(self, n_layers)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids = batch[self.field]
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(
                f"batch[{self.field!r}] has {length} positions, more than the model's max_length "
                f"{self.max_length}"
            )
        x = self.dropout(self.tokens(ids) + self.positions(torch.arange(length, device=ids.device)))
        # The mask is not needed here: padding sits at the end of each row, so under causal attention no real
        # position ever sees a pad; the pad positions' own logits are dropped by the objective's mask.
        for block in self.blocks:
            x = block(x)
        # Tied head: the output projection is the token embedding itself, which halves the parameters of a
        # small model and leaves one tensor to grow when the vocabulary does.
        return F.linear(self.norm(x), self.tokens.weight)
