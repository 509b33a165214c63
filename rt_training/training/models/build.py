"""Building the model a spec declares, and describing it in a checkpoint.

:func:`build_model` returns a built-in (``mlp``, ``logistic``, ``text_classifier``, ``causal_lm``) or calls the
user's factory (``model: {factory: "package.module:function"}``) as ``factory(spec, state)``: ``spec`` is the
:class:`~rt_training.spec.PipelineSpec`, ``state`` the fitted feature state (any object with
:class:`FittedInputs`' attributes). ``spec.model.options`` carries the factory's own settings. Every model is
called as ``model(batch)`` with the batch dict of :mod:`rt_training.features.inputs`.

:func:`model_args` is the plain-data description stored in a checkpoint; :func:`compatible` says whether a
checkpoint can warm-start a spec (see :func:`~rt_training.training.models.growth.grow_state_dict` for growth).

Errors: :class:`ModelFactoryError` when the factory cannot be imported, is not callable, fails, or returns
something that is not an ``nn.Module``; ``ValueError`` when the feature state lacks what a built-in needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from torch import nn

from rt_training.features.inputs import InputInfo
from rt_training.spec import PipelineSpec
from rt_training.spec.factory import FactoryResolutionError, resolve_factory
from rt_training.training.models.causal_lm import CausalLM
from rt_training.training.models.tabular import FeatureMLP
from rt_training.training.models.text_classifier import TextClassifier

_GROWING = ("size", "max_length")
"""Input attributes a warm start may see grow (vocabularies and classes append; tensors grow along dim 0)."""


class FittedInputs(Protocol):
    """What :func:`build_model` reads from a fitted feature state."""

    @property
    def inputs(self) -> tuple[InputInfo, ...]: ...

    @property
    def num_classes(self) -> int | None: ...


class ModelFactoryError(RuntimeError):
    """A user model factory that cannot be used; the message names the factory and what to fix."""


def build_model(spec: PipelineSpec, state: FittedInputs) -> nn.Module:
    """The model the spec declares, freshly initialized (seed torch first for a reproducible init).

    Outputs: ``[B]`` for a binary (logit) or regression label, ``[B, state.num_classes]`` logits for
    multiclass, ``[B, L, vocab]`` next-token logits for a language model.

    Raises
    ------
    ModelFactoryError
        The factory cannot be imported or called, raises, or returns something that is not an ``nn.Module``.
    ValueError
        The spec names no model, or the state lacks what the built-in needs (multiclass without
        ``num_classes``, a language model whose text is not among the inputs).
    """
    m = spec.model
    if m.factory is not None:
        return _from_factory(spec, state)
    num_classes = _num_classes(spec, state)
    if m.builtin == "mlp":
        return FeatureMLP(state.inputs, m.hidden, m.embedding_dim, m.dropout, num_classes)
    if m.builtin == "logistic":
        return FeatureMLP(state.inputs, [], 1, 0.0, num_classes)
    if m.builtin == "text_classifier":
        return TextClassifier(
            state.inputs, m.hidden, m.embedding_dim, m.d_model, m.n_layers, m.n_heads, m.dropout, num_classes
        )
    if m.builtin == "causal_lm":
        return CausalLM(_lm_text(spec, state), m.d_model, m.n_layers, m.n_heads, m.dropout)
    raise ValueError(f"spec {spec.name!r}: model names neither a builtin nor a factory; set model.builtin")


def _num_classes(spec: PipelineSpec, state: FittedInputs) -> int | None:
    if spec.label.kind != "multiclass":
        return None
    if not state.num_classes:
        raise ValueError(
            f"label {spec.label.field!r} is multiclass but the feature state knows no classes "
            f"(num_classes={state.num_classes!r}); fit the feature state on rows that carry the label"
        )
    return state.num_classes


def _lm_text(spec: PipelineSpec, state: FittedInputs) -> InputInfo:
    for info in state.inputs:
        if info.name == spec.label.field and info.kind == "text":
            return info
    raise ValueError(
        f"causal_lm predicts the tokens of text input {spec.label.field!r}, which is not among the feature "
        f"state's text inputs {[i.name for i in state.inputs if i.kind == 'text']}"
    )


def _from_factory(spec: PipelineSpec, state: FittedInputs) -> nn.Module:
    path = spec.model.factory
    try:
        factory = resolve_factory(str(path))
    except FactoryResolutionError as exc:
        raise ModelFactoryError(str(exc)) from exc
    try:
        model = factory(spec, state)
    except Exception as exc:
        raise ModelFactoryError(
            f"model.factory {path!r} raised {type(exc).__name__}: {exc} (it is called as factory(spec, state))"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(
            f"model.factory {path!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def model_args(spec: PipelineSpec, state: FittedInputs) -> dict[str, Any]:
    """The plain-data (JSON-able) description of a model stored in its checkpoint.

    Keys: ``model`` (the spec's model section), ``inputs`` (each :class:`InputInfo` as a dict, in order),
    ``label_field``, ``label_kind`` and ``num_classes``.
    """
    return {
        "model": spec.model.model_dump(mode="json"),
        "inputs": [dataclasses.asdict(i) for i in state.inputs],
        "label_field": spec.label.field,
        "label_kind": spec.label.kind,
        "num_classes": state.num_classes,
    }


def compatible(have: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Why a checkpoint whose :func:`model_args` are ``have`` cannot warm-start a model with args ``want``.

    Returns None when it can: the same model (``dropout`` aside: it holds no weights), label and inputs (names,
    kinds, order, missing indicators), where input sizes, max lengths and the number of classes may have grown
    (see :func:`~rt_training.training.models.growth.grow_state_dict`). Otherwise every reason, joined by
    ``"; "``.

    Examples
    --------
    >>> a = {"model": {"builtin": "mlp"}, "inputs": [{"name": "x", "kind": "categorical", "size": 5}],
    ...      "label_field": "y", "label_kind": "multiclass", "num_classes": 3}
    >>> compatible(a, {**a, "num_classes": 4}) is None
    True
    >>> compatible({**a, "num_classes": 4}, a)
    'num_classes: 4 in the checkpoint, 3 now (classes are never removed)'
    """
    reasons: list[str] = []
    have_model = {k: v for k, v in have.get("model", {}).items() if k != "dropout"}
    want_model = {k: v for k, v in want.get("model", {}).items() if k != "dropout"}
    for key in sorted(set(have_model) | set(want_model)):
        if have_model.get(key) != want_model.get(key):
            reasons.append(
                f"model.{key}: {have_model.get(key)!r} in the checkpoint, {want_model.get(key)!r} now"
            )
    for key in ("label_field", "label_kind"):
        if have.get(key) != want.get(key):
            reasons.append(f"{key}: {have.get(key)!r} in the checkpoint, {want.get(key)!r} now")
    have_classes, want_classes = have.get("num_classes"), want.get("num_classes")
    if have_classes is None or want_classes is None:
        if have_classes != want_classes:
            reasons.append(f"num_classes: {have_classes!r} in the checkpoint, {want_classes!r} now")
    elif want_classes < have_classes:
        reasons.append(
            f"num_classes: {have_classes} in the checkpoint, {want_classes} now (classes are never removed)"
        )
    reasons += _input_reasons(have.get("inputs", []), want.get("inputs", []))
    return "; ".join(reasons) or None


def _input_reasons(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> list[str]:
    def layout(inputs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(i.get("name"), i.get("kind"), i.get("missing_indicator", False)) for i in inputs]

    if layout(have) != layout(want):
        return [
            f"inputs (name, kind, missing indicator): {layout(have)} in the checkpoint, {layout(want)} now"
        ]
    reasons = []
    for old, new in zip(have, want, strict=True):
        for key in _GROWING:
            before, after = old.get(key), new.get(key)
            if before == after:
                continue
            if old["kind"] == "vector":
                why = "a vector's dimension cannot change"
            elif before is None or after is None or after < before:
                why = "it may grow, never shrink"
            else:
                continue
            reasons.append(
                f"input {old['name']!r} {key}: {before!r} in the checkpoint, {after!r} now ({why})"
            )
    return reasons
