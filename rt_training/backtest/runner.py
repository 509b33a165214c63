"""Replay a history through the pipeline's own code, step by step in event time, and score it prequentially.

    rt-training backtest SPEC --events history.jsonl --step 30d

For each step (:mod:`rt_training.backtest.events`), in this order:

1. Produce the step's records to a fresh topic (the spec's topic plus a run suffix, the spec's partitions) and
   ingest them with :func:`rt_training.ingest.batch.run_micro_batch`, in offset ranges planned by
   :func:`rt_training.stream.planner.plan_runs` from Kafka's end offsets and the lake tables' committed offsets,
   as the ingest sensor plans them, into a fresh lake under the output folder (bronze, silver, dead letters).
2. Score the step's silver rows (read by the step's offset ranges) with the champion in force *before* the step,
   the static baseline (the first champion, never updated) and the periodic baseline: prequential evaluation,
   each model judged on data it has never seen.
3. Update the platform as its policies say, with the code the daemon's assets and sensors run, on the event-time
   clock of the lake (:func:`rt_training.eventtime.read_event_clock`) instead of the wall clock. Without a
   champion: the training set (:func:`~rt_training.sampling.training_set.update_training_set`), then the first
   champion once enough silver rows are older than the holdout cut (``first_champion_sensor``'s rule). With one:
   a drift report (:func:`~rt_training.drift.reports.run_drift_report`) and the trigger
   (:func:`~rt_training.drift.trigger.decide_retraining`, ``now`` = the watermark, the cooldown counted from the
   watermark of the last launch, as the retraining sensor keeps it); the training set takes in the step's rows,
   with the drift policy's recency half-life when the launch is for dataset drift (the retraining job's run
   config) — when the spec adapts to drift it does so only in a step that trains, as ``refresh_job`` leaves the
   rows to the next training run; a launched retraining trains through :func:`~rt_training.training.entrypoint.run_job` (planned by
   :func:`~rt_training.training.launch.plan_training_run`, warm-started from the champion, in this process), is
   registered and goes through the gate (:func:`~rt_training.training.champion.decide_latest_candidate`).
   The drift report is made before the training set takes in the step's rows: the report compares against the
   champion's own training-set snapshot, so the order changes nothing in it, and the half-life then applies to
   the rows that drifted, as when the retraining sensor fires before the next refresh.
4. Train the periodic baseline from scratch on the silver rows of the trailing ``periodic_window_steps`` steps
   (all of them, no sampler), written as one Delta table, with the same entry point and the spec's model and
   training policy.

Nothing waits on the wall clock; Kafka, Delta, the sampler, drift detection, the gate and training are the real
components. Trainings run on the CPU with ``threads`` intra-op threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from rt_training.backtest.events import Record, Step, read_jsonl, record_from_line, split_steps
from rt_training.backtest.report import PHASES
from rt_training.ingest.batch import LakeLocation

if TYPE_CHECKING:
    from rt_training.spec.models import PipelineSpec
    from rt_training.stream.client import KafkaSettings
    from rt_training.stream.planner import OffsetRange
    from rt_training.training.checkpoints import Restored
    from rt_training.training.entrypoint import JobConfig

DEFAULT_OUT_ROOT = Path(".data") / "backtest"
LAKE_DIR = "lake"
BASELINES_DIR = "baselines"
PERIODIC_TABLE = "periodic_training_set"


@dataclass(frozen=True)
class BacktestConfig:
    """What to replay and how.

    Attributes
    ----------
    events
        A JSONL file (one event per line, in arrival order), or the events themselves: :class:`Record` objects,
        JSON-serializable dicts, or raw message values (``bytes``).
    step_s, step_rows
        Step length in seconds of event time, or in records; exactly one is set.
    out_dir
        Where ``backtest.json``, the plot, the lake and the checkpoints go (default
        ``.data/backtest/<pipeline>-<UTC time>``).
    periodic_window_steps
        Steps of silver rows the periodic baseline is retrained on, from scratch, after every step.
    kafka
        Settings of a Kafka cluster to replay through; ``None`` starts a local broker under ``out_dir`` for the
        run (or, when ``$KAFKA_BOOTSTRAP_SERVERS`` is set, uses ``KafkaSettings.from_env()``).
    keep_lake
        Keep the lake, the checkpoints and the broker's data after the run (default: only the report stays).
    drift_at_s
        Unix seconds of event time where drift is known to start (a generated stream); the summary then also
        gives the means over the steps that start at or after it.
    threads
        torch intra-op threads for training and scoring.
    """

    events: str | Path | Iterable[Record | dict[str, Any] | bytes]
    step_s: float | None = None
    step_rows: int | None = None
    out_dir: str | Path | None = None
    periodic_window_steps: int = 2
    kafka: KafkaSettings | None = None
    keep_lake: bool = False
    drift_at_s: float | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        if (self.step_s is None) == (self.step_rows is None):
            raise ValueError("a backtest needs exactly one of step_s (event time) and step_rows (records)")
        if self.periodic_window_steps < 1:
            raise ValueError(f"periodic_window_steps must be at least 1, got {self.periodic_window_steps}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


@dataclass
class BacktestResult:
    """Per-step rows, the summary, and where the JSON report and the plot were written."""

    steps: list[dict[str, Any]]
    summary: dict[str, Any]
    json_path: Path
    plot_path: Path
    out_dir: Path


@dataclass
class _Models:
    """The three models scored on each step (``None`` until each exists)."""

    champion_id: str | None = None
    champion: Restored | None = None
    static_id: str | None = None
    static: Restored | None = None
    periodic_id: str | None = None
    periodic: Restored | None = None


@dataclass
class _Platform:
    """What the daemon keeps between ticks: the retraining sensor's cursor (the last launch, in event time)."""

    last_launch_at: float | None = None
    trainings: int = 0
    history: deque[pa.Table] = field(default_factory=deque)


