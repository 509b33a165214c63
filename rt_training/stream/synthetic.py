"""A synthetic event stream for any pipeline spec: plausible values, a hidden label model, drift and bad records.

Everything is read from the :class:`~rt_training.spec.PipelineSpec`, so a new spec needs no code change:

- the id field: uuid4-style strings (or increasing integers for an int id), unique, from the seeded generator;
- the time field: epoch milliseconds (int) from a clock: :class:`SimulatedClock` (event ``i`` at
  ``start + i / rate``; tests and replays) or :class:`WallClock` (now; the live producer);
- numeric features: drawn so their *feature* is normal with the spec's mean and std, i.e. ``z ~ N(mean, std)``
  and ``value = expm1(z)`` for a ``log1p`` transform, ``value = z`` otherwise; then clipped to the schema's
  min/max and rounded (ints to integers, floats to about four significant digits); booleans are ``true`` with
  probability ``mean`` when it lies in (0, 1). A feature without ``mean``/``std`` (fitted from the data) takes
  them from the field's bounds (:func:`~rt_training.stream.synthetic_fields.feature_moments`: the middle of
  the bounds with a sixth of their width as std, else a default scale);
- categorical features: a Zipf-like choice over the vocabulary (exponent 1, first entry most frequent), or over
  a pool of ``4 x hash_buckets`` ids ``"<field name without _id>_<n>"`` (exponent 0.7, popular ids scattered)
  for hash-bucket features; a learned vocabulary (neither given) draws from the ``allowed`` values, else from
  50 seeded pseudo-words (ints inside the bounds for an int field) to which drift adds 25 new ones; an int or
  bool field's values are ints and booleans (:func:`~rt_training.stream.synthetic_fields.value_pool`);
- the field of ``sampling.mixture.by``: the event's *group*, whose share of the stream trends over event time
  (waves and bursts sized by the mixture's ``trend_window`` and ``reference_window``; see
  :mod:`rt_training.stream.synthetic_text`); without a mixture every event is in one group;
- text fields: headline-like sentences of the event's group, its own names and topic words plus shared
  function words (:mod:`rt_training.stream.synthetic_text`), within the field's ``max_length`` characters;
- list fields: 1 to ``min(max_length or 8, 16)`` elements, Zipf-like choices over a value pool for string and
  int items (a sequence feature's encoding picks the pool as for categoricals), numbers inside the bounds for
  float items; vector fields: ``dim`` floats from a seeded low-rank basis, centred in and clipped to the bounds;
- other fields: short lowercase tokens (or the ``allowed`` values) for strings, values inside the bounds for
  numbers, fair coins for booleans, a recent epoch-ms time for timestamps;
- optional fields are left out of about 10% of events when the pipeline can fill them in (a field with a
  default, or one that is not a feature or the label); the label model then sees the default, as cleaning does;
- the label: a fixed random model of the standardized numeric features (linear terms plus a few pairwise
  interactions) and per-category effects (the group's too when the spec has text features, so the texts
  carry signal), scaled to a logit standard deviation of 2 with an intercept that makes the base rate 20%;
  ``label ~ Bernoulli(sigmoid(logit))`` for binary labels, signal (standard deviation 1) plus Gaussian noise
  (standard deviation 0.5) for regression labels, placed at the centre of the field's range with
  ``(max - min) / 8`` per unit when both bounds are declared. A multiclass label has one such model per class
  (standard deviation 1 each) and draws its class from ``softmax(2 * signals)``; its classes are the
  ``allowed`` values, else 4 of them (``"<name>_<n>"``, consecutive ints, or false/true). A language-model
  label is the text field itself: nothing more is drawn.

Drift starts ``drift_at`` seconds of event time after the first event of the stream. From then on, with
strength ``s``: about half of the numeric features (a seeded choice) move their feature mean by ``s`` standard
deviations (up or down), about half of the categorical features mix in a different popularity order (share
``min(1, s / 2)``: the vocabulary reversed, or other ids of the pool), and the label model turns towards an
independent random model by the angle ``min(pi / 2, s * pi / 4)`` (45 degrees at ``s = 1``), recalibrated to the
same base rate: data drift and concept drift together. About half of the sequence and vector features (a seeded
choice) change too: string/int elements mix in the changed popularity order like categoricals, float elements
and vectors move by ``s`` spreads. In texts, the drifting groups start using new names and topic words, each
name or topic-word slot with probability ``min(1, s / 2) / 2``. :attr:`EventGenerator.drifting` names what
moves, :meth:`EventGenerator.new_words` the new words.

Bad records (:mod:`rt_training.stream.bad_records`) replace a share ``bad_ratio`` of events; their kinds cycle
through the kinds the spec allows, so each is about equally frequent.

The message key is the event's id field value as UTF-8 text, so every event of one id, a duplicate included,
lands on the same partition; it is ``None`` for a malformed record and for a record without its id.

Determinism: every event consumes a fixed set of random variates drawn in blocks, so for a seed (and a
simulated clock) the stream is one fixed sequence however it is cut into batches: ``generate(300)`` yields the
same bytes as ``generate(100)`` followed by ``generate(200)``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from rt_training.spec.models import PipelineSpec
from rt_training.stream.bad_records import BAD_KINDS, BadRecordMaker
from rt_training.stream.hidden_model import HiddenModel
from rt_training.stream.synthetic_fields import (
    POOL_PER_BUCKET,
    POOL_ZIPF_EXPONENT,
    Choice,
    ChoiceField,
    Columns,
    Draws,
    FieldPlan,
    GroupField,
    IdField,
    LabelField,
    ListField,
    NumericFeatureField,
    OtherBoolField,
    OtherNumberField,
    OtherTimeField,
    TextField,
    TimeField,
    Variates,
    VectorField,
    categorical_choice,
    group_values,
    id_pool,
    legal_strings,
    word_pool,
)
from rt_training.stream.synthetic_text import GroupTrend, HeadlineText

__all__ = ["BAD_KINDS", "DEFAULT_START_MS", "EventBatch", "EventGenerator", "SimulatedClock", "WallClock"]

DEFAULT_START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z: a fixed origin for simulated streams
OMIT_RATIO = 0.1
DUPLICATE_WINDOW = 1000
CALIBRATION_ROWS = 16_384

Clock = Callable[[int], np.ndarray]


class SimulatedClock:
    """Event times of a stream at a fixed rate: event ``i`` at ``start_ms + floor(i * 1000 / rate)``."""

    def __init__(self, start_ms: int = DEFAULT_START_MS, rate: float = 1000.0):
        if rate <= 0:
            raise ValueError(f"the simulated clock needs a positive rate (events/s), got {rate}")
        self.start_ms = int(start_ms)
        self.rate = float(rate)
        self._next = 0

    def __call__(self, n: int) -> np.ndarray:
        i = np.arange(self._next, self._next + n, dtype=np.float64)
        self._next += n
        return self.start_ms + np.floor(i * 1000.0 / self.rate).astype(np.int64)


class WallClock:
    """Stamps every event of a batch with the current time; batches of the live producer are a few ms long."""

    def __call__(self, n: int) -> np.ndarray:
        return np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)


@dataclass(frozen=True)
class EventBatch:
    """Generated events, as Kafka messages and as the clean content they were made from.

    Attributes
    ----------
    keys, values
        The messages: key (the id as text, or ``None``) and JSON value bytes.
    kinds
        ``None`` for a valid event, else the dead-letter reason the record must get.
    times_ms
        Event time of each event (epoch milliseconds).
    drifted
        Whether the event comes after the drift point.
    columns
        Per schema field, the clean value of every event before any bad-record change (strings as ``object``).
    present
        Per optional field, whether the event carries it.
    label_mean
        The hidden model's label expectation: P(label = 1) for binary labels, the class probabilities
        ``(n, classes)`` for multiclass, the noise-free value for regression, NaN for a language-model label
        (the label is the text itself).
    """

    keys: list[bytes | None]
    values: list[bytes]
    kinds: list[str | None]
    times_ms: np.ndarray
    drifted: np.ndarray
    columns: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    label_mean: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes, str | None]]:
        """``(key, value, kind)`` triples in stream order."""
        return iter(zip(self.keys, self.values, self.kinds, strict=True))


# -- the generator ----------------------------------------------------------------------------------------------


class EventGenerator:
    """Generates the events of a pipeline's stream, as JSON bytes with keys, from its spec alone.

    Parameters
    ----------
    spec
        The pipeline spec: its schema, features and label drive everything.
    seed
        Fixes the hidden model, the value pools and the whole event sequence.
    clock
        Where event times come from; default a :class:`SimulatedClock` at 1000 events/s from
        :data:`DEFAULT_START_MS`. Pass :class:`WallClock` for a live stream.
    drift_at
        Seconds of event time after the first event at which drift starts; ``None`` for no drift.
    drift_strength
        ``s`` in the module docstring: numeric means move by ``s`` standard deviations.
    bad_ratio
        Share of events replaced by bad records, in [0, 1].
    omit_ratio
        Share of events that leave out each optional field that may be left out.

    Examples
    --------
    >>> from rt_training.spec import load_spec
    >>> gen = EventGenerator(load_spec(), seed=1)
    >>> batch = gen.generate(3)
    >>> len(batch), batch.kinds
    (3, [None, None, None])
    >>> batch.keys[0] in batch.values[0]
    True
    """

    def __init__(
        self,
        spec: PipelineSpec,
        seed: int = 0,
        *,
        clock: Clock | None = None,
        drift_at: float | None = None,
        drift_strength: float = 1.0,
        bad_ratio: float = 0.0,
        omit_ratio: float = OMIT_RATIO,
    ):
        if not 0.0 <= bad_ratio <= 1.0:
            raise ValueError(f"bad_ratio must be in [0, 1], got {bad_ratio}")
        if not 0.0 <= omit_ratio <= 1.0:
            raise ValueError(f"omit_ratio must be in [0, 1], got {omit_ratio}")
        if drift_strength < 0:
            raise ValueError(f"drift_strength must be >= 0, got {drift_strength}")
        if drift_at is not None and drift_at < 0:
            raise ValueError(f"drift_at is seconds after the first event and must be >= 0, got {drift_at}")
        self.spec = spec
        self.seed = seed
        self.drift_at = drift_at
        self.drift_strength = drift_strength
        self.bad_ratio = bad_ratio
        self.omit_ratio = omit_ratio
        self.generated = 0
        self._clock = clock or SimulatedClock()
        self._t0_ms: int | None = None

        # The fourth stream (extras) seeds what the first three never drew: text, groups, lists, vectors,
        # learned vocabularies and multiclass models, so adding them left every earlier stream unchanged.
        setup_seq, stream_seq, calibration_seq, extras_seq = np.random.SeedSequence(seed).spawn(4)
        setup = np.random.default_rng(setup_seq)
        extras = np.random.default_rng(extras_seq)
        cols = Columns()
        self._bad_u = [cols.next_uniform() for _ in range(5)]  # is bad, three choices, duplicate pick
        self._fields, self._omit_cols = self._plan(setup, extras, cols)
        self._by_name = {f.name: f for f in self._fields}
        self._numeric = [self._by_name[f.name] for f in spec.features.numeric]
        self._categorical = [self._by_name[c.name] for c in spec.features.categorical]
        label = self._by_name[spec.label.field]
        self._label: LabelField | None = label if isinstance(label, LabelField) else None
        self._id: IdField = self._by_name[spec.id_field]  # type: ignore[assignment]
        self._group: GroupField | None = next((f for f in self._fields if isinstance(f, GroupField)), None)
        self._template = self._record_template()

        categories = [
            (len(f.choice.values), 0.8 if c.vocabulary is not None else 0.4)
            for f, c in zip(self._categorical, spec.features.categorical, strict=True)
        ]
        # Texts tell their group: a label that depends on the group can be learned from the text features.
        self._group_effect = (
            bool(spec.features.text) and self._group is not None and self._group not in self._categorical
        )
        if self._group_effect:
            categories.append((len(self._group.choice.values), 0.8))  # type: ignore[union-attr]
        base = HiddenModel.random(setup, len(self._numeric), categories)
        other = HiddenModel.random(setup, len(self._numeric), categories)
        angle = min(math.pi / 2, drift_strength * math.pi / 4)
        pairs = [(base, base.turned(other, angle))]
        if self._label is not None and self._label.kind == "multiclass":
            pairs = []
            for _ in range(self._label.n_classes):
                first = HiddenModel.random(extras, len(self._numeric), categories)
                pairs.append(
                    (first, first.turned(HiddenModel.random(extras, len(self._numeric), categories), angle))
                )
        self._models: tuple[list[HiddenModel], list[HiddenModel]] = ([], [])
        if self._label is not None:
            calibration = Variates(np.random.default_rng(calibration_seq), cols.normal, cols.uniform)
            before = self._model_inputs(self._calibration_draws(calibration, False))
            after = self._model_inputs(self._calibration_draws(calibration, True))
            binary = spec.label.kind == "binary"
            self._models = (
                [pre.calibrated(*before, binary) for pre, _ in pairs],
                [post.calibrated(*after, binary) for _, post in pairs],
            )
        self._variates = Variates(np.random.default_rng(stream_seq), cols.normal, cols.uniform)
        self._bad = BadRecordMaker(spec)
        self._history: deque[tuple[bytes, bytes | None]] = deque(maxlen=DUPLICATE_WINDOW)
        self._kind_counter = 0

    @property
    def bad_kinds(self) -> tuple[str, ...]:
        """The bad record kinds this spec allows, in the order they cycle."""
        return self._bad.kinds

    @property
    def drifting(self) -> dict[str, float]:
        """What changes at the drift point: numeric feature -> mean shift in feature standard deviations
        (signed), categorical feature -> share of events drawn from the changed popularity order, list feature
        -> that share (string and int elements) or the shift of its float elements in spreads, vector feature
        -> its shift in spreads per coordinate, text field -> share of name and topic-word slots that take new
        words in the drifting groups."""
        out: dict[str, float] = {}
        for f in self._fields:
            if isinstance(f, NumericFeatureField) and f.shift:
                out[f.name] = f.shift
            elif isinstance(f, ChoiceField) and f.mix_share:
                out[f.name] = f.mix_share
            elif isinstance(f, ListField | VectorField) and f.drift:
                out[f.name] = f.drift
            elif isinstance(f, TextField) and f.new_share:
                out[f.name] = f.new_share
        return out

    def group_shares(self, elapsed_s: np.ndarray) -> np.ndarray:
        """Each group's expected share of the stream (columns, in the order of :attr:`groups`) at
        ``elapsed_s`` seconds of event time after the first event."""
        if self._group is None:
            return np.ones((len(elapsed_s), 1))
        return self._group.trend.shares(np.asarray(elapsed_s, dtype=np.float64))

    @property
    def groups(self) -> list:
        """The values of ``sampling.mixture.by`` the events are grouped by (``[None]``: one group)."""
        return [None] if self._group is None else self._group.choice.values.tolist()

    def new_words(self, field: str) -> dict[object, list[str]]:
        """Per group (a value of :attr:`groups`), the words text field ``field`` uses only after drift."""
        plan = self._by_name[field]
        if not isinstance(plan, TextField):
            raise ValueError(f"field {field!r} is not a text field of this stream")
        return {g: plan.text.new_words(i) for i, g in enumerate(self.groups)}

    # -- construction ---------------------------------------------------------------------------------------
    def _plan(
        self, rng: np.random.Generator, extras: np.random.Generator, cols: Columns
    ) -> tuple[list[FieldPlan], dict[str, int]]:
        """One drawing plan per schema field, id first then schema order; seeded choices of what drifts."""
        spec = self.spec
        fields = spec.schema_.fields
        numeric = {f.name: f for f in spec.features.numeric}
        categorical = {c.name: c for c in spec.features.categorical}
        sequences = {f.name: f for f in spec.features.sequence}
        texts = {f.name for f in spec.features.text}
        lm_label = spec.label.kind == "language_model"
        mixture = spec.sampling.mixture
        group_plan = None
        if (
            mixture is not None
            and mixture.by not in numeric
            and not (mixture.by == spec.label.field and not lm_label)
        ):
            by = fields[mixture.by]
            values = group_values(extras, mixture.by, by, categorical.get(mixture.by))
            trend = GroupTrend(extras, len(values), mixture.trend_window, mixture.reference_window)
            group_plan = GroupField(mixture.by, by, Choice(values, cols), trend)
        n_groups = 1 if group_plan is None else len(group_plan.choice.values)
        text_drift = extras.permutation(n_groups)[: (n_groups + 1) // 2]
        drifting_groups = np.isin(np.arange(n_groups), text_drift)
        new_share = min(1.0, self.drift_strength / 2) / 2
        shaped = sorted(sequences) + sorted(f.name for f in spec.features.vector)
        drift_shaped = set(extras.permutation(shaped)[: (len(shaped) + 1) // 2].tolist()) if shaped else set()
        taken: set[str] = set()
        drift_num = (
            set(rng.permutation(list(numeric))[: (len(numeric) + 1) // 2].tolist()) if numeric else set()
        )
        drift_cat = (
            set(rng.permutation(list(categorical))[: (len(categorical) + 1) // 2].tolist())
            if categorical
            else set()
        )
        mix_share = min(1.0, self.drift_strength / 2)
        planned: list[FieldPlan] = []
        omit: dict[str, int] = {}
        for name in [spec.id_field] + [n for n in fields if n != spec.id_field]:
            fs = fields[name]
            plan: FieldPlan
            if name == spec.id_field:
                plan = IdField(name, fs, int(rng.integers(1_000_000, 1_000_000_000)))
            elif name == spec.time_field:
                plan = TimeField(name, fs)
            elif name == spec.label.field and not lm_label:
                plan = LabelField(name, fs, spec.label.kind, cols)
            elif group_plan is not None and name == group_plan.name:
                plan = group_plan
            elif name in numeric:
                sign = 1.0 if rng.random() < 0.5 else -1.0
                shift = sign * self.drift_strength if name in drift_num else 0.0
                plan = NumericFeatureField(name, fs, numeric[name], cols, shift)
            elif name in categorical:
                cat = categorical[name]
                if fs.type == "string" and cat.vocabulary is not None:
                    values = legal_strings(name, fs, list(cat.vocabulary))
                    choice = Choice(values, cols, drift_order=np.arange(len(values))[::-1].copy())
                elif fs.type == "string" and cat.hash_buckets is not None:
                    values = id_pool(name, fs, POOL_PER_BUCKET * cat.hash_buckets)
                    orders = rng.permutation(len(values)), rng.permutation(len(values))
                    choice = Choice(values, cols, *orders, exponent=POOL_ZIPF_EXPONENT)
                else:
                    choice = categorical_choice(extras, name, fs, cat, cols)
                plan = ChoiceField(name, fs, choice, mix_share if name in drift_cat else 0.0)
            elif fs.type == "text" or name in texts:
                text = HeadlineText(extras, n_groups, drifting_groups, fs.max_length, taken)
                plan = TextField(name, fs, text, cols, new_share)
            elif fs.type == "list":
                drift = 0.0
                if name in drift_shaped:
                    drift = self.drift_strength if fs.items == "float" else mix_share
                plan = ListField(name, fs, cols, extras, sequences.get(name), drift)
            elif fs.type == "vector":
                plan = VectorField(
                    name, fs, cols, extras, self.drift_strength if name in drift_shaped else 0.0
                )
            elif fs.type == "string":
                plan = ChoiceField(name, fs, Choice(word_pool(rng, name, fs), cols), 0.0)
            elif fs.type in ("int", "float"):
                plan = OtherNumberField(name, fs, cols)
            elif fs.type == "bool":
                plan = OtherBoolField(name, fs, cols)
            else:
                plan = OtherTimeField(name, fs, cols)
            is_feature = name in spec.features.names or name == spec.label.field
            if not fs.required and (fs.default is not None or not is_feature):
                omit[name] = cols.next_uniform()
            planned.append(plan)
        return planned, omit

    def _record_template(self) -> bytes:
        parts = []
        for i, f in enumerate(self._fields):
            if f.name in self._omit_cols:
                parts.append(b"%s")
            else:
                parts.append((b"," if i else b"") + b'"%s":' % f.name.encode() + f.fmt)
        return b"{" + b"".join(parts) + b"}"

    def _calibration_draws(self, variates: Variates, drifted: bool) -> Draws:
        normal, uniform, id_bytes = variates.take(CALIBRATION_ROWS)
        n = CALIBRATION_ROWS
        times = np.zeros(n, np.int64)
        d = Draws(normal, uniform, id_bytes, times, np.full(n, drifted), np.arange(n, dtype=np.int64))
        return self._grouped(d, np.zeros(n))

    def _grouped(self, d: Draws, elapsed_s: np.ndarray) -> Draws:
        """``d`` with each event's group, when the stream has groups."""
        return d if self._group is None else replace(d, group=self._group.assign(elapsed_s, d))

    # -- drawing --------------------------------------------------------------------------------------------
    def _model_inputs(self, d: Draws) -> tuple[np.ndarray, list[np.ndarray]]:
        values = {f.name: f.draw(d) for f in self._numeric + self._categorical}
        present = self._present(d)
        return self._features(values, present, d)

    def _present(self, d: Draws) -> dict[str, np.ndarray]:
        return {name: d.uniform[:, col] >= self.omit_ratio for name, col in self._omit_cols.items()}

    def _features(
        self, values: dict[str, np.ndarray], present: dict[str, np.ndarray], d: Draws
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """What the model sees after cleaning: standardized numbers and category indices (-1 = unknown),
        with an omitted optional field replaced by its default; then the group, when texts reveal it."""
        n = len(d.times)
        x = np.empty((n, len(self._numeric)))
        for j, f in enumerate(self._numeric):
            v = values[f.name]
            if f.name in present:
                v = np.where(present[f.name], v, f.spec.default)
            x[:, j] = f.standardized(v)
        cats = []
        for f in self._categorical:
            idx = values[f.name]
            if f.name in present:
                default_idx = np.flatnonzero(f.choice.values == f.spec.default)
                idx = np.where(present[f.name], idx, default_idx[0] if len(default_idx) else -1)
            cats.append(idx)
        if self._group_effect:
            cats.append(d.group)
        return x, cats

    def generate(self, n: int) -> EventBatch:
        """The next ``n`` events of the stream."""
        normal, uniform, id_bytes = self._variates.take(n)
        times = self._clock(n)
        if self._t0_ms is None and n:
            self._t0_ms = int(times[0])
        if self.drift_at is None or self._t0_ms is None:
            drifted = np.zeros(n, dtype=bool)
        else:
            drifted = times >= self._t0_ms + self.drift_at * 1000.0
        index = np.arange(self.generated, self.generated + n, dtype=np.int64)
        d = Draws(normal, uniform, id_bytes, times, drifted, index)
        d = self._grouped(d, (times - (self._t0_ms or 0)) / 1000.0)
        self.generated += n

        values = {f.name: f.draw(d) for f in self._fields if f is not self._label}
        present = self._present(d)
        if self._label is None:
            label_mean = np.full(n, np.nan)
        else:
            x, cats = self._features(values, present, d)
            before, after = ([m.signal(x, cats) for m in models] for models in self._models)
            if self._label.kind == "multiclass":
                signal = np.where(drifted[:, None], np.column_stack(after), np.column_stack(before))
            else:
                signal = np.where(drifted, after[0], before[0])
            label_mean = self._label.expectation(signal)
            values[self._label.name] = self._label.draw_label(label_mean, d)

        args = {f.name: f.template_args(values[f.name]) for f in self._fields}
        row_args = []
        for f in self._fields:
            if f.name in present:
                keyed = b',"%s":' % f.name.encode() + f.fmt
                row_args.append(
                    [
                        keyed % a if p else b""
                        for a, p in zip(args[f.name], present[f.name].tolist(), strict=True)
                    ]
                )
            else:
                row_args.append(args[f.name])
        template = self._template
        records = [template % r for r in zip(*row_args, strict=True)]
        keys: list[bytes | None] = self._id.keys(values[self._id.name])  # type: ignore[assignment]
        id_tokens = args[self._id.name] if self._id.fmt == b"%s" else [b"%d" % a for a in args[self._id.name]]
        kinds: list[str | None] = [None] * n
        self._make_bad(d, args, present, records, keys, kinds, id_tokens)
        return EventBatch(
            keys=keys,
            values=records,
            kinds=kinds,
            times_ms=times,
            drifted=drifted,
            columns={f.name: f.column(values[f.name]) for f in self._fields},
            present=present,
            label_mean=label_mean,
        )

    def _make_bad(
        self,
        d: Draws,
        args: dict[str, list],
        present: dict[str, np.ndarray],
        records: list[bytes],
        keys: list[bytes | None],
        kinds: list[str | None],
        id_tokens: list[bytes],
    ) -> None:
        """Replace the events picked as bad, in order, keeping the window of recent valid ids for duplicates."""
        n = len(records)
        history = self._history
        rows = np.flatnonzero(d.uniform[:, self._bad_u[0]] < self.bad_ratio) if self.bad_ratio > 0 else ()
        kinds_cycle = self._bad.kinds
        done = 0
        for i in np.asarray(rows, dtype=np.intp).tolist():
            start = max(done, i - DUPLICATE_WINDOW)
            history.extend(zip(id_tokens[start:i], keys[start:i], strict=True))
            done = i
            kind = kinds_cycle[self._kind_counter % len(kinds_cycle)]
            earlier = None
            if kind == "duplicate_id":
                if not history:
                    continue  # nothing valid came before: this event stays valid and the next bad one duplicates
                earlier = history[min(int(d.uniform[i, self._bad_u[4]] * len(history)), len(history) - 1)]
            items = {f.name: f.token(args[f.name][i]) for f in self._fields}
            absent = {name for name, p in present.items() if not p[i]}
            u1, u2, u3 = (float(d.uniform[i, c]) for c in self._bad_u[1:4])
            records[i], keys[i] = self._bad.make(kind, items, absent, keys[i], (u1, u2, u3), earlier)
            kinds[i] = kind
            self._kind_counter += 1
            done = i + 1
        start = max(done, n - DUPLICATE_WINDOW)
        history.extend(zip(id_tokens[start:n], keys[start:n], strict=True))
