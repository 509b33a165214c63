"""The training-set sample of one pipeline, advanced one silver version at a time.

:class:`SamplingSession` is the entry point for whatever maintains the ``training_set`` table: give it the new
silver rows of a silver version (a pyarrow Table) and, when the policy weights by importance, the champion's
loss on each of them; it returns which rows join the training set, which move to replay and which leave.
Applying those changes to the table and saving :meth:`SamplingSession.state` (for instance with
:class:`rt_training.sampling.state_store.SamplerStateStore`) for the same silver version keeps the table and the
sample in step; given the same saved state and the same rows, an update is the same, so a retried run that
recomputes it reproduces what an interrupted one began.

Everything is driven by the spec: its id, event-time and label fields, and its sampling policy.

With ``sampling.mixture`` the recent sample keeps a target share per group of the ``by`` field
(:mod:`rt_training.sampling.mixture`, :mod:`rt_training.sampling.grouped`). The targets are recomputed at every
update from the rows up to the update's ``reference_time`` (the training set's cut): the rows passed as
``mixture_window`` (silver's rows in the mixture's horizon), or the offered rows themselves when none are given.
The replay part is unaffected by the targets: it keeps a uniform sample of the rows the recent sample let go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_training.sampling.grouped import GroupedWeightedReservoir
from rt_training.sampling.mixture import MixturePlan, MixtureReport, group_keys, plan_mixture
from rt_training.sampling.replay import ReplayMixer
from rt_training.sampling.weights import PolicyWeights

if TYPE_CHECKING:
    import pyarrow as pa

    from rt_training.spec.models import PipelineSpec

SESSION_FORMAT = 1
_UNIT_SECONDS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


class PolicyChangedError(ValueError):
    """A saved sample was drawn under a different sampling policy than the spec now declares."""


@dataclass(frozen=True)
class SessionUpdate:
    """What one silver version changed in the training set.

    Attributes
    ----------
    silver_version
        The silver version now covered.
    added_rows
        Rows of the given batch that joined the training set (as recent rows), with all their columns.
    to_replay_ids
        Ids of rows that stay in the training set but are now replay rows.
    removed_ids
        Ids of rows that left the training set.
    recent_rows, replay_rows
        Sizes of the two parts of the training set after the update.
    items_seen
        Silver rows offered to the sample so far.
    mixture
        With ``sampling.mixture``: the targets in force and the recent sample's rows per group.
    """

    silver_version: int
    added_rows: pa.Table
    to_replay_ids: np.ndarray
    removed_ids: np.ndarray
    recent_rows: int
    replay_rows: int
    items_seen: int
    mixture: MixtureReport | None = None


def _seconds(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """Event times as float seconds from a timestamp column (any unit) or a numeric seconds column."""
    import pyarrow as pa

    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null event times; silver rows need them")
    if pa.types.is_timestamp(column.type):
        raw = column.cast(pa.int64()).to_numpy()
        return raw.astype(np.float64) / _UNIT_SECONDS[column.type.unit]
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy().astype(np.float64)
    raise TypeError(f"column {name!r} must be a timestamp or numeric seconds, not {column.type}")


class SamplingSession:
    """The sample behind a pipeline's training set: recent rows by policy plus a replay share.

    Parameters
    ----------
    spec
        The pipeline spec (id, time and label fields; sampling policy).
    uniform_mix
        Share of uniform weight in importance weights (see :func:`rt_training.sampling.weights.importance_weights`).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from rt_training.spec import load_spec
    >>> spec = load_spec()
    >>> session = SamplingSession(spec)
    >>> rows = pa.table({
    ...     spec.id_field: ["a", "b", "c"],
    ...     spec.time_field: pa.array([0, 1_000_000, 2_000_000], pa.timestamp("us", tz="UTC")),
    ...     spec.label.field: [0, 1, 0],
    ... })
    >>> update = session.update(rows, silver_version=0)
    >>> update.added_rows.num_rows, update.recent_rows, session.silver_version
    (3, 3, 0)
    """

    def __init__(self, spec: PipelineSpec, uniform_mix: float = 0.2) -> None:
        self.spec = spec
        self.policy = spec.sampling
        if self.policy.class_balance is not None and spec.label.kind not in ("binary", "multiclass"):
            raise ValueError(
                f"sampling.class_balance needs a class label; label {spec.label.field!r} is {spec.label.kind}"
            )
        self.weighting = PolicyWeights(self.policy, uniform_mix=uniform_mix)
        self.mixer = ReplayMixer.for_policy(self.policy)
        self.silver_version: int | None = None
        self.plan: MixturePlan | None = None

    # -- updates -----------------------------------------------------------------------------
    def update(
        self,
        rows: pa.Table,
        silver_version: int,
        losses: Any | None = None,
        *,
        reference_time: float | None = None,
        mixture_window: pa.Table | None = None,
    ) -> SessionUpdate:
        """Offer the new silver rows of ``silver_version`` to the sample.

        Parameters
        ----------
        rows
            New silver rows (at least the spec's id and time fields, and the label when classes are balanced).
        silver_version
            The silver table version these rows complete; must be newer than :attr:`silver_version`.
        losses
            The champion's per-row loss, aligned with ``rows``; used when the policy sets ``importance``.
            ``None`` (no champion yet) weighs every row equally on that factor.
        reference_time
            Event time (Unix seconds) the ``weighted`` strategy's recency ages count from: the bound of the rows
            offered, i.e. the training set's cut (see :mod:`rt_training.sampling.weights`). ``None``: the newest
            event time seen so far. The mixture's windows count back from it too (``None``: from the newest
            event time of the rows).
        mixture_window
            With ``sampling.mixture``: the rows (``by`` and time fields) the targets are computed from, all with
            event time up to ``reference_time``; ``None`` takes ``rows``.

        Raises
        ------
        ValueError
            When the version is already covered, a column is missing or has nulls, or weights are invalid.
        """
        if self.silver_version is not None and silver_version <= self.silver_version:
            raise ValueError(
                f"silver version {silver_version} is already covered by this sample (it covers up to "
                f"{self.silver_version}); pass only rows of newer silver versions"
            )
        needed = [self.spec.id_field, self.spec.time_field]
        if self.weighting.needs_labels:
            needed.append(self.spec.label.field)
        mixture = self.policy.mixture
        if mixture is not None:
            needed.append(mixture.by)
        missing = [c for c in needed if c not in rows.column_names]
        if missing:
            raise ValueError(f"silver rows lack column(s) {missing}; they have {rows.column_names}")
        id_column = rows.column(self.spec.id_field)
        if id_column.null_count:
            raise ValueError(f"column {self.spec.id_field!r} has {id_column.null_count} null ids")
        ids = id_column.to_numpy()
        times = _seconds(rows.column(self.spec.time_field), self.spec.time_field)
        labels = None
        if self.weighting.needs_labels:
            label_column = rows.column(self.spec.label.field)
            if label_column.null_count:
                raise ValueError(
                    f"column {self.spec.label.field!r} has {label_column.null_count} null labels"
                )
            labels = label_column.to_numpy()
        ids, times, _ = self.mixer.recent.check(ids, times)
        groups = plan = None
        if mixture is not None:
            groups = group_keys(rows.column(mixture.by))
            window = rows if mixture_window is None else mixture_window
            missing = [c for c in (mixture.by, self.spec.time_field) if c not in window.column_names]
            if missing:
                raise ValueError(
                    f"the mixture window lacks column(s) {missing}; it has {window.column_names}"
                )
            cut = float(times.max()) if reference_time is None else float(reference_time)
            plan = plan_mixture(
                mixture,
                group_keys(window.column(mixture.by)),
                _seconds(window.column(self.spec.time_field), self.spec.time_field),
                cut,
            )
        weights = self.weighting.weights(labels, times, losses, reference_time=reference_time)
        report = None
        if plan is not None:
            recent = self.mixer.recent
            assert isinstance(recent, GroupedWeightedReservoir)
            recent.set_targets(plan.targets)
            change = self.mixer.update(ids, times, weights, groups=groups)
            self.plan = plan
            report = MixtureReport(plan, recent.group_counts())
        else:
            change = self.mixer.update(ids, times, weights)
        self.silver_version = int(silver_version)
        ids_now, is_replay = self.mixer.members()
        replay_rows = int(is_replay.sum())
        return SessionUpdate(
            silver_version=self.silver_version,
            added_rows=rows.take(change.added_index),
            to_replay_ids=change.to_replay_ids,
            removed_ids=change.removed_ids,
            recent_rows=ids_now.size - replay_rows,
            replay_rows=replay_rows,
            items_seen=self.mixer.recent.items_seen,
            mixture=report,
        )

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """The training set's ids and a mask that is True for replay rows."""
        return self.mixer.members()

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-safe state: the policy it was drawn under, the covered silver version, samplers, weighting."""
        return {
            "format": SESSION_FORMAT,
            "pipeline": self.spec.name,
            "policy": self.policy.model_dump(mode="json"),
            "silver_version": self.silver_version,
            "mixer": self.mixer.state(),
            "weights": self.weighting.state(),
            "mixture_plan": None if self.plan is None else self.plan.to_json(),
        }

    @classmethod
    def from_state(
        cls, spec: PipelineSpec, state: dict[str, Any], uniform_mix: float = 0.2
    ) -> SamplingSession:
        """Continue a saved session.

        Raises
        ------
        PolicyChangedError
            When the spec's sampling policy differs from the one the sample was drawn under: the saved members,
            keys and counts mean something else under the new policy. Start a new sample (remove the
            pipeline's ``sampler_state`` and ``training_set`` tables) or restore the old policy.
        """
        if state.get("format") != SESSION_FORMAT:
            raise ValueError(f"sampling session state format {state.get('format')!r} is not {SESSION_FORMAT}")
        now = spec.sampling.model_dump(mode="json")
        # A setting added to the policy after the state was saved was then at its default.
        defaults = type(spec.sampling)().model_dump(mode="json")
        saved = {**{k: v for k, v in defaults.items() if k not in state["policy"]}, **state["policy"]}
        if saved != now:
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise PolicyChangedError(
                f"pipeline {spec.name!r}: the saved sample was drawn with sampling settings that the spec now "
                f"changes ({', '.join(f'{k}: {saved.get(k)!r} -> {now.get(k)!r}' for k in changed)}); start a new "
                "sample by removing the pipeline's sampler_state and training_set tables, or restore the settings"
            )
        session = cls(spec, uniform_mix=uniform_mix)
        session.mixer = ReplayMixer.from_state(state["mixer"])
        session.weighting.restore(state["weights"])
        session.silver_version = None if state["silver_version"] is None else int(state["silver_version"])
        plan = state.get("mixture_plan")
        session.plan = None if plan is None else MixturePlan.from_json(plan)
        return session
