"""Models: one batch dict in, one tensor out.

Every model is called as ``model(batch)`` with ``batch`` keyed as :mod:`rt_training.features.inputs`
describes (the fitted feature state's ``featurize`` output, as tensors). Outputs by ``spec.label.kind``:
binary and regression ``[B]``; multiclass ``[B, num_classes]``; language_model ``[B, L, vocab]`` logits where
position ``t`` predicts token ``t + 1``.

- :mod:`.build`: :func:`build_model`, :func:`model_args`, :func:`compatible`, :class:`ModelFactoryError`
- :mod:`.tabular`: the ``mlp`` and ``logistic`` built-ins
- :mod:`.text_classifier`: the ``text_classifier`` built-in
- :mod:`.causal_lm`: the ``causal_lm`` built-in
- :mod:`.transformer`: the attention block both transformers share
- :mod:`.growth`: :func:`grow_state_dict`, warm starts across grown vocabularies and classes
"""

from rt_training.training.models.build import (
    FittedInputs,
    ModelFactoryError,
    build_model,
    compatible,
    model_args,
)
from rt_training.training.models.causal_lm import CausalLM
from rt_training.training.models.growth import GrowthError, grow_state_dict
from rt_training.training.models.tabular import FeatureMLP, InputEncoder
from rt_training.training.models.text_classifier import TextClassifier, TextEncoder
from rt_training.training.models.transformer import Block

__all__ = [
    "Block",
    "CausalLM",
    "FeatureMLP",
    "FittedInputs",
    "GrowthError",
    "InputEncoder",
    "ModelFactoryError",
    "TextClassifier",
    "TextEncoder",
    "build_model",
    "compatible",
    "grow_state_dict",
    "model_args",
]
