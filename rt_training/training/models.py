"""Models for tabular event features: built-in ``mlp`` and ``logistic``, or a user factory by import path.

Every model takes two tensors and returns one output per row::

    forward(numeric: FloatTensor[batch, n_numeric], categorical: LongTensor[batch, n_categorical]) ->
    Tensor[batch]

``numeric`` holds the ``num__*`` silver columns in spec order, ``categorical`` the ``cat__*`` indices in spec
order (each in ``[0, cardinality)``). The output is a logit for a binary label and the predicted value for
regression.

A user model is declared in the spec as ``model: {factory: "package.module:function"}``. The factory is called
as ``function(spec, feature_info)`` (a :class:`~rt_training.spec.PipelineSpec` and a :class:`FeatureInfo`) and
must return an ``nn.Module`` with the forward signature above; ``spec.model.options`` carries its own
settings.

Errors: :class:`ModelFactoryError` when the factory cannot be imported, is not callable, fails, or returns
something that is not an ``nn.Module``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rt_training.spec import CATEGORICAL_PREFIX, NUMERIC_PREFIX, PipelineSpec
from rt_training.spec.factory import FactoryResolutionError, resolve_factory


class ModelFactoryError(RuntimeError):
    """A user model factory that cannot be used; the message names the factory and what to fix."""


@dataclass(frozen=True)
class FeatureInfo:
    """What a model needs to know about its inputs: feature names in column order and embedding sizes."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> FeatureInfo:
        return cls(
            numeric=tuple(spec.numeric_feature_names),
            categorical=tuple(spec.categorical_feature_names),
            cardinalities=tuple(c.cardinality for c in spec.features.categorical),
        )

    @property
    def numeric_columns(self) -> list[str]:
        """Silver column names of the numeric features, in model input order."""
        return [NUMERIC_PREFIX + n for n in self.numeric]

    @property
    def categorical_columns(self) -> list[str]:
        """Silver column names of the categorical features, in model input order."""
        return [CATEGORICAL_PREFIX + n for n in self.categorical]

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "cardinalities": list(self.cardinalities),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureInfo:
        return cls(
            tuple(data["numeric"]), tuple(data["categorical"]), tuple(int(c) for c in data["cardinalities"])
        )


class TabularMLP(nn.Module):
    """An embedding per categorical feature, joined with the numeric features, then an MLP to one output.

    With ``hidden=[]`` and ``embedding_dim=1`` this is logistic regression on one-hot categoricals
    plus the numeric features, which is how :func:`build_model` makes the ``logistic`` built-in.
    """

    def __init__(
        self, features: FeatureInfo, hidden: list[int], embedding_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, embedding_dim) for card in features.cardinalities)
        width = len(features.numeric) + embedding_dim * len(features.categorical)
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)


def build_model(spec: PipelineSpec, features: FeatureInfo | None = None) -> nn.Module:
    """The model the spec declares, freshly initialized (seed torch first for a reproducible init)."""
    features = features or FeatureInfo.from_spec(spec)
    m = spec.model
    if m.factory is None:
        if m.builtin == "logistic":
            return TabularMLP(features, hidden=[], embedding_dim=1)
        return TabularMLP(features, hidden=list(m.hidden), embedding_dim=m.embedding_dim, dropout=m.dropout)
    try:
        factory = resolve_factory(m.factory)
    except FactoryResolutionError as exc:
        raise ModelFactoryError(str(exc)) from exc
    try:
        model = factory(spec, features)
    except Exception as exc:
        raise ModelFactoryError(
            f"model.factory {m.factory!r} raised {type(exc).__name__}: {exc} "
            "(it is called as factory(spec, feature_info))"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(
            f"model.factory {m.factory!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def model_args(spec: PipelineSpec, features: FeatureInfo | None = None) -> dict[str, Any]:
    """The plain-data description stored in a checkpoint: enough to tell whether a checkpoint fits a spec."""
    features = features or FeatureInfo.from_spec(spec)
    return {
        "model": spec.model.model_dump(mode="json"),
        "features": features.to_dict(),
        "label_kind": spec.label.kind,
    }