def _records(
    events: str | Path | Iterable[Record | dict[str, Any] | bytes], spec: PipelineSpec
) -> list[Record]:
    if isinstance(events, str | Path):
        return list(read_jsonl(events, spec.time_field, spec.id_field))
    out: list[Record] = []
    for event in events:
        if isinstance(event, Record):
            out.append(event)
        elif isinstance(event, bytes):
            out.append(record_from_line(event, spec.time_field, spec.id_field))
        else:
            out.append(record_from_line(json.dumps(event).encode(), spec.time_field, spec.id_field))
    return out


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def run_backtest(
    spec: PipelineSpec, config: BacktestConfig, progress: Callable[[str], None] = print
) -> BacktestResult:
    """Replay ``config.events`` through the pipeline of ``spec`` and write ``backtest.json`` and the plot.

    Parameters
    ----------
    spec
        The user's pipeline spec, used as is except for its source topic (the run's own topic).
    config
        What to replay and how (:class:`BacktestConfig`).
    progress
        Called with one line per step, and a few lines on setup and on the end.

    Returns
    -------
    BacktestResult
        The step rows and summary written to ``backtest.json``, and the paths.

    Raises
    ------
    EventsFileError
        The events file cannot be read.
    ValueError
        The events hold no record.
    KafkaConnectionProblem, LocalKafkaError
        No broker answers at ``kafka``, or the local broker cannot start.
    ProduceError
        Kafka did not take some of a step's records.
    """
    from rt_training.backtest.report import summarize, write_plot, write_report
    from rt_training.ops.kafka_local import LocalKafkaConfig, free_port, start_broker, stop_broker
    from rt_training.stream.admin import delete_topic
    from rt_training.stream.client import KafkaSettings
    from rt_training.stream.producer import ensure_topic

    started = time.monotonic()
    out = Path(
        config.out_dir
        if config.out_dir is not None
        else DEFAULT_OUT_ROOT / f"{spec.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    ).absolute()
    out.mkdir(parents=True, exist_ok=True)
    records = _records(config.events, spec)
    if not records:
        raise ValueError(f"no events to replay in {config.events}; the backtest needs at least one record")
    steps = list(split_steps(records, step_s=config.step_s, step_rows=config.step_rows))
    topic = f"{spec.source.topic}-backtest-{uuid.uuid4().hex[:8]}"
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"topic": topic})})
    lake = LakeLocation(str(out / LAKE_DIR))
    if (out / LAKE_DIR).exists():
        shutil.rmtree(out / LAKE_DIR)

    broker = None
    if config.kafka is not None:
        settings = config.kafka
    else:
        broker = LocalKafkaConfig(data_dir=out / "kafka", port=free_port())
        status = start_broker(broker)
        settings = status.settings()
        if status.kind == "external":
            broker = None
            settings = KafkaSettings.from_env()
        progress(f"Kafka at {settings.bootstrap_servers} ({status.kind})")
    progress(
        f"replaying {len(records):,} events of {spec.name!r} in {len(steps)} steps through topic {topic} "
        f"into {lake.root}"
    )
    try:
        ensure_topic(settings, spec, topic, spec.source.partitions)
        rows = _replay(spec, config, settings, lake, steps, out, progress)
        delete_topic(settings, topic)
    finally:
        if broker is not None:
            stop_broker(broker)
    wall_s = time.monotonic() - started
    summary = summarize(rows, spec.training.metric, wall_s=wall_s, drift_at_s=config.drift_at_s)
    json_path = write_report(out, rows, summary, spec)
    plot_path = write_plot(out, rows, summary)
    if not config.keep_lake:
        for folder in (out / LAKE_DIR, out / BASELINES_DIR, out / "kafka"):
            shutil.rmtree(folder, ignore_errors=True)
    progress(_summary_line(summary))
    progress(f"report: {json_path}\nplot:   {plot_path}")
    return BacktestResult(rows, summary, json_path, plot_path, out)


