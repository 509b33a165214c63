"""Typed pipeline spec: what a user declares about their stream, features, model and policies.

A spec is YAML (see ``rt_training/specs/clickstream.yaml``) loaded by :func:`rt_training.spec.load_spec`.
Every model here forbids unknown keys, so a typo in a spec is an error naming the field, not a silent default.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from rt_training.spec.durations import Duration, format_duration

FieldType = Literal["string", "int", "float", "bool", "timestamp"]
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
    """One field of the event schema."""

    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = Field(default=None, ge=1)
    default: Any = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max apply to int and float fields, not to {self.type}")
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
    """A numeric feature: optional transform, then z-score with fixed mean/std (stateless, reproducible)."""

    name: str
    transform: Literal["none", "log1p", "clip"] = "none"
    clip_min: float | None = None
    clip_max: float | None = None
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)


class CategoricalFeature(_Strict):
    """A categorical feature: a fixed vocabulary (index 0 is 'unknown') or hash buckets."""

    name: str
    vocabulary: list[str] | None = None
    hash_buckets: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _one_encoding(self) -> CategoricalFeature:
        if (self.vocabulary is None) == (self.hash_buckets is None):
            raise ValueError("give exactly one of vocabulary or hash_buckets")
        if self.vocabulary is not None and len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate entries")
        return self

    @property
    def cardinality(self) -> int:
        """Number of embedding rows: the vocabulary plus the unknown slot, or the bucket count."""
        return len(self.vocabulary) + 1 if self.vocabulary is not None else int(self.hash_buckets or 0)


class FeaturesSpec(_Strict):
    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)


class LabelSpec(_Strict):
    field: str
    kind: Literal["binary", "regression"] = "binary"


class ModelSpec(_Strict):
    """A built-in model, or ``factory: "package.module:function"`` returning an ``nn.Module``."""

    builtin: Literal["mlp", "logistic"] | None = "mlp"
    factory: str | None = None
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=8, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)

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


class SamplingPolicy(_Strict):
    capacity: int = Field(default=50_000, ge=1)
    strategy: Literal["uniform", "weighted", "time_biased"] = "weighted"
    recency_half_life_s: Duration | None = Field(default=3600.0, gt=0)
    class_balance: dict[str, float] | None = None
    importance: bool = False
    replay_share: float = Field(default=0.0, ge=0.0, lt=1.0)
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

    Periodic retraining, each optional: ``schedule_cron`` on the wall clock; ``retrain_every_s`` of event time
    and ``retrain_every_rows`` new silver rows since the last retraining launch (or the champion's cut).
    """

    metric: Literal["auc", "log_loss", "accuracy", "rmse"] = "auc"
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
    window_rows: int = Field(default=5000, ge=10)
    window_s: Duration | None = Field(default=None, gt=0)
    stattest_threshold: float | None = Field(default=None, gt=0)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    cooldown_s: Duration = Field(default=600.0, ge=0)
    quality_drop: float = Field(default=0.05, ge=0)
    on_drift_recency_half_life_s: Duration | None = Field(default=None, gt=0)


class TimePolicy(_Strict):
    """The pipeline's event-time clock (see :mod:`rt_training.eventtime`).

    The watermark is the highest event time committed to silver minus ``allowed_lateness``: every window of the
    other policies (holdout, recency, drift, cooldown, periodic retraining, dedup history) is measured on it, not
    on the wall clock. An event whose time is below the watermark when it is ingested is *late*: it is kept and
    counted (``late_rows``). With ``max_lateness`` set, an event more than that below the watermark goes to dead
    letters as ``too_late`` instead.
    """

    allowed_lateness: Duration = Field(default=0.0, ge=0)
    max_lateness: Duration | None = Field(default=None, ge=0)


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
        for i, f in enumerate(self.features.numeric):
            if f.name not in fields:
                raise ValueError(f"features.numeric[{i}].name {f.name!r} is not a schema field")
            if fields[f.name].type not in ("int", "float", "bool"):
                raise ValueError(
                    f"features.numeric[{i}].name {f.name!r} has type {fields[f.name].type}, not numeric"
                )
        for i, c in enumerate(self.features.categorical):
            if c.name not in fields:
                raise ValueError(f"features.categorical[{i}].name {c.name!r} is not a schema field")
            if fields[c.name].type != "string":
                raise ValueError(f"features.categorical[{i}].name {c.name!r} must be a string field")
        names = [f.name for f in self.features.numeric] + [c.name for c in self.features.categorical]
        if len(set(names)) != len(names):
            raise ValueError("a field is listed as a feature twice")
        if not names:
            raise ValueError("features: declare at least one numeric or categorical feature")
        if self.label.field not in fields:
            raise ValueError(f"label.field {self.label.field!r} is not a schema field")
        if self.label.field in names:
            raise ValueError(f"label.field {self.label.field!r} is also a feature (label leakage)")
        if self.label.kind == "binary" and self.training.metric == "rmse":
            raise ValueError("training.metric rmse needs label.kind regression")
        if self.label.kind == "regression" and self.training.metric in ("auc", "log_loss", "accuracy"):
            raise ValueError(f"training.metric {self.training.metric} needs label.kind binary")
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

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: recorded in lineage so a model names the spec it came from."""
        canon = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()
