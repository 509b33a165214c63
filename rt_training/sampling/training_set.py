"""The training set: a sample of silver, advanced once per silver version, one Delta snapshot per version.

Which silver rows a run offers to the sampler
---------------------------------------------
A run reads the newest silver version ``V`` and its event-time clock (:mod:`rt_training.eventtime`): the watermark
is silver's highest event time minus ``time.allowed_lateness``, and the *cut* is
``watermark - training.holdout_window_s``. Rows whose event time is after the cut are kept out: they are the
validation gate's held-out window. Rows with event time at or before the cut are offered to
:class:`~rt_training.sampling.session.SamplingSession`, each exactly once over all runs:

* A run offers the rows of ``V`` with event time ``<= cut`` that the previous run did not offer. The previous run
  read version ``V'`` with cut ``c'`` and offered every row of ``V'`` with event time up to ``c'``. Every row of
  ``V'`` has a Kafka offset below silver's committed offset of its partition at ``V'`` (the Delta app transaction
  of the ingest), and every row committed later has a higher one, so "offered before" is exactly "event time up to
  ``c'`` with an offset below ``V'``'s". That holds whatever order events arrive in: a *late* row (event time at or
  before ``c'``, committed after ``V'``) has a higher offset, so the next run offers it, by its event time; a row of
  ``V'`` whose event time was after ``c'`` is offered once the cut passes it.
* The record ``(V, cut, offsets)`` is saved with the sampler state, and the cut never moves back (the watermark only
  grows while silver grows; a rebuild that lowered it would not make the cut go back).
* Rows become eligible only at a new silver version: while silver does not change, a run changes nothing. When
  the stream stops, its last window therefore stays held out, and the gate keeps data to judge on.

The gate's held-out window is the silver rows whose event time is after the cut (``holdout.after`` in the
training job): rows after the candidate's cut, and so after every earlier cut (cuts never move back), so neither
the candidate nor an earlier champion was trained on them. Nothing here reads the wall clock: a replay of last
year's topic, a backfill and a live stream give the same sample for the same silver versions.

Writes, crashes and concurrent runs
-----------------------------------
Each version of the ``training_set`` table is a full snapshot (``mode="overwrite"``): the previous snapshot's
rows that are still members plus the rows that joined, with a boolean ``_is_replay`` column. A run saves the
sampler state first (:class:`~rt_training.sampling.state_store.SamplerStateStore`, at most once per silver
version) and then writes the snapshot with the Delta app transaction ``(<pipeline>/training_set, V)`` and the
offer record in the same commit. The snapshot is a function of the saved state alone (its member ids, the previous
snapshot and the rows its record offered, re-read from silver version ``V`` by time travel), so:

* a run that dies between the two commits is completed by the next run before it does anything else;
* of two concurrent runs only one saves the state for ``V``; the other writes (or finds) that state's snapshot.

Recomputing the sampler update instead would not reproduce it: importance weights come from the champion, which
may have moved by the time a run is retried.

Adapting to drift
-----------------
``half_life_override`` (the drift policy's ``on_drift_recency_half_life_s``, passed to a retraining launched on
drift) replaces the recency half-life for one run. The spec's sampling policy is what the saved sample was drawn
under, and :meth:`SamplingSession.from_state` refuses a changed one, so the override is applied where the
half-life is used per batch: :class:`~rt_training.sampling.weights.PolicyWeights`, whose half-life is not part of
the saved state. With the ``weighted`` strategy each offered row's weight is ``2^(-age / half_life)``, its age
counted in event time back from this run's cut, so with a shorter half-life the older of the rows offered
together (and late rows) enter the sample less often. Members already in the sample keep their keys. The spec
refuses the setting with another strategy; an override passed by hand to a ``time_biased`` or ``uniform`` sample
is not applied, and the metadata says so (``adapted_for_drift`` false). Every snapshot reports ``recent_share``,
the share of members within one half-life (the one used) before the cut.

Mixture by group
----------------
With ``sampling.mixture`` each run recomputes the group targets (:mod:`rt_training.sampling.mixture`) from
silver's rows at version ``V`` whose event time is in the mixture's horizon before this run's cut (late rows
committed by ``V`` included, held-out rows after the cut excluded), and the recent sample keeps those shares
(:mod:`rt_training.sampling.grouped`). The metadata reports, per group (the top 19 by target, the rest summed as
``(other)``), ``mixture_target_<group>`` and the achieved ``mixture_share_<group>`` of the recent rows (replay
rows are older data outside the targets), ``mixture_boost_<group>`` with trending, ``mixture_groups`` and
``mixture_max_gap`` (the largest ``|achieved - target|``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rt_training.sampling.mixture import MixturePlan, MixtureReport
from rt_training.sampling.weights import class_keys
from rt_training.spec.durations import format_duration

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.eventtime import EventClock
    from rt_training.ingest.batch import LakeLocation
    from rt_training.sampling.session import SamplingSession
    from rt_training.spec.models import PipelineSpec

log = logging.getLogger(__name__)

TABLE_NAME = "training_set"
REPLAY_COLUMN = "_is_replay"
"""True for rows kept as replay of older data, False for the recent sample."""
COMMIT_KEY = "rt_training.training_set"
"""Custom commit metadata of each snapshot: silver version, cut, rows and replay rows."""
STATE_FORMAT = "rt_training.training_set/2"
"""Version 2: cuts are event time (version 1 cut on ingestion time)."""
STATES_KEPT = 3
"""Sampler states kept after each update (each holds every member id; only the newest is ever read)."""
MAX_LABEL_SHARES = 20
"""Label classes reported in the metadata (the most frequent): a many-class label must not flood it."""
_TS = pa.timestamp("us", tz="UTC")

LossesFn = Callable[[pa.Table], Any]
"""Per-row losses of the champion for the given silver rows (aligned with them), or ``None``."""


class TrainingSetError(RuntimeError):
    """The training-set table and the sampler state disagree; the message says how to start over."""


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"time {value} has no timezone; pass an aware datetime (UTC)")
    return value.astimezone(dt.UTC)


@dataclass(frozen=True)
class Offered:
    """What the sample has been offered: silver rows of ``silver_version`` with event time up to ``cut``.

    ``offsets`` maps ``(topic, partition)`` to silver's committed (next) offset at ``silver_version``: every row
    of that version has a lower offset, every later row a higher one.
    """

    silver_version: int
    cut: dt.datetime
    offsets: dict[tuple[str, int], int]

    def to_json(self) -> dict[str, Any]:
        return {
            "silver_version": self.silver_version,
            "cut": self.cut.isoformat(),
            "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Offered:
        return cls(
            int(data["silver_version"]),
            _utc(dt.datetime.fromisoformat(data["cut"])),
            {(str(t), int(p)): int(o) for t, p, o in data["offsets"]},
        )

    def offered_before(self, time_field: str) -> pc.Expression:
        """Rows this record has offered: event time up to the cut, with an offset below the committed one."""
        below = pc.scalar(False)
        for (topic, partition), offset in self.offsets.items():
            below = below | (
                (pc.field("_topic") == topic)
                & (pc.field("_partition") == partition)
                & (pc.field("_offset") < offset)
            )
        return (pc.field(time_field) <= pa.scalar(self.cut, _TS)) & below


@dataclass(frozen=True)
class SavedSample:
    """The sampler state as saved per silver version: the session, its watermark and the one before it."""

    session: dict[str, Any]
    watermark: Offered
    previous: Offered | None

    def to_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "session": self.session,
            "watermark": self.watermark.to_json(),
            "previous": None if self.previous is None else self.previous.to_json(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], where: str) -> SavedSample:
        if state.get("format") != STATE_FORMAT:
            raise TrainingSetError(
                f"sampler state in {where} has format {state.get('format')!r}, not {STATE_FORMAT!r}; it was not "
                "written by this training-set step. Remove the pipeline's sampler_state and training_set tables "
                "to start a new sample."
            )
        previous = state.get("previous")
        return cls(
            dict(state["session"]),
            Offered.from_json(state["watermark"]),
            None if previous is None else Offered.from_json(previous),
        )

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """Member ids and the replay mask, straight from the saved reservoirs (no policy check needed)."""
        from rt_training.sampling.replay import ReplayMixer

        return ReplayMixer.from_state(self.session["mixer"]).members()

    def mixture(self) -> MixtureReport | None:
        """The mixture targets of the saved sample and its recent rows per group (``None`` without a mixture)."""
        from rt_training.sampling.grouped import GroupedWeightedReservoir
        from rt_training.sampling.replay import ReplayMixer

        plan = self.session.get("mixture_plan")
        if plan is None:
            return None
        recent = ReplayMixer.from_state(self.session["mixer"]).recent
        assert isinstance(recent, GroupedWeightedReservoir)
        return MixtureReport(MixturePlan.from_json(plan), recent.group_counts())


@dataclass(frozen=True)
class TrainingSetInfo:
    """One snapshot of the training set: its Delta version and what it was drawn from."""

    uri: str
    version: int
    silver_version: int
    cut: dt.datetime
    rows: int
    replay_rows: int


@dataclass(frozen=True)
class SnapshotStats:
    """Size, replay share, label mix and member ages of a snapshot (ages in seconds of event time before the
    pipeline's watermark)."""

    rows: int
    replay_rows: int
    label_shares: dict[str, float]
    label_mean: float | None
    age_p50_s: float | None
    age_p95_s: float | None
    recent_share: float | None = None
    """Share of members whose event time is within one recency half-life before the cut (``None`` without a
    half-life or a cut): how much of the sample is recent, against older rows and replay."""

    @property
    def replay_share(self) -> float:
        return self.replay_rows / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class TrainingSetUpdate:
    """What one run did to the training set, and the training set it left.

    ``changed`` is True when this run wrote a new snapshot for its own sampler update; ``recovered`` when it
    first wrote the snapshot of a state saved by an earlier run that did not finish.
    """

    changed: bool
    reason: str
    current: TrainingSetInfo | None
    stats: SnapshotStats | None
    rows_offered: int = 0
    rows_added: int = 0
    rows_removed: int = 0
    rows_to_replay: int = 0
    duplicates_dropped: int = 0
    items_seen: int | None = None
    recovered: bool = False
    recency_half_life_s: float | None = None
    adapted_for_drift: bool = False
    importance_weighted: bool = False
    cut: dt.datetime | None = None
    clock: EventClock | None = None
    mixture: MixtureReport | None = None

    def metadata(self) -> dict[str, Any]:
        """Flat, plottable values (``None`` left out)."""
        out: dict[str, Any] = {
            "changed": self.changed,
            "reason": self.reason,
            "rows_offered": self.rows_offered,
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "rows_to_replay": self.rows_to_replay,
            "duplicates_dropped": self.duplicates_dropped,
            "recovered": self.recovered,
            "adapted_for_drift": self.adapted_for_drift,
            "importance_weighted": self.importance_weighted,
            "recency_half_life_s": self.recency_half_life_s,
            "items_seen": self.items_seen,
        }
        if self.cut is not None:
            out["run_cut_time"] = self.cut.isoformat()
        if self.clock is not None:
            out.update(self.clock.to_metadata())
        if self.current is not None:
            out.update(
                training_set_version=self.current.version,
                silver_version=self.current.silver_version,
                cut_time=self.current.cut.isoformat(),
                cut_unix_s=self.current.cut.timestamp(),
            )
        if self.stats is not None:
            s = self.stats
            out.update(
                size=s.rows,
                replay_rows=s.replay_rows,
                replay_share=s.replay_share,
                age_p50_s=s.age_p50_s,
                age_p95_s=s.age_p95_s,
                label_mean=s.label_mean,
                recent_share=s.recent_share,
            )
            out.update({f"label_share_{label}": share for label, share in s.label_shares.items()})
        if self.mixture is not None:
            out.update(self.mixture.metadata())
        return {k: v for k, v in out.items() if v is not None}


# -- reading silver --------------------------------------------------------------------------------------------
def _open(uri: str, lake: LakeLocation, version: int | None = None) -> DeltaTable | None:
    from deltalake import DeltaTable

    from rt_training.lake.tables import open_table

    options = dict(lake.storage_options) if lake.storage_options else None
    if version is None:
        return open_table(uri, options)
    return DeltaTable(uri, version=version, storage_options=options)


def committed_offsets_at(table: DeltaTable, pipeline: str) -> dict[tuple[str, int], int]:
    """``(topic, partition)`` -> silver's next offset at the table's loaded version.

    The ingest's app transaction when the table has one, else one past the highest offset it holds.
    """
    from rt_training.lake.exactly_once import app_id

    rows = table.to_pyarrow_table(columns=["_topic", "_partition", "_offset"])
    if rows.num_rows == 0:
        return {}
    highest = rows.group_by(["_topic", "_partition"]).aggregate([("_offset", "max")]).to_pylist()
    out = {}
    for row in highest:
        topic, partition = str(row["_topic"]), int(row["_partition"])
        committed = table.transaction_version(app_id(pipeline, topic, partition))
        out[(topic, partition)] = int(row["_offset_max"]) + 1 if committed is None else int(committed)
    return out


def _candidate_files(
    table: DeltaTable,
    previous: Offered | None,
    cut: dt.datetime,
    partitions: set[tuple[str, int]],
    time_field: str,
) -> list[str]:
    """Data files that may hold rows to offer, from the add actions' column statistics.

    A file is skipped when every row in it has event time after the cut, or when every row in it has event time up
    to the previous cut and an offset below every partition's previous committed offset (all offered before).
    A file without statistics is always read. Delta statistics keep timestamps to the millisecond, rounded down, so
    a file's true highest time may be up to :data:`~rt_training.eventtime.clock.STATS_RESOLUTION` above its
    statistic: a file is taken as all offered only when even that is up to the previous cut.
    """
    from rt_training.eventtime.clock import STATS_RESOLUTION

    actions = pa.table(table.get_add_actions(flatten=True))

    def column(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in actions.column_names else [None] * actions.num_rows

    lowest_offset = 0
    if previous is not None and partitions <= set(previous.offsets):
        lowest_offset = min(previous.offsets.values(), default=0)
    keep = []
    for path, first, last, top in zip(
        column("path"),
        column(f"min.{time_field}"),
        column(f"max.{time_field}"),
        column("max._offset"),
        strict=True,
    ):
        if first is not None and first > cut:
            continue
        if (
            previous is None
            or last is None
            or top is None
            or last + STATS_RESOLUTION > previous.cut
            or top >= lowest_offset
        ):
            keep.append(path)
    return keep


def _read_files(
    table: DeltaTable,
    paths: list[str],
    where: pc.Expression,
    lake: LakeLocation,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows matching ``where`` from some data files of ``table`` (paths as in its add actions), all columns or
    ``columns``."""
    import pyarrow.dataset as pds
    import pyarrow.fs as pa_fs
    from deltalake.fs import DeltaStorageHandler

    from rt_training.lake.tables import table_schema

    schema = table_schema(table)
    if not paths:
        empty = schema.empty_table()
        return empty if columns is None else empty.select(columns)
    options = dict(lake.storage_options) if lake.storage_options else None
    filesystem = pa_fs.PyFileSystem(DeltaStorageHandler(table.table_uri, options))
    dataset = pds.dataset(sorted(paths), schema=schema, format="parquet", filesystem=filesystem)
    return dataset.to_table(columns=columns, filter=where)


def offered_rows(
    silver: DeltaTable, previous: Offered | None, watermark: Offered, lake: LakeLocation, time_field: str
) -> pa.Table:
    """Silver rows (at the loaded version) that ``watermark`` offers after ``previous``, in Kafka order."""
    where = pc.field(time_field) <= pa.scalar(watermark.cut, _TS)
    if previous is not None:
        where = where & ~previous.offered_before(time_field)
    paths = _candidate_files(silver, previous, watermark.cut, set(watermark.offsets), time_field)
    rows = _read_files(silver, paths, where, lake)
    return rows.sort_by([("_topic", "ascending"), ("_partition", "ascending"), ("_offset", "ascending")])


def mixture_window(silver: DeltaTable, spec: PipelineSpec, cut: dt.datetime, lake: LakeLocation) -> pa.Table:
    """The ``by`` and time columns of silver's rows (at the loaded version) in the mixture's horizon before
    ``cut``: event time in ``(cut - trend_window - reference_window, cut]``."""
    mixture = spec.sampling.mixture
    assert mixture is not None
    start = cut - dt.timedelta(seconds=mixture.trend_window + mixture.reference_window)
    time_field = spec.time_field
    where = (pc.field(time_field) > pa.scalar(start, _TS)) & (pc.field(time_field) <= pa.scalar(cut, _TS))
    actions = pa.table(silver.get_add_actions(flatten=True))

    def column(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in actions.column_names else [None] * actions.num_rows

    paths = [
        path
        for path, first, last in zip(
            column("path"), column(f"min.{time_field}"), column(f"max.{time_field}"), strict=True
        )
        if (first is None or first <= cut) and (last is None or last >= start)
    ]
    return _read_files(silver, paths, where, lake, columns=[mixture.by, time_field])


def _drop_duplicate_ids(rows: pa.Table, previous: pa.Table | None, id_field: str) -> tuple[pa.Table, int]:
    """Drop rows whose id is already in the ``previous`` snapshot or repeats an earlier row of the batch (silver
    deduplicates only within its recent history, and the sample needs unique ids)."""
    if rows.num_rows == 0:
        return rows, 0
    ids = rows.column(id_field)
    keep = np.zeros(rows.num_rows, dtype=bool)
    keep[np.unique(ids.to_numpy(zero_copy_only=False), return_index=True)[1]] = True
    if previous is not None and previous.num_rows:
        known = previous.column(id_field).combine_chunks().cast(ids.type)
        keep &= ~pc.is_in(ids, value_set=known).to_numpy(zero_copy_only=False)
    dropped = int((~keep).sum())
    return (rows.filter(pa.array(keep)) if dropped else rows), dropped


# -- the table -------------------------------------------------------------------------------------------------
def training_set_uri(spec: PipelineSpec, lake: LakeLocation) -> str:
    return lake.uri(spec.name, TABLE_NAME)


def _app_id(spec: PipelineSpec) -> str:
    return f"{spec.name}/{TABLE_NAME}"


def current_training_set(spec: PipelineSpec, lake: LakeLocation) -> TrainingSetInfo | None:
    """The newest snapshot (its Delta version and watermark), or ``None`` before the first one."""
    table = _open(training_set_uri(spec, lake), lake)
    if table is None:
        return None
    limit = 20
    while True:
        page = table.history(limit)
        for commit in page:
            info = commit.get(COMMIT_KEY)
            if info is not None:
                return TrainingSetInfo(
                    uri=training_set_uri(spec, lake),
                    version=int(commit["version"]),
                    silver_version=int(info["silver_version"]),
                    cut=_utc(dt.datetime.fromisoformat(info["cut"])),
                    rows=int(info["rows"]),
                    replay_rows=int(info["replay_rows"]),
                )
        if len(page) < limit:
            return None
        limit *= 4


def snapshot_stats(
    rows: pa.Table,
    spec: PipelineSpec,
    watermark: dt.datetime | None,
    *,
    cut: dt.datetime | None = None,
    half_life_s: float | None = None,
) -> SnapshotStats:
    """Size, replay rows, label mix (share per class of a binary or multiclass label, the mean of a regression
    label, nothing for a language model, whose target is its text), member ages, and the share of members within
    ``half_life_s`` of event time before ``cut``."""
    n = rows.num_rows
    replay = int(pc.sum(rows.column(REPLAY_COLUMN)).as_py() or 0) if n else 0
    label = rows.column(spec.label.field)
    shares: dict[str, float] = {}
    mean = None
    if spec.label.kind in ("binary", "multiclass"):
        if n:
            keys, counts = np.unique(class_keys(label.to_numpy(zero_copy_only=False)), return_counts=True)
            top = sorted(zip(keys, counts, strict=True), key=lambda kc: -kc[1])[:MAX_LABEL_SHARES]
            shares = {str(k): float(c) / n for k, c in top}
    elif spec.label.kind == "regression" and n:
        mean = float(pc.mean(label).as_py())
    p50 = p95 = recent = None
    times = rows.column(spec.time_field).cast(_TS).cast(pa.int64()).to_numpy().astype(np.float64) / 1e6
    if n and watermark is not None:
        ages = _utc(watermark).timestamp() - times
        p50, p95 = (float(v) for v in np.percentile(ages, [50, 95]))
    if n and cut is not None and half_life_s is not None:
        recent = float(np.mean(times > _utc(cut).timestamp() - half_life_s))
    return SnapshotStats(n, replay, shares, mean, p50, p95, recent)


def _write_snapshot(
    spec: PipelineSpec,
    lake: LakeLocation,
    sample: SavedSample,
    *,
    previous_rows: pa.Table | None = None,
    offered: pa.Table | None = None,
) -> pa.Table | None:
    """Write the snapshot of ``sample`` unless the table already has it; returns the rows written, or None.

    ``previous_rows`` (the current snapshot without ``_is_replay``) and ``offered`` (the rows the update saw,
    deduplicated) are re-read when not given.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    uri = training_set_uri(spec, lake)
    version = sample.watermark.silver_version
    table = _open(uri, lake)
    covered = None if table is None else table.transaction_version(_app_id(spec))
    if covered is not None and covered >= version:
        return None
    expected = None if sample.previous is None else sample.previous.silver_version
    if covered != expected:
        raise TrainingSetError(
            f"training set {uri} covers silver version {covered}, but the sampler state for silver version "
            f"{version} continues from {expected}: the two tables are out of step (restored or deleted "
            f"separately?). Remove the pipeline's sampler_state and training_set tables to start a new sample."
        )
    if previous_rows is None:
        previous_rows = table.to_pyarrow_table().drop_columns([REPLAY_COLUMN]) if table is not None else None
    if offered is None:
        silver = _open(lake.uri(spec.name, "silver"), lake, version)
        assert silver is not None
        offered, _ = _drop_duplicate_ids(
            offered_rows(silver, sample.previous, sample.watermark, lake, spec.time_field),
            previous_rows,
            spec.id_field,
        )
    pool = (
        offered if previous_rows is None else pa.concat_tables([previous_rows.cast(offered.schema), offered])
    )
    ids, is_replay = sample.members()
    id_column = pool.column(spec.id_field)
    snapshot = pool.filter(pc.is_in(id_column, value_set=pa.array(ids, id_column.type)))
    if snapshot.num_rows != ids.size:
        raise TrainingSetError(
            f"the sampler state for silver version {version} has {ids.size} members, but only "
            f"{snapshot.num_rows} of them are in the previous snapshot of {uri} or among the rows offered; "
            "remove the pipeline's sampler_state and training_set tables to start a new sample"
        )
    flags = pc.is_in(snapshot.column(spec.id_field), value_set=pa.array(ids[is_replay], id_column.type))
    snapshot = snapshot.append_column(pa.field(REPLAY_COLUMN, pa.bool_()), flags)
    info = {
        "silver_version": version,
        "cut": sample.watermark.cut.isoformat(),
        "rows": snapshot.num_rows,
        "replay_rows": int(is_replay.sum()),
    }
    commit = CommitProperties(
        app_transactions=[Transaction(_app_id(spec), version)],
        custom_metadata={COMMIT_KEY: info, "rt_training.pipeline": spec.name},
    )
    try:
        write_deltalake(
            table if table is not None else uri,
            snapshot,
            mode="overwrite",
            commit_properties=commit,
            storage_options=None
            if table is not None or not lake.storage_options
            else dict(lake.storage_options),
        )
    except CommitFailedError:
        again = _open(uri, lake)
        if again is None or (again.transaction_version(_app_id(spec)) or -1) < version:
            raise
        return None
    return snapshot


# -- one run ---------------------------------------------------------------------------------------------------
def _apply_half_life(session: SamplingSession, override: float | None) -> tuple[float | None, bool]:
    """Use ``override`` as the recency half-life of this run's weights (see the module docstring)."""
    policy = session.policy
    if override is None:
        return policy.recency_half_life_s, False
    if policy.strategy != "weighted":
        log.warning(
            "recency half-life override %ss not applied: strategy %r keeps its half-life in the sample itself",
            override,
            policy.strategy,
        )
        return policy.recency_half_life_s, False
    session.weighting.half_life_s = float(override)
    return float(override), True


@dataclass
class _Context:
    spec: PipelineSpec
    lake: LakeLocation
    clock: EventClock
    recovered: bool = False
    saved: SavedSample | None = None

    def unchanged(self, reason: str, **extra: Any) -> TrainingSetUpdate:
        current = current_training_set(self.spec, self.lake)
        stats = None
        if current is not None:
            rows = _open(current.uri, self.lake)
            assert rows is not None
            stats = snapshot_stats(
                rows.to_pyarrow_table(),
                self.spec,
                self.clock.watermark,
                cut=current.cut,
                half_life_s=self.spec.sampling.recency_half_life_s,
            )
        return TrainingSetUpdate(
            changed=False,
            reason=reason,
            current=current,
            stats=stats,
            recovered=self.recovered,
            recency_half_life_s=self.spec.sampling.recency_half_life_s,
            clock=self.clock,
            mixture=None if self.saved is None else self.saved.mixture(),
            **extra,
        )


def update_training_set(
    spec: PipelineSpec,
    lake: LakeLocation,
    *,
    losses_fn: LossesFn | None = None,
    half_life_override: float | None = None,
) -> TrainingSetUpdate:
    """Offer the silver rows not offered yet (up to the cut) to the sample and write the new snapshot.

    Parameters
    ----------
    spec
        The pipeline spec (sampling policy, holdout window, id/time/label fields).
    lake
        Where the pipeline's tables are.
    losses_fn
        Called with the offered rows when the policy weights by importance; returns the champion's loss per
        row (``None`` while there is no champion).
    half_life_override
        Recency half-life for this run only (see "Adapting to drift" in the module docstring).

    Raises
    ------
    TrainingSetError
        When the training-set table and the sampler state are out of step.
    PolicyChangedError
        When the spec's sampling policy differs from the one the saved sample was drawn under.
    """
    from deltalake.exceptions import CommitFailedError

    from rt_training.eventtime import event_clock
    from rt_training.sampling.session import SamplingSession
    from rt_training.sampling.state_store import SamplerStateStore

    silver = _open(lake.uri(spec.name, "silver"), lake)
    run = _Context(spec, lake, event_clock(spec, silver))
    options = dict(lake.storage_options) if lake.storage_options else None
    store = SamplerStateStore.for_pipeline(spec.name, lake.root, options)
    stored = store.load_latest()
    saved = None if stored is None else SavedSample.from_state(stored.state, store.table_uri)
    run.saved = saved
    if saved is not None and _write_snapshot(spec, lake, saved) is not None:
        run.recovered = True
        log.info(
            "wrote the snapshot of silver version %s left by an interrupted run",
            saved.watermark.silver_version,
        )

    if silver is None:
        return run.unchanged("no silver table yet")
    version = silver.version()
    if saved is not None and version <= saved.watermark.silver_version:
        return run.unchanged(f"silver has no version after {saved.watermark.silver_version}")
    cut = run.clock.cut(spec.training.holdout_window_s)
    if cut is None:
        return run.unchanged(f"silver version {version} has no rows yet")
    if saved is not None and cut < saved.watermark.cut:
        cut = saved.watermark.cut
    watermark = Offered(version, cut, committed_offsets_at(silver, spec.name))
    previous = None if saved is None else saved.watermark

    table = _open(training_set_uri(spec, lake), lake)
    previous_rows = None if table is None else table.to_pyarrow_table().drop_columns([REPLAY_COLUMN])
    offered, dropped = _drop_duplicate_ids(
        offered_rows(silver, previous, watermark, lake, spec.time_field), previous_rows, spec.id_field
    )
    if offered.num_rows == 0:
        return run.unchanged(
            f"no silver rows with event time up to the cut {cut.isoformat()} (watermark "
            f"{run.clock.watermark.isoformat() if run.clock.watermark else 'none'} minus the "
            f"{format_duration(spec.training.holdout_window_s)} holdout) that were not offered before",
            duplicates_dropped=dropped,
            cut=cut,
        )

    session = SamplingSession(spec) if saved is None else SamplingSession.from_state(spec, saved.session)
    half_life, adapted = _apply_half_life(session, half_life_override)
    losses = losses_fn(offered) if spec.sampling.importance and losses_fn is not None else None
    window = None if spec.sampling.mixture is None else mixture_window(silver, spec, cut, lake)
    update = session.update(offered, version, losses, reference_time=cut.timestamp(), mixture_window=window)
    sample = SavedSample(session.state(), watermark, previous)
    try:
        result = store.save(sample.to_state(), version)
        won = result.saved
    except CommitFailedError:
        won = False
    if not won:
        latest = store.load_latest()
        assert latest is not None
        _write_snapshot(spec, lake, SavedSample.from_state(latest.state, store.table_uri))
        return run.unchanged(f"another run covered silver version {latest.silver_version} first", cut=cut)
    written = _write_snapshot(spec, lake, sample, previous_rows=previous_rows, offered=offered)
    try:
        store.prune(keep_last=STATES_KEPT)
    except CommitFailedError:
        log.warning(
            "pruning old sampler states of %s lost to a concurrent commit; the next run prunes", spec.name
        )
    current = current_training_set(spec, lake)
    snapshot = written
    if snapshot is None:  # a concurrent run wrote this state's snapshot first
        table = _open(training_set_uri(spec, lake), lake)
        assert table is not None
        snapshot = table.to_pyarrow_table()
    return TrainingSetUpdate(
        changed=written is not None,
        reason=(
            f"offered {offered.num_rows} silver rows with event time up to {cut.isoformat()} "
            f"(silver version {version})"
        ),
        current=current,
        stats=snapshot_stats(snapshot, spec, run.clock.watermark, cut=cut, half_life_s=half_life),
        rows_offered=offered.num_rows,
        rows_added=update.added_rows.num_rows,
        rows_removed=int(update.removed_ids.size),
        rows_to_replay=int(update.to_replay_ids.size),
        duplicates_dropped=dropped,
        items_seen=update.items_seen,
        recovered=run.recovered,
        recency_half_life_s=half_life,
        adapted_for_drift=adapted,
        importance_weighted=losses is not None,
        cut=cut,
        clock=run.clock,
        mixture=update.mixture,
    )