def _replay(
    spec: PipelineSpec,
    config: BacktestConfig,
    settings: KafkaSettings,
    lake: LakeLocation,
    steps: Sequence[Step],
    out: Path,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    models = _Models()
    platform = _Platform(history=deque(maxlen=config.periodic_window_steps))
    rows: list[dict[str, Any]] = []
    for step in steps:
        t0 = time.monotonic()
        timings = dict.fromkeys(PHASES, 0.0)
        with _timed(timings, "ingest_s"):
            ranges, dead, late = _produce_and_ingest(spec, settings, lake, step)
            silver = _step_rows(spec, lake, ranges)
        label = silver.column(spec.label.field)
        row: dict[str, Any] = {
            "step": step.index + 1,
            "start": _iso(step.start_s),
            "end": _iso(step.end_s),
            "rows": step.rows,
            "silver_rows": silver.num_rows,
            "dead_letters": dead,
            "late_rows": late,
            "label_share": _finite(pc.mean(label).as_py())
            if silver.num_rows and spec.label.kind in ("binary", "regression")
            else None,
            "champion": models.champion_id,
            "periodic_model": models.periodic_id,
        }
        with _timed(timings, "score_s"):
            row["champion_metric"] = _score(models.champion, silver, spec)
            row["static_metric"] = _score(models.static, silver, spec)
            row["periodic_metric"] = _score(models.periodic, silver, spec)
        row.update(_update_platform(spec, lake, models, platform, config.threads, timings))
        row["champion_after"] = models.champion_id
        platform.history.append(silver)
        with _timed(timings, "periodic_s"):
            models.periodic_id, models.periodic = _train_periodic(spec, out, platform.history, step, config)
        row["seconds"] = round(time.monotonic() - t0, 3)
        row.update({k: round(v, 3) for k, v in timings.items()})
        rows.append(row)
        progress(_step_line(row, len(steps), spec.training.metric))
    return rows


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[phase]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        timings[phase] += time.monotonic() - started


def _produce_and_ingest(
    spec: PipelineSpec, settings: KafkaSettings, lake: LakeLocation, step: Step
) -> tuple[list[OffsetRange], int, int]:
    """Send the step's records, ingest everything pending; return the step's offset ranges, its dead letters and
    its late rows (below the watermark each micro-batch was judged against, as the ingest counts them)."""
    from rt_training.ingest.batch import partition_states, run_micro_batch
    from rt_training.stream.client import make_producer, translate_timeouts
    from rt_training.stream.planner import OffsetRange, plan_runs
    from rt_training.stream.producer import Deliveries

    topic = spec.source.topic
    producer = make_producer(
        settings,
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=spec.schema_.max_record_bytes * 4 + 65_536,
    )
    deliveries = Deliveries()
    with translate_timeouts(settings):
        for record in step.records:
            producer.send(topic, value=record.value, key=record.key).add_errback(deliveries.on_error)
    deliveries.close(producer, settings, len(step.records), f"records of step {step.index + 1}", topic)
    plan = plan_runs(
        partition_states(settings, spec, lake, topic),
        planned_until={},
        min_records=1,
        max_wait_s=0.0,
        max_records_per_run=spec.ingest.max_records_per_run,
        waited_s=None,
        max_runs=1_000_000,
    )
    dead = late = 0
    for i, run in enumerate(plan.runs):
        report = run_micro_batch(settings, spec, lake, run, f"backtest-step{step.index + 1}-{i}")
        dead += report.outcomes["dead_letters"].rows if "dead_letters" in report.outcomes else 0
        late += report.clean.lateness.late_rows if report.clean is not None else 0
    spans: dict[int, tuple[int, int]] = {}
    for run in plan.runs:
        for r in run:
            low, high = spans.get(r.partition, (r.start, r.end))
            spans[r.partition] = (min(low, r.start), max(high, r.end))
    return [OffsetRange(topic, p, s, e) for p, (s, e) in sorted(spans.items())], dead, late


def _step_rows(spec: PipelineSpec, lake: LakeLocation, ranges: Sequence[OffsetRange]) -> pa.Table:
    """The silver rows of the step's offset ranges: the columns the model reads, the label and event time."""
    from rt_training.lake.tables import open_table
    from rt_training.training.data import columns_needed

    columns = list(dict.fromkeys([*columns_needed(spec), spec.time_field]))
    silver = open_table(lake.uri(spec.name, "silver"))
    if silver is None or not ranges:
        return pa.table({c: pa.array([], pa.float32()) for c in columns}).slice(0, 0)
    where = None
    for r in ranges:
        one = (
            (pc.field("_partition") == r.partition)
            & (pc.field("_offset") >= r.start)
            & (pc.field("_offset") < r.end)
        )
        where = one if where is None else where | one
    assert where is not None
    where = where & (pc.field("_topic") == ranges[0].topic)
    return silver.to_pyarrow_dataset().to_table(columns=columns, filter=where)


def _score(model: Restored | None, rows: pa.Table, spec: PipelineSpec) -> float | None:
    """The spec's metric of ``model`` on ``rows`` (``None`` without a model, rows, or a defined value)."""
    if model is None or rows.num_rows == 0:
        return None
    from rt_training.training.data import tensors_from_arrow
    from rt_training.training.loop import evaluate

    data = tensors_from_arrow(rows, spec, model.state, where="backtest step")
    _, metric = evaluate(model.model, data, spec)
    return _finite(metric)


def _update_platform(
    spec: PipelineSpec,
    lake: LakeLocation,
    models: _Models,
    platform: _Platform,
    threads: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    """One step of the daemon's work after ingest: training set, drift, trigger, training, gate; the seconds
    each took are added to ``timings``."""
    from rt_training.drift.periodic import periodic_decision
    from rt_training.drift.reports import NothingToCompare, run_drift_report
    from rt_training.drift.trigger import decide_retraining
    from rt_training.eventtime import read_event_clock
    from rt_training.lake.tables import open_table
    from rt_training.sampling.training_set import update_training_set
    from rt_training.training.champion import champion_losses, registry_for
    from rt_training.training.launch import first_champion_check

    registry = registry_for(spec, lake)
    clock = read_event_clock(spec, lake)
    out: dict[str, Any] = {
        "watermark": None if clock.watermark is None else clock.watermark.isoformat(),
        "drift": None,
        "drift_share": None,
        "quality": None,
        "retraining": False,
        "retraining_reason": None,
        "trigger": None,
        "gate": None,
        "gate_reason": None,
    }

    def sample(half_life: float | None = None) -> None:
        losses = champion_losses(spec, registry) if spec.sampling.importance else None
        with _timed(timings, "sampling_s"):
            update_training_set(spec, lake, losses_fn=losses, half_life_override=half_life)

    if models.champion is None:
        check = first_champion_check(spec, open_table(lake.uri(spec.name, "silver")))
        if check.waiting is not None:
            if not spec.adapts_on_drift:
                sample()
            out["retraining_reason"] = check.reason
            return out
        sample()
        out.update(retraining=True, trigger="first champion", retraining_reason=check.reason)
        with _timed(timings, "training_s"):
            out.update(_train_and_gate(spec, lake, models, platform, threads, drift_report=None))
        return out

    report = None
    try:
        with _timed(timings, "drift_s"):
            report = run_drift_report(spec, lake, now=clock.watermark)
    except NothingToCompare as exc:
        out["retraining_reason"] = f"no drift report: {exc}"
    launch, half_life, trigger = False, None, None
    drifting = report is not None and bool(report.result.dataset_drift)
    if report is not None:
        out.update(
            drift=drifting,
            drift_share=float(report.result.drift_share),
            quality=None if report.quality is None else report.quality.reason(),
        )
        assert clock.watermark_s is not None
        decision = decide_retraining(
            now=clock.watermark_s,
            last_launch_at=platform.last_launch_at,
            in_flight=False,
            policy=spec.drift,
            drift=report.result,
            quality=report.quality,
        )
        launch = decision.launch
        out["retraining_reason"] = decision.reason
        if launch:
            trigger = "drift" if drifting else "quality drop"
    if not launch and clock.watermark_s is not None:
        periodic = periodic_decision(
            spec, lake, now=clock.watermark_s, last_launch_at=platform.last_launch_at, in_flight=False
        )
        if periodic is not None:
            launch = periodic.launch
            out["retraining_reason"] = "; ".join(filter(None, [out["retraining_reason"], periodic.reason]))
            if launch:
                trigger = "periodic"
    if launch:
        platform.last_launch_at = clock.watermark_s
        if drifting:
            half_life = spec.drift.on_drift_recency_half_life_s
    if launch or not spec.adapts_on_drift:
        # As the daemon: a spec that adapts to drift leaves new rows for the next training (refresh_job runs the
        # drift report alone), so a retraining on drift offers them under the drift half-life.
        sample(half_life)
    if launch:
        out.update(retraining=True, trigger=trigger)
        with _timed(timings, "training_s"):
            out.update(
                _train_and_gate(
                    spec,
                    lake,
                    models,
                    platform,
                    threads,
                    drift_report=None if report is None else report.report_id,
                )
            )
    return out


def _train_and_gate(
    spec: PipelineSpec,
    lake: LakeLocation,
    models: _Models,
    platform: _Platform,
    threads: int,
    drift_report: str | None,
) -> dict[str, Any]:
    """Train a candidate on the current training set (warm-started from the champion), register it, gate it."""
    from rt_training.sampling.training_set import current_training_set
    from rt_training.training.champion import decide_latest_candidate, register_candidate, registry_for
    from rt_training.training.checkpoints import restore_model
    from rt_training.training.entrypoint import read_config
    from rt_training.training.launch import WarmStart, plan_training_run

    info = current_training_set(spec, lake)
    if info is None:
        return {"retraining": False, "gate_reason": "no training set yet"}
    registry = registry_for(spec, lake)
    loaded = registry.load_champion()
    warm = (
        None
        if loaded is None
        else WarmStart(loaded.entry.checkpoint_id, loaded.entry.path, loaded.entry.sha256)
    )
    platform.trainings += 1
    run_id = f"backtest-{platform.trainings:04d}-{uuid.uuid4().hex[:8]}"
    plan = plan_training_run(
        spec,
        lake,
        training_set=info,
        warm_start=warm,
        run_id=run_id,
        drift_report=drift_report,
        device="cpu",
        threads=threads,
        log_every=0,
    )
    result = _quiet_run_job(read_config(plan.config_path), plan.config_path.with_suffix(".log"))
    register_candidate(registry, spec, result, plan, run_id)
    verdict = decide_latest_candidate(spec, registry)
    assert verdict is not None
    if verdict.decision == "promoted":
        champion = registry.load_champion()
        assert champion is not None
        models.champion_id = champion.entry.checkpoint_id
        models.champion = restore_model(champion.checkpoint, spec)
        if models.static is None:
            models.static_id, models.static = models.champion_id, restore_model(champion.checkpoint, spec)
    return {"gate": verdict.decision, "gate_reason": verdict.reason}


def _train_periodic(
    spec: PipelineSpec, out: Path, history: Iterable[pa.Table], step: Step, config: BacktestConfig
) -> tuple[str | None, Restored | None]:
    """Train the periodic baseline from scratch on the trailing steps' silver rows; ``(None, None)`` on none."""
    from deltalake import write_deltalake

    from rt_training.training.checkpoints import load_checkpoint, restore_model
    from rt_training.training.data import columns_needed
    from rt_training.training.entrypoint import JobConfig

    columns = columns_needed(spec)
    tables = [t.select(columns) for t in history if t.num_rows]
    if not tables:
        return None, None
    folder = out / BASELINES_DIR
    uri = str(folder / PERIODIC_TABLE)
    write_deltalake(uri, pa.concat_tables(tables), mode="overwrite", schema_mode="overwrite")
    from deltalake import DeltaTable

    version = DeltaTable(uri).version()
    config_dict = {
        "spec": spec.model_dump(mode="json", by_alias=True),
        "training_set": {"uri": uri, "version": version},
        "output_dir": str(folder / "periodic_checkpoints"),
        "result_path": str(folder / "periodic_checkpoints" / f"step-{step.index + 1}.result.json"),
        "device": "cpu",
        "log_every": 0,
        "threads": config.threads,
    }
    log = folder / "periodic_checkpoints" / f"step-{step.index + 1}.log"
    result = _quiet_run_job(JobConfig.model_validate(config_dict), log)
    saved = result["checkpoint"]
    return saved["id"], restore_model(load_checkpoint(saved["path"], saved["sha256"]), spec)


def _quiet_run_job(job: JobConfig, log: Path) -> dict[str, Any]:
    """Run the training entry point in this process, its progress lines going to ``log`` (one line per step is
    what the backtest shows)."""
    from rt_training.training.entrypoint import run_job

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink, contextlib.redirect_stdout(sink):
        result = run_job(job)
    assert result is not None
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _short(iso: str | None) -> str:
    """An ISO time without its fraction and offset (every time here is UTC): ``2017-07-14 02:40:00``."""
    return "?" if iso is None else iso[:19].replace("T", " ")


def _step_line(row: dict[str, Any], total: int, metric: str) -> str:
    span = f"{_short(row['start'])} .. {_short(row['end'])}"
    drift = "n/a" if row["drift"] is None else ("yes" if row["drift"] else "no")
    if row["drift_share"] is not None:
        drift += f" (share {row['drift_share']:.2f})"
    phases = " ".join(f"{p.removesuffix('_s')} {row[p]:.1f}" for p in PHASES)
    action = "no retraining"
    if row["retraining"]:
        action = f"retrained -> {row['gate'] or 'not gated'}"
    return (
        f"step {row['step']}/{total} {span}: {row['rows']:,} rows ({row['dead_letters']} dead, "
        f"{row['late_rows']} late); {metric} champion {_fmt(row['champion_metric'])} static "
        f"{_fmt(row['static_metric'])} periodic {_fmt(row['periodic_metric'])}; drift {drift}; {action} "
        f"[{row['seconds']:.1f}s: {phases}]"
    )


def _summary_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['steps']} steps, {summary['events']:,} events in {summary['wall_s']:.0f}s "
        f"({summary['events_per_s']:.0f}/s): {summary['metric']} prequential {_fmt(summary['prequential_mean'])}, "
        f"static {_fmt(summary['static_mean'])}, periodic {_fmt(summary['periodic_mean'])}; "
        f"{summary['retrainings']} retrainings, {summary['promotions']} promotions"
    )
