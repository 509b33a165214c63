"""Typed pipeline spec: what a user declares about their stream, features, model and policies.

A spec is YAML (see ``rt_training/specs/clickstream.yaml``) loaded by :func:`rt_training.spec.load_spec`.
Every model here forbids unknown keys, so a typo in a spec is an error naming the field, not a silent default.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from rt_training.spec.durations import Duration, format_duration

FieldType = Literal["string", "int", "float", "bool", "timestamp", "text", "list", "vector"]
ItemType = Literal["string", "int", "float"]
LabelKind = Literal["binary", "multiclass", "regression", "language_model"]
Metric = Literal["auc", "log_loss", "accuracy", "rmse", "perplexity", "token_loss"]

DEFAULT_METRIC: dict[str, str] = {
    "binary": "auc",
    "multiclass": "accuracy",
    "regression": "rmse",
    "language_model": "perplexity",
}
"""The metric an objective is judged on when ``training.metric`` is not given."""
METRICS_FOR: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "log_loss", "accuracy"),
    "multiclass": ("accuracy", "log_loss"),
    "regression": ("rmse",),
    "language_model": ("perplexity", "token_loss"),
}
"""The metrics each label kind can be judged on."""
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the events come from."""

    topic: str = Field(min_length=1)
    partitions: int = Field(default=3, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1)

    @field_validator("topic")
    @classmethod
    def _legal_topic(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError("a Kafka topic name uses only letters, digits, '.', '_' and '-' (at most 249)")
        return v


class FieldSpec(_Strict):
    """One field of the event schema.

    ``text`` is a string meant for a tokenizer (``max_length`` counts characters, as for ``string``); ``list``
    is a JSON array whose elements are all of type ``items`` (``max_length`` counts elements; ``min``/``max``
    bound each element of a numeric list); ``vector`` is a JSON array of exactly ``dim`` finite numbers (an
    upstream embedding; ``min``/``max`` bound each element).
    """

    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = Field(default=None, ge=1)
    items: ItemType | None = None
    dim: int | None = Field(default=None, ge=1, le=65_536)
    default: Any = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type == "list" and self.items is None:
            raise ValueError("a list field needs items: string, int or float (the type of every element)")
        if self.items is not None and self.type != "list":
            raise ValueError(f"items applies to list fields, not to {self.type}")
        if self.type == "vector" and self.dim is None:
            raise ValueError("a vector field needs dim: the number of floats in every value")
        if self.dim is not None and self.type != "vector":
            raise ValueError(f"dim applies to vector fields, not to {self.type}")
        if self.max_length is not None and self.type not in ("string", "text", "list"):
            raise ValueError(f"max_length applies to string, text and list fields, not to {self.type}")
        numeric_items = self.type == "vector" or (self.type == "list" and self.items in ("int", "float"))
        if (
            (self.min is not None or self.max is not None)
            and self.type not in ("int", "float")
            and not numeric_items
        ):
            raise ValueError(
                f"min/max apply to int and float fields and to the elements of numeric lists and vectors, "
                f"not to {self.type}" + (f" of {self.items}" if self.items else "")
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.allowed is not None and self.type != "string":
            raise ValueError("allowed values apply to string fields only")
        return self


class SchemaSpec(_Strict):
    """The event schema: fields, the id used for dedup, the event-time field, size limit."""

    id_field: str
    time_field: str
    max_record_bytes: int = Field(default=1_048_576, ge=64)
    fields: dict[str, FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _fields_exist(self) -> SchemaSpec:
        for name in self.fields:
            if not _NAME.match(name):
                raise ValueError(f"field name {name!r} must be an identifier (letters, digits, underscore)")
        if self.id_field not in self.fields:
            raise ValueError(
                f"id_field {self.id_field!r} is not one of the schema fields {sorted(self.fields)}"
            )
        if self.time_field not in self.fields:
            raise ValueError(
                f"time_field {self.time_field!r} is not one of the schema fields {sorted(self.fields)}"
            )
        if self.fields[self.time_field].type != "timestamp":
            raise ValueError(f"time_field {self.time_field!r} must have type timestamp")
        if not self.fields[self.id_field].required or not self.fields[self.time_field].required:
            raise ValueError("id_field and time_field must be required")
        return self


class NumericFeature(_Strict):
    """A numeric feature: optional transform, then ``(x - mean) / std``.

    ``mean`` and ``std`` are fitted from the training set (after the transform) unless given here; a value given
    here always wins. A null (an optional field without a default) becomes the mean, i.e. 0.0 after scaling;
    with ``missing_indicator`` the model also gets a 0/1 input saying the value was missing.
    """

    name: str
    transform: Literal["none", "log1p", "clip"] = "none"
    clip_min: float | None = None
    clip_max: float | None = None
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)
    missing_indicator: bool = False


class _Vocabulary(_Strict):
    """How values become embedding rows: a vocabulary learned from the training set (``min_count``, ``max_size``,
    plus ``oov_buckets`` hashed rows for values outside it), a fixed ``vocabulary`` (it wins over learning), or
    ``hash_buckets`` alone (no vocabulary: every value hashed)."""

    vocabulary: list[str] | None = None
    hash_buckets: int | None = Field(default=None, ge=2)
    min_count: int = Field(default=1, ge=1)
    max_size: int = Field(default=100_000, ge=1)
    oov_buckets: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _one_encoding(self) -> _Vocabulary:
        if self.vocabulary is not None and self.hash_buckets is not None:
            raise ValueError(
                "give at most one of vocabulary or hash_buckets (neither: learned from the data)"
            )
        if self.vocabulary is not None and len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate entries")
        return self

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _entries_as_str(cls, v: Any) -> Any:
        # An int or bool field's vocabulary may be written as YAML numbers/booleans; values are compared as text
        # (``true``/``false`` for booleans, as cleaning writes them).
        if isinstance(v, list):
            return [str(x).lower() if isinstance(x, bool) else str(x) for x in v]
        return v

    @property
    def learned(self) -> bool:
        """Whether the vocabulary is fitted from the data (neither a fixed vocabulary nor hash buckets)."""
        return self.vocabulary is None and self.hash_buckets is None


class CategoricalFeature(_Vocabulary):
    """A categorical feature on a string, int or bool field (see :class:`_Vocabulary` for the encodings)."""

    name: str


class TokenizerSpec(_Strict):
    """How a text feature becomes token ids.

    ``byte``: UTF-8 bytes, nothing to train. ``bpe`` / ``wordpiece``: trained on the first training set with the
    Hugging Face ``tokenizers`` library (``vocab_size``, ``min_frequency``, ``lowercase``) and saved with the
    feature state. ``factory``: ``"package.module:function"`` returning the user's own tokenizer.
    """

    kind: Literal["byte", "bpe", "wordpiece", "factory"] = "byte"
    vocab_size: int = Field(default=8000, ge=64, le=1_000_000)
    min_frequency: int = Field(default=2, ge=1)
    lowercase: bool = False
    factory: str | None = None

    @model_validator(mode="after")
    def _factory_named(self) -> TokenizerSpec:
        if (self.kind == "factory") != (self.factory is not None):
            raise ValueError(
                "tokenizer.factory ('package.module:function') goes with kind: factory, and only with it"
            )
        if self.factory is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.factory):
            raise ValueError("tokenizer.factory must look like 'package.module:function'")
        return self


class TextFeature(_Strict):
    """A text (or string) field as token ids ``[max_length]`` plus a mask; longer texts are truncated."""

    name: str
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    max_length: int = Field(default=128, ge=2, le=65_536)
    truncation: Literal["right", "left"] = "right"


class SequenceFeature(_Vocabulary):
    """A list field as ``[max_length]`` ids (string/int elements, encoded like a categorical) or values (float
    elements, standardized with a fitted mean/std over all elements) plus a mask. ``truncation: left`` (the
    default) keeps the last elements: for a history, the most recent."""

    name: str
    max_length: int = Field(default=32, ge=1, le=65_536)
    truncation: Literal["right", "left"] = "left"


class VectorFeature(_Strict):
    """A vector field as a float ``[dim]`` input: as it is, L2-normalized, or standardized per dimension with a
    fitted mean/std."""

    name: str
    normalize: Literal["none", "l2", "zscore"] = "none"


class FeaturesSpec(_Strict):
    """The model's inputs. ``refit`` says when fitted statistics (means, stds) are refitted: ``never`` (the
    first fit is kept), ``on_cold_start`` (when a model is trained from scratch) or ``every_retrain``.
    Learned vocabularies grow on every warm-started retraining whatever the policy (new rows, old rows kept);
    a trained tokenizer is fitted once, at a cold start."""

    refit: Literal["never", "on_cold_start", "every_retrain"] = "on_cold_start"
    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    text: list[TextFeature] = Field(default_factory=list)
    sequence: list[SequenceFeature] = Field(default_factory=list)
    vector: list[VectorFeature] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Every feature's field name, in input order: numeric, categorical, text, sequence, vector."""
        groups = (self.numeric, self.categorical, self.text, self.sequence, self.vector)
        return [f.name for group in groups for f in group]


class LabelSpec(_Strict):
    """The target. ``binary`` (0/1), ``multiclass`` (classes learned from the data, new ones added at a
    retraining), ``regression``, or ``language_model``: next-token prediction on ``field``, a text feature."""

    field: str
    kind: LabelKind = "binary"


class ModelSpec(_Strict):
    """A built-in model, or ``factory: "package.module:function"`` returning an ``nn.Module``.

    Built-ins: ``mlp`` / ``logistic`` (tabular inputs, sequences and texts mean-pooled), ``text_classifier``
    (a small transformer encoder over the text features, joined with the other inputs) and ``causal_lm`` (a
    small decoder-only transformer for ``label.kind: language_model``). ``d_model``, ``n_layers``, ``n_heads``
    and ``context`` size the transformers.
    """

    builtin: Literal["mlp", "logistic", "text_classifier", "causal_lm"] | None = "mlp"
    factory: str | None = None
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    d_model: int = Field(default=128, ge=8)
    n_layers: int = Field(default=2, ge=1)
    n_heads: int = Field(default=4, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.factory is not None:
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.factory):
                raise ValueError("factory must look like 'package.module:function'")
            object.__setattr__(self, "builtin", None)
        return self


class IngestPolicy(_Strict):
    """How micro-batches are planned and landed.

    ``commit_consumer_group`` names a Kafka consumer group to which each micro-batch, after its Delta commits,
    commits the offsets the lake stands at, so that ``kafka-consumer-groups.sh --describe``, Burrow or a cloud
    console show the pipeline's lag. The pipeline never reads these offsets back (the Delta tables hold the
    ones that count), and a failed commit only warns. Default: none, nothing is committed to Kafka.
    """

    min_records: int = Field(default=1000, ge=1)
    max_wait_s: Duration = Field(default=10.0, ge=0)
    max_records_per_run: int = Field(default=200_000, ge=1)
    on_data_loss: Literal["fail", "skip"] = "fail"
    dedup_history_s: Duration = Field(default=3600.0, ge=0)
    commit_consumer_group: str | None = None

    @field_validator("commit_consumer_group")
    @classmethod
    def _legal_group_id(cls, v: str | None) -> str | None:
        # Kafka accepts any non-empty group id; whitespace and control characters are refused here because a
        # stray space from YAML would silently create a second group that no operator looks at.
        if v is not None and not re.fullmatch(r"[^\s\x00-\x1f\x7f]{1,255}", v):
            raise ValueError(
                "a consumer group id is 1 to 255 characters without whitespace or control characters, "
                f"got {v!r}"
            )
        return v


class MixtureSpec(_Strict):
    """Target shares of the training set per group of ``by`` (a string, int or bool field: a topic, a source).

    ``shares`` fixes targets for named groups; the groups not named split what is left in proportion to their
    share of the stream (all of it when ``shares`` is empty). With ``trending``, a group whose share of the
    recent ``trend_window`` of event time rises against the ``reference_window`` before it gets more weight:
    its target is multiplied by that ratio, at most ``max_boost``; every group seen keeps at least ``floor``, so
    nothing is forgotten. Targets are renormalized to sum to 1. Older rows keep coming back through
    ``replay_share`` as before.
    """

    by: str
    shares: dict[str, float] = Field(default_factory=dict)
    trending: bool = False
    trend_window: Duration = Field(default=3600.0, gt=0)
    reference_window: Duration = Field(default=86_400.0, gt=0)
    max_boost: float = Field(default=3.0, ge=1.0)
    floor: float = Field(default=0.02, ge=0.0, lt=1.0)

    @field_validator("shares", mode="before")
    @classmethod
    def _keys_as_str(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k).lower() if isinstance(k, bool) else str(k): val for k, val in v.items()}
        return v

    @field_validator("shares")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        if any(s < 0 for s in v.values()) or sum(v.values()) > 1.0 + 1e-6:
            raise ValueError("mixture shares must be non-negative and sum to at most 1")
        return v


