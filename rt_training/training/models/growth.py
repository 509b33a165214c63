"""Warm-starting a model whose vocabularies or classes grew since its checkpoint.

A learned vocabulary, a multiclass label's classes and (rarely) a tokenizer only ever append entries, so the
tensors they size grow along dim 0 and their old rows keep their meaning: embedding rows, a multiclass head's
output rows and bias, a tied language-model head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class GrowthError(ValueError):
    """A checkpoint tensor that cannot be carried into the model: a missing parameter or a shape change other
    than growth along dim 0."""


def grow_state_dict(old: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` that holds every tensor of ``old``.

    A tensor with the same shape is taken as it is. A tensor whose dim 0 grew (and whose other dims did not
    change) keeps the old rows bit for bit; the new rows keep ``model``'s fresh initialization, so seed torch
    before building the model for a reproducible warm start.

    Parameters
    ----------
    old
        The checkpoint's state dict.
    model
        The freshly built model (sizes from the current feature state).

    Returns
    -------
    dict[str, torch.Tensor]
        Ready for ``model.load_state_dict(..., strict=True)``.

    Raises
    ------
    GrowthError
        When a name is in one state dict and not the other, or a shape changed in any other way (shrank, or a
        dim other than 0 changed); the message names the parameter and both shapes.

    Examples
    --------
    >>> old = nn.Embedding(3, 2).state_dict()
    >>> grown = grow_state_dict(old, nn.Embedding(5, 2))
    >>> grown["weight"].shape, bool((grown["weight"][:3] == old["weight"]).all())
    (torch.Size([5, 2]), True)
    """
    fresh = model.state_dict()
    missing = sorted(set(fresh) - set(old))
    extra = sorted(set(old) - set(fresh))
    if missing or extra:
        raise GrowthError(
            f"the checkpoint does not fit the model: parameters only in the model {missing}, only in the "
            f"checkpoint {extra}; the model or its inputs changed, train from scratch"
        )
    out: dict[str, torch.Tensor] = {}
    for name, new in fresh.items():
        have = old[name]
        if have.shape == new.shape:
            out[name] = have
        elif (
            have.dim() == new.dim() >= 1 and have.shape[1:] == new.shape[1:] and have.shape[0] < new.shape[0]
        ):
            grown = new.detach().clone()
            grown[: have.shape[0]] = have.to(grown.dtype)
            out[name] = grown
        else:
            raise GrowthError(
                f"parameter {name!r} has shape {tuple(have.shape)} in the checkpoint and {tuple(new.shape)} in "
                "the model: only growth along dim 0 (more embedding rows or classes) can warm-start; "
                "train from scratch"
            )
    return out
