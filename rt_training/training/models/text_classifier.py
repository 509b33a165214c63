"""The ``text_classifier`` built-in: a small transformer encoder per text input, joined with the other inputs.

Each text input goes through its own :class:`TextEncoder` (token and learned position embeddings, ``n_layers``
pre-norm blocks of width ``d_model`` with ``n_heads`` heads, a final norm, the mean over the positions its mask
keeps); every other input is encoded as the ``mlp`` built-in does; the MLP head reads them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rt_training.features.inputs import InputInfo
from rt_training.training.models.tabular import FeatureMLP, masked_mean
from rt_training.training.models.transformer import Block, init_transformer


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` and their mask to one ``[B, d_model]`` vector per row."""

    def __init__(
        self, vocab_size: int, max_length: int, d_model: int, n_layers: int, n_heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, dropout, is_causal=False) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        init_transformer(self, n_layers)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.tokens(ids) + self.positions(positions))
        # A null text has no position to attend to, and a softmax over no key is NaN. Letting every query see
        # position 0 keeps it finite; only such rows change (every other row has its BOS there), and the pooling
        # below gives them zeros whatever their positions hold.
        keys = mask.clone()
        keys[:, 0] = True
        for block in self.blocks:
            x = block(x, keys)
        return masked_mean(self.norm(x), mask)


class TextClassifier(FeatureMLP):
    """:class:`~rt_training.training.models.tabular.FeatureMLP` whose text inputs go through a
    :class:`TextEncoder` each instead of being bag-of-token pooled."""

    def __init__(
        self,
        inputs: Sequence[InputInfo],
        hidden: Sequence[int],
        embedding_dim: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        texts = [i for i in inputs if i.kind == "text"]
        if not texts:
            raise ValueError(
                "the text_classifier built-in needs at least one text input; use mlp without one"
            )
        encoders = {
            t.name: TextEncoder(t.size, _max_length(t), d_model, n_layers, n_heads, dropout) for t in texts
        }
        super().__init__(
            inputs,
            hidden,
            embedding_dim,
            dropout,
            num_classes,
            text_encoders=encoders,
            text_widths=dict.fromkeys(encoders, d_model),
        )


def _max_length(info: InputInfo) -> int:
    if info.max_length is None:
        raise ValueError(f"text input {info.name!r} has no max_length: its position embeddings need one")
    return info.max_length
