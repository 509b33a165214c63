"""The feature state: everything fitted from the data that turns silver rows into a model's batch.

A :class:`FeatureState` holds one encoder per feature of the spec (numeric statistics, learned vocabularies
with hashed OOV buckets, tokenizers, sequence and vector statistics) and the label's classes. It is fitted on a
training set with :func:`fit_feature_state`, saved beside each checkpoint (:meth:`FeatureState.to_json`,
canonical bytes with a :attr:`~FeatureState.sha256`), and restored bit for bit with
:meth:`FeatureState.from_dict`, so a model is always scored with the features it was trained on.

Batch keys (:meth:`FeatureState.featurize`), one group per feature in input order (numeric, categorical,
text, sequence, vector; :attr:`FeatureState.inputs` describes each):

- numeric ``name``: float32 ``[N]`` ``(transform(x) - mean) / std``, null 0.0; ``name + "__missing"`` float32
  ``[N]`` with ``missing_indicator``. Bool fields are 0/1 before scaling.
- categorical ``name``: int64 ``[N]`` rows of a vocabulary (:mod:`rt_training.features.vocabulary`).
- text ``name``: int64 ``[N, max_length]`` token ids and ``name + "__mask"`` bool ``[N, max_length]``.
- sequence ``name``: int64 ids or float32 standardized values ``[N, max_length]``, and ``name + "__mask"``.
- vector ``name``: float32 ``[N, dim]``.

Warm starts (``previous`` given) follow ``spec.features.refit`` and the rules of :func:`fit_feature_state`.

Examples
--------
>>> import pyarrow as pa
>>> from rt_training.spec import parse_spec
>>> spec = parse_spec({
...     "name": "doc", "source": {"topic": "doc"},
...     "schema": {"id_field": "id", "time_field": "t", "fields": {
...         "id": {"type": "string"}, "t": {"type": "timestamp"}, "x": {"type": "float"},
...         "c": {"type": "string"}, "y": {"type": "int"}}},
...     "features": {"numeric": [{"name": "x"}], "categorical": [{"name": "c"}]},
...     "label": {"field": "y"}})
>>> table = pa.table({"x": [1.0, 3.0], "c": ["a", "b"], "y": [0, 1]})
>>> state = fit_feature_state(spec, table, None, cold_start=True, seed=0)
>>> batch = state.featurize(pa.table({"x": [2.0, None], "c": ["b", "z"]}))
>>> batch["x"].tolist(), batch["c"].tolist()
([0.0, 0.0], [3, 1])
>>> [(i.name, i.kind, i.size) for i in state.inputs]
[('x', 'numeric', 1), ('c', 'categorical', 4)]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rt_training.features.encoders import (
    CategoricalEncoder,
    NumericEncoder,
    SequenceEncoder,
    VectorEncoder,
    spec_signature,
)
from rt_training.features.inputs import InputInfo
from rt_training.features.labels import LabelEncoder
from rt_training.features.text import TextEncoder
from rt_training.features.tokenizers import TextTokenizer
from rt_training.spec.models import (
    CategoricalFeature,
    FieldSpec,
    LabelKind,
    NumericFeature,
    PipelineSpec,
    SequenceFeature,
    TextFeature,
    VectorFeature,
)

FEATURE_STATE_FORMAT = "rt_training.features/1"
"""The ``format`` of :meth:`FeatureState.to_dict`; :meth:`FeatureState.from_dict` reads only this one."""
_CLASSES_SHOWN = 20

Encoder = NumericEncoder | CategoricalEncoder | TextEncoder | SequenceEncoder | VectorEncoder
ENCODERS: dict[str, type[Encoder]] = {
    cls.group: cls
    for cls in (NumericEncoder, CategoricalEncoder, TextEncoder, SequenceEncoder, VectorEncoder)
}
"""Encoder class of each ``spec.features`` group, in input order."""
_FEATURE_SPECS: dict[str, type[Any]] = {
    "numeric": NumericFeature,
    "categorical": CategoricalFeature,
    "text": TextFeature,
    "sequence": SequenceFeature,
    "vector": VectorFeature,
}


def _signature_of(group: str, feature: Any, field: FieldSpec) -> dict[str, Any]:
    return spec_signature(feature, field, ENCODERS[group].signature_keys)


def _encoder_to_dict(encoder: Encoder) -> dict[str, Any]:
    return {
        "group": encoder.group,
        "feature": encoder.feature.model_dump(mode="json"),
        "field": encoder.field.model_dump(mode="json"),
        "fitted": encoder.fitted_dict(),
    }


def _encoder_from_dict(d: dict[str, Any]) -> Encoder:
    group = d["group"]
    if group not in ENCODERS:
        raise ValueError(
            f"feature state: unknown feature group {group!r}; expected one of {sorted(ENCODERS)}"
        )
    feature = _FEATURE_SPECS[group].model_validate(d["feature"])
    return ENCODERS[group].from_parts(feature, FieldSpec.model_validate(d["field"]), d["fitted"])


def _column(table: pa.Table, name: str, what: str) -> pa.Array:
    if name not in table.column_names:
        raise ValueError(
            f"{what} needs column {name!r}, which the table lacks (columns: {', '.join(table.column_names)}); "
            "pass silver or training-set rows, which carry every schema field"
        )
    return table.column(name).combine_chunks()


@dataclass(frozen=True)
class FeatureState:
    """Fitted encoders (in input order), the label's encoder, and the record of the fit that made them.

    Build one with :func:`fit_feature_state` or :meth:`from_dict`.
    """

    encoders: tuple[Encoder, ...]
    label: LabelEncoder
    fit_report: dict[str, Any]

    def featurize(self, table: pa.Table) -> dict[str, np.ndarray]:
        """The batch arrays of ``table``'s rows (see the module docstring for keys, dtypes and shapes).

        Raises
        ------
        ValueError
            A feature's column is missing, a numeric value has no finite transform, or a vector has the wrong
            length (rows that did not pass cleaning).
        """
        batch: dict[str, np.ndarray] = {}
        for encoder in self.encoders:
            name = encoder.feature.name
            batch.update(encoder.featurize(_column(table, name, f"feature {name!r}")))
        return batch

    def encode_label(self, table: pa.Table) -> np.ndarray | None:
        """float32 ``[N]`` (binary, regression; null: NaN), int64 ``[N]`` class index (multiclass; a class
        the state does not know, or null: -1), or None (language_model)."""
        if self.label.spec.kind == "language_model":
            return None
        return self.label.encode(_column(table, self.label.spec.field, "the label"))

    @property
    def inputs(self) -> tuple[InputInfo, ...]:
        """One :class:`InputInfo` per feature, in input order: what a model builder sizes its layers from."""
        return tuple(encoder.input_info for encoder in self.encoders)

    @property
    def label_kind(self) -> LabelKind:
        return self.label.spec.kind

    @property
    def num_classes(self) -> int | None:
        """Number of classes for a multiclass label (the output rows a model needs), else None."""
        return self.label.num_classes

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The multiclass label's classes as text, in index order, else None."""
        return self.label.classes

    def tokenizer(self, name: str) -> TextTokenizer:
        """The tokenizer of text feature ``name``."""
        for encoder in self.encoders:
            if isinstance(encoder, TextEncoder) and encoder.feature.name == name:
                return encoder.tokenizer
        texts = [e.feature.name for e in self.encoders if isinstance(e, TextEncoder)]
        raise KeyError(f"{name!r} is not a text feature of this state (text features: {texts or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: format, encoders (spec, field and fitted parts each, tokenizers serialized), label,
        and the fit record :meth:`describe` reads."""
        return {
            "format": FEATURE_STATE_FORMAT,
            "features": [_encoder_to_dict(e) for e in self.encoders],
            "label": self.label.to_dict(),
            "fit": self.fit_report,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureState:
        """The state :meth:`to_dict` wrote; it featurizes exactly as the saved one did.

        Raises
        ------
        ValueError
            ``d`` has another format (a state saved by another release, or not a feature state).
        """
        if d.get("format") != FEATURE_STATE_FORMAT:
            raise ValueError(
                f"feature state format {d.get('format')!r} is not {FEATURE_STATE_FORMAT!r}, the one this release "
                "reads; train from scratch (a cold start) to fit a new state"
            )
        return cls(
            tuple(_encoder_from_dict(e) for e in d["features"]), LabelEncoder.from_dict(d["label"]), d["fit"]
        )

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces): equal states give equal bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @property
    def sha256(self) -> str:
        """Hex sha256 of :meth:`to_json`, recorded in lineage."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def describe(self) -> dict[str, str | int | float | bool]:
        """Flat metadata of this state and the fit that made it (numbers plot over runs in Dagster's UI).

        Keys: ``rows_fitted``, ``refit_policy``, ``warm_start``, ``cold_start``; per feature ``NAME``:
        ``feature.NAME`` (``added``, ``removed``, ``changed: <settings>`` against the previous state, when not
        simply kept), ``statistics.NAME`` (``fitted``, ``refitted``, ``kept``, ``spec``), ``mean.NAME`` /
        ``std.NAME``, ``vocabulary.NAME`` (``learned``, ``fixed``, ``hashed``), ``vocabulary_size.NAME``,
        ``vocabulary_added.NAME`` (entries appended by growth), ``tokenizer.NAME`` /
        ``tokenizer_vocab_size.NAME``, ``normalize.NAME`` / ``dim.NAME``; for the label ``label_kind``, and for
        multiclass ``num_classes``, ``classes`` (the first 20, comma-separated), ``classes_added``, and
        ``label`` when it changed.
        """
        report = self.fit_report
        out: dict[str, str | int | float | bool] = {
            "rows_fitted": report["rows"],
            "refit_policy": report["refit"],
            "warm_start": report["warm_start"],
            "cold_start": report["cold_start"],
        }
        for encoder in self.encoders:
            name = encoder.feature.name
            note = report["features"][name]
            if note["status"] not in ("new", "kept"):
                out[f"feature.{name}"] = note["status"]
            if note["statistics"] is not None:
                out[f"statistics.{name}"] = note["statistics"]
            if note["added"] is not None:
                out[f"vocabulary_added.{name}"] = note["added"]
            for key, value in encoder.describe().items():
                out[f"{key}.{name}"] = value
        for name in report["removed"]:
            out[f"feature.{name}"] = "removed"
        out["label_kind"] = self.label_kind
        if self.classes is not None:
            shown = ", ".join(self.classes[:_CLASSES_SHOWN])
            more = len(self.classes) - _CLASSES_SHOWN
            out["num_classes"] = len(self.classes)
            out["classes"] = shown + (f", ... ({more} more)" if more > 0 else "")
            out["classes_added"] = report["label"]["classes_added"]
        if report["label"]["status"] not in ("new", "kept"):
            out["label"] = report["label"]["status"]
        return out


def _feature_status(
    previous: FeatureState | None, old: Encoder | None, group: str, feature: Any, field: FieldSpec
) -> str:
    """``new`` (no previous state), ``added``, ``changed: ...`` or ``kept`` against the previous state."""
    if previous is None:
        return "new"
    if old is None:
        return "added"
    if old.group != group:
        return f"changed: was a {old.group} feature"
    before = _signature_of(old.group, old.feature, old.field)
    now = _signature_of(group, feature, field)
    differing = [key for key in now if before.get(key) != now[key]]
    return f"changed: {', '.join(differing)}" if differing else "kept"


def fit_feature_state(
    spec: PipelineSpec, table: pa.Table, previous: FeatureState | None, *, cold_start: bool, seed: int
) -> FeatureState:
    """Fit the feature state of ``spec`` on ``table`` (training-set rows), starting from ``previous``.

    Without ``previous`` everything is fitted. With it:

    - learned vocabularies (categorical, sequence ids) and multiclass classes always grow: new values reaching
      ``min_count`` are appended, up to ``max_size``; old rows never move;
    - numeric, float-sequence and zscore-vector statistics are refitted when ``spec.features.refit`` is
      ``every_retrain``, or ``on_cold_start`` and ``cold_start`` is True; otherwise kept (``never`` keeps the
      first fit forever);
    - trained tokenizers are kept (refitting would renumber the tokens a warm-started model learned);
    - a feature added since ``previous``, or whose settings the fitted parts depend on changed (its group, the
      field's type/items/dim, a transform, clip bounds, spec mean/std, vocabulary/hash/OOV settings, the
      tokenizer, a vector's normalization), is fitted from scratch as if new; :meth:`FeatureState.describe`
      names it and what changed. The same holds for the label when its field or kind changed.

    Values given in the spec (numeric ``mean``/``std``, a fixed ``vocabulary``) always win. ``seed`` seeds
    tokenizer training.
    """
    policy = spec.features.refit
    refit = policy == "every_retrain" or (policy == "on_cold_start" and cold_start)
    old_by_name = {} if previous is None else {e.feature.name: e for e in previous.encoders}
    encoders: list[Encoder] = []
    notes: dict[str, dict[str, Any]] = {}
    for group, encoder_class in ENCODERS.items():
        for feature in getattr(spec.features, group):
            field = spec.schema_.fields[feature.name]
            old = old_by_name.get(feature.name)
            status = _feature_status(previous, old, group, feature, field)
            column = _column(table, feature.name, f"feature {feature.name!r}")
            encoder, note = encoder_class.fit(
                feature, field, column, old if status == "kept" else None, refit=refit, seed=seed
            )
            encoders.append(encoder)
            notes[feature.name] = {"status": status, "statistics": note.statistics, "added": note.added}
    removed = sorted(set(old_by_name) - set(notes))

    label_spec = spec.label
    old_label = None if previous is None else previous.label
    if old_label is None:
        label_status = "new"
    elif (old_label.spec.field, old_label.spec.kind) != (label_spec.field, label_spec.kind):
        label_status = f"changed: was {old_label.spec.kind} on {old_label.spec.field!r}"
        old_label = None
    else:
        label_status = "kept"
    label_column = (
        None if label_spec.kind == "language_model" else _column(table, label_spec.field, "the label")
    )
    label, classes_added = LabelEncoder.fit(label_spec, label_column, old_label)

    report = {
        "rows": table.num_rows,
        "refit": policy,
        "warm_start": previous is not None,
        "cold_start": cold_start,
        "features": notes,
        "removed": removed,
        "label": {"status": label_status, "classes_added": classes_added},
    }
    return FeatureState(tuple(encoders), label, report)