class SamplingPolicy(_Strict):
    capacity: int = Field(default=50_000, ge=1)
    strategy: Literal["uniform", "weighted", "time_biased"] = "weighted"
    recency_half_life_s: Duration | None = Field(default=3600.0, gt=0)
    class_balance: dict[str, float] | None = None
    importance: bool = False
    replay_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    mixture: MixtureSpec | None = None
    seed: int = 0

    @field_validator("class_balance", mode="before")
    @classmethod
    def _keys_as_str(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): val for k, val in v.items()}
        return v

    @field_validator("class_balance")
    @classmethod
    def _shares(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (any(s < 0 for s in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6):
            raise ValueError("class shares must be non-negative and sum to 1")
        return v


class TrainingPolicy(_Strict):
    """How a candidate is trained, and what the validation gate asks of it.

    Training: ``epochs`` is the most epochs a run may take (``max_epochs`` is accepted as its name too);
    it stops earlier when the validation metric has not improved by more than ``early_stopping_min_delta``
    for ``early_stopping_patience`` epochs in a row, and keeps the best epoch's weights.

    The gate (:mod:`rt_training.training.gate`) judges a candidate on the held-out window: at least
    ``min_holdout_rows`` rows spanning at least ``min_holdout_span_s`` of event time. The first champion must
    beat the trivial baseline (a constant prediction: AUC 0.5, the label prior's log loss, the majority-class
    rate, the target mean's RMSE) by more than ``first_champion_margin``; a later candidate must be within
    ``promotion_tolerance`` of the champion. A paired bootstrap (``bootstrap_samples`` resamples, seeded by
    ``seed``) gives the ``confidence`` interval of the gain; with ``require_significant`` its lower bound must
    also clear the same bar (``> first_champion_margin``, or ``> -promotion_tolerance``).

    ``metric`` defaults to the label kind's (:data:`DEFAULT_METRIC`): auc, accuracy, rmse or perplexity.

    Periodic retraining, each optional: ``schedule_cron`` on the wall clock; ``retrain_every_s`` of event time
    and ``retrain_every_rows`` new silver rows since the last retraining launch (or the champion's cut).
    """

    metric: Metric = Field(default=None, validate_default=False)  # type: ignore[assignment]
    epochs: int = Field(default=30, ge=1, validation_alias=AliasChoices("epochs", "max_epochs"))
    batch_size: int = Field(default=512, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    early_stopping_patience: int = Field(default=3, ge=1)
    early_stopping_min_delta: float = Field(default=1e-4, ge=0)
    holdout_window_s: Duration = Field(default=600.0, gt=0)
    promotion_tolerance: float = Field(default=0.0, ge=0)
    first_champion_margin: float = Field(default=0.01, ge=0)
    min_holdout_rows: int = Field(default=200, ge=1)
    min_holdout_span_s: Duration = Field(default=0.0, ge=0)
    bootstrap_samples: int = Field(default=200, ge=10, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    require_significant: bool = False
    compile: bool = False
    seed: int = 0
    schedule_cron: str | None = None
    retrain_every_s: Duration | None = Field(default=None, gt=0)
    retrain_every_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _holdout_fits_window(self) -> TrainingPolicy:
        if self.min_holdout_span_s > self.holdout_window_s:
            raise ValueError(
                f"min_holdout_span_s ({format_duration(self.min_holdout_span_s)}) is longer than "
                f"holdout_window_s ({format_duration(self.holdout_window_s)}): no held-out window could ever "
                "pass the gate; shorten min_holdout_span_s or widen holdout_window_s"
            )
        return self


class DriftPolicy(_Strict):
    """When the pipeline compares recent silver with the champion's reference and retrains.

    ``quality_drop`` is in the units of ``training.metric``: how much worse the champion may score on recent
    rows than at its promotion before a retraining is launched (0.05 of AUC; for perplexity, points of
    perplexity).
    """

    window_rows: int = Field(default=5000, ge=10)
    window_s: Duration | None = Field(default=None, gt=0)
    stattest_threshold: float | None = Field(default=None, gt=0)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    cooldown_s: Duration = Field(default=600.0, ge=0)
    quality_drop: float = Field(default=0.05, ge=0)
    on_drift_recency_half_life_s: Duration | None = Field(default=None, gt=0)


def _instant(value: Any) -> Any:
    """An ISO-8601 date or date-time (YAML may hand over a ``date`` or ``datetime``) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO-8601 date or date-time; write e.g. 2000-01-01 or 2015-06-01T00:00:00Z"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError(
            f"{value!r} is not a date; write an ISO-8601 date or date-time such as 2000-01-01, or null for no bound"
        )
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TimePolicy(_Strict):
    """The pipeline's event-time clock (see :mod:`rt_training.eventtime`).

    The watermark is the highest event time committed to silver minus ``allowed_lateness``: every window of the
    other policies (holdout, recency, drift, cooldown, periodic retraining, dedup history) is measured on it, not
    on the wall clock. An event whose time is below the watermark when it is ingested is *late*: it is kept and
    counted (``late_rows``). With ``max_lateness`` set, an event more than that below the watermark goes to dead
    letters as ``too_late`` instead.

    Two bounds keep implausible event times out of silver, where a single one would move the watermark (a year
    9999 event would put every later event ``too_late`` and every window out of reach) or make rows of a clock
    reset (epoch 0) look like history. Both depend only on the record, so a retried micro-batch routes every
    record as the first attempt did, whatever the wall clock:

    ``max_future_skew`` (default ``1h``; ``null`` turns it off)
        An event time more than this ahead of the record's Kafka timestamp (bronze's ``timestamp`` column: the
        producer's send time, or the broker's append time on a ``LogAppendTime`` topic) goes to dead letters as
        ``future_event_time``. An event cannot happen after it is sent, so only a wrong clock, a wrong time zone
        or a wrong unit puts it there. The default is the hour Kafka's own ``log.message.timestamp.after.max.ms``
        allows: far above any real clock drift, and it catches local time east of UTC sent as UTC (no such zone
        is less than an hour ahead). A record without a Kafka timestamp (null, or negative as from the oldest
        message format) is not judged.
    ``min_event_time`` (default ``2000-01-01``; ``null`` turns it off)
        An event time before this instant goes to dead letters as ``before_min_event_time``: ``0`` and negative
        epoch milliseconds, 1970 (epoch seconds sent as milliseconds land in January 1970), and anything older
        than a stream can plausibly hold. Replaying older history: set it earlier, or to ``null`` (event times
        then only need to lie in years 0001..9999). Written as an ISO-8601 date (``2000-01-01``) or date-time
        (``2015-06-01T00:00:00Z``); without a zone it is UTC.
    """

    allowed_lateness: Duration = Field(default=0.0, ge=0)
    max_lateness: Duration | None = Field(default=None, ge=0)
    max_future_skew: Duration | None = Field(default=3600.0, ge=0)
    min_event_time: Annotated[datetime | None, BeforeValidator(_instant)] = datetime(2000, 1, 1, tzinfo=UTC)


class PipelineSpec(_Strict):
    """A whole pipeline: one stream, its schema, features, label, model and policies."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    source: SourceSpec
    schema_: SchemaSpec = Field(alias="schema")
    features: FeaturesSpec
    label: LabelSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    ingest: IngestPolicy = Field(default_factory=IngestPolicy)
    sampling: SamplingPolicy = Field(default_factory=SamplingPolicy)
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    time: TimePolicy = Field(default_factory=TimePolicy)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        fields = self.schema_.fields
        allowed_types = {
            "numeric": ("int", "float", "bool"),
            "categorical": ("string", "int", "bool"),
            "text": ("text", "string"),
            "sequence": ("list",),
            "vector": ("vector",),
        }
        for group, types in allowed_types.items():
            for i, f in enumerate(getattr(self.features, group)):
                if f.name not in fields:
                    raise ValueError(f"features.{group}[{i}].name {f.name!r} is not a schema field")
                if fields[f.name].type not in types:
                    raise ValueError(
                        f"features.{group}[{i}].name {f.name!r} has type {fields[f.name].type}; "
                        f"a {group} feature needs a field of type {' or '.join(types)}"
                    )
        names = self.features.names
        if len(set(names)) != len(names):
            raise ValueError("a field is listed as a feature twice")
        if not names:
            raise ValueError(
                "features: declare at least one feature (numeric, categorical, text, sequence or vector)"
            )
        label = self.label
        if label.field not in fields:
            raise ValueError(f"label.field {label.field!r} is not a schema field")
        if label.kind == "language_model":
            if label.field not in [t.name for t in self.features.text]:
                raise ValueError(
                    f"label.kind language_model predicts the next token of a text feature: list {label.field!r} "
                    "under features.text"
                )
        elif label.field in names:
            raise ValueError(f"label.field {label.field!r} is also a feature (label leakage)")
        if label.kind == "multiclass" and fields[label.field].type not in ("string", "int", "bool"):
            raise ValueError(
                f"label.kind multiclass needs a string, int or bool field, {label.field!r} is not"
            )
        if label.kind in ("binary", "regression") and fields[label.field].type not in (
            "int",
            "float",
            "bool",
        ):
            raise ValueError(f"label.kind {label.kind} needs a numeric field, {label.field!r} is not")
        if self.training.metric is None:
            object.__setattr__(self.training, "metric", DEFAULT_METRIC[label.kind])
        if self.training.metric not in METRICS_FOR[label.kind]:
            raise ValueError(
                f"training.metric {self.training.metric} does not apply to label.kind {label.kind}; "
                f"use one of {', '.join(METRICS_FOR[label.kind])}"
            )
        builtin = self.model.builtin
        if builtin == "causal_lm" and label.kind != "language_model":
            raise ValueError("model.builtin causal_lm needs label.kind language_model")
        if label.kind == "language_model" and builtin in ("mlp", "logistic", "text_classifier"):
            raise ValueError(
                f"label.kind language_model needs model.builtin causal_lm (or a factory), not {builtin}"
            )
        if builtin == "text_classifier" and not self.features.text:
            raise ValueError("model.builtin text_classifier needs at least one features.text entry")
        mixture = self.sampling.mixture
        if mixture is not None:
            if mixture.by not in fields:
                raise ValueError(f"sampling.mixture.by {mixture.by!r} is not a schema field")
            if fields[mixture.by].type not in ("string", "int", "bool"):
                raise ValueError(
                    f"sampling.mixture.by {mixture.by!r} has type {fields[mixture.by].type}; groups come from a "
                    "string, int or bool field"
                )
        self._settings_that_act()
        return self

    def _settings_that_act(self) -> None:
        """Refuse a setting that the chosen strategy would silently ignore."""
        on_drift = self.drift.on_drift_recency_half_life_s
        if on_drift is not None and self.sampling.strategy != "weighted":
            raise ValueError(
                f"drift.on_drift_recency_half_life_s ({format_duration(on_drift)}) cannot act with sampling.strategy "
                f"{self.sampling.strategy!r}: only the 'weighted' strategy takes a recency half-life per run "
                "('time_biased' keeps its half-life in the saved sample's keys, 'uniform' has no weights). "
                "Use sampling.strategy 'weighted' or remove drift.on_drift_recency_half_life_s"
            )

    # -- conveniences used across layers -------------------------------------------------------
    @property
    def id_field(self) -> str:
        return self.schema_.id_field

    @property
    def time_field(self) -> str:
        return self.schema_.time_field

    @property
    def adapts_on_drift(self) -> bool:
        """Whether a drift report can change the training set's priorities: a drift half-life with the
        ``weighted`` strategy. The training set then takes new rows only in training runs, after the report (see
        :mod:`rt_training.defs.drift`), so a retraining launched on drift offers them under the drift half-life."""
        return self.drift.on_drift_recency_half_life_s is not None and self.sampling.strategy == "weighted"

    @property
    def numeric_feature_names(self) -> list[str]:
        return [f.name for f in self.features.numeric]

    @property
    def categorical_feature_names(self) -> list[str]:
        return [c.name for c in self.features.categorical]

    @property
    def feature_fields(self) -> list[str]:
        """The silver columns the model's inputs are computed from (each feature's field, in input order)."""
        return self.features.names

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: recorded in lineage so a model names the spec it came from."""
        canon = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()
