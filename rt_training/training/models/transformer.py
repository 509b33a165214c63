"""The transformer block shared by the ``text_classifier`` encoder and the ``causal_lm`` decoder.

One :class:`Block` class serves both: an encoder and a decoder block differ only in which positions a query may
see, so sharing it keeps their numerics (pre-norm, initialization, attention kernel) identical and lets a fix or
a faster kernel reach both built-ins at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02
"""Standard deviation of the normal initialization of transformer weights (as GPT-2)."""


class SelfAttention(nn.Module):
    """Multi-head self-attention through :func:`torch.nn.functional.scaled_dot_product_attention`.

    With ``is_causal`` a position attends to itself and earlier positions only; otherwise ``key_mask`` (bool
    ``[B, L]``, True where a position holds a token) hides padding from every query.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, is_causal: bool) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.is_causal = is_causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (
            t.view(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2)
            for t in self.qkv(x).split(width, dim=2)
        )
        if self.is_causal and key_mask is not None:
            raise ValueError(
                "a causal block takes no key_mask: padding at the end of a row is never attended to"
            )
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.is_causal,
        )
        return self.proj_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, width)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``.

    Pre-norm keeps the residual stream an identity path, so small models train stably at a fixed learning rate
    without warmup tuning.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, is_causal: bool) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout, is_causal)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), key_mask)
        return x + self.mlp(self.norm_mlp(x))


def init_transformer(module: nn.Module, n_layers: int) -> None:
    """Initialize a transformer's linear and embedding weights in place.

    The projections that write into the residual stream are scaled down by ``sqrt(2 * n_layers)`` (two per
    block), so the stream's variance at the output does not grow with depth (GPT-2's scheme).
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=INIT_STD)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=INIT_STD)
    residual_std = INIT_STD / math.sqrt(2 * n_layers)
    for sub in module.modules():
        if isinstance(sub, Block):
            nn.init.normal_(sub.attn.proj.weight, std=residual_std)
            nn.init.normal_(sub.mlp[2].weight, std=residual_std)
